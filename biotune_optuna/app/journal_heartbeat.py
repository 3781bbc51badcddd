"""A heartbeat for Optuna's journal storage, which has none of its own. Without one, a
worker on another machine that dies (power cut, kill -9) leaves its trial RUNNING for good:
no process there can tell, and this one cannot look up another machine's processes.

Each worker beats for its running trial every interval (a system attr the journal records).
A trial is stale once its beat has stayed the same for the grace period *as this process
watched it*: comparing the beat with this machine's clock would fail a live trial whenever
two machines' clocks disagree by more than the grace period. So a process that has just
started fails a dead worker's trial only after watching it for the grace period (a search
waits for running trials, as on SQLite); a dead worker of this machine is recognised at
once from its process id (``runner.fail_dead_workers_trials``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import optuna
from optuna.storages.journal import BaseJournalBackend, JournalStorage
from optuna.trial import FrozenTrial, TrialState

from biotune_optuna import contents
from biotune_optuna.app.optuna_internals import heartbeat_base, trial_id_of


class BeatingJournalStorage(JournalStorage, heartbeat_base()):
    """Optuna's journal storage with a heartbeat (``heartbeat_interval`` and
    ``grace_period`` in seconds, as ``RDBStorage`` takes them): Optuna's own heartbeat
    thread, stale-trial check and retry callback then work as on a database."""

    def __init__(self, backend: BaseJournalBackend, heartbeat_interval: int,
                 grace_period: int,
                 stale_trial_callback: Callable[[optuna.Study, FrozenTrial], None] | None,
                 ) -> None:
        super().__init__(backend)
        self._interval, self._grace = heartbeat_interval, grace_period
        self._stale_trial_callback = stale_trial_callback
        self._watched: dict[int, tuple[object, float]] = {}  # trial id -> (beat, since)
        self._watch_lock = threading.Lock()

    def record_heartbeat(self, trial_id: int) -> None:
        try:  # the writer's clock: a beat differs from the one before, which is all it says
            self.set_trial_system_attr(trial_id, contents.BEAT, time.time())
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # the trial finished between the thread's wake-up and this write

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.monotonic()
        running = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
        stale = []
        with self._watch_lock:
            for trial in running:
                beat, trial_id = contents.beat(trial), trial_id_of(trial)
                watched = self._watched.get(trial_id)
                if watched is None or watched[0] != beat:
                    self._watched[trial_id] = (beat, now)
                elif now - watched[1] > self._grace:
                    stale.append(trial_id)
            alive = set(map(trial_id_of, running))
            for gone in set(self._watched) - alive:  # finished: forget them
                del self._watched[gone]
        return stale

    def get_heartbeat_interval(self) -> int:
        return self._interval

    def get_heartbeat_stale_trial_callback(self):
        return self._stale_trial_callback

    def get_failed_trial_callback(self):  # its name before Optuna 4.9
        return self._stale_trial_callback
