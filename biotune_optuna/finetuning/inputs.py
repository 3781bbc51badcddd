"""The input format a model expects (channels, size, normalisation) and how a model declares
its own: the ``biotune_input`` attribute."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from torch import nn

from biotune_optuna.finetuning.names import ModelError

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
GRAY_MEAN, GRAY_STD = (0.5,), (0.5,)


@dataclass(frozen=True)
class InputSpec:
    """What a model eats: channels, square size and normalisation of [0, 1] pixels.
    ``resize`` is the shorter side images are resized to before the centre crop;
    ``declared`` says whether the model (or the user) stated it, or it is a guess."""

    channels: int
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: int | None = None
    declared: bool = True

    def describe(self) -> str:
        def numbers(values) -> str:
            return ", ".join(f"{v:.4g}" for v in values)
        return (f"{self.channels} channel(s), {self.size} px, mean ({numbers(self.mean)}), "
                f"std ({numbers(self.std)})")

    def as_dict(self) -> dict:
        return {"channels": self.channels, "size": self.size, "mean": list(self.mean),
                "std": list(self.std)}

    def overridden(self, size: int | None = None, mean: Sequence[float] | None = None,
                   std: Sequence[float] | None = None) -> InputSpec:
        """This format with what the user gave instead (one value stands for every
        channel)."""
        changes: dict = {}
        if size:
            changes |= {"size": size, "resize": None}
        for name, values in (("mean", mean), ("std", std)):
            if values:
                values = tuple(float(v) for v in values)
                if len(values) not in (1, self.channels):
                    allowed = ("1 value" if self.channels == 1 else
                        f"1 or {self.channels} values")
                    raise ModelError(f"the input {name} takes {allowed} (the model has "
                                     f"{self.channels} input channel(s)), got {len(values)}")
                changes[name] = values * self.channels if len(values) == 1 else values
        if any(v <= 0 for v in changes.get("std", ())):
            raise ModelError(f"the input std must be positive, got {changes['std']}")
        return replace(self, **changes, declared=self.declared or bool(changes))


# -- built-in networks ---------------------------------------------------------------------


INPUT_ATTRIBUTE = "biotune_input"  # your model's own input format, declared on it


def module_input(net: nn.Module) -> InputSpec:
    """Your own model's input: what it declares as ``biotune_input`` (a dict of ``size``,
    and optionally ``channels``, ``mean`` and ``std``, one value or one per channel), else a
    guess: its first convolution's channels, 224 pixels, ImageNet's normalisation for
    colour, 0.5 and 0.5 otherwise (``declared`` False, so the user is told)."""
    conv = next((m for m in net.modules() if isinstance(m, nn.Conv2d)), None)
    channels = conv.in_channels if conv is not None else 3
    guess = (InputSpec(3, 224, IMAGENET_MEAN, IMAGENET_STD, resize=256, declared=False)
             if channels == 3 else InputSpec(channels, 224, GRAY_MEAN * channels,
                                             GRAY_STD * channels, resize=256, declared=False))
    declared = getattr(net, INPUT_ATTRIBUTE, None)
    if declared is None:
        return guess
    if (not isinstance(declared, dict) or "size" not in declared or
            set(declared) - {"size", "channels", "mean", "std"}):
        raise ModelError(f"{type(net).__name__}.{INPUT_ATTRIBUTE} must be a dict with size "
                         "and optionally channels, mean and std, such as {'size': 48, "
                         "'mean': 0.5, 'std': 0.5}")
    spec = replace(guess, channels=int(declared.get("channels", channels)))
    if spec.channels != guess.channels:
        spec = replace(spec, mean=(spec.mean[0],) * spec.channels,
                       std=(spec.std[0],) * spec.channels)
    as_list = [v if isinstance(v, (list, tuple)) else [v] for v in
               (declared.get("mean", spec.mean), declared.get("std", spec.std))]
    return replace(spec.overridden(int(declared["size"]), *as_list), declared=True)
