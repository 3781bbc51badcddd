"""Models: torchvision networks by name with their weights, two built-in CPU networks
pretrained on an offline source dataset, a new head for the target classes, and the input
format each model expects."""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torchvision
from torch import nn

from biotune_optuna.finetuning.names import BUILTIN_MODELS, ModelError

logger = logging.getLogger(__name__)

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

def _conv_bn(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


class TinyCNN(nn.Module):
    """About 6k parameters: three conv stages and a linear head, for fast tests."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.stem = nn.Sequential(_conv_bn(in_channels, 8, 2))
        self.stage1 = _conv_bn(8, 16, 2)
        self.stage2 = _conv_bn(16, 32, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage2(self.stage1(self.stem(x)))
        return self.head(torch.flatten(self.pool(x), 1))

    def biotune_blocks(self) -> list[tuple[str, list[str]]]:
        return [(n, [n]) for n in ("stem", "stage1", "stage2", "head")]


class BasicBlock(nn.Module):
    """ResNet's basic residual block with a projection shortcut when the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _conv_bn(c_in, c_out, stride)
        self.conv2 = nn.Sequential(nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False),
                                   nn.BatchNorm2d(c_out))
        self.shortcut = nn.Identity() if stride == 1 and c_in == c_out else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class SmallResNet(nn.Module):
    """About 0.3M parameters, ResNet-style, downsampling at every stage (fast on a CPU)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.stem = _conv_bn(in_channels, 16, 2)
        self.stage1 = BasicBlock(16, 32, 2)
        self.stage2 = BasicBlock(32, 64, 2)
        self.stage3 = BasicBlock(64, 128, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage3(self.stage2(self.stage1(self.stem(x))))
        return self.head(torch.flatten(self.pool(x), 1))

    def biotune_blocks(self) -> list[tuple[str, list[str]]]:
        return [(n, [n]) for n in ("stem", "stage1", "stage2", "stage3", "head")]


BUILTIN_CLASSES = {"tiny": TinyCNN, "small": SmallResNet}
BUILTIN_INPUT = InputSpec(1, 28, GRAY_MEAN, GRAY_STD)


# -- heads ---------------------------------------------------------------------------------

def replace_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Put ``module`` where the submodule ``name`` is (nn.Module.set_submodule needs torch
    2.3)."""
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, module)


def head_names(model: nn.Module, head: str | None = None) -> list[str]:
    """The classification layers a new task replaces, the main one last: ``head`` when
    named, else the last registered ``nn.Linear`` (and, for Inception v3, the auxiliary
    classifier's too)."""
    linear = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if head is not None:
        if head not in linear:
            raise ModelError(f"{type(model).__name__} has no nn.Linear named {head!r}; its "
                             f"linear layers are {', '.join(linear) or 'none'}")
        return [head]
    if not linear:
        raise ModelError(f"{type(model).__name__} has no nn.Linear classifier to replace; "
                         "give it a linear head (and name it with --head)")
    names = [linear[-1]]
    if hasattr(model, "AuxLogits") and model.AuxLogits is not None:
        names.insert(0, "AuxLogits.fc")
    return names


def replace_head(model: nn.Module, num_classes: int, head: str | None = None) -> list[str]:
    """Give the model new, randomly initialised heads for ``num_classes``; return their names."""
    names = head_names(model, head)
    for name in names:
        old = model.get_submodule(name)
        new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
        replace_module(model, name, new)
    return names


def reset_heads(model: nn.Module, names: Sequence[str], seed: int) -> None:
    """Re-draw head weights from ``seed``: each fine-tuning seed starts from its own head."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    for name in names:
        model.get_submodule(name).reset_parameters()
    torch.random.set_rng_state(generator_state)


# -- weights -------------------------------------------------------------------------------

def _torchvision_names() -> list[str]:
    return sorted(torchvision.models.list_models(module=torchvision.models))


def is_torchvision_model(name: str) -> bool:
    return name in _torchvision_names()


def _load_checkpoint(model: nn.Module, path: Path, heads: Sequence[str]) -> list[str]:
    """Load a state dict (or a dict holding one under 'state_dict' or 'model'); head
    tensors whose shape differs (another class count) are left at their new values. Every
    tensor the model has (but the head) must be there with its shape; tensors the model
    does not have (another head, an auxiliary branch) are ignored, and returned so the
    user is told which."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a pickle error, a zip error, a truncated file...
        raise ModelError(f"cannot read checkpoint {path}: {error.__class__.__name__}; pass a "
                         "file saved with torch.save(model.state_dict(), path)") from None
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
    if not isinstance(state, dict):
        raise ModelError(f"checkpoint {path} holds no state dict; save model.state_dict()")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = model.state_dict()
    head_prefixes = tuple(f"{h}." for h in heads)
    mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape
                  and not k.startswith(head_prefixes)]
    missing = [k for k in own if k not in state and not k.startswith(head_prefixes)]
    if mismatched or missing:
        problem = mismatched[0] if mismatched else missing[0]
        raise ModelError(f"checkpoint {path} does not fit {type(model).__name__}: "
                         f"{len(mismatched)} tensors of another shape, {len(missing)} missing "
                         f"(first: {problem}); check the model name")
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(usable, strict=False)
    return [k for k in state if k not in own]


