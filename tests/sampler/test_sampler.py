"""BioTuneSampler as an Optuna sampler: budget, resume from storage, parallel workers,
directions, failures, pruning, enqueued trials and mixed search spaces."""

import json
import math
import subprocess
import sys
from collections import Counter

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from biotune_optuna import BioTuneSampler, encode
from biotune_optuna.sampler import population as pop
from biotune_optuna.sampler import records, storage_io
from biotune_optuna.sampler.synthetic import FUNCTIONS, TASKS

optuna.logging.set_verbosity(optuna.logging.WARNING)
TASK = TASKS["near-domain"]
# Optuna 5 renamed the retry callback; the sampler suite also runs on the lowest Optuna
RetryCallback = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback",
                        optuna.storages.RetryFailedTrialCallback)


def biotune(seed=0, **kwargs):
    kwargs.setdefault("population_size", 6)
    kwargs.setdefault("elite_size", 2)
    return BioTuneSampler(seed=seed, search_space=TASK.search_space, ideal_value=1.0, **kwargs)


def run(sampler, n_trials, objective=TASK, direction="maximize", storage=None, **kwargs):
    study = optuna.create_study(sampler=sampler, direction=direction, storage=storage,
                                study_name="s", load_if_exists=True)
    study.optimize(objective, n_trials=n_trials, **kwargs)
    return study


def record(trial):
    return records.TrialRecord.of(trial)


def attrs(study, field):
    return [getattr(record(t), field) for t in study.trials]


def params(study):
    return [t.params for t in study.trials]


def test_budget_and_roles_per_generation():
    sampler = biotune(population_size=6, elite_size=2)
    generations = 4
    study = run(sampler, sampler.n_trials(generations))
    assert len(study.trials) == 6 + 4 * (6 + 2)
    by_generation = Counter(attrs(study, "generation"))
    assert by_generation == {0: 6, 1: 8, 2: 8, 3: 8, 4: 8}
    roles = Counter(zip(attrs(study, "generation"), attrs(study, "role")))
    assert roles[(0, records.INITIAL)] == 6
    for g in range(1, generations + 1):
        assert roles[(g, records.ELITE_PLUS)] == 2 and roles[(g, records.ELITE_MINUS)] == 2
        assert roles[(g, records.CHILD)] + roles[(g, records.IMMIGRANT)] == 4


def test_paper_budget_is_140():
    assert BioTuneSampler(population_size=10, elite_size=3).n_trials(10) == 140


def test_elite_pairs_move_one_gene_by_opposite_steps():
    study = run(biotune(), 30)
    pairs = {}
    for t in study.trials:
        if record(t).role in records.ELITE_ROLES:
            key = (record(t).generation, record(t).elite)
            pairs.setdefault(key, []).append(t)
    assert pairs
    for (_, elite_number), (plus, minus) in pairs.items():
        elite = study.trials[elite_number].params
        gene = record(plus).gene
        assert gene == record(minus).gene != "threshold"
        assert record(plus).delta == -record(minus).delta
        assert abs(record(plus).delta) <= 0.25
        assert elite[gene] > elite["threshold"]  # only selected blocks move
        for t in (plus, minus):
            expected = min(max(elite[gene] + record(t).delta, 0.0), 1.0)
            assert t.params[gene] == pytest.approx(expected)
            assert ({k: v for k, v in t.params.items() if k != gene} ==
                {k: v for k, v in elite.items() if k != gene})


def test_initial_genomes_select_a_block_and_children_name_their_parents():
    study = run(biotune(), 40)
    for t in study.trials:
        role = record(t).role
        if role in (records.INITIAL, records.IMMIGRANT):
            genes = [v for k, v in t.params.items() if k != "threshold"]
            assert max(genes) > t.params["threshold"]
        if role == records.CHILD:
            p1, p2 = record(t).parents
            assert p1 != p2 and record(t).prototype is not None
            assert max(p1, p2) < t.number


def test_same_seed_same_trials_other_seed_other_trials():
    a, b, c = (params(run(biotune(seed), 30)) for seed in (3, 3, 4))
    assert a == b
    assert a != c


RESUME_WORKER = """
import json, sys, optuna
from biotune_optuna import BioTuneSampler
from biotune_optuna.sampler.synthetic import TASKS
optuna.logging.set_verbosity(optuna.logging.WARNING)
options = json.loads(sys.argv[3])
task = TASKS[options.pop("task")]
sampler = BioTuneSampler(population_size=6, elite_size=2, search_space=task.search_space,
                         ideal_value=1.0, **options)
study = optuna.create_study(storage=sys.argv[1], study_name="resume", direction="maximize",
                            sampler=sampler, load_if_exists=True)
study.optimize(task, n_trials=int(sys.argv[2]))
"""


