"""Pretraining of the built-in CPU models on an offline source dataset. The result is a
backbone checkpoint (no head: each target task gets a new one), cached on disk so the demo,
the tests and the benchmarks pretrain once per (model, source, seed)."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import torch

from biotune_optuna.finetuning.blocks import partition
from biotune_optuna.finetuning.data import load_dataset
from biotune_optuna.finetuning.models import LoadedModel, ModelError, cache_dir, head_names
from biotune_optuna.finetuning.names import BUILTIN_DATASETS
from biotune_optuna.finetuning.networks import BUILTIN_CLASSES, BUILTIN_INPUT
from biotune_optuna.finetuning.seeding import SeededDraws
from biotune_optuna.finetuning.splits import make_splits
from biotune_optuna.finetuning.task import Task
from biotune_optuna.finetuning.train import TrainConfig, fine_tune
from biotune_optuna.sampler.plan import FineTunePlan

logger = logging.getLogger(__name__)
PRETRAIN_EPOCHS = 8
CACHE_VERSION = 3  # bump when pretraining or the file changes, so stale caches are not reused


def pretrained_checkpoint(name: str, source: str, seed: int = 0) -> Path:
    """The backbone of built-in model ``name`` trained on all of ``source`` (10 % held out
    to pick the best epoch): its cached file, made first if needed."""
    if source not in BUILTIN_DATASETS:
        raise ModelError(f"built-in models pretrain on {', '.join(BUILTIN_DATASETS)}, not "
                         f"{source!r}; or pass a checkpoint file or none as weights")
    path = cache_dir() / "pretrained" / f"{name}-{source}-seed{seed}-v{CACHE_VERSION}.pt"
    if path.is_file():
        return path
    data = load_dataset(source)
    with SeededDraws(seed):  # the initial weights depend on the seed alone
        model = BUILTIN_CLASSES[name](num_classes=data.num_classes)
    splits = make_splits(data, val_fraction=0.1, test_fraction=0.0, seed=seed)
    heads = head_names(model)
    task = Task(LoadedModel(model, heads, BUILTIN_INPUT, name, "none"), partition(model),
                data, splits)
    plan = FineTunePlan(tuple(task.block_names), (1.0,) * len(task.blocks))
    config = TrainConfig(epochs=PRETRAIN_EPOCHS, patience=PRETRAIN_EPOCHS, batch_size=128)
    logger.info("pretraining %s on %s (%d images, seed %d), cached in %s", name, source,
                len(splits.train), seed, path)
    result = fine_tune(task, plan, config, seed, keep_model=True)
    logger.info("pretrained %s on %s: validation accuracy %.3f in %.0f s", name, source,
                result.val.accuracy, result.seconds)
    backbone = {k: v for k, v in result.model.state_dict().items()
                if not k.startswith(tuple(f"{h}." for h in heads))}
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as handle:
        torch.save({"state_dict": backbone, "source": source,
                    "val_accuracy": result.val.accuracy}, handle)
    os.replace(handle.name, path)  # atomic: a concurrent reader never sees half a file
    return path
