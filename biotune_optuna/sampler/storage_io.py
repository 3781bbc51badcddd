"""How the sampler reads and writes a study: its view of the trials, read as little as
possible, and its one write per trial. This is the sampler's only door to Optuna's private
API; each use says why no public one serves.

A sampler's hooks receive a ``Study`` and a ``FrozenTrial``; Optuna's own samplers reach the
storage through the study's private storage and the trial's private id because the public
``Study`` offers no way to read or write *system* attrs (where a sampler keeps its state,
hidden from users' attrs) or to read one trial without copying them all.

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

from .records import (
    RECORD,
    Individual,
    Known,
    TrialContext,
    TrialRecord,
    audit,
    is_retry,
    stored_populations,
    stored_seed,
)

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
                trials = storage_of(study).get_all_trials(study_id_of(study), deepcopy=False)
                self._trials = {t.number: self._pair(t) for t in trials}
                self.retries = set()
                for t in trials:
                    self._note_retry(t)
                rows = [(trial_id_of(t), t.number, t.state) for t in trials]
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
        return (known if known is not None and known[0] is trial else
            (trial, TrialRecord.of(trial)))

    def _note_retry(self, trial: FrozenTrial) -> None:
        if is_retry(trial):
            self.retries.add(trial.number)

    def _knows(self, trial_id: int, number: int, state: TrialState) -> bool:
        trial, record = self._trials.get(number, (None, None))
        if trial is None or trial_id_of(trial) != trial_id or trial.state != state:
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
            return self._probe(study_id_of(study), self._confirmed)
        except Exception:  # a schema this code does not know: read through Optuna
            logger.debug("trial probe failed; reading every trial", exc_info=True)
            self._probe = None
            return None


def storage_of(study: Study) -> BaseStorage:
    # Study exposes no storage; samplers' hooks need it (as Optuna's own samplers do).
    return study._storage


def study_id_of(study: Study) -> int:
    # the storage API is keyed by study id, which Study does not expose
    return study._study_id


def trial_id_of(trial: FrozenTrial) -> int:
    # the storage API is keyed by trial id; FrozenTrial exposes only the number
    return trial._trial_id


def backend_of(storage: BaseStorage) -> BaseStorage:
    """The storage behind Optuna's cache wrapper (``_CachedStorage`` has no public accessor),
    to tell an RDB or journal file apart for locking and direct SQL."""
    return getattr(storage, "_backend", storage)


def journal_file(storage: BaseStorage) -> str | None:
    # JournalFileBackend keeps its path private; the lock file lives beside it
    return getattr(backend_of(storage), "_file_path", None)


def study_attrs(study: Study) -> dict[str, Any]:
    """The study's system attrs (no public reader: Study.system_attrs is deprecated)."""
    return storage_of(study).get_study_system_attrs(study_id_of(study))


def set_study_attr(study: Study, key: str, value: Any) -> None:
    # Study.set_system_attr is deprecated; system attrs keep the sampler's state out of the
    # users' attrs, as Optuna's GA samplers do
    storage_of(study).set_study_system_attr(study_id_of(study), key, value)


def stored_trial(study: Study, trial: FrozenTrial) -> FrozenTrial:
    """The trial as stored now (a trial handed to a hook may predate its record)."""
    return storage_of(study).get_trial(trial_id_of(trial))


def populations_of(study: Study) -> dict[int, list[Individual]]:
    """Generation -> the population entering it, as the sampler stored it."""
    return stored_populations(study_attrs(study))


def trial_attrs(trial: Any) -> dict[str, Any]:
    """The stored system attrs of a running ``optuna.Trial`` (an objective asking what the
    sampler decided for it; Trial offers no reader of system attrs)."""
    return trial.study._storage.get_trial_system_attrs(trial._trial_id)


def trial_context(trial: Any) -> TrialContext:
    """What the sampler decided for a running ``optuna.Trial``, read once."""
    return TrialContext.from_attrs(trial_attrs(trial))


def study_seed(study: Study) -> int | None:
    return stored_seed(study_attrs(study))


def audit_study(study: Study, population_size: int) -> list[str]:
    """:func:`records.audit` of a study as stored."""
    return audit(study.get_trials(deepcopy=False), study_attrs(study), population_size)


def fail_trial(study: Study, trial: FrozenTrial) -> None:
    """Close a trial that cannot run, so a refused start leaves nothing RUNNING (no public API
    finishes a trial from inside a sampler's hook)."""
    try:
        storage_of(study).set_trial_state_values(trial_id_of(trial), TrialState.FAIL)
    except Exception:  # already finished, or the storage itself is failing
        logger.debug("could not fail trial %d", trial.number, exc_info=True)


def record_writer(storage: BaseStorage) -> Callable[[int, dict[str, Any]], None]:
    """A function that stores a new trial's record."""
    backend = backend_of(storage)

    def through_optuna(trial_id: int, record: dict[str, Any]) -> None:
        storage.set_trial_system_attr(trial_id, RECORD, record)

    if not isinstance(backend, RDBStorage):
        return through_optuna
    # one INSERT, where set_trial_system_attr re-reads the trial first; Optuna's ORM models
    # are private but their table is the storage's schema
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
    backend = backend_of(storage)
    if not isinstance(backend, RDBStorage):
        return None
    # no public API lists trials' states without reading them whole
    from optuna.storages._rdb.models import TrialModel
    from sqlalchemy import select

    def probe(study_id: int, after_id: int) -> Sequence[tuple[int, int, TrialState]]:
        query = select(TrialModel.trial_id, TrialModel.number, TrialModel.state).where(
            TrialModel.study_id == study_id, TrialModel.trial_id > after_id)
        with backend.engine.connect() as connection:
            return [tuple(row) for row in connection.execute(query).all()]

    return probe
