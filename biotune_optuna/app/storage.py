"""Opening a storage URL: SQLite files checked before use, Optuna's RDB storage with a
heartbeat (a dead worker's trial is retried), the journal file storage, and the race of
workers creating one new database together."""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage

from biotune_optuna.app.storage_urls import masked, remember, scrubbed, storage_file

STORAGE_ATTEMPTS = 5


class StorageError(ValueError):
    """A storage URL that cannot be opened (one-line message naming the fix)."""


def retry_callback():
    """Optuna's retry of trials whose worker died (renamed in Optuna 4.9)."""
    cls = (getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
        or optuna.storages.RetryFailedTrialCallback)
    return cls(max_retry=3)


def _file_of(url: str) -> Path | None:
    """The file a SQLite or journal URL names; a folder there is an error."""
    path = storage_file(url)
    if path is not None and path.is_dir():
        scheme, suffix = ("sqlite", "db") if url.startswith("sqlite") else ("journal", "log")
        raise StorageError(f"{path} is a folder; give --storage {scheme}:///{path}/NAME.{suffix}")
    return path


def _check_sqlite_file(url: str, create: bool) -> None:
    path = _file_of(url)
    if path is None:
        return
    if not create:
        _check_exists(path)
    else:
        folder = path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StorageError(f"cannot create the studies directory {folder} "
                               f"({error.strerror}); pass --storage with a writable location"
                               ) from None
        if not os.access(folder, os.W_OK):
            raise StorageError(f"studies directory {folder} is not writable; pass --storage "
                               "with a writable location")
    if path.exists():
        with path.open("rb") as handle:
            header = handle.read(16)
        if header and header != b"SQLite format 3\x00":
            raise StorageError(f"{path} is not an SQLite database; pass another --storage file")
        try:
            tables = _sqlite_tables(path)
        except sqlite3.DatabaseError as error:
            if "locked" in str(error):
                raise StorageError(f"{path} is locked by another process ({error}); wait for "
                                   "it to finish, or stop it, then run the command again"
                                   ) from None
            if "readonly" in str(error):
                raise StorageError(f"{path} has a write that a killed process left unfinished "
                                   f"({path.name}-journal), which SQLite rolls back only with "
                                   "write access; make the file and its folder writable, then "
                                   "run the command again") from None
            raise StorageError(f"{path} is not a usable SQLite database ({error}); pass "
                               "another --storage file") from None
        if tables and "studies" not in tables:
            raise StorageError(f"{path} is an SQLite database of something else (tables: "
                               f"{', '.join(sorted(tables)[:5])}), not Optuna's; pass another "
                               "--storage file")
        if not create and "studies" not in tables:
            raise StorageError(f"{path} holds no Optuna studies yet; check --storage (a "
                               "search creates them)")


def _sqlite_tables(path: Path) -> set[str]:
    """The tables of an SQLite file, read without creating anything. A process killed in
    the middle of a write leaves a journal that the next writer must roll back, which a
    read-only connection cannot do: then the file is opened for writing, as Optuna would
    open it, and SQLite rolls the unfinished write back."""
    def tables(mode: str) -> set[str]:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode={mode}", uri=True)) as db:
            return {name for (name,) in db.execute(
                "select name from sqlite_master where type = 'table'")}

    try:
        return tables("ro")
    except sqlite3.DatabaseError as error:
        if "readonly" not in str(error):
            raise
    return tables("rw")


def _check_exists(path: Path) -> None:
    """A command that only reads never creates its storage: a missing file is an error."""
    if not path.is_file():
        raise StorageError(f"no storage file {path}; check --storage (a search creates it)")


