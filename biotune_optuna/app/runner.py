"""Running a search: trials until the study-wide budget is filled, whatever the number of
workers; Ctrl-C and SIGTERM handled without breaking a storage write; trials of dead workers
failed and retried."""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import signal
import socket
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState

from biotune_optuna import contents
from biotune_optuna.app.optuna_internals import (
    beating_trial_ids,
    fail_running_trial,
    heartbeat_enabled,
    heartbeat_rdb,
    lock_for,
    storage_of,
    trial_id_of,
)
from biotune_optuna.app.storage import environment_failed, retry_callback
from biotune_optuna.contents import INTERRUPTED, WORKER
from biotune_optuna.sampler.records import is_retry

logger = logging.getLogger(__name__)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


class BudgetReached(Exception):
    """Every trial of the budget has been started (by this worker or another)."""


@dataclass(frozen=True)
class Budget:
    """A search's study-wide budget, counted across every worker: trials (slots: a retry
    does not take one) and the compute the study's finished trials spent (epochs trained,
    seed runs added up). Either may be None (no limit); the first one reached ends it."""

    trials: int | None = None
    epochs: int | None = None

    def has_room(self, study: optuna.Study) -> bool:
        """Whether a trial may start: a waiting one (an enqueued genome or a retry, which
        keeps a started generation whole) always may, a new one while both budgets last."""
        trials = study.get_trials(deepcopy=False)
        if any(t.state == TrialState.WAITING for t in trials):
            return True
        slots = sum(1 for t in trials if not is_retry(t))
        if self.trials is not None and slots >= self.trials:
            return False
        return self.epochs is None or contents.compute_spent(trials).epochs < self.epochs


class BudgetedStudy(optuna.Study):
    """The study as a search drives it: :meth:`ask` starts a trial only while the study-wide
    budget has room. The check and the trial's creation happen under the study lock, so
    workers that start trials at the same moment, on one machine or several, never overshoot
    a trial budget together (a compute budget counts finished trials, so each worker's
    trial in flight may end past it)."""

    def __init__(self, study: optuna.Study, budget: Budget) -> None:
        super().__init__(study.study_name, storage_of(study), study.sampler, study.pruner)
        self.budget = budget

    def ask(self, fixed_distributions=None) -> optuna.Trial:
        with lock_for(self):
            if not self.budget.has_room(self):
                raise BudgetReached
            return super().ask(fixed_distributions)


class StopRequests:
    """Ctrl-C and SIGTERM during a search. Inside a trial's objective they stop the training
    at its next batch (the objective passes :meth:`training_should_stop` to the training
    loop): the trial fails, marked interrupted, and the next run retries it. They never raise
    inside a storage write: outside training they only ask the search to stop after the
    current step, so no trial is left half-written."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self._stop_training = threading.Event()
        self._in_objective = 0
        self._previous: dict = {}

    def training_should_stop(self) -> bool:
        return self._stop_training.is_set()

    def __enter__(self) -> StopRequests:
        self.requested = False
        self._stop_training.clear()
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
        self._stop_training.clear()

    def _handle(self, signum, frame) -> None:
        self.requested = True
        if self._in_objective:
            self._stop_training.set()

    def wrap(self, objective):
        def wrapped(trial: optuna.Trial) -> float:
            if heartbeat_rdb(trial.study) is None:
                trial.set_user_attr(WORKER, this_worker())  # see fail_dead_workers_trials
            self._in_objective += 1
            try:
                return objective(trial)
            except KeyboardInterrupt:
                pass
            except optuna.TrialPruned:
                raise
            except Exception as error:
                if environment_failed(error):  # retried by the next run
                    with contextlib.suppress(Exception):
                        trial.set_user_attr(INTERRUPTED, True)
                    raise
                if not self.requested:
                    raise
                # the same signal can break other parts (DataLoader workers die of it)
            finally:
                self._in_objective -= 1
            trial.set_user_attr(INTERRUPTED, True)
            raise KeyboardInterrupt
        return wrapped

    def stop_callback(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if self.requested:
            study.stop()


def fail_orphaned_trials(study: optuna.Study) -> int:
    """Fail and retry RUNNING trials that never sent a heartbeat and started longer than the
    grace period ago. Optuna's heartbeat check skips them, yet a worker killed between
    creating a trial and starting its heartbeat thread leaves exactly such a trial."""
    rdb = heartbeat_rdb(study)
    if rdb is None:
        return 0
    grace = rdb.grace_period or 2 * rdb.heartbeat_interval
    beating = beating_trial_ids(rdb)
    now = datetime.datetime.now()
    failed = 0
    for trial in running_trials(study):
        if trial_id_of(trial) in beating or trial.datetime_start is None:
            continue
        if (now - trial.datetime_start).total_seconds() <= grace:
            continue
        failed_trial = fail_running_trial(study, trial)
        if failed_trial is None:
            continue
        retry_callback()(study, failed_trial)
        failed += 1
    return failed


def this_worker() -> list:
    return [socket.gethostname(), os.getpid(), _process_start(os.getpid())]


def _process_start(pid: int) -> str | None:
    """When the process started (Linux: clock ticks since boot), to tell a reused pid."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _worker_gone(worker: list) -> bool:
    host, pid, start = worker
    if host != socket.gethostname():
        return False  # another machine's: only a heartbeat can tell
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's live process
        return False
    return start is not None and _process_start(pid) != start


def fail_dead_workers_trials(study: optuna.Study) -> int:
    """Fail and retry RUNNING trials of a journal file whose worker, a process of this
    machine, has exited (kill -9, a full disk that even the trial's failure could not be
    written to): at once, where the journal's heartbeat waits for its grace period."""
    if heartbeat_rdb(study) is not None:
        return 0
    failed = 0
    for trial in running_trials(study):
        worker = contents.worker(trial)
        if worker and _worker_gone(worker):
            stored = fail_running_trial(study, trial)
            if stored is not None:
                retry_callback()(study, stored)
                failed += 1
    return failed


def running_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))


def run_search(study: optuna.Study, objective, budget: Budget, n_jobs: int = 1,
               callbacks=(), timeout: float | None = None, wait_seconds: float = 5.0,
               on_wait=None, stops: StopRequests | None = None) -> None:
    """Run trials until the ``budget`` is spent and nothing is left running; raise
    KeyboardInterrupt once the trials are consistent if Ctrl-C or SIGTERM stopped it.

    Trials left RUNNING by a dead worker are failed once their heartbeat is older than the
    grace period and retried (Optuna's heartbeat), so this waits for them instead of
    leaving them behind; trials of live workers simply finish. ``stops`` is the objective's
    source of :meth:`StopRequests.training_should_stop`.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    budgeted = BudgetedStudy(study, budget)
    with (stops or StopRequests()) as stops:
        wrapped = stops.wrap(objective)
        while not stops.requested:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return
            if budget.has_room(study):
                try:
                    budgeted.optimize(wrapped, n_jobs=n_jobs, timeout=left,
                                      callbacks=[*callbacks, stops.stop_callback],
                                      gc_after_trial=False)
                except BudgetReached:
                    pass
                continue
            running = running_trials(study)
            if not running or not heartbeat_enabled(storage_of(study)):
                return
            if on_wait is not None:
                on_wait(running)
            time.sleep(wait_seconds)
            optuna.storages.fail_stale_trials(study)
            fail_orphaned_trials(study)
    raise KeyboardInterrupt
