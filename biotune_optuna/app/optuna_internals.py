"""The command line's only door to Optuna's private API; the sampler has its own
(:mod:`biotune_optuna.sampler.storage_io`), whose readers this module shares rather than
repeat. Each use says why no public API serves."""

from __future__ import annotations

from typing import Any

import optuna
from optuna.storages import BaseStorage, RDBStorage

from biotune_optuna.sampler.coordination import lock_for as lock_for
from biotune_optuna.sampler.storage_io import backend_of
from biotune_optuna.sampler.storage_io import set_study_attr as set_study_attr
from biotune_optuna.sampler.storage_io import storage_of as storage_of
from biotune_optuna.sampler.storage_io import study_attrs as study_attrs
from biotune_optuna.sampler.storage_io import study_id_of as study_id_of
from biotune_optuna.sampler.storage_io import trial_attrs as trial_attrs
from biotune_optuna.sampler.storage_io import trial_id_of as trial_id_of


def heartbeat_base() -> type:
    """Optuna's heartbeat interface (``optuna.storages._heartbeat.BaseHeartbeat``): a storage
    that inherits it gets Optuna's heartbeat thread and stale-trial check; no public name."""
    from optuna.storages._heartbeat import BaseHeartbeat

    return BaseHeartbeat


def heartbeat_enabled(storage: BaseStorage) -> bool:
    # optuna.storages._heartbeat: no public way to ask whether a storage runs heartbeats
    from optuna.storages._heartbeat import is_heartbeat_enabled

    return is_heartbeat_enabled(storage)


def heartbeat_rdb(study: optuna.Study) -> RDBStorage | None:
    """The study's RDB storage when it records heartbeats, else None."""
    rdb = backend_of(storage_of(study))
    return rdb if isinstance(rdb, RDBStorage) and heartbeat_enabled(rdb) else None


def beating_trial_ids(rdb: RDBStorage) -> set[int]:
    """Trials that have sent a heartbeat (Optuna exposes only the stale ones)."""
    from optuna.storages._rdb import models  # the heartbeat table has no public reader

    with rdb.scoped_session() as session:
        return {tid for (tid,) in session.query(models.TrialHeartbeatModel.trial_id)}


def fail_running_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial,
                       ) -> optuna.trial.FrozenTrial | None:
    """Fail another worker's RUNNING trial (Study.tell only finishes trials asked in this
    process); the failed trial as stored, None when it had finished meanwhile."""
    storage = storage_of(study)
    try:
        if not storage.set_trial_state_values(trial_id_of(trial), optuna.trial.TrialState.FAIL):
            return None
    except optuna.exceptions.UpdateFinishedTrialError:  # another worker got there first
        return None
    return storage.get_trial(trial_id_of(trial))


def study_key(study: optuna.Study) -> tuple[int, Any]:
    """One study of one storage object, for caches keyed by study."""
    return id(storage_of(study)), study_id_of(study)


def journal_lock(backend):
    """The lock a journal file backend takes around each append (its own, so that other
    Optuna processes on the file wait for ours)."""
    from optuna.storages.journal._file import get_lock_file

    return get_lock_file(backend._lock)