def open_storage(url: str, heartbeat: int | None = 60, grace: int | None = 180,
                 create: bool = True):
    """An Optuna storage for ``url``.

    ``sqlite:///path.db`` and any SQLAlchemy URL (``postgresql://user@host/db``) give an
    RDB storage with a heartbeat: a trial whose worker died is failed after ``grace`` seconds
    and retried with the same parameters. ``journal:///path.log`` gives Optuna's journal
    file storage, the safe choice for several processes without a server, with the same
    heartbeat.
    With ``create=False`` (commands that read a study) nothing is created: a missing file or
    database without Optuna's tables is an error, and a read-only folder is fine.
    """
    remember(url)
    file = storage_file(url)
    if file is not None:
        if create and not file.is_absolute() and not file.exists():
            _note_relative(url, file)
        _files_opened.add(file)
    if url.startswith("journal://"):
        return _journal(url, create, heartbeat, grace)
    if url.startswith("sqlite:"):
        _check_sqlite_file(url, create)
    kwargs: dict[str, Any] = {} if create else {"skip_table_creation": True}
    if heartbeat:
        kwargs |= {"heartbeat_interval": heartbeat, "grace_period": grace or 2 * heartbeat}
        name = "heartbeat_stale_trial_callback" if hasattr(
            optuna.storages, "RetryHeartbeatStaleTrialCallback") else "failed_trial_callback"
        kwargs[name] = retry_callback()
    if "://" not in url:
        raise StorageError(f"--storage {masked(url)} is not a storage URL; a file is "
                           f"sqlite:///{url}, a server "
                           "postgresql://user@host/db")
    for attempt in range(STORAGE_ATTEMPTS):
        try:
            return _SteadyHeartbeatStorage(url, **kwargs)
        except Exception as error:  # SQLAlchemy raises ArgumentError, OperationalError, ...
            if _lost_creation_race(error):
                time.sleep(0.2 * (attempt + 1))
                continue
            reason = scrubbed(str(error).splitlines()[0], url)[:160]
            raise StorageError(f"cannot open storage {masked(url)} ({error.__class__.__name__}"
                               f": {reason}); {_open_hint(url, error)}") from None
    raise StorageError(f"cannot create Optuna's tables in {masked(url)}; start the workers "
                       "again")


class _SteadyHeartbeatStorage(RDBStorage):
    """Optuna's RDB storage whose heartbeat skips a beat when the database is unreachable
    (a restart, a network blip) instead of dying with a traceback in its thread: the
    trial's own writes report a lost server, in one line, if it stays lost."""

    def record_heartbeat(self, trial_id: int) -> None:
        from sqlalchemy.exc import InterfaceError, OperationalError

        try:
            super().record_heartbeat(trial_id)
        except (OperationalError, InterfaceError, optuna.exceptions.StorageInternalError):
            pass  # the next beat, one interval later, tries again


DRIVERS = {"postgresql": "pip install 'psycopg[binary]' and use postgresql+psycopg://",
           "mysql": "pip install pymysql and use mysql+pymysql://"}


def _open_hint(url: str, error: Exception) -> str:
    """The next step for a storage URL that did not open: the driver it lacks, or the
    URL and server to check."""
    if isinstance(error, ImportError) or "DB access module" in str(error):
        dialect = url.split("://", 1)[0].split("+", 1)[0]
        return ("its database driver is not installed: " + DRIVERS.get(
            dialect, f"install the SQLAlchemy driver for {dialect}"))
    return "check the URL and that the server is running and reachable"


def _note_relative(url: str, file: Path) -> None:
    """Three slashes name a path under the current folder: say so when the same path from
    the root is a folder that exists (``sqlite:///tmp/x.db`` meant for /tmp)."""
    if len(file.parts) > 1 and (Path("/") / file).parent.is_dir():
        scheme = url.split(":", 1)[0]
        print(f"biotune-optuna: note: {masked(url)} is {file.resolve()} (three slashes: under "
              f"the current folder); write {scheme}:////{file} for /{file}", file=sys.stderr,
              flush=True)


