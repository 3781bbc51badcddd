"""Block partitions by module names: torchvision families, the paper's tables, any module."""

import pytest
import torch
import torchvision
from torch import nn

from biotune_optuna.finetuning.blocks import coverage_problem, generic_partition, partition
from biotune_optuna.finetuning.networks import SmallResNet, TinyCNN

FAMILIES = {
    "resnet50": 6, "resnext50_32x4d": 6, "wide_resnet50_2": 6, "densenet121": 9, "vgg19": 6,
    "vgg16_bn": 6, "inception_v3": 14, "mobilenet_v2": 10, "mobilenet_v3_large": 9,
    "efficientnet_b0": 10, "efficientnet_v2_s": 9, "convnext_tiny": 9, "regnet_y_400mf": 6,
}


def build(name):
    kwargs = {"aux_logits": True, "init_weights": False} if name == "inception_v3" else {}
    return torchvision.models.get_model(name, weights=None, **kwargs)


@pytest.mark.parametrize("name, n_blocks", FAMILIES.items())
@pytest.mark.slow
def test_family_partitions_cover_every_parameter_once(name, n_blocks):
    model = build(name)
    blocks = partition(model)
    assert coverage_problem(model, blocks) is None
    assert len(blocks) == n_blocks
    assert sum(b.n_params for b in blocks) == sum(p.numel() for p in model.parameters())


def index_ranges(model, blocks):
    order = {name: i for i, (name, _) in enumerate(model.named_parameters())}
    return [(min(order[p] for p in b.params), max(order[p] for p in b.params)) for b in blocks]


def shares(blocks):
    total = sum(b.n_params for b in blocks)
    return [round(100 * b.n_params / total, 2) for b in blocks]


def test_resnet50_matches_the_paper_table():
    model = build("resnet50")
    blocks = partition(model)
    assert [b.name for b in blocks] == ["stem", "layer1", "layer2", "layer3", "layer4", "fc"]
    assert index_ranges(model, blocks) == [(0, 2), (3, 32), (33, 71), (72, 128), (129, 158),
                                           (159, 160)]
    assert shares(blocks) == [0.04, 0.84, 4.77, 27.77, 58.55, 8.02]


def test_densenet121_matches_the_paper_table_with_norm5_in_the_head():
    model = build("densenet121")
    blocks = partition(model)
    assert index_ranges(model, blocks) == [(0, 2), (3, 38), (39, 41), (42, 113), (114, 116),
                                           (117, 260), (261, 263), (264, 359), (360, 363)]
    assert shares(blocks) == [0.12, 4.20, 0.42, 11.53, 1.66, 35.57, 6.60, 27.05, 12.87]
    assert blocks[-1].modules == ("features.norm5", "classifier")


@pytest.mark.slow
def test_vgg19_and_inception_match_the_paper_tables():
    vgg = build("vgg19")
    assert index_ranges(vgg, partition(vgg)) == [(0, 3), (4, 7), (8, 15), (16, 23), (24, 31),
                                                 (32, 37)]
    inception = build("inception_v3")
    blocks = partition(inception)
    assert index_ranges(inception, blocks)[9] == (210, 217)
    assert blocks[9].name == "AuxLogits"
    assert shares(blocks)[-1] == 7.54


def test_builtin_models_define_their_blocks():
    assert [b.name for b in partition(TinyCNN())] == ["stem", "stage1", "stage2", "head"]
    small = SmallResNet()
    assert [b.name for b in partition(small)] == ["stem", "stage1", "stage2", "stage3", "head"]
    assert 250_000 < sum(p.numel() for p in small.parameters()) < 350_000
    assert sum(p.numel() for p in TinyCNN().parameters()) < 10_000


class WithOwnParameters(nn.Module):
    def __init__(self):
        super().__init__()
        self.token = nn.Parameter(torch.zeros(4))
        self.body = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Sequential(
            nn.Linear(8, 8), nn.Linear(8, 8)))
        self.body.scale = nn.Parameter(torch.ones(1))
        self.head = nn.Linear(8, 2)


def test_generic_partition_splits_large_containers_and_keeps_own_parameters():
    model = WithOwnParameters()
    blocks = generic_partition(model, target_blocks=6)
    assert coverage_problem(model, blocks) is None
    names = [b.name for b in blocks]
    assert names[0] == "root_own" and "body_own" in names and "head" in names
    assert len(blocks) >= 5


def test_generic_partition_of_a_vision_transformer_covers_everything():
    model = torchvision.models.vit_b_16(weights=None)
    blocks = partition(model, target_blocks=8)
    assert coverage_problem(model, blocks) is None
    assert len(blocks) >= 8
