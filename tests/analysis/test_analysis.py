"""Plots, the optuna-dashboard note and artifacts, the dashboard server over HTTP, a
headless browser screenshot, and the notebooks."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import numpy as np
import optuna
import pytest
from optuna.distributions import FloatDistribution
from PIL import Image

from biotune_optuna import analysis, contents
from biotune_optuna.app.dashboard import artifacts, publish, study_note
from tests.conftest import REPO, run_cli

PLOTS = {"layer_importance", "frozen_heatmap", "frozen_heatmap_by_value", "lr_heatmap",
         "pareto", "population", "convergence"}


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """A small real search made with the command line: (folder, storage URL)."""
    folder = tmp_path_factory.mktemp("analysis")
    storage = f"sqlite:///{folder}/k.db"
    run_cli("search", "--study-name", "k", "--storage", storage, "--model", "tiny",
            "--trials", "16", "--epochs", "2", "--population", "4", "--elite", "1", "-q",
            cwd=folder, check=True)
    return folder, storage


def load(storage):
    return optuna.load_study(study_name="k", storage=storage)


@pytest.mark.slow
def test_trial_table_matches_the_study(searched):
    study = load(searched[1])
    table = analysis.trial_table(study)
    assert table.blocks == ["stem", "stage1", "stage2", "head"]
    assert len(table) == 16 and table.maximize
    assert np.allclose(table.values, [t.value for t in study.trials])
    assert ((table.multipliers > 0) == table.trained).all()
    assert np.all((table.trainable_fraction >= 0) & (table.trainable_fraction <= 1))


def test_pareto_front_keeps_only_undominated_points():
    fraction = np.array([0.1, 0.5, 0.5, 1.0, 0.2])
    values = np.array([0.7, 0.9, 0.8, 0.95, 0.6])
    assert analysis.pareto_front(fraction, values, maximize=True).tolist() == [0, 1, 3]


def test_pareto_plot_shows_validation_before_the_trainable_penalty(searched):
    memory = optuna.storages.InMemoryStorage()
    optuna.copy_study(from_study_name="k", from_storage=searched[1], to_storage=memory,
                      to_study_name="p")
    study = optuna.load_study(study_name="p", storage=memory)
    config = {**study.user_attrs["biotune_optuna:config"], "trainable_penalty": 0.5}
    study.set_user_attr("biotune_optuna:config", config)
    table = analysis.trial_table(study)
    ax = analysis.plot_pareto(study).axes[0]
    points = ax.collections[0].get_offsets()
    assert np.allclose(points[:, 1], table.values + 0.5 * table.trainable_fraction)
    assert "before the penalty 0.5" in ax.get_ylabel()


@pytest.mark.slow
def test_plot_command_writes_every_plot_and_attaches_them(searched):
    folder, storage = searched
    result = run_cli("plot", "--storage", storage, "--study-name", "k", "--out", "plots",
                     cwd=folder, check=True)
    written = [Path(line) for line in result.stdout.split()]
    assert {p.stem.removeprefix("k_") for p in written} == PLOTS
    for path in written:
        with Image.open(folder / path) as image:
            assert image.width >= 600 and image.height >= 350
    study = load(storage)
    assert {a["filename"] for a in artifacts(study)} == {p.name for p in written}
    run_cli("plot", "--storage", storage, "--study-name", "k", "--out", "plots", cwd=folder,
            check=True)
    assert len(artifacts(load(storage))) == len(PLOTS)  # replaced, not duplicated


def test_convergence_overlays_groups_with_a_band():
    task = __import__("biotune_optuna.sampler.synthetic", fromlist=["TASKS"]).TASKS["head-only"]
    groups = {}
    for name in ("random", "tpe"):
        for seed in range(2):
            sampler = (optuna.samplers.RandomSampler if name == "random"
                       else optuna.samplers.TPESampler)(seed=seed)
            study = optuna.create_study(direction="maximize", sampler=sampler)
            study.optimize(task, n_trials=15)
            groups.setdefault(name, []).append(study)
    figure = analysis.plot_convergence(groups)
    axes = figure.axes[0]
    assert [line.get_label() for line in axes.get_lines()] == ["random (n=2)", "tpe (n=2)"]
    assert len(axes.collections) == 2  # one band per group
    _, curve = analysis.best_so_far(groups["tpe"][0])
    assert np.all(np.diff(curve[~np.isnan(curve)]) >= 0)


X = FloatDistribution(0.0, 10.0)


def test_convergence_against_compute_skips_low_fidelity_values():
    """Each trial records the epochs it trained; low-fidelity values never count as best."""
    study = optuna.create_study(direction="maximize")
    for x, (value, fidelity, epochs) in enumerate([(0.5, "full", 10), (0.9, "low", 2),
                                                   (0.6, "full", 8), (0.4, "full", 6)]):
        study.add_trial(optuna.trial.create_trial(
            value=value, params={"x": float(x)}, distributions={"x": X},
            user_attrs={contents.FIDELITY: fidelity, contents.EPOCHS: [epochs]}))
    compute, best = analysis.best_so_far(study)
    assert compute.tolist() == [10, 12, 20, 26]
    assert best.tolist() == [0.5, 0.5, 0.6, 0.6]
    figure = analysis.plot_convergence({"one": [study]})
    by_compute = figure.axes[1]
    assert [line.get_label() for line in by_compute.get_lines()] == ["one (n=1)"]
    assert by_compute.get_lines()[0].get_xdata().max() == 26


def test_convergence_ranks_plans_by_their_mean_as_best_does():
    """A plan re-scored lower: the curve follows its mean, not its one lucky run."""
    study = optuna.create_study(direction="maximize")
    for x, value in [(0.0, 0.6), (1.0, 0.9), (1.0, 0.5)]:  # plan 1: 0.9, then 0.5
        study.add_trial(optuna.trial.create_trial(value=value, params={"x": x},
                                                  distributions={"x": X}))
    assert analysis.best_so_far(study)[1].tolist() == [0.6, 0.9, 0.7]
    assert contents.ranked_plans(study)[0].value == 0.7


def test_note_has_configuration_best_plan_and_how_to_reproduce(searched):
    study = load(searched[1])
    note = study_note(study, searched[1])
    assert "## Configuration" in note and "| model | `\"tiny\"` |" in note
    # the plan the search hands over (ranked by the mean of its evaluations), which with
    # re-scoring need not be the single highest trial
    assert f"Trial {contents.ranked_plans(study)[0].trial.number}," in note
    assert "biotune-optuna search" in note and "--model tiny" in note


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def dashboard(searched):
    folder, storage = searched
    publish(load(storage), storage, [])
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "biotune_optuna.cli", "dashboard",
                               "--storage", storage, "--host", "127.0.0.1", "--port", str(port)],
                              cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url + "/api/studies", timeout=2)
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise AssertionError("the dashboard did not start") from None
            time.sleep(0.3)
    yield url
    server.terminate()
    server.wait(timeout=10)


def get_json(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_dashboard_serves_the_study_its_trials_and_note(dashboard, searched):
    studies = get_json(dashboard + "/api/studies")["study_summaries"]
    assert [s["study_name"] for s in studies] == ["k"]
    detail = get_json(f"{dashboard}/api/studies/{studies[0]['study_id']}")
    assert len(detail["trials"]) == 16
    params = {p["name"] for p in detail["trials"][0]["params"]}
    assert {"gene:stem", "gene:head", "threshold"} <= params
    user_attrs = {a["key"] for a in detail["trials"][0]["user_attrs"]}
    assert {"trained_blocks", "lr_multipliers", "trainable_fraction"} <= user_attrs
    assert ("Best plan" in detail["note"]["body"] and "biotune-optuna search" in
        detail["note"]["body"])


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian package "
                    "chromium; make test installs it)")
@pytest.mark.slow
def test_dashboard_renders_in_headless_chromium(dashboard, tmp_path):
    shot = tmp_path / "dashboard.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,900",
                    "--virtual-time-budget=8000", f"--screenshot={shot}",
                    f"{dashboard}/dashboard/studies/1"], check=True, timeout=120,
                   capture_output=True)
    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("L"), dtype=float)
    assert image.size == (1280, 900)
    assert pixels.std() > 10  # a rendered page, not a blank one


NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_are_stored_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
@pytest.mark.slow
def test_notebooks_run_clean(path, searched):
    from nbclient import NotebookClient

    folder, storage = searched
    notebook = nbformat.read(path, as_version=4)
    os.environ.update(BIOTUNE_OPTUNA_STORAGE=storage, BIOTUNE_STUDY="k")
    try:
        NotebookClient(notebook, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    finally:
        for key in ("BIOTUNE_OPTUNA_STORAGE", "BIOTUNE_STUDY"):
            os.environ.pop(key, None)
    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
    assert any(o.output_type == "display_data" for c in notebook.cells
               if c.cell_type == "code" for o in c.outputs)  # figures were shown