def _journal(url: str, create: bool, heartbeat: int | None, grace: int | None):
    """Optuna's journal storage on a mending backend (``app.journal``), with a heartbeat
    (``app.journal_heartbeat``) like the RDB storage's; damage left by an older writer is
    mended by a command that writes, refused with the fix by one that reads."""
    from optuna.storages.journal import JournalStorage

    from biotune_optuna.app.journal import MendingJournalBackend, first_damaged_line
    from biotune_optuna.app.journal_heartbeat import BeatingJournalStorage

    path = _journal_file(url)
    try:
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
        else:
            _check_exists(path)
        backend = MendingJournalBackend(str(path))
    except OSError as error:
        raise StorageError(f"cannot create the journal {path} ({error.strerror}); free space "
                           "there or pass --storage with a writable location") from None
    damaged = first_damaged_line(path)
    if damaged is not None:
        if not create:
            raise StorageError(f"{path} is damaged from line {damaged} (a write torn by a "
                               "crash, then appended to); run the search command again to "
                               "mend it (the unreadable bytes are kept aside)")
        backend.mend()
    if not heartbeat:
        return JournalStorage(backend)
    return BeatingJournalStorage(backend, heartbeat, grace or 2 * heartbeat, retry_callback())


def _journal_file(url: str) -> Path:
    path = _file_of(url)
    if path is None:
        raise StorageError(f"{masked(url)} names no file; give journal:///studies/NAME.log "
                           "(four slashes for an absolute path)")
    return path


def _lost_creation_race(error: Exception) -> bool:
    """Workers started together on an empty database race to create Optuna's tables and
    version row: the losers see the winner's rows (or SQLite's write lock) and retry."""
    import sqlalchemy.exc

    message = str(error)
    # PostgreSQL reports a table created meanwhile as a ProgrammingError (DuplicateTable)
    return isinstance(error, sqlalchemy.exc.IntegrityError) or (
        isinstance(error, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.ProgrammingError))
        and ("already exists" in message or "database is locked" in message))


# errors of a file system that has no room or takes no writes: the work is retried later
NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)
_files_opened: set[Path] = set()  # storage files this process found or created


def _causes(error: BaseException) -> list[BaseException]:
    chain, seen = [], error
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    return chain


def out_of_room(error: BaseException) -> OSError | None:
    """The full disk (or read-only file system) behind ``error``, if that is its cause."""
    return next((e for e in _causes(error) if isinstance(e, OSError) and e.errno in NO_ROOM),
                None)


def environment_failed(error: BaseException) -> bool:
    """Whether ``error`` came from the machine, not the trial: a full or read-only disk, a
    database connection lost. A trial it ends is retried by the next run."""
    if out_of_room(error) is not None:
        return True
    try:
        from sqlalchemy.exc import InterfaceError, OperationalError
    except ImportError:  # pragma: no cover
        return False
    return any(isinstance(e, (OperationalError, InterfaceError)) for e in _causes(error))


def describe_failure(error: BaseException, url: str | None) -> str | None:
    """One line for a storage or disk that failed under a running command (a file deleted
    meanwhile, a full or read-only disk, a lost database server), None for anything else."""
    file = storage_file(url) if url else None
    if file is not None and file in _files_opened and not file.exists():
        return (f"the storage file {file} disappeared while the command ran; what it wrote "
                "before is lost with it (restore the file, or start again)")
    full = out_of_room(error)
    if full is not None:
        where = full.filename or (masked(url) if url else "a file")
        return (f"could not write {where} ({full.strerror}); free space (or make it "
                "writable) and run the same command again: an interrupted trial is retried")
    chain = _causes(error)
    try:
        from sqlalchemy.exc import OperationalError
    except ImportError:  # pragma: no cover
        return None
    failed = next((e for e in chain if isinstance(e, OperationalError)), None)
    if failed is None:
        return None
    detail = (str(failed.orig) if getattr(failed, "orig", None) else str(failed)).strip()
    detail = detail.splitlines()[0]  # one line, the server's own reason
    where = masked(url) if url else "the storage"
    return (f"the storage {where} failed while the command ran ({detail}); check that it can "
            "be written (permissions, disk space, the server) and run the command again")
