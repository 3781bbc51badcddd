"""Storage helpers: orphaned trials (dead before their first heartbeat), retries, and
Ctrl-C during a trial."""

import os
import signal
import time

import optuna
import pytest
from optuna.trial import TrialState

from biotune_optuna.app.runner import Budget, StopRequests, fail_orphaned_trials, run_search
from biotune_optuna.app.storage import open_storage
from biotune_optuna.contents import EPOCHS, INTERRUPTED, WORKER
from biotune_optuna.finetuning import train as finetune
from biotune_optuna.finetuning.build import build_task
from biotune_optuna.sampler.genome import decode, encode


@pytest.mark.slow
def test_a_trial_dead_before_its_first_heartbeat_is_failed_and_retried(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path}/o.db", heartbeat=1, grace=2)
    study = optuna.create_study(storage=storage, study_name="o")
    orphan = study.ask()  # created RUNNING; no heartbeat thread ever starts
    orphan.suggest_float("x", 0, 1)
    alive = study.ask()
    storage.record_heartbeat(alive._trial_id)
    assert fail_orphaned_trials(study) == 0  # younger than the grace period
    time.sleep(2.5)
    storage.record_heartbeat(alive._trial_id)
    assert fail_orphaned_trials(study) == 1
    states = {t.number: t.state for t in study.trials}
    assert states[orphan.number] == TrialState.FAIL
    assert states[alive.number] == TrialState.RUNNING
    retry = [t for t in study.trials if t.system_attrs.get("failed_trial") == orphan.number]
    assert len(retry) == 1 and retry[0].state == TrialState.WAITING
    assert retry[0].params == study.trials[orphan.number].params
    assert fail_orphaned_trials(study) == 0  # once only


def test_a_budget_counts_slots_not_retries_and_lets_waiting_trials_run(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path}/r.db", heartbeat=None)
    study = optuna.create_study(storage=storage, study_name="r")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    assert Budget(trials=4).has_room(study) and not Budget(trials=3).has_room(study)
    study.enqueue_trial({"x": 0.5})
    assert Budget(trials=3).has_room(study)  # the enqueued trial waits and runs


def test_a_compute_budget_ends_the_search_once_the_finished_trials_trained_enough(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path}/b.db", heartbeat=None)
    study = optuna.create_study(storage=storage, study_name="b")

    def objective(trial):  # each trial "trains" 3 epochs
        trial.set_user_attr(EPOCHS, [2, 1])
        return trial.suggest_float("x", 0, 1)

    run_search(study, objective, Budget(epochs=10))
    assert len(study.trials) == 4  # 9 epochs after three trials: a fourth starts
    run_search(study, objective, Budget(trials=10, epochs=10))  # resumed: spent already
    assert len(study.trials) == 4
    run_search(study, objective, Budget(trials=5, epochs=100))
    assert len(study.trials) == 5


def test_ctrl_c_in_a_trial_never_breaks_its_storage_writes(tmp_path):
    """The signal arrives while the objective writes to storage: the write completes, the
    training stops at its first batch, the trial is failed and marked for retry."""
    task = build_task("tiny", "digits", shots=5, split_seed=0)
    names = task.block_names
    plan = decode(encode(names, names), names)
    storage = open_storage(f"sqlite:///{tmp_path}/c.db", heartbeat=None)
    study = optuna.create_study(storage=storage, study_name="c", direction="maximize")
    epochs = []
    stops = StopRequests()

    def objective(trial):
        os.kill(os.getpid(), signal.SIGINT)  # as if Ctrl-C came just now
        trial.set_user_attr("written", True)
        finetune.fine_tune(task, plan, finetune.TrainConfig(epochs=1), seed=0,
                           on_epoch=lambda epoch, value: epochs.append(epoch),
                           should_stop=stops.training_should_stop)
        return 1.0

    with pytest.raises(KeyboardInterrupt):
        run_search(study, objective, Budget(trials=3), stops=stops)
    [trial] = study.trials
    assert trial.state == TrialState.FAIL
    assert {k: v for k, v in trial.user_attrs.items() if k != WORKER} == {
        "written": True, INTERRUPTED: True}
    assert epochs == []  # stopped before its first epoch ended
    assert not stops.training_should_stop()  # a later search starts clean
