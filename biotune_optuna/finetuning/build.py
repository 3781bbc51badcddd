"""Assemble a fine-tuning task from names: the dataset (decoded at the model's input size),
the model with its weights (a built-in model's source dataset is pretrained first), its
blocks and the splits."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from torch import nn

from biotune_optuna.finetuning.blocks import partition
from biotune_optuna.finetuning.cache import DEFAULT_MAX_BYTES, ActivationCache
from biotune_optuna.finetuning.data import load_dataset, make_splits
from biotune_optuna.finetuning.models import attach_head, build_model
from biotune_optuna.finetuning.names import BUILTIN_MODELS, default_weights
from biotune_optuna.finetuning.pretrain import pretrained_checkpoint
from biotune_optuna.finetuning.task import Task


def resolve_weights(model: str, weights: str | None, seed: int = 0) -> str | None:
    """Weights ``load_model`` can load: :func:`default_weights` when none are named, and a
    built-in model's source dataset becomes its pretrained checkpoint."""
    weights = default_weights(model) if weights is None else weights
    if model not in BUILTIN_MODELS or weights == "none" or Path(weights).suffix:
        return weights
    return str(pretrained_checkpoint(model, weights, seed))


def build_task(model: str | nn.Module, dataset: str, *, weights: str | None = None,
               shots: int | None = None, val_shots: int | None = None, split_seed: int = 0,
               data_root: str | None = None, download: bool = False,
               image_size: int | None = None, max_test: int | None = None,
               pretrain_seed: int = 0, workers: int = 0, target_blocks: int = 8,
               head: str | None = None,
               activation_cache_mb: int | None = DEFAULT_MAX_BYTES // 2**20) -> Task:
    """A fine-tuning task: the model (see :func:`.models.build_model`: a name, ``timm:<name>``,
    ``module:function`` or an ``nn.Module``) with a new head (``head`` names the classifier
    to replace), its blocks (the head's block last), the dataset decoded at the model's input
    size, and its splits. ``activation_cache_mb`` bounds the frozen-prefix activation cache
    (None or 0: off)."""
    name = model if isinstance(model, str) else None
    resolved = resolve_weights(name, weights, pretrain_seed) if name else weights
    net, spec, label = build_model(model, resolved, pretrain_seed)
    if image_size:
        spec = replace(spec, size=image_size, resize=None)
    data = load_dataset(dataset, root=data_root, download=download, image_size=spec.size,
                        resize=spec.resize, workers=workers)
    loaded = attach_head(net, spec, label, data.num_classes, resolved, pretrain_seed, head)
    if name and weights is None:
        weights = default_weights(name)
    loaded = replace(loaded, weights=str(weights))  # the name, not the cached file
    splits = make_splits(data, shots, val_shots, split_seed, max_test=max_test)
    cache = ActivationCache(activation_cache_mb * 2**20) if activation_cache_mb else None
    return Task(loaded, partition(loaded.model, target_blocks, heads=loaded.heads), data,
                splits, cache)
