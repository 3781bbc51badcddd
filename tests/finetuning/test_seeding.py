"""The same seed gives the same run: a run's random draws (dropout, stochastic depth, new
layers) come from its seed alone, whatever ran before it in the process, in other threads,
in data loading, or how many DataLoader workers decode its images."""

import json
import re
import subprocess
import sys
import textwrap
import threading

import numpy as np
import optuna
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from biotune_optuna.finetuning.seeding import SeededDraws

# a small CNN with three kinds of dropout, built by name from the test's folder; its
# forward decides by self.training, as timm's and torchvision's networks do
DROPOUT_NET = textwrap.dedent("""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class DropoutNet(nn.Module):
        biotune_input = dict(channels=3, size=16, mean=(0.5,) * 3, std=(0.5,) * 3)

        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8),
                                      nn.ReLU())
            self.body = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
                                      nn.Dropout2d(0.2))
            self.fc = nn.Linear(16, 4)

        def forward(self, x):
            x = self.body(self.stem(x))
            if self.training:  # stochastic depth, drawn as timm and torchvision draw it
                x = x * torch.bernoulli(torch.full_like(x[:, :1, :1, :1], 0.8)) / 0.8
            return self.fc(F.dropout(x.mean((2, 3)), 0.5, self.training))

    def net():
        return DropoutNet()
""")


