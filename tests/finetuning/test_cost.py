"""The training-cost model: a network's blocks profiled once, a plan's FLOPs and memory from
them. Whether it ranks plans like the clock is benchmarks/training_cost.py's question."""

import itertools

import pytest
import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

from biotune_optuna.finetuning.blocks import partition
from biotune_optuna.finetuning.cost import BlockCosts, profile
from biotune_optuna.finetuning.networks import SmallResNet
from biotune_optuna.sampler.plan import FineTunePlan


def network_flops(model, shape):
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, *shape))
    return counter.get_total_flops()


@pytest.mark.parametrize("build, shape", [
    (lambda: torchvision.models.resnet18(num_classes=7), (3, 64, 64)),
    (lambda: torchvision.models.mobilenet_v3_small(num_classes=7), (3, 64, 64)),
    (lambda: SmallResNet(num_classes=7), (1, 28, 28)),
])
def test_the_blocks_account_for_every_flop_and_parameter(build, shape):
    model = build()
    blocks = partition(model)
    costs = profile(model, blocks, shape)
    assert sum(costs.flops) == pytest.approx(network_flops(model, shape))
    assert sum(costs.params) == sum(p.numel() for p in model.parameters())
    assert all(s > 0 for s in costs.saved_bytes)


def test_profiling_leaves_the_model_as_it_was():
    model = torchvision.models.resnet18(num_classes=3)
    model.layer1.requires_grad_(False)
    model.train()
    before = {n: p.requires_grad for n, p in model.named_parameters()}
    profile(model, partition(model), (3, 32, 32))
    assert {n: p.requires_grad for n, p in model.named_parameters()} == before
    assert model.training
    hooks = [m for m in model.modules() if m._forward_hooks or m._forward_pre_hooks]
    assert hooks == []


COSTS = BlockCosts(("a", "b", "c", "d"), flops=(4.0, 3.0, 2.0, 1.0),
                   saved_bytes=(40.0, 30.0, 20.0, 10.0), params=(1, 2, 3, 4))


def plan(*trained):
    return FineTunePlan(COSTS.block_names, tuple(1.0 if t else 0.0 for t in trained))


def test_a_plans_flops_count_forward_input_gradients_and_weight_gradients():
    # forward 10, input gradients above block a 6, weight gradients 10
    assert plan(1, 1, 1, 1).training_flops(COSTS.flops) == 26
    # the head alone: its forward and its weight gradients
    assert plan(0, 0, 0, 1).training_flops(COSTS.flops) == 2
    # b and d: forward from b (6), input gradients through c and d (3), weights of b and d (4)
    assert plan(0, 1, 0, 1).training_flops(COSTS.flops) == 13
    # without the activation cache the frozen prefix runs forward every epoch too
    assert plan(0, 1, 0, 1).training_flops(COSTS.flops, cached_prefix=False) == 17
    assert plan(0, 0, 0, 0).training_flops(COSTS.flops) == 0


def test_memory_counts_weights_optimizer_state_and_saved_activations():
    mb = 2**20
    # Adam: weights 10 x 4 bytes; c and d: gradient + 2 moments, 7 x 12 bytes; batch 2 of 30
    assert COSTS.memory_mb(plan(0, 0, 1, 1), 2, "adam") * mb == pytest.approx(40 + 84 + 60)
    assert COSTS.memory_mb(plan(0, 0, 1, 1), 2, "sgd") * mb == pytest.approx(40 + 56 + 60)
    assert COSTS.memory_mb(plan(0, 0, 0, 0), 2) * mb == pytest.approx(40)


def test_training_more_blocks_never_costs_less():
    plans = [plan(*bits) for bits in itertools.product((0, 1), repeat=4)]
    for smaller, larger in itertools.product(plans, repeat=2):
        if all(s <= g for s, g in zip(smaller.trained, larger.trained)):
            assert smaller.training_flops(COSTS.flops) <= larger.training_flops(COSTS.flops)
            assert COSTS.memory_mb(smaller, 8) <= COSTS.memory_mb(larger, 8)
    assert COSTS.full_gflops() * 1e9 == 26