def resume_worker(storage, n_trials, task="near-domain", seed=11, **options):
    """Run trials of the study "resume" in a new process, as a resumed search would."""
    options = json.dumps({"task": task, "seed": seed, **options})
    subprocess.run([sys.executable, "-c", RESUME_WORKER, storage, str(n_trials), options],
                   check=True)


@pytest.mark.slow
def test_new_process_continues_a_sqlite_study_exactly(tmp_path):
    worker = resume_worker
    split, whole = f"sqlite:///{tmp_path}/split.db", f"sqlite:///{tmp_path}/whole.db"
    worker(split, 25)
    worker(split, 25)
    worker(whole, 50)
    loaded = [optuna.load_study(study_name="resume", storage=s) for s in (split, whole)]
    assert [len(s.trials) for s in loaded] == [50, 50]
    assert params(loaded[0]) == params(loaded[1])
    assert attrs(loaded[0], "role") == attrs(loaded[1], "role")


@pytest.mark.slow
def test_parallel_threads_on_sqlite(tmp_path):
    sampler = biotune()
    study = run(sampler, 24, storage=f"sqlite:///{tmp_path}/p.db", n_jobs=3)
    assert Counter(t.state for t in study.trials) == {TrialState.COMPLETE: 24}


@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_both_directions_improve(direction):
    sign = 1 if direction == "minimize" else -1
    sphere = FUNCTIONS["sphere"]

    def objective(trial):
        return sign * sphere(trial)

    sampler = BioTuneSampler(population_size=8, elite_size=2, seed=0, threshold_param=None,
                             search_space=sphere.search_space)
    study = run(sampler, sampler.n_trials(12), objective=objective, direction=direction)
    values = [sign * t.value for t in study.trials]
    initial = np.mean(values[:8])
    assert min(values) < 0.25 * initial
    # the population entering the last generation is sorted best first in the study's terms
    last = study._storage.get_study_system_attrs(study._study_id)[records.POPULATION_PREFIX + "12"]
    fitness = [d["fitness"] for d in last]
    assert fitness == sorted(fitness)


def test_failed_nan_and_pruned_trials_count_as_documented():
    def objective(trial):
        value = TASK(trial)
        if trial.number % 7 == 3:
            raise RuntimeError("diverged")
        if trial.number % 7 == 5:
            return math.nan
        if trial.number % 7 == 6:
            trial.report(0.05, step=0)
            trial.report(value - 0.3, step=1)
            raise optuna.TrialPruned()
        return value

    sampler = biotune()
    study = run(sampler, sampler.n_trials(4), objective=objective, catch=(RuntimeError,))
    states = Counter(t.state for t in study.trials)
    assert states[TrialState.FAIL] > 0 and states[TrialState.PRUNED] > 0
    direction = study.direction
    for t in study.trials:
        fitness = pop.trial_fitness(t, direction)
        if t.state == TrialState.FAIL:
            assert fitness == math.inf
        elif t.state == TrialState.PRUNED:
            assert fitness == -t.intermediate_values[1]
    entering = study._storage.get_study_system_attrs(study._study_id)
    for key, population in entering.items():
        if key.startswith(records.POPULATION_PREFIX):
            finite = [d["fitness"] for d in population if d["fitness"] is not None]
            assert finite == sorted(finite)
            # failures sort last
            assert ([d["fitness"] is None for d in population] ==
                sorted(d["fitness"] is None for d in population))


def test_enqueued_genome_joins_the_initial_population():
    blocks = TASK.blocks
    study = optuna.create_study(sampler=biotune(), direction="maximize")
    full = encode(blocks, blocks)
    study.enqueue_trial(full)
    study.optimize(TASK, n_trials=9)
    first = study.trials[0]
    assert first.params == pytest.approx(full)
    assert record(first).role == records.ENQUEUED
    assert record(first).generation == 0
    entering = storage_io.populations_of(study)[1]
    assert 0 in [i.trial for i in entering]


