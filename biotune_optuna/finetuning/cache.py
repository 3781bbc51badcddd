"""Frozen-prefix activation cache: a plan's frozen leading blocks computed once per image.

Blocks before a plan's first trained block never change (no gradient, BatchNorm statistics
frozen), so without augmentation their output is a fixed function of the image. The model is
split into a chain of stages at its block boundaries (torch.fx); when every boundary carries
one tensor, the output of the frozen prefix is computed once per image and reused by every
epoch, seed, validation pass and later trial whose frozen prefix is as deep or deeper (those
run only the remaining frozen stages, from the deepest cached boundary). Models that are not
such a chain, and prefixes holding a random layer (dropout, stochastic depth), take the plain
path; that is said once, at debug level.

Memory is bounded: boundaries are kept least-recently-used first out, within ``max_bytes``.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from biotune_optuna.finetuning.blocks import Block
from biotune_optuna.finetuning.seeding import draws_random

logger = logging.getLogger(__name__)
DEFAULT_MAX_BYTES = 1024 * 2**20
_STOCHASTIC = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
               nn.FeatureAlphaDropout)


class ActivationCache:
    """Cached outputs of frozen prefixes, by boundary (the index of the last frozen stage)
    and image index, for one task's pre-trained model and input format."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._boundaries: OrderedDict[int, dict[int, torch.Tensor]] = OrderedDict()
        self._bytes = 0
        self.hits = self.misses = 0

    def rows(self, boundary: int, indices: np.ndarray,
             compute: Callable[[np.ndarray, int | None, torch.Tensor | None], torch.Tensor],
             ) -> torch.Tensor:
        """The outputs at ``boundary`` for ``indices``. Missing rows are computed by
        ``compute(indices, start, inputs)``: from the images when ``start`` is None, else
        from the given outputs at the deeper-most cached boundary ``start`` below this one."""
        stored = self._boundaries.setdefault(boundary, {})
        self._boundaries.move_to_end(boundary)
        missing = np.array([i for i in indices if int(i) not in stored], dtype=np.int64)
        self.hits += len(indices) - len(missing)
        self.misses += len(missing)
        if len(missing):
            start = next((b for b in sorted(self._boundaries, reverse=True) if b < boundary
                          and all(int(i) in self._boundaries[b] for i in missing)), None)
            inputs = None if start is None else torch.stack(
                [self._boundaries[start][int(i)] for i in missing])
            for i, row in zip(missing, compute(missing, start, inputs)):
                stored[int(i)] = row
                self._bytes += row.element_size() * row.nelement()
            self._evict(keep=boundary)
        return torch.stack([stored[int(i)] for i in indices])

    def _evict(self, keep: int) -> None:
        while self._bytes > self.max_bytes and len(self._boundaries) > 1:
            oldest = next(b for b in self._boundaries if b != keep)
            dropped = self._boundaries.pop(oldest)
            self._bytes -= sum(r.element_size() * r.nelement() for r in dropped.values())

    def clear(self) -> None:
        """Forget every row (their memory is freed, on whichever device it was)."""
        self._boundaries.clear()
        self._bytes = 0

    @property
    def nbytes(self) -> int:
        return self._bytes


def stages(model: nn.Module, blocks: Sequence[Block]) -> list[nn.Module] | None:
    """The model as a chain of stages, stage ``k`` ending with block ``k`` (parameter-free
    operations go with the block before them), or None when it is not such a chain."""
    from torch.fx.passes.split_module import split_module

    try:
        graph_module = _trace(model)
    except Exception as error:  # control flow on inputs, unsupported operations
        return _refuse(f"{type(model).__name__} cannot be traced ({error.__class__.__name__})")
    part: dict = {}
    for node in graph_module.graph.nodes:
        inputs = [part[n] for n in node.all_input_nodes]
        stage = max(inputs, default=0)
        if node.op == "call_module":
            owner = next((i for i, b in enumerate(blocks) if b.owns_module(node.target)), None)
            if owner is not None:
                if owner < stage:
                    return _refuse(f"{node.target} runs after a later block")
                stage = owner
        part[node] = stage
    split = split_module(graph_module, model, lambda node: part[node])
    chain, previous = [], None
    for node in split.graph.nodes:
        if node.op == "placeholder":
            previous = node
        elif node.op == "call_module":
            if node.args != (previous,) or node.kwargs:
                return _refuse("a block boundary carries more than one tensor")
            chain.append(getattr(split, node.target))
            previous = node
        elif node.op == "output":
            if node.args[0] is not previous:
                return _refuse("the output is not the last stage's")
        else:
            return _refuse(f"{node.op} {node.target} between stages")
    if len(chain) != len(blocks):
        return _refuse(f"{len(chain)} stages for {len(blocks)} blocks")
    return chain


def _trace(model: nn.Module):
    """The model's torch.fx graph. timm's networks are traced as timm traces them, with its
    leaf modules and functions (its TF "same" padding, for one, branches on input sizes)."""
    from torch import fx

    leaves, functions = (), ()
    if type(model).__module__.startswith("timm."):
        from timm.layers import get_notrace_functions, get_notrace_modules

        leaves = tuple(get_notrace_modules())
        functions = tuple(f for f in get_notrace_functions() if callable(f))

    class Tracer(fx.Tracer):
        def is_leaf_module(self, module: nn.Module, name: str) -> bool:
            return isinstance(module, leaves) or super().is_leaf_module(module, name)

    tracer = Tracer(autowrap_functions=functions)
    return fx.GraphModule(model, tracer.trace(model))


def is_random(stage: nn.Module) -> bool:
    """True when the stage, traced in training mode, draws random numbers (dropout,
    stochastic depth): its output is then not a fixed function of the image."""
    for module in stage.modules():
        if isinstance(module, _STOCHASTIC) and module.p > 0:
            return True
        graph = getattr(module, "graph", None)
        if graph is not None and any(
                n.op in ("call_function", "call_method")
                and draws_random(getattr(n.target, "__name__", n.target)) for n in graph.nodes):
            return True
    return False


_said: set[str] = set()


def _refuse(reason: str) -> None:
    if reason not in _said:
        _said.add(reason)
        logger.debug("activation cache off for this model: %s", reason)
    return None
