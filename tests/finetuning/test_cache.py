"""The frozen-prefix activation cache is exact: the same validation values and test metrics
as training from the images, for several plans and models; models that are not a chain of
blocks, and random layers in the prefix, fall back to the plain path; memory stays bounded."""

import dataclasses

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from biotune_optuna.finetuning.blocks import partition
from biotune_optuna.finetuning.build import build_task
from biotune_optuna.finetuning.cache import ActivationCache, is_random, stages
from biotune_optuna.finetuning.models import LoadedModel, replace_head
from biotune_optuna.finetuning.task import Task
from biotune_optuna.finetuning.train import TrainConfig, fine_tune
from biotune_optuna.sampler.plan import FineTunePlan


def freeze_first(task, k):
    n = len(task.blocks)
    return FineTunePlan(tuple(task.block_names), tuple(0.0 if i < k else 1.0 + i / 10
                                                         for i in range(n)))


def assert_same_runs(task, plan, config, seed=3):
    cached = fine_tune(task, plan, config, seed, evaluate_test=True)
    plain = fine_tune(dataclasses.replace(task, activation_cache=None), plan, config, seed,
                      evaluate_test=True)
    assert cached.history == plain.history  # every epoch's validation value, to the last bit
    assert cached.test == plain.test
    return cached


@pytest.mark.parametrize("model", ["tiny", "small"])
@pytest.mark.slow
def test_cached_runs_equal_plain_runs_for_every_frozen_depth(model):
    task = build_task(model, "digits", shots=10, split_seed=0)
    config = TrainConfig(epochs=4, patience=4)
    for depth in range(len(task.blocks)):
        run = assert_same_runs(task, freeze_first(task, depth), config)
        assert run.frozen_prefix == depth
    assert task.activation_cache.hits > 0


@pytest.mark.slow
def test_a_torchvision_resnet_and_a_deeper_prefix_reuse_the_cache():
    task = build_task("small", "digits", shots=5, split_seed=1)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        resnet = torchvision.models.resnet18(num_classes=1000)
    heads = replace_head(resnet, 10)
    loaded = LoadedModel(resnet, heads, dataclasses.replace(task.model.input, channels=3,
                                                              size=32), "resnet18", "none")
    task = Task(loaded, partition(resnet), task.data, task.splits, ActivationCache())
    config = TrainConfig(epochs=2, patience=2)
    assert_same_runs(task, freeze_first(task, 2), config)
    misses = task.activation_cache.misses
    assert_same_runs(task, freeze_first(task, 4), config)  # from the cached boundary 1
    assert task.activation_cache.misses > misses


@pytest.mark.slow
def test_models_that_are_not_a_chain_and_random_prefixes_take_the_plain_path():
    densenet = torchvision.models.densenet121(num_classes=3)
    assert stages(densenet, partition(densenet)) is None
    vgg = torchvision.models.vgg11(num_classes=3)
    chain = stages(vgg, partition(vgg))
    assert chain is not None and is_random(chain[-1]) and not is_random(chain[0])

    class Dropped(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(1, 4, 3)
            self.drop = nn.Sequential(nn.Dropout(0.5), nn.Conv2d(4, 4, 3))
            self.head = nn.Linear(4, 10)

        def forward(self, x):
            return self.head(self.drop(self.stem(x)).mean((2, 3)))

    task = build_task("tiny", "digits", shots=5, split_seed=0)
    model = Dropped()
    loaded = LoadedModel(model, ["head"], task.model.input, "dropped", "none")
    blocks = [b for b in partition(model)]
    task = Task(loaded, blocks, task.data, task.splits, ActivationCache())
    plan = FineTunePlan(tuple(b.name for b in blocks), (0.0, 0.0, 1.0))
    run = fine_tune(task, plan, TrainConfig(epochs=1), seed=0)
    assert [b.name for b in blocks] == ["stem", "drop", "head"]
    assert run.frozen_prefix == 1  # the dropout's block is computed every time


def test_the_cache_stays_within_its_memory_bound():
    cache = ActivationCache(max_bytes=3 * 100 * 4 * 8)
    for boundary in range(5):
        cache.rows(boundary, np.arange(100), lambda idx, start, inputs: torch.zeros(len(idx), 8))
        assert cache.nbytes <= cache.max_bytes
    assert cache.rows(4, np.arange(3), lambda *a: pytest.fail("recomputed")).shape == (3, 8)
