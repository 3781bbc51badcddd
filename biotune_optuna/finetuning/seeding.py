"""A run's random numbers from its own seed, never from torch's process-wide generator.

Dropout, stochastic depth and weight initialisation draw from torch's global generator,
which the process shares: a data loader that draws a seed on its first pass, another run
before this one, or another thread training at the same time would each move a run's
dropout masks. Inside :class:`SeededDraws`, every torch random function called without a
generator draws from one the context owns instead (one per device, seeded by ``seed``),
and the dropout functions, which take no generator, are computed from such draws. The
context is a torch function mode, so it covers the calling thread only and leaves the
global generator untouched.

A generator seeded with ``s`` gives the numbers ``torch.manual_seed(s)`` gives, so a run's
draws are those a process freshly seeded with ``s`` would make.
"""

from __future__ import annotations

import functools
import math
import types

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

# functions that take ``generator=`` (torch.nn.init's since torch 2.2): given none, they get
# the context's
_TAKE_GENERATOR = frozenset({
    "rand", "randn", "randint", "randperm", "rand_like", "randn_like", "randint_like",
    "bernoulli", "bernoulli_", "multinomial", "normal", "normal_", "poisson", "uniform_",
    "random_", "exponential_", "geometric_", "cauchy_", "log_normal_", "rrelu", "rrelu_",
    "trunc_normal_", "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_",
    "xavier_normal_", "orthogonal_", "sparse_"})
# torch.nn.functional's Python functions whose bodies draw: their bodies run with the
# context on, since torch turns a mode off while it handles a call
_DRAW_INSIDE = frozenset(
    getattr(F, name) for name in (
        "dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout",
        "feature_alpha_dropout", "gumbel_softmax", "rrelu") if hasattr(F, name))
_DRAWING_BODIES = frozenset(f.__name__ for f in _DRAW_INSIDE)
# fractional max pooling draws its regions' offsets unless given: name -> pooled dimensions
_FRACTIONAL = {f"fractional_max_pool{d}d{suffix}": d for d in (2, 3)
               for suffix in ("", "_with_indices")}
# stochastic depth as torchvision (torch.fx.wrap keeps it whole in a trace) and timm name it
_LIBRARY_DRAWS = frozenset({"stochastic_depth", "drop_path"})
# the dropout kernels, which take no generator: name -> (per-channel noise, alpha, in place)
_DROPOUTS = {
    "dropout": (False, False, False), "dropout_": (False, False, True),
    "feature_dropout": (True, False, False), "feature_dropout_": (True, False, True),
    "alpha_dropout": (False, True, False), "alpha_dropout_": (False, True, True),
    "feature_alpha_dropout": (True, True, False), "feature_alpha_dropout_": (True, True, True),
}
_SELU_ALPHA = 1.7580993408473766  # alpha dropout keeps SELU's mean and variance


def draws_random(name: str) -> bool:
    """Whether the function or tensor method of this name (a torch one, or torchvision's and
    timm's stochastic depth) draws random numbers."""
    return (name in _TAKE_GENERATOR or name in _DROPOUTS or name in _DRAWING_BODIES
            or name in _FRACTIONAL or name in _LIBRARY_DRAWS)


class SeededDraws(TorchFunctionMode):
    """Within ``with SeededDraws(seed):``, the calling thread's torch random draws come from
    generators seeded by ``seed`` (one per device), whatever happened before."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.seed = seed
        self.drawn = 0  # random functions served
        self._generators: dict[torch.device, torch.Generator] = {}

    def generator(self, device: torch.device) -> torch.Generator:
        device = torch.device(device)
        if device.type != "cpu" and device.index is None:
            device = torch.device(device.type, torch.empty(0, device=device).device.index)
        self.drawn += 1
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[device]

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", None)
        if func in _DRAW_INSIDE:
            with self:
                return _body(func)(*args, **kwargs)
        if name in _TAKE_GENERATOR and kwargs.get("generator") is None:
            return func(*args, **{**kwargs, "generator": self.generator(_device(args, kwargs))})
        if name in _DROPOUTS and _is_torch_builtin(func):
            return _dropout(self, *args, **kwargs, kind=_DROPOUTS[name])
        if name in _FRACTIONAL and kwargs.get("_random_samples") is None:
            samples = self._pool_offsets(args[0], _FRACTIONAL[name])
            return func(*args, **{**kwargs, "_random_samples": samples})
        return func(*args, **kwargs)

    def _pool_offsets(self, x: torch.Tensor, dims: int) -> torch.Tensor:
        """The offsets torch's fractional max pooling would draw, drawn from the seed."""
        batch = 1 if x.dim() == dims + 1 else x.size(0)
        return torch.rand(batch, x.size(-dims - 1), dims, dtype=x.dtype, device=x.device,
                          generator=self.generator(x.device))


def _never(*args) -> bool:
    return False


@functools.cache
def _body(func):
    """``func`` without its own hand-over to torch function modes (which would bring the
    call straight back here): its code, seeing no mode at its door."""
    names = dict(func.__globals__, has_torch_function=_never,
                 has_torch_function_unary=_never, has_torch_function_variadic=_never)
    body = types.FunctionType(func.__code__, names, func.__name__, func.__defaults__,
                              func.__closure__)
    body.__kwdefaults__ = func.__kwdefaults__
    return body


def _is_torch_builtin(func) -> bool:
    return getattr(torch, getattr(func, "__name__", ""), None) is func


def _device(args, kwargs) -> torch.device:
    """Where a random function's numbers are made: its tensor argument's device, else the
    device it is asked to create them on."""
    for value in (*args, kwargs.get("out")):
        if isinstance(value, torch.Tensor):
            return value.device
    if kwargs.get("device") is not None:
        return torch.device(kwargs["device"])
    return torch.empty(0).device  # torch's default device


def _dropout(draws: SeededDraws, input: torch.Tensor, p: float, train: bool, *,
             kind: tuple[bool, bool, bool]) -> torch.Tensor:
    """ATen's dropout (``_dropout_impl``), its Bernoulli noise drawn from ``draws``: the
    same masks as torch's own for the same generator state."""
    feature, alpha, inplace = kind
    if not 0 <= p <= 1:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if p == 0 or not train or input.numel() == 0:
        return input
    if p == 1:
        zero = torch.zeros((), dtype=input.dtype, device=input.device)
        return input.mul_(zero) if inplace else input * zero
    if feature:
        if input.dim() < 2:
            raise RuntimeError("Feature dropout requires at least 2 dimensions in the input")
        noise = input.new_empty((*input.shape[:2], *(1,) * (input.dim() - 2)))
    else:
        noise = torch.empty_like(input)
    noise.bernoulli_(1 - p, generator=draws.generator(input.device))
    if not alpha:
        noise.div_(1 - p)
        return input.mul_(noise) if inplace else input * noise
    a = 1 / math.sqrt((_SELU_ALPHA ** 2 * p + 1) * (1 - p))
    shift = noise.add(-1).mul_(_SELU_ALPHA * a).add_(_SELU_ALPHA * a * p)
    noise.mul_(a)
    return (input.mul_(noise) if inplace else input * noise).add_(shift)
