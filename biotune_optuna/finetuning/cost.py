"""What training a plan costs on a network, known before the plan is trained: the training
FLOPs per image and epoch, and the memory a training step holds.

Per image, each block of the network is profiled once: its forward FLOPs (convolutions and
matrix products, a multiply-add counted as 2, as ``torch.utils.flop_counter`` counts), the
bytes of the tensors autograd keeps for its backward pass, and its parameters. A plan then
costs (``FineTunePlan.training_flops``) the forward pass from its first trained block on
(the frozen prefix comes from the activation cache after the first epoch), input gradients
through every block above that one and weight gradients of the trained blocks, each about
one forward pass. Its memory is the weights, the gradients and optimizer state of the
trained parameters, and a batch of saved activations from the first trained block on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from biotune_optuna.finetuning.blocks import Block
from biotune_optuna.sampler.plan import FineTunePlan

FLOAT_BYTES = 4
OPTIMIZER_STATES = {"adam": 2, "adamw": 2, "sgd": 1}  # float tensors per trained parameter


@dataclass(frozen=True)
class BlockCosts:
    """Per image, what each block of a network costs."""

    block_names: tuple[str, ...]
    flops: tuple[float, ...]  # forward FLOPs
    saved_bytes: tuple[float, ...]  # tensors autograd keeps for the backward pass
    params: tuple[int, ...]

    def training_gflops(self, plan: FineTunePlan, cached_prefix: bool = True) -> float:
        """GFLOPs to train the plan on one image for one epoch."""
        return plan.training_flops(self.flops, cached_prefix) / 1e9

    def full_gflops(self) -> float:
        """What full fine-tuning costs (every block trained), the unit of a cost fraction."""
        every = FineTunePlan(self.block_names, (1.0,) * len(self.block_names))
        return self.training_gflops(every)

    def memory_mb(self, plan: FineTunePlan, batch_size: int, optimizer: str = "adam",
                  ) -> float:
        """Megabytes a training step holds: every weight, a gradient and the optimizer's
        state for each trained one, and the batch's saved activations from the first
        trained block on (nothing above the weights for a plan that trains nothing)."""
        trained = plan.trained
        weights = sum(self.params) * FLOAT_BYTES
        if not any(trained):
            return weights / 2**20
        first = trained.index(True)
        per_trained = FLOAT_BYTES * (1 + OPTIMIZER_STATES[optimizer])
        states = sum(p for p, t in zip(self.params, trained) if t) * per_trained
        activations = batch_size * sum(self.saved_bytes[first:])
        return (weights + states + activations) / 2**20


def profile(model: nn.Module, blocks: list[Block], input_shape: tuple[int, ...]) -> BlockCosts:
    """Measure ``model``'s blocks on one input of ``input_shape`` (channels, height, width),
    in evaluation mode on the CPU, without changing the model."""
    owner = {m: b.name for b in blocks for m in b.modules if m}  # "": a root's own weights
    flops = dict.fromkeys(owner.values(), 0.0)
    saved = dict.fromkeys(owner.values(), 0.0)
    current: list[str] = []  # the block whose modules run now
    seen: set[tuple[int, int]] = set()  # storages already counted

    def enter(name: str):
        return lambda *_: current.append(name)

    def leave(*_):
        current.pop()

    def keep(tensor: torch.Tensor) -> torch.Tensor:
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if current and key not in seen and not isinstance(tensor, nn.Parameter):
            seen.add(key)
            saved[current[-1]] += tensor.numel() * tensor.element_size()
        return tensor

    modules = dict(model.named_modules())
    handles = [h for m, name in owner.items() for h in (
        modules[m].register_forward_pre_hook(enter(name)),
        modules[m].register_forward_hook(leave))]
    was_training = model.training
    requires = {p: p.requires_grad for p in model.parameters()}
    try:
        model.eval()
        for p in model.parameters():
            p.requires_grad_(True)
        x = torch.zeros(1, *input_shape)
        with FlopCounterMode(display=False) as counter, \
                torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
            model(x)
        for module_name, by_op in counter.get_flop_counts().items():
            name = owner.get(_drop_root(module_name))
            if name is not None:
                flops[name] += float(sum(by_op.values()))
    finally:
        for h in handles:
            h.remove()
        for p, flag in requires.items():
            p.requires_grad_(flag)
        model.train(was_training)
    names = tuple(b.name for b in blocks)
    return BlockCosts(names, tuple(flops[n] for n in names), tuple(saved[n] for n in names),
                      tuple(b.n_params for b in blocks))


def _drop_root(module_name: str) -> str:
    """The flop counter names modules from the root's class (``ResNet.layer1``)."""
    return module_name.partition(".")[2]
