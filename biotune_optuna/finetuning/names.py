"""What the fine-tuning engine understands, by name, importable without torch (the command
line shows these in its help and checks options against them before loading anything)."""

OPTIMIZERS = ("adam", "adamw", "sgd")
METRICS = ("balanced_accuracy", "accuracy")
BUILTIN_MODELS = ("tiny", "small")
BUILTIN_DATASETS = ("digits", "mnist5k", "fashion")
BASELINES = ("full", "linear", "l2sp", "l1sp", "autorgn", "lora")


class DataError(ValueError):
    """A dataset the user named cannot be used (one-line message naming the fix)."""


class ModelError(ValueError):
    """A model, weight or checkpoint the user named cannot be used (one-line message)."""
