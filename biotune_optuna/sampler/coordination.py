"""One decision at a time per study, across threads, processes and machines.

BioTune's decisions (which generation a new trial joins, which elite exploration or child it
takes, the population a generation starts from) read the study and then write to it. Optuna's
storages offer no compare-and-set, so two workers that read at the same moment would both take
the same elite exploration or fix a generation's population twice from different views. A
study lock makes every read-decide-write step atomic:

- threads of one process: a re-entrant lock per study;
- processes on one SQLite file or journal file: ``flock`` on a lock file beside it
  (``<file>.biotune-lock``; SQLite's own locks cannot serve, they would block Optuna's writes);
- PostgreSQL: a transaction-level advisory lock (released even if the holder dies);
- MySQL / MariaDB: a named lock (``GET_LOCK``).

Other storages (gRPC proxy, Redis journal) are coordinated within a process only, and a
warning says so once.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
import zlib
from pathlib import Path
from typing import Any

from optuna.storages import BaseStorage, InMemoryStorage, RDBStorage
from optuna.study import Study

from .storage_io import backend_of, journal_file, storage_of, study_id_of

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)
LOCK_SUFFIX = ".biotune-lock"
_LOCK_CLASS = zlib.crc32(b"biotune_optuna") - 2**31  # advisory-lock namespace (a signed int4)


class StudyLock:
    """A re-entrant lock for one study: the thread lock, then the cross-process one."""

    def __init__(self, system_lock: Any = None) -> None:
        self._thread_lock = threading.RLock()
        self._system_lock = system_lock
        self._depth = 0  # changed only by the thread holding _thread_lock

    def __enter__(self) -> StudyLock:
        self._thread_lock.acquire()
        self._depth += 1
        if self._depth == 1 and self._system_lock is not None:
            try:
                self._system_lock.acquire()
            except BaseException:
                self._depth -= 1
                self._thread_lock.release()
                raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._depth == 1 and self._system_lock is not None:
                self._system_lock.release()
        finally:
            self._depth -= 1
            self._thread_lock.release()


class _FileLock:
    """``flock`` on a file kept open for the process's lifetime."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def release(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)


class _SessionLock:
    """A lock held by a database session of its own: one statement takes it, and ending the
    transaction (plus ``release_sql`` for session-level locks) gives it back; a worker that
    dies gives it back with its connection."""

    def __init__(self, engine: Any, acquire_sql: str, params: dict[str, Any],
                 release_sql: str | None = None) -> None:
        self._engine, self._params = engine, params
        self._acquire_sql, self._release_sql = acquire_sql, release_sql
        self._connection: Any = None

    def acquire(self) -> None:
        from sqlalchemy import text

        connection = self._engine.connect()
        try:
            connection.execute(text(self._acquire_sql), self._params)
        except BaseException:
            connection.close()
            raise
        self._connection = connection

    def release(self) -> None:
        from sqlalchemy import text

        connection, self._connection = self._connection, None
        try:
            if self._release_sql:
                connection.execute(text(self._release_sql), self._params)
            connection.rollback()
        finally:
            connection.close()


_registry: dict[tuple, StudyLock] = {}
_by_storage: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_registry_lock = threading.Lock()
_warned: set[str] = set()


def lock_for(study: Study) -> StudyLock:
    """The process's lock for this study (see :func:`study_lock`)."""
    return study_lock(storage_of(study), study_id_of(study))


def study_lock(storage: BaseStorage, study_id: int) -> StudyLock:
    """The process's lock for this study: the same object for every caller that names the
    same study, so nesting (a runner's budget check around the sampler's decision) never
    waits for itself."""
    with _registry_lock:
        per_storage = _by_storage.setdefault(storage, {})
        lock = per_storage.get(study_id)
        if lock is None:
            identity, system_lock = _system_lock(storage, study_id)
            if identity is None:
                lock = StudyLock(system_lock)
            else:
                lock = _registry.setdefault((*identity, study_id), StudyLock(system_lock))
            per_storage[study_id] = lock
        return lock


def _system_lock(storage: BaseStorage, study_id: int) -> tuple[tuple | None, Any]:
    """(a process-wide identity of the storage, its cross-process lock or None)."""
    if isinstance(storage, InMemoryStorage):
        return None, None  # only this process can see it
    backend = backend_of(storage)
    if isinstance(backend, RDBStorage):
        url = backend.engine.url
        dialect = url.get_backend_name()
        if dialect == "sqlite":
            database = url.database
            if not database or database == ":memory:" or database.startswith("file::memory"):
                return None, None
            return _file_lock(Path(database))
        identity = ("rdb", url.render_as_string(hide_password=True))
        if dialect == "postgresql":  # a transaction-level advisory lock
            return identity, _SessionLock(backend.engine, "SELECT pg_advisory_xact_lock(:c, :s)",
                                          {"c": _LOCK_CLASS, "s": study_id})
        if dialect in ("mysql", "mariadb"):  # a named, session-level lock
            return identity, _SessionLock(backend.engine, "SELECT GET_LOCK(:n, -1)",
                                          {"n": f"biotune_optuna:{study_id}"},
                                          "SELECT RELEASE_LOCK(:n)")
        _warn_once(f"{dialect} databases")
        return None, None
    path = journal_file(storage)
    if path is not None:
        return _file_lock(Path(path))
    _warn_once(type(backend).__name__)
    return None, None


def _file_lock(path: Path) -> tuple[tuple | None, Any]:
    if fcntl is None:
        _warn_once("files on this operating system (no fcntl)")
        return None, None
    lock_path = path.resolve().with_name(path.name + LOCK_SUFFIX)
    return ("file", str(lock_path)), _FileLock(lock_path)


def _warn_once(what: str) -> None:
    if what not in _warned:
        _warned.add(what)
        logger.warning("BioTuneSampler coordinates the workers of one process only on %s: "
                       "run several processes on SQLite, PostgreSQL, MySQL or a journal file, "
                       "or they may take the same elite exploration", what)
