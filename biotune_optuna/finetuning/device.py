"""Where and how training runs: the device (CUDA, Apple's MPS or the CPU), the CPU threads,
and the precision (mixed precision, gradient scaling, channels-last)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from biotune_optuna.finetuning.names import DeviceError


def use_threads(n: int) -> None:
    """torch's intra-op threads for this process (the training of every trial)."""
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple's MPS, then the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:1 or mps"
                          ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device {name} asked for but CUDA is not available here; use "
                          "--device cpu (or auto)")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise DeviceError(f"device {name} asked for but this machine has "
                          f"{torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None)
                                     and torch.backends.mps.is_available()):
        raise DeviceError(f"device {name} asked for but MPS is not available here; use "
                          "--device cpu (or auto)")
    return device


AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class Precision:
    """How a run computes on its device: the autocast dtype (None: float32 throughout),
    whether gradients are scaled (float16 only: its range underflows small gradients) and
    whether images and weights are channels-last."""

    device: torch.device
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=self.amp_dtype,
                              enabled=self.amp_dtype is not None)

    def scaler(self) -> torch.amp.GradScaler:
        return torch.amp.GradScaler(self.device.type,
                                    enabled=self.amp_dtype == torch.float16)

    def describe(self) -> str:
        amp = ("float32" if self.amp_dtype is None else
               f"mixed {str(self.amp_dtype).removeprefix('torch.')}")
        return f"{self.device}, {amp}" + (", channels-last" if self.channels_last else "")


def precision(device: torch.device, amp: bool | None = None,
              channels_last: bool | None = None, amp_dtype: str | None = None) -> Precision:
    """The precision a run uses. ``amp`` and ``channels_last`` None mean: on CUDA only (where
    tensor cores pay for both). Mixed precision is float16 with a gradient scaler on CUDA and
    bfloat16 on the CPU (float16 matmuls are slow there); ``amp_dtype`` overrides it (float16
    on the CPU runs CUDA's scaled path, which is how tests exercise it without a GPU)."""
    on_cuda = device.type == "cuda"
    use_amp = on_cuda if amp is None else amp
    if use_amp and device.type == "mps":
        raise DeviceError("mixed precision is not supported on MPS here; use --no-amp")
    if amp_dtype is not None and amp_dtype not in AMP_DTYPES:
        raise DeviceError(f"unknown mixed-precision dtype {amp_dtype!r}; use "
                          f"{' or '.join(AMP_DTYPES)}")
    dtype = None
    if use_amp:
        dtype = AMP_DTYPES[amp_dtype or ("float16" if on_cuda else "bfloat16")]
    return Precision(device, dtype, on_cuda if channels_last is None else channels_last)
