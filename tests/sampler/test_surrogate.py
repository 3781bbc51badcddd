"""Surrogate pre-selection: children and immigrants are the best predicted of K candidates
drawn by BioTune's own operators; it is off by default, exact on replay and resume, keeps
the invariants under parallel workers, records its candidates and prediction, and needs
NumPy only."""

import numpy as np
import optuna
import pytest

from biotune_optuna import BioTuneSampler
from biotune_optuna.sampler import genome, records, storage_io, surrogate
from tests.sampler import near_domain
from tests.sampler.test_sampler import resume_worker

optuna.logging.set_verbosity(optuna.logging.WARNING)
TASK = near_domain.TASK


def sampler(k=3, seed=0, **options):
    return near_domain.sampler(seed, surrogate_candidates=k, **options)


def search(k=3, generations=5, **options):
    return near_domain.search(generations, surrogate_candidates=k, **options)


def record(trial):
    return records.TrialRecord.of(trial)


def test_the_model_ranks_a_smooth_function_it_was_fitted_on():
    rng = np.random.default_rng(0)
    x = rng.random((40, 4))
    y = ((x - 0.3) ** 2).sum(1)  # minimised at 0.3
    model = surrogate.fit(list(x), list(y), threshold_index=None)
    test = rng.random((30, 4))
    predicted, truth = model.predict(test), ((test - 0.3) ** 2).sum(1)
    assert np.corrcoef(predicted, truth)[0, 1] > 0.8
    assert surrogate.fit(list(x[:7]), list(y[:7]), None) is None  # too few points
    assert surrogate.fit(list(x[:9]), [np.inf] * 2 + list(y[:7]), None) is None


def test_pre_selected_trials_record_their_candidates_and_prediction():
    study = search()
    chosen = [record(t) for t in study.trials if record(t).candidates]
    assert chosen and all(r.candidates == 3 for r in chosen)
    assert {r.role for r in chosen} <= {records.CHILD, records.IMMIGRANT}
    assert all(0.0 <= r.surrogate <= 1.2 for r in chosen)  # an accuracy-like prediction
    unchosen = [record(t) for t in study.trials if record(t).role in
                (records.INITIAL, records.ELITE_PLUS, records.ELITE_MINUS)]
    assert all(r.candidates is None and r.surrogate is None for r in unchosen)


def test_off_by_default_and_one_candidate_is_the_papers_algorithm():
    default = search(k=1)
    plain = optuna.create_study(direction="maximize", sampler=BioTuneSampler(
        6, 2, seed=0, search_space=genome.search_space(TASK.blocks), ideal_value=1.0))
    plain.optimize(TASK, n_trials=len(default.trials))
    assert [t.params for t in default.trials] == [t.params for t in plain.trials]
    assert not any(record(t).candidates for t in default.trials)
    assert [t.params for t in search(k=3).trials] != [t.params for t in default.trials]


def test_the_same_seed_replays_the_same_trials():
    assert [t.params for t in search().trials] == [t.params for t in search().trials]


@pytest.mark.slow
def test_an_interrupted_search_resumes_exactly(tmp_path):
    whole = search(generations=4)
    storage = f"sqlite:///{tmp_path}/r.db"
    for chunk in (9, 8, len(whole.trials) - 17):  # a new process each time
        resume_worker(storage, chunk, seed=0, surrogate_candidates=3)
    resumed = optuna.load_study(study_name="resume", storage=storage)
    assert [t.params for t in resumed.trials] == [t.params for t in whole.trials]


@pytest.mark.parametrize("options", [{}, {"multi_fidelity": True, "rescore_elites": True}])
def test_parallel_threads_keep_every_invariant(options):
    for seed in range(3):
        s = sampler(seed=seed, **options)
        study = optuna.create_study(direction="maximize", sampler=s)
        study.optimize(TASK, n_trials=s.n_trials(5), n_jobs=4)
        assert records.audit(study.trials, storage_io.study_attrs(study), 6) == []
        assert len(study.trials) == s.n_trials(5)


def test_a_multi_fidelity_search_fits_its_model_on_the_low_fidelity_alone():
    study = search(multi_fidelity=True, rescore_elites=True)
    chosen = [t for t in study.trials if record(t).candidates]
    assert chosen and all(record(t).fidelity == records.LOW for t in chosen)


@pytest.mark.slow
def test_resuming_with_another_number_of_candidates_is_refused(tmp_path):
    storage = f"sqlite:///{tmp_path}/k.db"
    search(k=3, generations=2, storage=storage)
    study = optuna.load_study(study_name=optuna.get_all_study_names(storage)[0],
                              storage=storage, sampler=sampler(k=5))
    with pytest.raises(ValueError, match="surrogate_candidates=3"):
        study.optimize(TASK, n_trials=1)
