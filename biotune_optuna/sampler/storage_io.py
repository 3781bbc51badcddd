"""How the sampler reads and writes a study: its view of the trials, read as little as
possible, and its one write per trial.

Each of BioTune's decisions needs every trial's state and record, fresh, under the study lock.
Reading them through Optuna's RDB storage costs several SQL statements per call (about as
much as TPE's whole step), yet between two decisions of one worker usually nothing happened
that the worker did not do itself: it created the trial, decided it, and ran it (Optuna hands
the outcome to ``after_trial``). Finished trials never change. So with an RDB storage one
query of (id, number, state) for the trials past the last confirmed one tells whether
anything happened elsewhere (another worker's trial or decision, a retry, a state this
process did not set); only then are the trials read again through Optuna. Other storages
are read every time: in memory it is free, and journal storages read incrementally.

The record of a decision is the sampler's only write per trial. On an RDB storage it is one
INSERT, where Optuna's generic ``set_trial_system_attr`` first re-reads the trial: the
sampler holds the study lock and the trial is its own, running, without a record yet.
"""

from __future__ import annotations

import copy
import json
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from optuna.storages import BaseStorage, RDBStorage
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from biotune_optuna.sampler.population import RECORD, RETRY_OF, Known, TrialRecord

logger = logging.getLogger(__name__)
Probe = Callable[[int, int], Sequence[tuple[int, int, TrialState]]]


class TrialView:
    def __init__(self, storage: BaseStorage) -> None:
        self._probe = _rdb_probe(storage)
        self._trials: dict[int, Known] = {}  # by number
        self._pending: set[int] = set()  # this process's trials waiting for their decision
        self.retries: set[int] = set()  # numbers of trials made by RetryFailedTrialCallback
        self._confirmed = -1  # every trial with an id up to this one is finished and known
        self._lock = threading.Lock()  # after_trial runs in other threads than decisions

    def pending(self, trial: FrozenTrial) -> None:
        """A trial of this process is about to wait for its decision."""
        with self._lock:
            self._pending.add(trial.number)
            self._trials[trial.number] = (trial, None)
            self._note_retry(trial)

    def trials(self, study: Study) -> list[Known]:
        """Every trial of the study as it stands now, with its record (call under the study
        lock)."""
        rows = self._changes(study)
        with self._lock:
            if rows is None or not all(self._knows(*row) for row in rows):
                trials = study._storage.get_all_trials(study._study_id, deepcopy=False)
                self._trials = {t.number: self._pair(t) for t in trials}
                self.retries = set()
                for t in trials:
                    self._note_retry(t)
                rows = [(t._trial_id, t.number, t.state) for t in trials]
            self._confirm(rows)
            return [self._trials[n] for n in sorted(self._trials)]

    def decided(self, trial: FrozenTrial, record: TrialRecord) -> None:
        """The trial's record was written (under the study lock)."""
        known = copy.copy(trial)
        known.system_attrs = {**trial.system_attrs, RECORD: record.to_json()}
        with self._lock:
            self._pending.discard(trial.number)
            self._trials[trial.number] = (known, record)

    def finished(self, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None,
                 ) -> None:
        """Optuna told the sampler how a trial of this process ended."""
        known = copy.copy(trial)
        known.state = state
        known.values = values
        with self._lock:
            self._pending.discard(trial.number)
            if trial.number in self._trials:
                self._trials[trial.number] = (known, self._trials[trial.number][1])

    def _pair(self, trial: FrozenTrial) -> Known:
        """The trial with its record, parsed again only if the storage gave a new object
        (storages hand out the same object until the trial changes)."""
        known = self._trials.get(trial.number)
        return known if known is not None and known[0] is trial else \
            (trial, TrialRecord.of(trial))

    def _note_retry(self, trial: FrozenTrial) -> None:
        if RETRY_OF in trial.system_attrs:
            self.retries.add(trial.number)

    def _knows(self, trial_id: int, number: int, state: TrialState) -> bool:
        trial, record = self._trials.get(number, (None, None))
        if trial is None or trial._trial_id != trial_id or trial.state != state:
            return False
        # a running trial of another worker may have been decided since it was read
        return state != TrialState.RUNNING or record is not None or number in self._pending

    def _confirm(self, rows: Sequence[tuple[int, int, TrialState]]) -> None:
        for trial_id, _, state in sorted(rows):
            if not state.is_finished():
                break
            self._confirmed = max(self._confirmed, trial_id)

    def _changes(self, study: Study) -> Sequence[tuple[int, int, TrialState]] | None:
        if self._probe is None or not self._trials:
            return None
        try:
            return self._probe(study._study_id, self._confirmed)
        except Exception:  # a schema this code does not know: read through Optuna
            logger.debug("trial probe failed; reading every trial", exc_info=True)
            self._probe = None
            return None


def record_writer(storage: BaseStorage) -> Callable[[int, dict[str, Any]], None]:
    """A function that stores a new trial's record."""
    backend = getattr(storage, "_backend", storage)

    def through_optuna(trial_id: int, record: dict[str, Any]) -> None:
        storage.set_trial_system_attr(trial_id, RECORD, record)

    if not isinstance(backend, RDBStorage):
        return through_optuna
    from optuna.storages._rdb.models import TrialSystemAttributeModel
    from sqlalchemy import insert

    def insert_record(trial_id: int, record: dict[str, Any]) -> None:
        try:
            with backend.engine.begin() as connection:
                connection.execute(insert(TrialSystemAttributeModel), {
                    "trial_id": trial_id, "key": RECORD, "value_json": json.dumps(record)})
        except Exception:  # a schema this code does not know, or a record already there
            logger.debug("record insert failed; writing through Optuna", exc_info=True)
            through_optuna(trial_id, record)

    return insert_record


def _rdb_probe(storage: BaseStorage) -> Probe | None:
    backend = getattr(storage, "_backend", storage)
    if not isinstance(backend, RDBStorage):
        return None
    from optuna.storages._rdb.models import TrialModel
    from sqlalchemy import select

    def probe(study_id: int, after_id: int) -> Sequence[tuple[int, int, TrialState]]:
        query = select(TrialModel.trial_id, TrialModel.number, TrialModel.state).where(
            TrialModel.study_id == study_id, TrialModel.trial_id > after_id)
        with backend.engine.connect() as connection:
            return [tuple(row) for row in connection.execute(query).all()]

    return probe