def write_folder(root, classes=4, per_class=30, size=16):
    """Noisy images whose colour, faintly, says the class: hard enough that a run's
    validation value moves with its dropout masks."""
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 200, (size, size, 3))
            pixels[..., c % 3] += 25
            pixels[:size // 2] += 25 * (c // 3)
            Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(root / f"c{c}" / f"{i}.png")
    return root


@pytest.fixture
def folder_with_model(tmp_path):
    (tmp_path / "dropnet.py").write_text(DROPOUT_NET)
    return write_folder(tmp_path / "images"), tmp_path


def forward_with_every_dropout(x):
    return torch.cat([t.flatten() for t in (
        F.dropout(x, 0.3), F.dropout(x.clone(), 0.3, inplace=True), F.dropout1d(x[0], 0.3),
        F.dropout2d(x, 0.3), F.dropout3d(x.unsqueeze(0), 0.3), F.alpha_dropout(x, 0.3, True),
        F.feature_alpha_dropout(x, 0.3, True), nn.Dropout(0.4)(x), torch.rand(5),
        torch.empty(7).bernoulli_(0.5), torch.randperm(9).float(), nn.Linear(3, 2).weight,
        F.rrelu(-x, training=True), F.gumbel_softmax(x),
        F.fractional_max_pool2d(torch.rand(2, 3, 8, 8, generator=torch.Generator()), 2, 3))])


def test_every_random_layer_draws_what_torch_would_from_the_seed_and_leaves_the_global_one():
    x = torch.ones(2, 3, 4, 4)
    torch.manual_seed(11)
    expected = forward_with_every_dropout(x)
    torch.manual_seed(0)
    before = torch.random.get_rng_state()
    with SeededDraws(11):
        drawn = forward_with_every_dropout(x)
    assert torch.equal(drawn, expected)
    assert torch.equal(torch.random.get_rng_state(), before)
    with SeededDraws(12):
        assert not torch.equal(forward_with_every_dropout(x), expected)


def test_gradients_flow_through_a_dropout_the_seed_draws():
    x = torch.ones(1000, requires_grad=True)
    with SeededDraws(3):
        F.dropout(x, 0.25).sum().backward()
    assert torch.equal(x.grad.unique(), torch.tensor([0.0, 1 / 0.75]))


def test_timm_dropout_and_drop_path_follow_the_seed():
    timm = pytest.importorskip("timm")
    model = timm.create_model("tf_efficientnet_lite0", num_classes=3, drop_rate=0.3,
                              drop_path_rate=0.3).train()
    x = torch.rand(2, 3, 32, 32)
    outputs = []
    for noise in (0, 1):
        torch.rand(noise + 1)  # whatever the process drew before
        with SeededDraws(5):
            outputs.append(model(x))
    assert torch.equal(*outputs)


def in_threads(work, n):
    """``work()``'s results from ``n`` threads started at once."""
    results = [None] * n

    def run(i):
        results[i] = work()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_threads_drawing_at_once_each_get_their_seeds_numbers():
    model = nn.Sequential(nn.Linear(64, 64), nn.Dropout(0.5), nn.Linear(64, 64),
                          nn.Dropout(0.5)).train()
    x = torch.ones(32, 64)

    def draw():
        with SeededDraws(7), torch.no_grad():
            return torch.stack([model(x) for _ in range(20)])

    expected = draw()
    for _ in range(5):
        assert all(torch.equal(r, expected) for r in in_threads(draw, 4))


RUNS_IN_A_FRESH_PROCESS = """
import hashlib, json, sys
import torch
from biotune_optuna.finetuning.build import build_task
from biotune_optuna.finetuning.train import TrainConfig, fine_tune
from biotune_optuna.sampler import genome

task = build_task("dropnet:net", sys.argv[1], shots=4, workers=int(sys.argv[2]))
names = task.block_names
plan = genome.decode(genome.recipe("full", names), names)
runs = []
for _ in range(3):
    run = fine_tune(task, plan, TrainConfig(epochs=4, batch_size=8, base_lr=0.01), 0,
                    keep_model=True)
    weights = hashlib.sha1(b"".join(v.numpy().tobytes() for v in
                                    run.model.state_dict().values())).hexdigest()
    runs.append([run.value, run.val.loss, run.history, weights])
print(json.dumps(runs))
"""


@pytest.mark.slow
def test_a_dropout_model_on_an_image_folder_trains_the_same_three_times_in_a_fresh_process(
        folder_with_model):
    images, cwd = folder_with_model
    results = []
    for workers in (0, 2):
        done = subprocess.run([sys.executable, "-c", RUNS_IN_A_FRESH_PROCESS, str(images),
                               str(workers)], cwd=cwd, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stderr
        results += json.loads(done.stdout.splitlines()[-1])
    assert all(r == results[0] for r in results), results
    assert len({r[1] for r in results}) == 1


def test_runs_in_two_threads_at_once_train_as_one_run_alone(folder_with_model, monkeypatch):
    from biotune_optuna.finetuning.build import build_task
    from biotune_optuna.finetuning.train import TrainConfig, fine_tune
    from biotune_optuna.sampler import genome

    images, cwd = folder_with_model
    monkeypatch.chdir(cwd)
    task = build_task("dropnet:net", str(images), shots=4)
    plan = genome.decode(genome.recipe("full", task.block_names), task.block_names)
    config = TrainConfig(epochs=3, batch_size=8, base_lr=0.01)

    def trained():
        run = fine_tune(task, plan, config, 1, keep_model=True)
        return run.val.loss, [v.clone() for v in run.model.state_dict().values()]

    alone = trained()
    for loss, weights in in_threads(trained, 2):
        assert loss == alone[0]
        assert all(torch.equal(a, b) for a, b in zip(weights, alone[1]))


def test_the_activation_cache_trains_the_network_the_images_train(folder_with_model,
                                                                 monkeypatch):
    from biotune_optuna.finetuning.build import build_task
    from biotune_optuna.finetuning.train import TrainConfig, fine_tune
    from biotune_optuna.sampler.plan import FineTunePlan

    images, cwd = folder_with_model
    monkeypatch.chdir(cwd)
    runs = []
    for cache_mb in (None, 64):
        task = build_task("dropnet:net", str(images), shots=4, activation_cache_mb=cache_mb)
        plan = FineTunePlan(tuple(task.block_names), (0.0, 1.0, 1.0))  # the stem frozen
        runs.append(fine_tune(task, plan, TrainConfig(epochs=3, batch_size=8, base_lr=0.01),
                              2, keep_model=True, evaluate_test=True))
    plain, cached = runs
    assert (plain.frozen_prefix, cached.frozen_prefix) == (0, 1)
    assert cached.history == plain.history and cached.test.loss == plain.test.loss
    for a, b in zip(plain.model.state_dict().values(), cached.model.state_dict().values()):
        assert torch.equal(a, b)


def seed_run(stdout, name, seed):
    """What a ``<name>, seed <seed>: validation V, test balanced accuracy T`` line printed."""
    return re.search(rf"^  {name}, seed {seed}: (validation [0-9.]+, test balanced "
                     r"accuracy [0-9.]+)", stdout, re.M).group(1)


@pytest.mark.slow
def test_train_best_and_baseline_retrain_what_the_search_trained(folder_with_model, cli):
    images, cwd = folder_with_model
    # one thread everywhere: a search's default shares the cores with live searches, and
    # thread counts split sums differently
    common = ["--storage", "sqlite:///s.db", "--study-name", "s", "--threads", "1"]
    cli("search", *common, "--model", "dropnet:net", "--dataset", images, "--shots", "4",
        "--val-shots", "8", "--epochs", "6", "--batch-size", "8", "--lr", "0.03",
        "--trials", "3", "--sampler", "random", "--seed", "3", "-q", cwd=cwd, check=True)
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{cwd}/s.db")
    stored = {t.number: t.value for t in study.trials}

    # seed 0 (the search's) second: runs come in another order than the search's
    best = cli("train-best", *common, "--seeds", "1,0", "--top-k", "3", cwd=cwd, check=True)
    for number, value in stored.items():
        assert seed_run(best.stdout, f"trial {number}", 0).startswith(
            f"validation {value:.4f},"), best.stdout

    full = cli("baseline", *common, "--method", "full", "--seeds", "0", cwd=cwd, check=True)
    assert seed_run(full.stdout, "full", 0) == seed_run(best.stdout, "full fine-tuning", 0)
