"""Assemble a fine-tuning task from names: the dataset (decoded at the model's input size),
the model with its weights (a built-in model's source dataset is pretrained first), its
blocks and the splits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from biotune_optuna.finetuning.blocks import partition
from biotune_optuna.finetuning.cache import DEFAULT_MAX_BYTES, ActivationCache
from biotune_optuna.finetuning.data import ImageData, load_dataset
from biotune_optuna.finetuning.inputs import INPUT_ATTRIBUTE
from biotune_optuna.finetuning.models import LoadedModel, attach_head, build_model
from biotune_optuna.finetuning.names import BUILTIN_MODELS, ModelError, default_weights
from biotune_optuna.finetuning.pretrain import pretrained_checkpoint
from biotune_optuna.finetuning.splits import make_splits
from biotune_optuna.finetuning.task import Task
from biotune_optuna.finetuning.train import adapt, split_output

AS_BUILT = "as built"  # the weights of a model passed as an nn.Module: whatever it held
MIN_IMAGE_SIZE = 8  # below this a convolutional network has nothing left to learn from


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
               head: str | None = None, input_mean: Sequence[float] | None = None,
               input_std: Sequence[float] | None = None,
               activation_cache_mb: int | None = DEFAULT_MAX_BYTES // 2**20) -> Task:
    """A fine-tuning task: the model (see :func:`.models.build_model`: a name, ``timm:<name>``,
    ``module:function`` or an ``nn.Module``) with a new head (``head`` names the classifier
    to replace), its blocks (the head's block last), the dataset decoded at the model's input
    size, and its splits. ``activation_cache_mb`` bounds the frozen-prefix activation cache
    (None or 0: off).

    The input format is the weights' own for torchvision and timm models, 1 x 28 px for the
    built-in ones, and for your own model what it declares as ``biotune_input`` (else a guess:
    224 px with ImageNet's normalisation, ``task.model.input.declared`` False); ``image_size``,
    ``input_mean`` and ``input_std`` (one value, or one per channel) override it. The model
    is run once on two training images before anything else happens, so an input it cannot
    take is a :class:`ModelError` naming the fix."""
    name = model if isinstance(model, str) else None
    resolved = resolve_weights(name, weights, pretrain_seed) if name else weights
    net, spec, label = build_model(model, resolved, pretrain_seed)
    spec = spec.overridden(image_size, input_mean, input_std)
    if spec.size < MIN_IMAGE_SIZE:
        raise ModelError(f"an input of {spec.size} px is too small to fine-tune on; give "
                         f"--image-size {MIN_IMAGE_SIZE} or more")
    data = load_dataset(dataset, root=data_root, download=download, image_size=spec.size,
                        resize=spec.resize, workers=workers)
    loaded = attach_head(net, spec, label, data.num_classes, resolved, pretrain_seed, head)
    if name and weights is None:
        weights = default_weights(name)
    loaded = replace(loaded, weights=str(weights))  # the name, not the cached file
    splits = make_splits(data, shots, val_shots, split_seed, max_test=max_test)
    probe(loaded, data, splits.train[:2])
    cache = ActivationCache(activation_cache_mb * 2**20) if activation_cache_mb else None
    options = dict(model=loaded.name, weights=loaded.weights if name else AS_BUILT,
                   dataset=dataset, shots=shots, val_shots=val_shots, split_seed=split_seed,
                   image_size=image_size, head=head, input_mean=input_mean,
                   input_std=input_std)
    return Task(loaded, partition(loaded.model, target_blocks, heads=loaded.heads), data,
                splits, cache, options)


def probe(loaded: LoadedModel, data: ImageData, indices) -> None:
    """One forward pass on real images: a model that cannot take its input, or does not
    answer with one logit per class, is refused before any study or trial exists."""
    images, _ = next(data.batches(indices, len(indices)))
    model = loaded.model.eval()
    spec = loaded.input
    try:
        with torch.no_grad():
            logits, _ = split_output(model(adapt(images, spec)))
    except Exception as error:
        raise ModelError(
            f"{loaded.name} fails on {spec.describe()} ({error.__class__.__name__}: "
            f"{str(error).splitlines()[0]}); declare the model's input format ("
            f"{INPUT_ATTRIBUTE} on the model, or --image-size, --input-mean and --input-std)"
        ) from None
    if logits.ndim != 2 or logits.shape[1] != data.num_classes:
        raise ModelError(f"{loaded.name} answers {tuple(logits.shape)} for {len(indices)} "
                         f"images, not one logit per class ({data.num_classes}); name its "
                         "classifier with --head")