def test_elite_local_search_keeps_a_strictly_better_side():
    study = run(biotune(), 6 + 8 * 3)
    stored = study._storage.get_study_system_attrs(study._study_id)
    for g in (1, 2):
        before = stored[records.POPULATION_PREFIX + str(g)]
        after = {d["trial"] for d in stored[records.POPULATION_PREFIX + str(g + 1)]}
        for elite in before[:2]:
            tried = [t for t in study.trials if record(t).elite == elite["trial"]
                     and record(t).generation == g]
            best = max(tried, key=lambda t: t.value)
            other = min(tried, key=lambda t: t.value)
            improved = best.value > -elite["fitness"] and best.value > other.value
            assert (best.number in after) == improved
            if not improved:
                assert elite["trial"] in after


def test_unclipped_elite_genes_option_reproduces_the_authors_quirk():
    study = run(biotune(clip_elite_genes=False), 40)
    for t in study.trials:
        if record(t).role in records.ELITE_ROLES:
            unclipped = record(t).unclipped_genes
            gene = record(t).gene
            assert t.params[gene] == pytest.approx(min(max(unclipped[gene], 0), 1))


def test_mixed_distributions():
    def objective(trial):
        x = trial.suggest_float("x", 0.0, 1.0)
        lr = trial.suggest_float("lr", 1e-5, 1e-1, log=True)
        wd = trial.suggest_float("wd", 0.0, 0.1, step=0.01)
        layers = trial.suggest_int("layers", 1, 4)
        opt = trial.suggest_categorical("optimizer", ["adam", "sgd"])
        fixed = trial.suggest_float("fixed", 2.0, 2.0)
        return (x - 0.3) ** 2 + (math.log10(lr) + 3) ** 2 + wd + layers + (opt == "sgd") + fixed

    sampler = BioTuneSampler(population_size=5, elite_size=1, seed=0)
    study = run(sampler, 40, objective=objective, direction="minimize")
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    for t in study.trials:
        assert 1e-5 <= t.params["lr"] <= 1e-1
        assert round(t.params["wd"] / 0.01, 6) == round(t.params["wd"] / 0.01)
    evolved = [t for t in study.trials if record(t).role == records.CHILD]
    assert evolved and set(record(evolved[-1]).proposal) == {"lr", "wd", "x"}
    # independent parameters are reproducible too
    again = run(BioTuneSampler(population_size=5, elite_size=1, seed=0), 40,
                objective=objective, direction="minimize")
    assert params(again) == params(study)


def test_retry_takes_over_the_slot_of_the_trial_it_retries(tmp_path):
    retry = RetryCallback(max_retry=1)
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/r.db")
    study = optuna.create_study(storage=storage, sampler=biotune(), direction="maximize")
    study.optimize(TASK, n_trials=7)
    victim = study.ask()  # dies after suggesting one gene, as a killed worker would
    victim.suggest_float("gene:stem", 0.0, 1.0)
    storage.set_trial_state_values(victim._trial_id, TrialState.FAIL)
    retry(study, study.trials[7])
    study.optimize(TASK, n_trials=4)
    dead, again, following = study.trials[7], study.trials[8], study.trials[9]
    assert record(again).slot == record(dead).slot == 7
    assert again.params == {**record(dead).proposal, **dead.params}
    assert record(following).slot == 8


def test_resuming_with_other_settings_is_refused(tmp_path):
    storage = f"sqlite:///{tmp_path}/s.db"
    run(biotune(population_size=6), 3, storage=storage)
    with pytest.raises(ValueError, match="population_size=6 \\(now 8\\)"):
        run(biotune(population_size=8), 1, storage=storage)


@pytest.mark.parametrize("population, elite, rate, message", [
    (2, 1, 0.25, "population_size must be at least 3"),
    (5, 5, 0.25, "elite_size must be between 0 and population_size - 1"),
    (5, 1, 0.0, "exploration_rate must be in"),
])
def test_bad_settings_give_one_line_errors(population, elite, rate, message):
    with pytest.raises(ValueError, match=message):
        BioTuneSampler(population, elite, exploration_rate=rate)


def test_the_old_positional_arguments_still_work_with_a_warning():
    with pytest.warns(FutureWarning, match="by keyword"):
        old = BioTuneSampler(6, 2, 0.1, None, 7)
    assert old.settings == BioTuneSampler(6, 2, exploration_rate=0.1, threshold_param=None,
                                          seed=7).settings
    with pytest.raises(TypeError, match="by keyword"):
        BioTuneSampler(6, 2, 0.1, None, 7, {})


