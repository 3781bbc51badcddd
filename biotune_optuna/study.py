"""Studies in storage: open a storage URL, create or resume a study with its configuration,
retry trials that a dead or interrupted worker left behind, and build samplers by name."""

from __future__ import annotations

import datetime
import logging
import os
import signal
import sqlite3
import threading
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage
from optuna.storages._heartbeat import is_heartbeat_enabled
from optuna.trial import TrialState

from biotune_optuna import _keys as keys
from biotune_optuna import genome
from biotune_optuna._coordination import study_lock
from biotune_optuna._population import RETRY_OF
from biotune_optuna.config import ConfigError, SearchConfig, differences
from biotune_optuna.finetune import stop_training
from biotune_optuna.sampler import BioTuneSampler
from biotune_optuna.storage_urls import masked, remember, scrubbed

logger = logging.getLogger(__name__)
INTERRUPTED = "interrupted"
STORAGE_ATTEMPTS = 5
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


class StorageError(ValueError):
    """A storage URL that cannot be opened (one-line message naming the fix)."""


def _retry_callback():
    """Optuna's retry of trials whose worker died (renamed in Optuna 4.9)."""
    cls = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) \
        or optuna.storages.RetryFailedTrialCallback
    return cls(max_retry=3)


def _check_sqlite_file(url: str) -> None:
    path = Path(url.removeprefix("sqlite:///"))
    if url.startswith("sqlite:////"):
        path = Path("/" + url.removeprefix("sqlite:////"))
    if str(path) in ("", ":memory:"):
        return
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise StorageError(f"cannot create the studies directory {folder} ({error.strerror}); "
                           "pass --storage with a writable location") from None
    if not os.access(folder, os.W_OK):
        raise StorageError(f"studies directory {folder} is not writable; pass --storage with "
                           "a writable location")
    if path.exists():
        with path.open("rb") as handle:
            header = handle.read(16)
        if header and header != b"SQLite format 3\x00":
            raise StorageError(f"{path} is not an SQLite database; pass another --storage file")
        try:
            sqlite3.connect(f"file:{path}?mode=ro", uri=True).execute(
                "select name from sqlite_master limit 1").fetchall()
        except sqlite3.DatabaseError as error:
            raise StorageError(f"{path} is not a usable SQLite database ({error}); pass "
                               "another --storage file") from None


