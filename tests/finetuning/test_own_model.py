"""Bringing your own model: any nn.Module (or a module:function factory, or timm:<name>),
an explicit head that is always the last block, tuple outputs, generic blocks that keep
parameter-light layers with their weight layer, and tables that fall back when they do not
fit."""

import sys

import pytest
import torch
from torch import nn

from biotune_optuna.finetuning.blocks import partition
from biotune_optuna.finetuning.build import build_task
from biotune_optuna.finetuning.names import ModelError
from biotune_optuna.finetuning.train import TrainConfig, fine_tune
from biotune_optuna.sampler import genome


class HeadFirst(nn.Module):
    """Its classifier is registered before its body, it has a second linear layer (an
    auxiliary projection) and it returns (logits, features)."""

    def __init__(self):
        super().__init__()
        self.classifier = nn.Linear(16, 7)
        self.body = nn.Sequential(nn.Conv2d(1, 8, 3, 2), nn.BatchNorm2d(8), nn.PReLU(),
                                  nn.Conv2d(8, 16, 3, 2), nn.BatchNorm2d(16), nn.PReLU())
        self.projection = nn.Linear(16, 4)

    def forward(self, x):
        features = self.body(x).mean((2, 3))
        return self.classifier(features), self.projection(features)


def test_any_module_trains_with_its_named_head_last_and_its_tuple_output():
    task = build_task(HeadFirst(), "digits", shots=5, image_size=28, head="classifier")
    assert task.model.heads == ["classifier"]
    assert task.blocks[-1].modules == ("classifier",)  # the head, never "the last module"
    assert task.model.model.classifier.out_features == 10
    assert task.model.model.projection.out_features == 4  # left alone
    names = task.block_names
    linear = genome.decode(genome.recipe("linear", names), names)
    assert linear.trained_blocks == [names[-1]]
    run = fine_tune(task, linear, TrainConfig(epochs=1), seed=0)
    assert 0 <= run.value <= 1


def test_a_head_that_is_not_a_linear_layer_of_the_model_is_refused():
    with pytest.raises(ModelError, match="no nn.Linear named 'body'"):
        build_task(HeadFirst(), "digits", shots=5, image_size=28, head="body")


def test_generic_blocks_keep_light_layers_with_their_weight_layer():
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.PReLU(), nn.Conv2d(8, 8, 3),
                          nn.BatchNorm2d(8), nn.PReLU(), nn.Flatten(), nn.LazyLinear(10))
    model(torch.zeros(1, 1, 12, 12))
    blocks = partition(model, heads=["7"])
    assert [b.modules for b in blocks] == [("0", "1", "2"), ("3", "4", "5"), ("7",)]


def test_a_table_written_for_another_class_of_the_same_name_falls_back():
    class ResNet(nn.Module):  # not torchvision's: no layer1..layer4
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3))
            self.fc = nn.Linear(4, 2)

    blocks = partition(ResNet(), heads=["fc"])
    assert blocks[-1].modules == ("fc",)
    assert {p for b in blocks for p in b.params} == {n for n, _ in ResNet().named_parameters()}


FACTORY = '''
import torch
from torch import nn

def build():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, 2), nn.ReLU(), nn.Conv2d(8, 16, 3, 2), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 3))
'''


@pytest.mark.slow
def test_a_factory_and_its_checkpoint_rebuild_the_task_from_a_command_line(tmp_path, cli):
    (tmp_path / "mynet.py").write_text(FACTORY)
    sys.path.insert(0, str(tmp_path))
    try:
        import mynet

        torch.save(mynet.build().state_dict(), tmp_path / "mine.pt")
    finally:
        sys.path.remove(str(tmp_path))
    storage = f"sqlite:///{tmp_path}/own.db"
    common = ["--study-name", "own", "--storage", storage]
    cli("search", *common, "--model", "mynet:build", "--weights", "mine.pt", "--image-size",
        "28", "--trials", "3", "--epochs", "1", "--population", "3", "--elite", "1", "-q",
        check=True)
    best = cli("best", *common, check=True)
    assert '"model": "mynet:build"' in best.stdout
    # another command rebuilds the same task from the stored configuration
    cli("search", *common, "--trials", "4", "-q", check=True)
    bad = cli("search", "--study-name", "x", "--storage", storage, "--model", "mynet:nope",
              "--trials", "1", "-q")
    assert bad.returncode == 2 and "cannot import mynet:nope" in bad.stderr


def test_timm_models_are_partitioned_by_their_own_stages(tmp_path):
    timm = pytest.importorskip("timm")
    task = build_task("timm:resnet18", "digits", weights="none", shots=5, image_size=32,
                      activation_cache_mb=None)
    assert task.block_names == ["stem", "stage1", "stage2", "stage3", "stage4", "head"]
    assert task.model.heads == ["fc"] and task.model.model.fc.out_features == 10
    reference = timm.create_model("resnet18", num_classes=10)
    torch.save(reference.state_dict(), tmp_path / "r.pt")
    loaded = build_task("timm:resnet18", "digits", weights=str(tmp_path / "r.pt"), shots=5,
                        image_size=32, activation_cache_mb=None)
    assert torch.equal(loaded.model.model.conv1.weight, reference.conv1.weight)
    plan = genome.decode(genome.recipe("linear", task.block_names), task.block_names)
    assert 0 <= fine_tune(task, plan, TrainConfig(epochs=1), seed=0).value <= 1


@pytest.mark.slow
def test_the_readme_example_runs(tmp_path):
    import re
    import subprocess

    from tests.conftest import REPO

    readme = (REPO / "README.md").read_text()
    section = readme.split("## Your own model", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "classifier" in result.stdout.splitlines()[0]