def test_the_docstring_example_runs():
    import doctest

    from biotune_optuna.sampler import core

    result = doctest.testmod(core)
    assert result.attempted >= 5 and result.failed == 0


@pytest.mark.slow
def test_beats_random_on_a_noisy_task_over_ten_seeds():
    task = TASKS["near-domain"]
    best = {"biotune": [], "random": []}
    for seed in range(10):
        sampler = BioTuneSampler(seed=seed, search_space=task.search_space, ideal_value=1.0)
        best["biotune"].append(run(sampler, 140).best_value)
        best["random"].append(run(optuna.samplers.RandomSampler(seed=seed), 140).best_value)
    assert np.mean(best["biotune"]) > np.mean(best["random"])


def no_trial_left_running(study):
    return all(t.state.is_finished() for t in study.trials)


def test_only_int_and_categorical_parameters_fall_back_to_independent_sampling():
    study = optuna.create_study(sampler=BioTuneSampler(population_size=4, elite_size=1, seed=0))
    study.optimize(lambda t: t.suggest_int("x", 0, 10) + (t.suggest_categorical("c", "ab")
                                                          == "a"), n_trials=20)
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    later = [record(t) for t in study.trials[1:]]
    assert {r.role for r in later} == {records.INDEPENDENT}
    assert {r.fallback for r in later} == {"no float parameter to evolve"}
    assert len({tuple(t.params.values()) for t in study.trials}) > 5  # still explores


def test_elite_size_zero_and_conditional_floats_run_to_the_end():
    def objective(trial):
        if trial.suggest_categorical("branch", ["a", "b"]) == "a":
            return trial.suggest_float("x", 0, 1)
        return trial.suggest_float("y", 0, 1) + trial.suggest_int("k", 0, 3)

    study = optuna.create_study(sampler=BioTuneSampler(population_size=3, elite_size=0, seed=0))
    study.optimize(objective, n_trials=30)
    assert all(t.state == TrialState.COMPLETE for t in study.trials)


def test_a_range_that_changes_mid_study_keeps_the_search_going():
    space = {"x": optuna.distributions.FloatDistribution(0, 10)}
    sampler = BioTuneSampler(population_size=4, elite_size=1, seed=0, search_space=space,
                             threshold_param=None)
    study = optuna.create_study(sampler=sampler)
    study.optimize(lambda t: t.suggest_float("x", 0, 10), n_trials=10)
    study.optimize(lambda t: t.suggest_float("x", 20, 30), n_trials=10)
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    assert all(20 <= t.params["x"] <= 30 for t in study.trials[10:])


def test_a_population_of_failures_is_sampled_independently_and_says_why():
    def objective(trial):
        value = TASK(trial)
        if trial.number < 6:
            raise RuntimeError("every initial trial fails")
        return value

    study = run(biotune(), 20, objective=objective, catch=(RuntimeError,))
    assert no_trial_left_running(study)
    first_generation = [record(t) for t in study.trials if record(t).generation == 1]
    assert {r.role for r in first_generation} == {records.INDEPENDENT}
    assert all("finite value" in r.fallback for r in first_generation)
    assert study.trials[-1].state == TrialState.COMPLETE


def test_a_sampler_error_falls_back_instead_of_stopping_the_search(monkeypatch):
    from biotune_optuna.sampler import operators

    def broken(*args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(operators, "make_child", broken)
    study = run(biotune(), 20)
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    fallbacks = [record(t).fallback for t in study.trials if record(t).fallback]
    assert fallbacks and all("ZeroDivisionError('a bug')" in f for f in fallbacks)


def test_a_storage_failure_in_before_trial_leaves_no_trial_running(monkeypatch):
    study = optuna.create_study(sampler=biotune(), direction="maximize")
    study.optimize(TASK, n_trials=2)
    original = study._storage.set_trial_system_attr

    def refuse(trial_id, key, value):
        if key == records.RECORD:
            raise OSError("disk full")
        return original(trial_id, key, value)

    monkeypatch.setattr(study._storage, "set_trial_system_attr", refuse)
    with pytest.raises(OSError):
        study.optimize(TASK, n_trials=1)
    assert study.trials[-1].state == TrialState.FAIL


def test_sampler_survives_pickling_mid_study():
    import pickle

    sampler = biotune()
    study = run(sampler, 10)
    study.sampler = pickle.loads(pickle.dumps(sampler))
    study.optimize(TASK, n_trials=10)
    fresh = run(biotune(), 20)
    assert params(study) == params(fresh)
