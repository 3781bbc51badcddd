"""Multi-fidelity BioTune: the evolution runs at the low fidelity, each new elite is promoted
once to the full fidelity in a trial of its own, and promotions never enter selection;
exact on resume and under parallel workers."""

from collections import Counter

import optuna
import pytest

from biotune_optuna import BioTuneSampler
from biotune_optuna.sampler import fidelity_of, records
from biotune_optuna.sampler import population as pop
from tests.sampler import near_domain
from tests.sampler.test_noise_aware import stored_populations
from tests.sampler.test_sampler import resume_worker

optuna.logging.set_verbosity(optuna.logging.WARNING)
TASK = near_domain.TASK


def sampler(seed=0, **options):
    return near_domain.sampler(seed, multi_fidelity=True, **options)


def search(generations=6, **options):
    return near_domain.search(generations, multi_fidelity=True, **options)


def records_of(study):
    return {t.number: records.TrialRecord.of(t) for t in study.trials}


def test_a_generation_has_e_promotion_positions_after_the_rescoring_ones():
    layout = pop.Layout(6, 2, rescore=True, promote=True)
    assert [layout.generation_size(g) for g in (0, 1)] == [6, 12]
    assert [layout.role(1, p) for p in range(12)] == [
        "elite+", "elite-", "elite+", "elite-", "rescore", "rescore", "promote", "promote",
        "child", "child", "child", "child"]
    assert pop.Layout(6, 2, promote=True).role(1, 4) == "promote"
    assert sampler().n_trials(4) == 6 + 4 * 10


def test_each_elite_is_promoted_once_at_the_first_generation_it_is_an_elite():
    study = search()
    kept = records_of(study)
    populations = stored_populations(study)
    expected, seen = [], set()
    for generation in sorted(populations):
        for individual in populations[generation][:2]:
            if individual.trial not in seen:
                seen.add(individual.trial)
                expected.append((generation, individual.trial))
    promotions = [(r.generation, r.elite) for r in kept.values() if r.role == records.PROMOTE]
    assert sorted(promotions) == sorted(expected) and len(promotions) >= 4
    for trial in study.trials:
        record = kept[trial.number]
        if record.role == records.PROMOTE:
            assert trial.params == study.trials[record.elite].params
            assert fidelity_of(trial) == "full"
        else:
            assert fidelity_of(trial) == "low"
    # a promotion position whose elite was promoted already breeds a child
    assert any(r.role == records.CHILD and r.position in (4, 5) for r in kept.values())
    assert records.audit(study.trials, study._storage.get_study_system_attrs(study._study_id),
                     6) == []


def test_selection_compares_low_fidelity_values_only():
    """The synthetic task scores a low-fidelity trial 0.05 lower: were a promotion's
    full-fidelity value to enter a population, that member would carry it."""
    study = search()
    kept = records_of(study)
    values = {t.number: t.value for t in study.trials}
    for population in stored_populations(study).values():
        for individual in population:
            assert kept[individual.trial].role != records.PROMOTE
            assert individual.fitness == pytest.approx(-values[individual.trial])


def test_without_the_option_nothing_is_promoted_and_the_search_is_todays():
    plain = BioTuneSampler(6, 2, seed=0, search_space=TASK.search_space, ideal_value=1.0)
    study = optuna.create_study(sampler=plain, direction="maximize")
    study.optimize(TASK, n_trials=plain.n_trials(4))
    assert all(fidelity_of(t) == "full" and records.role_of(t) != records.PROMOTE
               for t in study.trials)
    assert records.TrialRecord.of(study.trials[0]).fidelity is None


def test_same_seed_same_trials():
    assert [t.params for t in search(3).trials] == [t.params for t in search(3).trials]


@pytest.mark.slow
def test_an_interrupted_multi_fidelity_search_resumes_exactly(tmp_path):
    def worker(storage, n_trials):
        resume_worker(storage, n_trials, task="far-domain", seed=5, multi_fidelity=True,
                      rescore_elites=True)

    split, whole = f"sqlite:///{tmp_path}/split.db", f"sqlite:///{tmp_path}/whole.db"
    for n_trials in (13, 19, 30):  # stops inside generations, after promotions
        worker(split, n_trials)
    worker(whole, 62)
    loaded = [optuna.load_study(study_name="resume", storage=s) for s in (split, whole)]
    assert [len(s.trials) for s in loaded] == [62, 62]
    assert [t.params for t in loaded[0].trials] == [t.params for t in loaded[1].trials]
    assert ([records.TrialRecord.of(t) for t in loaded[0].trials] ==
        [records.TrialRecord.of(t) for t in loaded[1].trials])
    assert stored_populations(loaded[0]) == stored_populations(loaded[1])


def test_parallel_threads_never_promote_an_elite_twice():
    for seed in range(10):
        s = sampler(seed, rescore_elites=True)
        study = optuna.create_study(sampler=s, direction="maximize")
        study.optimize(TASK, n_trials=s.n_trials(5), n_jobs=4)
        attrs = study._storage.get_study_system_attrs(study._study_id)
        assert records.audit(study.trials, attrs, 6) == [], seed
        roles = Counter(records.role_of(t) for t in study.trials)
        assert roles[records.PROMOTE] >= 2 and len(study.trials) == s.n_trials(5)


def test_multi_fidelity_needs_an_elite_to_promote():
    with pytest.raises(ValueError, match="elite_size must be at least 1"):
        BioTuneSampler(4, 0, multi_fidelity=True)


def test_a_study_from_before_the_option_resumes_without_it(tmp_path):
    storage = f"sqlite:///{tmp_path}/old.db"
    plain = BioTuneSampler(6, 2, seed=0, search_space=TASK.search_space, ideal_value=1.0)
    study = optuna.create_study(storage=storage, study_name="old", direction="maximize",
                                sampler=plain)
    study.optimize(TASK, n_trials=8)
    settings = study._storage.get_study_system_attrs(study._study_id)["biotune:settings"]
    del settings["multi_fidelity"]
    study._storage.set_study_system_attr(study._study_id, "biotune:settings", settings)
    optuna.load_study(study_name="old", storage=storage, sampler=plain).optimize(TASK,
                                                                                n_trials=2)
    refused = optuna.load_study(study_name="old", storage=storage, sampler=sampler())
    with pytest.raises(ValueError, match="multi_fidelity=False"):
        refused.optimize(TASK, n_trials=1)
