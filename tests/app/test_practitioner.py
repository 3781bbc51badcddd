"""What a practitioner hits first, probed as a new user would: every case either works with a
sensible default, says so loudly, or stops in one line (exit 2) naming the right fix, and
leaves nothing behind."""

import csv

import numpy as np
import optuna
import pytest
import torch
from PIL import Image

from tests.app.test_cli import one_line_error

QUICK = ["--trials", "2", "--epochs", "1", "--population", "3", "--elite", "1", "-q"]


def search(cli, tmp_path, *options, name="p", check=False):
    return cli("search", "--study-name", name, "--storage", f"sqlite:///{tmp_path}/p.db",
               *options, check=check)


def image_folder(root, per_class):
    """Digits as PNG files, ``per_class`` images for each of 3 classes."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    for label in range(3):
        folder = root / f"class{label}"
        folder.mkdir(parents=True)
        images = digits.images[digits.target == label][:per_class]
        for i, image in enumerate(images):
            Image.fromarray((image * 15).astype(np.uint8)).save(folder / f"{i}.png")
    return root


@pytest.mark.slow
def test_a_torchvision_model_starts_pretrained_or_says_it_does_not(cli, tmp_path):
    offline = search(cli, tmp_path, "--model", "resnet18", "--image-size", "32", *QUICK)
    one_line_error(offline, "cannot fetch weights DEFAULT for resnet18", "--weights none")
    random = search(cli, tmp_path, "--model", "resnet18", "--weights", "none", "--image-size",
                    "32", "--shots", "2", *QUICK, name="r", check=True)
    assert "resnet18 starts from random weights (--weights none)" in random.stderr


@pytest.mark.slow
def test_few_trials_for_the_population_are_called_random_search(cli, tmp_path):
    result = search(cli, tmp_path, "--model", "tiny", "--trials", "6", "--epochs", "1", "-q",
                    check=True)
    assert "--trials 6 ends inside BioTune's initial population" in result.stderr
    assert "random search" in result.stderr


@pytest.mark.slow
def test_own_data_is_used_as_asked_and_too_small_folders_are_refused(cli, tmp_path):
    folder = image_folder(tmp_path / "mine", per_class=40)
    cut = search(cli, tmp_path, "--model", "tiny", "--dataset", folder, *QUICK, check=True)
    assert "training on 10 images per class of the 40-40 available" in cut.stderr
    every = search(cli, tmp_path, "--model", "tiny", "--dataset", folder, "--shots", "all",
                   *QUICK, name="all", check=True)
    assert "images per class" not in every.stderr
    study = optuna.load_study(study_name="all", storage=f"sqlite:///{tmp_path}/p.db")
    assert study.user_attrs["biotune_optuna:config"]["shots"] is None
    small = image_folder(tmp_path / "small", per_class=20)
    one_line_error(search(cli, tmp_path, "--model", "tiny", "--dataset", small, *QUICK,
                          name="s"), "leave none to test", "--shots all")


@pytest.mark.slow
def test_a_dataset_named_relative_or_absolute_is_the_same_on_resume(cli, tmp_path):
    image_folder(tmp_path / "mine", per_class=25)
    options = ["--model", "tiny", "--shots", "5", "--epochs", "1", "--population", "3",
               "--elite", "1", "-q"]
    search(cli, tmp_path, "--dataset", "mine", *options, "--trials", "2", check=True)
    resumed = search(cli, tmp_path, "--dataset", tmp_path / "mine", *options, "--trials", "3",
                     check=True)
    assert "other settings" not in resumed.stderr
    study = optuna.load_study(study_name="p", storage=f"sqlite:///{tmp_path}/p.db")
    assert len(study.trials) == 3  # one study, resumed: not refused, not started again
    assert study.user_attrs["biotune_optuna:config"]["dataset"] == str(tmp_path / "mine")


@pytest.mark.slow
def test_a_csv_with_a_stray_label_names_the_row(cli, tmp_path):
    image_folder(tmp_path / "mine", per_class=25)
    rows = [(f"mine/class{c}/{i}.png", str(c)) for c in range(3) for i in range(25)]
    rows[7] = (rows[7][0], "zero")
    rows[8] = (rows[8][0], "1.0")  # a float label is class 1
    with (tmp_path / "labels.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    one_line_error(search(cli, tmp_path, "--model", "tiny", "--dataset", tmp_path /
                          "labels.csv", "--shots", "5", *QUICK), "line 8", "'zero'",
                   "class numbers")


@pytest.mark.skipif(torch.cuda.is_available(), reason="asks for CUDA where there is none")
@pytest.mark.slow
def test_an_unusable_device_is_refused_before_any_trial(cli, tmp_path):
    one_line_error(search(cli, tmp_path, "--model", "tiny", "--device", "cuda", *QUICK),
                   "CUDA is not available", "--device cpu")
    one_line_error(search(cli, tmp_path, "--model", "tiny", "--device", "tpu9", *QUICK),
                   "unknown device 'tpu9'")
    assert not (tmp_path / "p.db").exists()


@pytest.mark.slow
def test_baselines_train_on_a_named_study_and_refuse_what_they_do_not_use(cli, tmp_path):
    search(cli, tmp_path, "--model", "tiny", "--shots", "5", *QUICK, check=True)
    storage = ["--storage", f"sqlite:///{tmp_path}/p.db"]
    result = cli("baseline", "--study-name", "p", *storage, "--method", "linear", "--seeds",
                 "0", "-q", check=True)
    assert "linear" in result.stdout
    one_line_error(cli("baseline", "--study-name", "p", *storage, "--model", "small"),
                   "drop --model")
    one_line_error(cli("baseline", "--population", "4"), "unrecognized arguments: "
                   "--population")
    one_line_error(cli("compare", "--sampler", "tpe"), "unrecognized arguments: --sampler")


@pytest.mark.slow
def test_help_shows_defaults_and_every_option_explains_itself(cli):
    text = cli("search", "--help", check=True).stdout
    assert "(default: 30)" in text and "(default: 10)" in text and "(default: 96)" in text
    for command in ("compare", "dashboard", "export"):
        helped = cli(command, "--help", check=True).stdout
        assert "--samplers SAMPLERS" not in helped or "samplers to compare" in helped
    overview = cli("--help", check=True).stdout
    assert "Serve optuna-dashboard on the study's storage" in overview


def test_a_task_built_in_python_names_the_study_model(tmp_path, capsys):
    from torch import nn

    from biotune_optuna.app.config import SearchConfig
    from biotune_optuna.app.jobs import search as run
    from biotune_optuna.finetuning.build import build_task

    net = nn.Sequential(nn.Conv2d(1, 4, 3, 2), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(4, 3))
    task = build_task(net, "digits", shots=5, image_size=28)
    config = SearchConfig(study_name="py", storage=f"sqlite:///{tmp_path}/py.db", trials=2,
                          epochs=1, population=3, elite=1)
    study = run(config, quiet=True, task=task)
    assert study.user_attrs["biotune_optuna:config"]["model"] == "Sequential"
    assert "only this Python session can build" in capsys.readouterr().err