def _check_torchvision_name(name: str) -> None:
    if name not in _torchvision_names():
        raise ModelError(f"unknown model {name!r}; use tiny, small or a torchvision model "
                         "name (resnet50, densenet121, ...: torchvision.models.list_models())")


def _weights_enum(name: str, weights: str | None):
    """The torchvision weights enum member named ``weights`` (None for none or a file)."""
    if weights in (None, "none") or Path(weights).suffix:
        return None
    try:
        return torchvision.models.get_model_weights(name)[weights]
    except KeyError:
        options = [w.name for w in torchvision.models.get_model_weights(name)]
        raise ModelError(f"unknown weights {weights!r} for {name}; use one of "
                         f"{', '.join(['DEFAULT', *options])}, a checkpoint file or none"
                         ) from None


def input_spec(name: str, weights: str | None = None) -> InputSpec:
    """The input a model expects: the weights' own preprocessing when they define it (crop,
    resize, mean, std), ImageNet's otherwise; 1x28x28 for the built-in models."""
    if name in BUILTIN_MODELS:
        return BUILTIN_INPUT
    _check_torchvision_name(name)
    enum = _weights_enum(name, weights)
    size = 299 if name == "inception_v3" else 224
    if enum is None:
        return InputSpec(3, size, IMAGENET_MEAN, IMAGENET_STD, resize=int(size * 256 / 224))
    preset = enum.transforms()

    def first(value) -> int:
        return int(value[0] if isinstance(value, (list, tuple)) else value)

    return InputSpec(3, first(preset.crop_size), tuple(preset.mean), tuple(preset.std),
                     resize=first(preset.resize_size))


def _torchvision_model(name: str, weights: str | None) -> nn.Module:
    _check_torchvision_name(name)
    enum = _weights_enum(name, weights)
    kwargs = {"aux_logits": True, "init_weights": False} if name == "inception_v3" else {}
    try:
        return torchvision.models.get_model(name, weights=enum, **kwargs)
    except (OSError, RuntimeError) as error:  # URLError is an OSError
        raise ModelError(f"cannot fetch weights {weights} for {name} ({error.__class__.__name__}"
                         f"); without internet put the file in {torch.hub.get_dir()}/checkpoints"
                         ", pass --weights PATH.pt, or --weights none to start from random "
                         "weights") from None


def cache_dir() -> Path:
    """Where pretrained built-in models are cached (BIOTUNE_OPTUNA_CACHE overrides)."""
    default = Path.home() / ".cache" / "biotune_optuna"
    return Path(os.environ.get("BIOTUNE_OPTUNA_CACHE", default))


@dataclass
class LoadedModel:
    """A network with its new head(s), its input format and where its weights came from."""

    model: nn.Module
    heads: list[str]
    input: InputSpec
    name: str
    weights: str
    notes: list[str] = field(default_factory=list)  # what loading skipped (said to the user)

    def fresh(self, seed: int) -> nn.Module:
        """A copy of the pre-trained network whose heads are drawn from ``seed``."""
        model = copy.deepcopy(self.model)
        reset_heads(model, self.heads, seed)
        return model


def build_model(model: str | nn.Module, weights: str | None = None, seed: int = 0,
                ) -> tuple[nn.Module, InputSpec, str]:
    """The network before its new head, the input it expects, and its name.

    ``model`` is ``tiny`` or ``small`` (built in), a torchvision model name (``resnet50``),
    ``timm:<name>`` (timm's models, ``pip install timm``), ``module:function`` (a function,
    importable from the current directory, that returns an ``nn.Module``: how a command
    line names your own model), or an ``nn.Module`` (the Python API; it is copied).
    """
    checkpoint = _checkpoint(weights)
    with torch.random.fork_rng():  # whatever is not loaded is drawn from the seed alone
        torch.manual_seed(seed)
        if isinstance(model, nn.Module):
            net = copy.deepcopy(model)
            return net, _module_input(net), type(model).__name__
        if model in BUILTIN_MODELS:
            if checkpoint is None and weights not in (None, "none"):
                raise ModelError(f"built-in model {model} takes a checkpoint file or none as "
                                 f"weights, not {weights!r}; pretrain one with "
                                 "finetuning.pretrain")
            return BUILTIN_CLASSES[model](), BUILTIN_INPUT, model
        if model.startswith("timm:"):
            return (*_timm_model(model.removeprefix("timm:"), None if checkpoint else weights),
                    model)
        if ":" in model:
            net = _from_factory(model)
            return net, _module_input(net), model
        net = _torchvision_model(model, None if checkpoint else weights)
        return net, input_spec(model, None if checkpoint else weights), model


