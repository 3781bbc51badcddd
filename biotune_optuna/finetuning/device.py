"""Where training runs: the device (CUDA, Apple's MPS or the CPU) and the CPU threads."""

from __future__ import annotations

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
