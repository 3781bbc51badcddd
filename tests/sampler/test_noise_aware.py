"""Noise-aware BioTune: elites re-scored once per generation and ranked by the mean of their
evaluations, and the elite pair mean; exact on resume and under parallel workers."""

from collections import Counter

import numpy as np
import optuna
import pytest

from biotune_optuna.sampler import population as pop
from biotune_optuna.sampler import records, rescore_round, storage_io
from tests.sampler.near_domain import TASK, sampler, search
from tests.sampler.test_sampler import resume_worker

optuna.logging.set_verbosity(optuna.logging.WARNING)


def stored_populations(study):
    return storage_io.populations_of(study)


def test_a_generation_with_rescoring_has_n_plus_2e_positions():
    layout = pop.Layout(6, 2, rescore=True)
    assert [layout.generation_size(g) for g in (0, 1, 2)] == [6, 10, 10]
    assert [layout.role(1, p) for p in range(10)] == [
        "elite+", "elite-", "elite+", "elite-", "rescore", "rescore",
        "child", "child", "child", "child"]
    assert layout.n_trials(4) == 46 == pop.Layout(6, 2).n_trials(5)
    assert sampler(rescore_elites=True).n_trials(4) == 46


def test_each_elite_is_rescored_once_per_generation_with_its_own_parameters():
    study = search(rescore_elites=True)
    by_number = {t.number: records.TrialRecord.of(t) for t in study.trials}
    rescores = [t for t in study.trials if by_number[t.number].role == records.RESCORE]
    assert len(rescores) == 2 * 5
    for trial in rescores:
        record = by_number[trial.number]
        assert record.position in (4, 5)
        assert trial.params == study.trials[record.elite].params
        population = stored_populations(study)[record.generation]
        assert record.elite == population[record.position - 4].trial  # the g-th elite
        assert rescore_round(trial) == record.generation > 0
    assert all(rescore_round(t) == 0 for t in study.trials if t not in rescores)
    assert records.audit(study.trials, study._storage.get_study_system_attrs(study._study_id),
                     6) == []


def test_a_rescored_elite_is_ranked_by_the_mean_of_its_evaluations():
    study = search(rescore_elites=True)
    values = {t.number: t.value for t in study.trials}
    rescored = Counter()
    for t in study.trials:
        record = records.TrialRecord.of(t)
        if record.role == records.RESCORE:
            rescored[record.elite] += 1
    checked = 0
    for generation, population in stored_populations(study).items():
        for individual in population:
            if individual.evaluations == 1:
                continue
            runs = [values[individual.trial]] + [
                t.value for t in study.trials
                if records.TrialRecord.of(t).role == records.RESCORE
                and records.TrialRecord.of(t).elite == individual.trial
                and records.TrialRecord.of(t).generation < generation]
            assert individual.evaluations == len(runs)
            assert individual.fitness == pytest.approx(-np.mean(runs))
            checked += 1
    assert checked > 0


def test_pair_mean_ranks_a_kept_elite_by_its_neighbourhood():
    elite = records.Individual(0, {"g": 0.5}, -0.9, 0.2)
    worse = [records.Individual(7, {"g": 0.6}, -0.8), records.Individual(8, {"g": 0.4}, -0.7)]
    generation = pop.Generation(explorations={0: worse}, rescores={0: [-0.8]})
    plain, = pop.resolve_elites([elite], 1, generation)
    assert (plain.trial, plain.fitness, plain.evaluations) == (0, pytest.approx(-0.85), 2)
    paired, = pop.resolve_elites([elite], 1, generation, pair_mean=True)
    assert (paired.trial, paired.fitness, paired.evaluations) == (0, pytest.approx(-0.8), 4)
    assert paired.extinction == 0.2
    # a re-scored elite's mean is what an exploration must beat
    better = pop.Generation(explorations={0: [records.Individual(7, {"g": 0.6}, -0.82)]},
                            rescores={0: [-0.7]})
    moved, = pop.resolve_elites([elite], 1, better, pair_mean=True)
    assert (moved.trial, moved.fitness, moved.evaluations) == (7, -0.82, 1)


def test_a_failed_rescoring_run_makes_the_elite_worst():
    elite = records.Individual(0, {"g": 0.5}, -0.9)
    assert elite.averaged_with([float("inf")]).fitness == float("inf")
    assert records.Individual.from_json(elite.averaged_with([-0.7]).to_json()).evaluations == 2


def test_without_the_options_the_search_is_todays():
    assert ([t.params for t in search().trials] ==
        [t.params for t in search(rescore_elites=False, elite_pair_mean=False).trials])
    assert ([t.params for t in search(elite_pair_mean=True).trials] !=
        [t.params for t in search().trials])


@pytest.mark.slow
def test_an_interrupted_noise_aware_search_resumes_exactly(tmp_path):
    def worker(storage, n_trials):
        resume_worker(storage, n_trials, task="far-domain", seed=3, rescore_elites=True,
                      elite_pair_mean=True)

    split, whole = f"sqlite:///{tmp_path}/split.db", f"sqlite:///{tmp_path}/whole.db"
    for n_trials in (13, 20, 23):  # stops inside generations, after re-scoring runs
        worker(split, n_trials)
    worker(whole, 56)
    loaded = [optuna.load_study(study_name="resume", storage=s) for s in (split, whole)]
    assert [len(s.trials) for s in loaded] == [56, 56]
    assert [t.params for t in loaded[0].trials] == [t.params for t in loaded[1].trials]
    assert stored_populations(loaded[0]) == stored_populations(loaded[1])


def test_parallel_threads_keep_one_rescoring_run_per_elite_and_generation():
    for seed in range(10):
        s = sampler(seed, rescore_elites=True, elite_pair_mean=True)
        study = optuna.create_study(sampler=s, direction="maximize")
        study.optimize(TASK, n_trials=s.n_trials(4), n_jobs=4)
        attrs = study._storage.get_study_system_attrs(study._study_id)
        assert records.audit(study.trials, attrs, 6) == [], seed
        assert len(study.trials) == 46


@pytest.mark.slow
def test_a_study_from_before_the_options_resumes(tmp_path):
    storage = f"sqlite:///{tmp_path}/old.db"
    study = optuna.create_study(storage=storage, study_name="old", direction="maximize",
                                sampler=sampler())
    study.optimize(TASK, n_trials=8)
    settings = study._storage.get_study_system_attrs(study._study_id)["biotune:settings"]
    for added in ("rescore_elites", "elite_pair_mean"):
        del settings[added]
    study._storage.set_study_system_attr(study._study_id, "biotune:settings", settings)
    resumed = optuna.load_study(study_name="old", storage=storage, sampler=sampler())
    resumed.optimize(TASK, n_trials=4)
    assert len(resumed.trials) == 12
    refused = optuna.load_study(study_name="old", storage=storage,
                                sampler=sampler(rescore_elites=True))
    with pytest.raises(ValueError, match="rescore_elites=False"):
        refused.optimize(TASK, n_trials=1)
