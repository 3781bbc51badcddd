"""What goes into a fine-tuning run is what the user meant: your own model's input format
(declared, overridden, checked by one forward pass), checkpoints with extra tensors, timm's
head, files listed twice or duplicated, empty class folders, inputs too small, and losses
that explode."""

import math

import pytest
import torch
from PIL import Image
from torch import nn

from biotune_optuna.finetuning.build import build_task
from biotune_optuna.finetuning.names import DataError, ModelError
from biotune_optuna.finetuning.train import TrainConfig, fine_tune
from biotune_optuna.sampler import genome


class FaceNet(nn.Module):
    """A 48 px network (like MTCNN's ONet), flattened before its classifier, so any other
    size fails; it declares its own normalisation."""

    biotune_input = {"size": 48, "channels": 3, "mean": 0.5, "std": [0.5, 0.4, 0.3]}

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1), nn.ReLU(), nn.Flatten())
        self.classifier = nn.Linear(4 * 24 * 24, 2)

    def forward(self, x):
        return self.classifier(self.features(x))


class Undeclared(FaceNet):
    biotune_input = None


def test_a_declared_input_format_is_used_and_described():
    task = build_task(FaceNet(), "digits", shots=3, head="classifier")
    spec = task.model.input
    assert ((spec.channels, spec.size, spec.mean, spec.std, spec.declared) ==
        (3, 48, (0.5, 0.5, 0.5), (0.5, 0.4, 0.3), True))
    assert spec.describe() == "3 channel(s), 48 px, mean (0.5, 0.5, 0.5), std (0.5, 0.4, 0.3)"
    overridden = build_task(FaceNet(), "digits", shots=3, head="classifier", input_mean=[0.1],
                            input_std=[0.2, 0.2, 0.2]).model.input
    assert (overridden.mean, overridden.std) == ((0.1,) * 3, (0.2,) * 3)
    plan = genome.decode(genome.recipe("full", task.block_names), task.block_names)
    assert 0 <= fine_tune(task, plan, TrainConfig(epochs=1), seed=0).value <= 1


def test_an_input_the_model_cannot_take_is_refused_before_anything_runs():
    with pytest.raises(ModelError, match=r"Undeclared fails on 3 channel\(s\), 224 px.*"
                                         r"biotune_input on the model, or --image-size"):
        build_task(Undeclared(), "digits", shots=3, head="classifier")
    with pytest.raises(ModelError, match="too small to fine-tune on; give --image-size 8"):
        build_task("small", "digits", weights="none", shots=3, image_size=3)
    with pytest.raises(ModelError, match="the input std takes 1 or 3 values"):
        build_task(FaceNet(), "digits", shots=3, head="classifier", input_std=[0.5, 0.5])
    with pytest.raises(ModelError, match="must be a dict with size"):
        build_task(type("Bad", (FaceNet,), {"biotune_input": {"px": 48}})(), "digits",
                   shots=3, head="classifier")


def test_a_checkpoint_with_tensors_the_model_lacks_loads_and_names_them(tmp_path):
    reference = build_task("small", "digits", weights="none", shots=3)
    state = {**reference.model.model.state_dict(), "landmarks.weight": torch.zeros(10, 2)}
    torch.save(state, tmp_path / "extra.pt")
    task = build_task("small", "digits", weights=str(tmp_path / "extra.pt"), shots=3)
    assert task.model.notes and "landmarks.weight" in task.model.notes[0]
    assert torch.equal(task.model.model.stem[0].weight, reference.model.model.stem[0].weight)
    del state["stem.0.weight"]
    torch.save(state, tmp_path / "missing.pt")
    with pytest.raises(ModelError, match="1 missing"):
        build_task("small", "digits", weights=str(tmp_path / "missing.pt"), shots=3)


def test_a_timm_head_block_is_its_classifier_alone():
    pytest.importorskip("timm")
    task = build_task("timm:mobilenetv3_small_050", "digits", weights="none", shots=3,
                      image_size=32, activation_cache_mb=None)
    head, neck = task.blocks[-1], task.blocks[-2]
    assert head.modules == ("classifier",) and neck.name == "neck"
    assert "conv_head" in neck.modules
    assert head.n_params == 1024 * 10 + 10


def write_images(folder, count, colour=0):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.new("L", (12, 12), color=colour + i).save(folder / f"{i}.png")


def test_duplicate_files_are_removed_before_the_splits_and_said(tmp_path):
    write_images(tmp_path / "a", 6, colour=0)
    write_images(tmp_path / "b", 6, colour=100)
    (tmp_path / "b" / "copy.png").write_bytes((tmp_path / "b" / "0.png").read_bytes())
    rows = [f"a/{i}.png,0" for i in range(6)] + [f"b/{i}.png,1" for i in range(6)]
    (tmp_path / "data.csv").write_text("\n".join(rows + rows[:3]) + "\n")
    for dataset in (tmp_path / "data.csv", tmp_path):
        folder = dataset == tmp_path
        (tmp_path / "empty").mkdir(exist_ok=True)
        task = build_task("small", str(dataset), weights="none", shots=None, image_size=12)
        assert len(task.data) == 12
        assert any("duplicate image(s)" in n for n in task.data.notes)
        assert any("hold no image" in n for n in task.data.notes) == folder
        assert task.data.classes == ["a", "b"] if folder else ["0", "1"]
    (tmp_path / "a" / "twin.png").write_bytes((tmp_path / "b" / "1.png").read_bytes())
    with pytest.raises(DataError, match="are the same image under classes"):
        build_task("small", str(tmp_path), weights="none", shots=None, image_size=12)


def test_a_loss_that_explodes_ends_the_run_as_diverged():
    task = build_task("tiny", "digits", weights="none", shots=3)
    plan = genome.decode(genome.recipe("full", task.block_names), task.block_names)
    run = fine_tune(task, plan, TrainConfig(epochs=3, base_lr=1e9), seed=0)
    assert run.diverged and "lower the base learning rate" in run.diverged
    assert math.isnan(run.value) or run.value <= 1
