"""`search --objectives accuracy,<cost>`: a front of accuracy against training cost, stored
with the study, listed by `best`, capped by `--max-cost`, refused where it cannot work."""

import json

import optuna
import pytest

from biotune_optuna import contents
from biotune_optuna.app.dashboard import reproduce_command
from biotune_optuna.sampler import records

SEARCH = ["search", "--study-name", "f", "--dataset", "digits", "--model", "tiny", "--epochs",
          "2", "--population", "4", "--elite", "1", "--trials", "12", "-q"]


@pytest.fixture(scope="module")
def front_study(tmp_path_factory):
    from tests.conftest import call_main

    folder = tmp_path_factory.mktemp("front")
    storage = f"sqlite:///{folder}/f.db"
    out = call_main(*SEARCH, "--storage", storage, "--objectives", "accuracy,train-gflops",
                    cwd=folder, check=True).stdout
    assert "on the front" in out and "best plan" not in out  # the search ends on its front
    return folder, storage


def test_a_two_objective_search_stores_both_values_and_the_reference(front_study):
    _, storage = front_study
    study = optuna.load_study(study_name="f", storage=storage)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(complete) == 12
    for t in complete:
        assert t.values[1] == t.user_attrs[contents.cost_key("train-gflops")]
        assert (t.values[1] == 0) == (not t.user_attrs["trained_blocks"])
    chance, full = study.user_attrs[contents.REFERENCE]
    assert chance == pytest.approx(0.1) and full >= max(t.values[1] for t in complete)
    assert contents.config(study)["objectives"] == "accuracy,train-gflops"
    stored = contents.config(study)  # a front's own defaults, stored resolved
    assert [stored[k] for k in ("elite_search", "adoption", "surrogate_candidates")] == [
        False, False, 64]
    roles = {records.role_of(t) for t in study.trials}
    assert records.CHILD in roles and records.ELITE_PLUS not in roles  # BioTune evolved it
    assert not any(t.intermediate_values for t in study.trials)  # nothing reported


def test_best_lists_the_front_and_status_its_hypervolume(cli, front_study):
    folder, storage = front_study
    study = optuna.load_study(study_name="f", storage=storage)
    front = {t.number for t in study.best_trials}
    table = cli("best", "--storage", storage, "--study-name", "f", cwd=folder,
                check=True).stdout
    rows = table.splitlines()[1:-1]
    listed = {int(line.split()[0]) for line in rows}
    assert listed <= front and listed  # each distinct plan of the front, once
    alike = sum(int(line.split("(+")[1].split()[0]) for line in rows if "alike)" in line)
    plans = f"{len(listed) + alike} plan{'s' * (len(listed) + alike != 1)}"
    assert f"{plans} on the front, hypervolume" in table
    status = cli("status", "--storage", storage, "--study-name", "f", cwd=folder,
                 check=True).stdout
    volume = contents.hypervolume(study)
    assert f"front: {plans}, hypervolume {volume:.4f}" in status
    assert 0 < volume < 1  # a share of the box from the reference to the ideal


