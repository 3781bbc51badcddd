"""BioTuneSampler under parallel workers: threads, ask/tell with trials in flight, several
processes on one SQLite file, unseeded workers. ``sampler.population.audit`` checks the invariants:
no slot, position or elite exploration taken twice, elite pairs opposite, full populations.
Each test repeats its scenario over many seeds so that a race shows up here, not in CI."""

import random
import subprocess
import sys
import time
from collections import Counter

import optuna
import pytest
from optuna.trial import TrialState

from benchmarks.sampler_parallel import WORKER, ask_tell
from biotune_optuna import BioTuneSampler
from biotune_optuna.sampler import records, storage_io
from biotune_optuna.sampler.records import SEED
from biotune_optuna.sampler.synthetic import TASKS

optuna.logging.set_verbosity(optuna.logging.WARNING)
TASK = TASKS["near-domain"]


def sampler(seed=0, population_size=6, elite_size=2, **kwargs):
    return BioTuneSampler(population_size, elite_size, seed=seed,
                          search_space=TASK.search_space, ideal_value=1.0, **kwargs)


def audit(study, population_size):
    attrs = study._storage.get_study_system_attrs(study._study_id)
    return records.audit(study.get_trials(deepcopy=False), attrs, population_size)


def populations(study):
    return storage_io.populations_of(study)


def slow_task(trial):
    value = TASK(trial)
    time.sleep(random.random() * 0.003)  # completion order varies from run to run
    return value


@pytest.mark.slow
def test_threads_never_take_a_position_twice():
    for seed in range(40):
        s = sampler(seed)
        study = optuna.create_study(sampler=s, direction="maximize")
        study.optimize(slow_task, n_trials=s.n_trials(5), n_jobs=4)
        assert Counter(t.state for t in study.trials) == {TrialState.COMPLETE: 46}
        assert audit(study, 6) == [], seed
        assert len(populations(study)) >= 4


def test_unseeded_threads_share_one_study_seed():
    for _ in range(5):
        s = sampler(seed=None)
        study = optuna.create_study(sampler=s, direction="maximize")
        study.optimize(TASK, n_trials=s.n_trials(5), n_jobs=4)
        assert audit(study, 6) == []
        explored = [t for t in study.trials if records.role_of(t) in records.ELITE_ROLES]
        assert len(explored) >= 12  # pairs were formed, and all of them are opposite
        assert isinstance(study._storage.get_study_system_attrs(study._study_id)[SEED], int)


@pytest.mark.parametrize("in_flight", [4, 8])
def test_trials_in_flight_keep_every_population_full(in_flight):
    for seed in range(10):
        study = ask_tell(TASK, seed, in_flight)
        assert audit(study, 10) == []
        # extra members lengthen generations: fewer of them than the 10 sequential ones
        assert len(populations(study)) >= 6


def test_batches_asked_together_are_extra_members_not_immigrants():
    study = optuna.create_study(sampler=sampler(0, 10, 3), direction="maximize")
    while len(study.trials) < 200:
        batch = [study.ask() for _ in range(20)]
        for trial in batch:
            study.tell(trial, TASK(trial))
    roles = Counter(records.role_of(t) for t in study.trials)
    assert roles[records.INITIAL] == 20  # the first batch: N initial and N extra
    assert roles[records.IMMIGRANT] == 0  # every later batch breeds from a full population
    assert audit(study, 10) == []
    assert len(populations(study)) == 9


def test_a_straggler_does_not_stall_the_next_generation():
    study = optuna.create_study(sampler=sampler(0, 4, 1), direction="maximize")
    straggler = study.ask()  # never told: its worker hangs
    for _ in range(12):
        trial = study.ask()
        study.tell(trial, TASK(trial))
    generations = Counter(records.generation_of(t) for t in study.trials)
    assert generations[0] == 5 and max(generations) >= 1  # an extra member took its place
    assert records.generation_of(study.trials[straggler.number]) == 0
    assert audit(study, 4) == []


def run_workers(url, seed, study_name="p", processes=3, trials=20):
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, url, str(trials), seed,
                                 study_name], stderr=subprocess.PIPE, text=True)
               for _ in range(processes)]
    errors = [w.communicate(timeout=300)[1] for w in workers]
    assert [w.returncode for w in workers] == [0] * processes, errors


@pytest.mark.parametrize("seed", ["3", "none"])
@pytest.mark.slow
def test_processes_on_one_sqlite_file_share_the_search(tmp_path, seed):
    for run in range(3):
        url = f"sqlite:///{tmp_path}/p{run}.db"
        optuna.create_study(storage=url, study_name="p", direction="maximize")
        run_workers(url, seed)
        study = optuna.load_study(study_name="p", storage=url)
        assert Counter(t.state for t in study.trials) == {TrialState.COMPLETE: 60}
        assert audit(study, 6) == [], run


def test_processes_on_one_journal_file_share_the_search(tmp_path):
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    path = tmp_path / "p.log"
    storage = JournalStorage(JournalFileBackend(str(path)))
    study = optuna.create_study(storage=storage, study_name="p", direction="maximize")
    run_workers(f"journal:{path}", "none")
    study = optuna.load_study(study_name="p", storage=storage)
    assert Counter(t.state for t in study.trials) == {TrialState.COMPLETE: 60}
    assert audit(study, 6) == []


@pytest.mark.slow
def test_processes_on_postgresql_share_the_search(postgres_url):
    for run in range(2):
        name = f"parallel-{run}"
        optuna.create_study(storage=postgres_url, study_name=name, direction="maximize")
        run_workers(postgres_url, "none" if run else "5", study_name=name)
        study = optuna.load_study(study_name=name, storage=postgres_url)
        assert Counter(t.state for t in study.trials) == {TrialState.COMPLETE: 60}
        assert audit(study, 6) == [], run


def test_trials_added_by_hand_join_the_next_population():
    study = optuna.create_study(sampler=sampler(0, 4, 1), direction="maximize")
    best = TASK.search_space
    known = {name: 0.9 for name in best} | {"threshold": 0.1}
    study.add_trial(optuna.create_trial(params=known, distributions=best, value=0.99))
    study.optimize(TASK, n_trials=4)
    study.optimize(TASK, n_trials=1)  # starts generation 1
    attrs = study._storage.get_study_system_attrs(study._study_id)
    entering = [d["trial"] for d in attrs[records.POPULATION_PREFIX + "1"]]
    assert entering[0] == 0  # the added trial, best of all, leads the population
    assert attrs[records.ADOPTED_PREFIX + "0"] == [0]
    study.optimize(TASK, n_trials=20)
    assert audit(study, 4) == []