def load_model(model: str | nn.Module, num_classes: int, weights: str | None = None,
               pretrain_seed: int = 0, head: str | None = None) -> LoadedModel:
    """Build a model (see :func:`build_model`) with a new head for ``num_classes`` classes.

    Args:
        model: What :func:`build_model` accepts.
        num_classes: Classes of the target task.
        weights: For torchvision and timm models a weights name (``DEFAULT``,
            ``IMAGENET1K_V2``), a checkpoint path, or None/"none". For the built-in models a
            checkpoint path or None/"none" (:func:`biotune_optuna.finetuning.pretrain.
            pretrained_checkpoint` makes one from a source dataset). For your own model a
            checkpoint path (loaded strictly but for the head), or None: as built.
        pretrain_seed: Seed of whatever is not loaded (random layers, new heads).
        head: The classifier to replace (an ``nn.Linear``'s name); default: the model's
            declared classifier, else its last ``nn.Linear``.
    """
    net, spec, name = build_model(model, weights, pretrain_seed)
    return attach_head(net, spec, name, num_classes, weights, pretrain_seed, head)


def attach_head(net: nn.Module, spec: InputSpec, name: str, num_classes: int,
                weights: str | None = None, seed: int = 0, head: str | None = None,
                ) -> LoadedModel:
    """Give ``net`` its new head(s) and load a checkpoint named by ``weights``."""
    if num_classes < 2:
        raise ModelError(f"a classifier needs at least 2 classes, the dataset has {num_classes}")
    head = head or getattr(net, "biotune_head", None)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        heads = replace_head(net, num_classes, head)
    checkpoint = _checkpoint(weights)
    notes = []
    if checkpoint is not None:
        ignored = _load_checkpoint(net, checkpoint, heads)
        if ignored:
            shown = ", ".join(ignored[:4]) + (", ..." if len(ignored) > 4 else "")
            notes.append(f"{len(ignored)} tensor(s) of {checkpoint.name} are not in {name} and "
                         f"were ignored ({shown}); every tensor the model has was loaded")
    return LoadedModel(net, heads, spec, name, str(weights), notes)


def _checkpoint(weights: str | None) -> Path | None:
    checkpoint = Path(weights) if weights and Path(weights).suffix else None
    if checkpoint is not None and not checkpoint.is_file():
        raise ModelError(f"checkpoint {checkpoint} does not exist; give the path of a .pt file")
    return checkpoint


INPUT_ATTRIBUTE = "biotune_input"  # your model's own input format, declared on it


def _module_input(net: nn.Module) -> InputSpec:
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


def _from_factory(reference: str) -> nn.Module:
    """Call ``module:function`` (importable from the current directory)."""
    import importlib
    import sys

    module_name, _, function = reference.partition(":")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        factory = getattr(importlib.import_module(module_name), function)
    except (ImportError, AttributeError) as error:
        raise ModelError(f"cannot import {reference} ({error.__class__.__name__}: {error}); "
                         "give module:function of a function returning an nn.Module, "
                         "importable from the current directory") from None
    net = factory()
    if not isinstance(net, nn.Module):
        raise ModelError(f"{reference} returned a {type(net).__name__}, not an nn.Module")
    return net


def _timm_model(name: str, weights: str | None) -> tuple[nn.Module, InputSpec]:
    try:
        import timm
    except ImportError:
        raise ModelError("timm models need timm: pip install 'biotune-optuna[timm]'") from None
    if weights not in (None, "none", "DEFAULT"):
        raise ModelError(f"timm model {name} takes DEFAULT, a checkpoint file or none as "
                         f"weights, not {weights!r}")
    try:
        net = timm.create_model(name, pretrained=weights == "DEFAULT")
    except RuntimeError as error:  # an unknown name
        raise ModelError(f"unknown timm model {name!r} ({error}); see timm.list_models()"
                         ) from None
    except OSError as error:  # no connection to the hub
        raise ModelError(f"cannot fetch timm weights for {name} ({error.__class__.__name__});"
                         " pass --weights PATH.pt or --weights none") from None
    config = timm.data.resolve_data_config({}, model=net)
    _, height, _ = config["input_size"]
    resize = int(round(height / config.get("crop_pct", 0.875)))
    classifier = net.pretrained_cfg.get("classifier")
    net.biotune_head = classifier[0] if isinstance(classifier, (list, tuple)) else classifier
    return net, InputSpec(3, height, tuple(config["mean"]), tuple(config["std"]), resize=resize)