def open_storage(url: str, heartbeat: int | None = 60, grace: int | None = 180):
    """An Optuna storage for ``url``.

    ``sqlite:///path.db`` and any SQLAlchemy URL (``postgresql://user@host/db``) give an
    RDB storage with a heartbeat: a trial whose worker died is failed after ``grace`` seconds
    and retried with the same parameters. ``journal:///path.log`` gives Optuna's journal
    file storage, the safe choice for several processes on one machine without a server.
    """
    remember(url)
    if url.startswith("journal://"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = Path(url.removeprefix("journal://"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if url.startswith("sqlite:"):
        _check_sqlite_file(url)
    kwargs: dict[str, Any] = {}
    if heartbeat:
        kwargs = {"heartbeat_interval": heartbeat, "grace_period": grace or 2 * heartbeat}
        name = "heartbeat_stale_trial_callback" if hasattr(
            optuna.storages, "RetryHeartbeatStaleTrialCallback") else "failed_trial_callback"
        kwargs[name] = _retry_callback()
    for attempt in range(STORAGE_ATTEMPTS):
        try:
            return RDBStorage(url, **kwargs)
        except Exception as error:  # SQLAlchemy raises ArgumentError, OperationalError, ...
            if _lost_creation_race(error):
                time.sleep(0.2 * (attempt + 1))
                continue
            reason = scrubbed(str(error).splitlines()[0], url)[:160]
            raise StorageError(f"cannot open storage {masked(url)} ({error.__class__.__name__}"
                               f": {reason}); check the URL, the server and the driver (pip "
                               "install 'psycopg[binary]' for PostgreSQL)") from None
    raise StorageError(f"cannot create Optuna's tables in {masked(url)}; start the workers "
                       "again")


def _lost_creation_race(error: Exception) -> bool:
    """Workers started together on an empty database race to create Optuna's tables and
    version row: the losers see the winner's rows (or SQLite's write lock) and retry."""
    import sqlalchemy.exc

    message = str(error)
    return isinstance(error, sqlalchemy.exc.IntegrityError) or (
        isinstance(error, sqlalchemy.exc.OperationalError)
        and ("already exists" in message or "database is locked" in message))


def other_sampler(name: str, seed: int, population: int = 10) -> optuna.samplers.BaseSampler:
    """One of Optuna's samplers BioTune is compared with, seeded."""
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=population, seed=seed)
    raise ConfigError(f"unknown sampler {name!r}; use biotune, tpe, random, cmaes or nsga2")


def make_sampler(config: SearchConfig, space: Mapping[str, Any]) -> optuna.samplers.BaseSampler:
    """The sampler named in the configuration, seeded."""
    if config.sampler == "biotune":
        return BioTuneSampler(config.population, config.elite, config.exploration_rate,
                              seed=config.seed, search_space=space, ideal_value=1.0)
    return other_sampler(config.sampler, config.seed, config.population)


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=3)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner()
    return optuna.pruners.NopPruner()


def trial_plan(study: optuna.Study, trial: optuna.trial.FrozenTrial,
               block_names: list[str]) -> genome.FineTunePlan:
    """The plan a trial of this study trained (decoded as the study's configuration says)."""
    config = study_config(study) or {}
    return genome.decode(trial.params, block_names, bool(config.get("train_head", False)))


def study_config(study: optuna.Study) -> dict[str, Any] | None:
    return study.user_attrs.get(keys.CONFIG)


def open_study(config: SearchConfig, block_names: list[str], storage=None) -> optuna.Study:
    """Create the study, or load it when it exists and its configuration matches."""
    storage = storage or open_storage(config.storage_url, config.heartbeat, config.grace)
    fingerprint = {**config.fingerprint(), "blocks": list(block_names)}
    space = genome.search_space(block_names)
    study = optuna.create_study(
        study_name=config.study_name, storage=storage, direction="maximize",
        sampler=make_sampler(config, space), pruner=make_pruner(config.pruner),
        load_if_exists=True)
    with study_lock(study._storage, study._study_id):  # workers starting together agree
        stored = study_config(study)
        if stored is None:
            if study.get_trials(deepcopy=False):
                raise ConfigError(f"study {config.study_name!r} exists but was not created by "
                                  "biotune-optuna; pick another --study-name")
            study.set_user_attr(keys.CONFIG, fingerprint)
            if config.enqueue_baselines:
                study.enqueue_trial(genome.encode(block_names, block_names))  # full FT
                study.enqueue_trial(genome.encode(block_names[-1:], block_names))  # linear
    if stored is not None:
        changed = differences(stored, fingerprint)
        if changed:
            raise ConfigError(f"study {config.study_name!r} was created with other settings ("
                              f"{'; '.join(changed)}); use the same options or a new "
                              "--study-name")
    retry_interrupted(study)
    return study


def retry_interrupted(study: optuna.Study) -> int:
    """Re-enqueue trials that failed because their worker was interrupted (Ctrl-C), once,
    with their parameters and BioTune slot, so resuming loses nothing."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.system_attrs.get(RETRY_OF) for t in trials} | {
        n for t in trials for n in t.system_attrs.get("retry_history", [])}
    count = 0
    for t in trials:
        if t.state == TrialState.FAIL and t.user_attrs.get(INTERRUPTED) and \
                t.number not in retried:
            _retry_callback()(study, t)
            count += 1
    if count:
        logger.info("re-enqueued %d interrupted trial(s)", count)
    return count


class BudgetReached(Exception):
    """Every trial of the budget has been started (by this worker or another)."""


class BudgetedStudy(optuna.Study):
    """The study as a search drives it: :meth:`ask` starts a trial only while the study-wide
    budget has room or a retry or enqueued trial waits. The check and the trial's creation
    happen under the study lock, so workers that start trials at the same moment, on one
    machine or several, never overshoot the budget together."""

    def __init__(self, study: optuna.Study, budget: int) -> None:
        super().__init__(study.study_name, study._storage, study.sampler, study.pruner)
        self.budget = budget

    def ask(self, fixed_distributions=None) -> optuna.Trial:
        with study_lock(self._storage, self._study_id):
            if not remaining_trials(self, self.budget):
                raise BudgetReached
            return super().ask(fixed_distributions)


def remaining_trials(study: optuna.Study, budget: int) -> int:
    """Trials still to run so that ``budget`` slots are filled: the waiting ones (enqueued
    genomes and retries) plus new ones; retries do not use up a slot."""
    trials = study.get_trials(deepcopy=False)
    slots = sum(1 for t in trials if RETRY_OF not in t.system_attrs)
    waiting = sum(1 for t in trials if t.state == TrialState.WAITING)
    return max(budget - slots, 0) + waiting


class StopRequests:
    """Ctrl-C and SIGTERM during a search. Inside a trial's objective they stop the training
    at its next batch (``finetune.stop_training``): the trial fails, marked interrupted, and
    the next run retries it. They never raise inside a storage write: outside training they
    only ask the search to stop after the current step, so no trial is left half-written."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self._in_objective = 0
        self._previous: dict = {}

    def __enter__(self) -> StopRequests:
        stop_training.clear()
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        stop_training.clear()

    def _handle(self, signum, frame) -> None:
        self.requested = True
        if self._in_objective:
            stop_training.set()

    def wrap(self, objective):
        def wrapped(trial: optuna.Trial) -> float:
            self._in_objective += 1
            try:
                return objective(trial)
            except KeyboardInterrupt:
                pass
            except optuna.TrialPruned:
                raise
            except Exception:
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
    rdb = getattr(study._storage, "_backend", study._storage)
    if not isinstance(rdb, RDBStorage) or not is_heartbeat_enabled(rdb):
        return 0
    from optuna.storages._rdb import models

    grace = rdb.grace_period or 2 * rdb.heartbeat_interval
    with rdb.scoped_session() as session:
        beating = {tid for (tid,) in session.query(models.TrialHeartbeatModel.trial_id)}
    now = datetime.datetime.now()
    failed = 0
    for trial in running_trials(study):
        if trial._trial_id in beating or trial.datetime_start is None:
            continue
        if (now - trial.datetime_start).total_seconds() <= grace:
            continue
        try:
            if not study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:  # another worker got there first
            continue
        _retry_callback()(study, study._storage.get_trial(trial._trial_id))
        failed += 1
    return failed


def running_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))