def test_max_cost_hands_over_the_most_accurate_plan_within_it(cli, front_study):
    folder, storage = front_study
    study = optuna.load_study(study_name="f", storage=storage)
    costs = sorted({t.values[1] for t in study.best_trials})
    cap = costs[len(costs) // 2]
    out = cli("export", "--storage", storage, "--study-name", "f", "--max-cost", str(cap),
              cwd=folder, check=True).stdout
    plan = json.loads(out)
    within = [t for t in study.trials if t.state.name == "COMPLETE" and t.values[1] <= cap]
    assert plan["train-gflops"] <= cap
    assert plan["value"] == pytest.approx(max(t.values[0] for t in within))


@pytest.mark.parametrize("argv, fragment", [
    (["--objectives", "train-gflops"], "give accuracy first"),
    (["--objectives", "accuracy,flops"], "give accuracy first"),
    (["--objectives", "accuracy,train-gflops,train-gflops"], "repeats an objective"),
    (["--objectives", "accuracy,train-gflops", "--sampler", "cmaes"],
     "--sampler cmaes optimises one objective"),
    (["--objectives", "accuracy,train-gflops", "--pruner", "median"],
     "Optuna cannot prune a study of several objectives"),
    (["--objectives", "accuracy,train-gflops", "--sampler", "tpe", "--multi-fidelity"],
     "give --no-multi-fidelity"),
    (["--objectives", "accuracy,train-gflops", "--trainable-penalty", "0.1"],
     "replaces --trainable-penalty"),
])
def test_what_cannot_work_with_several_objectives_is_refused(cli, argv, fragment):
    result = cli("search", "--model", "tiny", *argv)
    assert result.returncode == 2 and fragment in result.stderr, result.stderr


def test_a_cost_cap_on_a_study_of_one_objective_is_refused(cli, tmp_path):
    storage = f"sqlite:///{tmp_path}/one.db"
    cli(*SEARCH[:-3], "--trials", "2", "-q", "--storage", storage, check=True)
    result = cli("export", "--storage", storage, "--study-name", "f", "--max-cost", "1")
    assert result.returncode == 2 and "no cost to cap" in result.stderr


def test_plot_draws_the_front_and_the_hypervolume(cli, front_study):
    from biotune_optuna.analysis import best_so_far

    folder, storage = front_study
    cli("plot", "--storage", storage, "--study-name", "f", "--out", "p", "--no-dashboard",
        cwd=folder, check=True)
    drawn = {p.name for p in (folder / "p").iterdir()}
    assert {"f_front.png", "f_pareto.png", "f_convergence.png"} <= drawn
    study = optuna.load_study(study_name="f", storage=storage)
    _, volumes = best_so_far(study)
    finished = [t.values for t in study.trials if t.state.name == "COMPLETE"]
    assert volumes[-1] == pytest.approx(contents.hypervolume_of(study, finished))
    assert all(b >= a for a, b in zip(volumes[:-1], volumes[1:]) if a == a)  # never falls


COMPARE = ["compare", "--model", "tiny", "--dataset", "digits", "--epochs", "1",
           "--population", "3", "--elite", "1", "--trials", "8", "--seeds", "0",
           "--objectives", "accuracy,train-gflops", "--study-name", "c", "-q"]


def test_compare_ranks_fronts_by_hypervolume_at_equal_compute(cli, tmp_path):
    storage = f"sqlite:///{tmp_path}/c.db"
    out = cli(*COMPARE, "--samplers", "biotune,nsga2", "--storage", storage,
              check=True).stdout
    assert "hypervolume" in out.splitlines()[0] and "test (best at <= 1/3 cost)" in out
    studies = {s.study_name: s for s in optuna.get_all_study_summaries(storage)}
    assert set(studies) == {"c-biotune-s0", "c-nsga2-s0"}
    for name in studies:
        study = optuna.load_study(study_name=name, storage=storage)
        volume = contents.hypervolume(study)
        assert f"{volume:.4f}" in out


def test_compare_refuses_a_single_objective_sampler_before_any_search(cli, tmp_path):
    storage = f"sqlite:///{tmp_path}/c.db"
    result = cli(*COMPARE, "--samplers", "biotune,cmaes", "--storage", storage)
    assert result.returncode == 2 and "--sampler cmaes optimises one objective" in result.stderr
    assert not (tmp_path / "c.db").exists()


def test_resuming_with_other_objectives_is_refused(cli, front_study):
    folder, storage = front_study
    result = cli(*SEARCH, "--storage", storage, "--objectives", "accuracy,train-memory",
                 cwd=folder)
    assert result.returncode == 2 and "objectives" in result.stderr, result.stderr


def test_train_best_retrains_the_top_plans_within_the_cap(cli, front_study):
    folder, storage = front_study
    study = optuna.load_study(study_name="f", storage=storage)
    cheapest = min(t.values[1] for t in study.best_trials if t.values[1] > 0)
    out = cli("train-best", "--storage", storage, "--study-name", "f", "--seeds", "0",
              "--max-cost", str(cheapest), "--no-compare", "-q", "--out", "b.pt", cwd=folder,
              check=True).stdout
    trial = int(out.split("BioTune (trial ")[1].split(")")[0])
    assert study.trials[trial].values[1] <= cheapest


@pytest.mark.slow
def test_biotunes_multi_fidelity_builds_the_front_from_promoted_plans(cli, tmp_path):
    storage = f"sqlite:///{tmp_path}/m.db"
    cli(*SEARCH[:-3], "--trials", "16", "-q", "--storage", storage, "--objectives",
        "accuracy,train-gflops", "--multi-fidelity", "--epochs", "3", "--low-epochs", "1",
        check=True)
    study = optuna.load_study(study_name="f", storage=storage)
    promoted = {t.number for t in study.trials if records.role_of(t) == records.PROMOTE}
    listed = cli("best", "--storage", storage, "--study-name", "f", check=True).stdout
    numbers = {int(line.split()[0]) for line in listed.splitlines()[1:-1]}
    assert promoted and numbers <= promoted


def test_a_front_study_made_with_the_papers_operators_resumes_with_them(cli, tmp_path):
    storage = f"sqlite:///{tmp_path}/p.db"
    cli(*SEARCH[:-3], "--trials", "6", "-q", "--storage", storage, "--objectives",
        "accuracy,train-gflops", "--elite-search", "--adoption", "--surrogate-candidates",
        "1", check=True)
    cli(*SEARCH[:-3], "--trials", "8", "-q", "--storage", storage, check=True)  # not named
    study = optuna.load_study(study_name="f", storage=storage)
    assert len(study.trials) == 8
    assert contents.config(study)["surrogate_candidates"] == 1
    assert not any(records.TrialRecord.of(t).candidates for t in study.trials)
    # the note's command recreates these operators, not the front's defaults
    command = reproduce_command(study, storage)
    assert all(f in command for f in ("--elite-search", "--adoption", "--surrogate-candidates 1"))


def test_the_notes_command_leaves_out_a_fronts_own_defaults(front_study):
    _, storage = front_study
    command = reproduce_command(optuna.load_study(study_name="f", storage=storage), storage)
    assert "--objectives accuracy,train-gflops" in command
    assert not any(f in command for f in ("elite-search", "adoption", "surrogate-candidates"))


def test_compare_refuses_variants_that_search_alike_on_a_front(cli, tmp_path):
    result = cli(*COMPARE, "--variants", "full,no-adoption", "--storage",
                 f"sqlite:///{tmp_path}/c.db")
    assert result.returncode == 2, result.stderr
    assert "no-adoption searches as full does" in result.stderr
    assert not (tmp_path / "c.db").exists()


def test_pre_selection_computes_a_plans_cost_rather_than_predicting_it(cli, tmp_path):
    storage = f"sqlite:///{tmp_path}/k.db"
    cli(*SEARCH[:-3], "--trials", "20", "-q", "--storage", storage, "--objectives",
        "accuracy,train-gflops", "--surrogate-candidates", "4", check=True)
    study = optuna.load_study(study_name="f", storage=storage)
    chosen = [(t, records.TrialRecord.of(t)) for t in study.trials]
    chosen = [(t, r) for t, r in chosen if r.candidates]
    assert chosen  # pre-selected children, each with the cost it then cost
    for trial, record in chosen:
        assert record.surrogate[1] == pytest.approx(trial.values[1])