def run_search(study: optuna.Study, objective, budget: int, n_jobs: int = 1,
               callbacks=(), timeout: float | None = None, wait_seconds: float = 5.0,
               on_wait=None) -> None:
    """Run trials until ``budget`` slots are filled and nothing is left running; raise
    KeyboardInterrupt once the trials are consistent if Ctrl-C or SIGTERM stopped it.

    Trials left RUNNING by a dead worker are failed once their heartbeat is older than the
    grace period and retried (Optuna's heartbeat), so this waits for them instead of
    leaving them behind; trials of live workers simply finish.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    budgeted = BudgetedStudy(study, budget)
    with StopRequests() as stops:
        wrapped = stops.wrap(objective)
        while not stops.requested:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return
            if remaining_trials(study, budget):
                try:
                    budgeted.optimize(wrapped, n_jobs=n_jobs, timeout=left,
                                      callbacks=[*callbacks, stops.stop_callback],
                                      gc_after_trial=False)
                except BudgetReached:
                    pass
                continue
            running = running_trials(study)
            if not running or not is_heartbeat_enabled(study._storage):
                return
            if on_wait is not None:
                on_wait(running)
            time.sleep(wait_seconds)
            optuna.storages.fail_stale_trials(study)
            fail_orphaned_trials(study)
    raise KeyboardInterrupt
