"""Optuna's journal file, kept readable after a crash. A process killed (or a disk filled)
mid-write leaves a torn last line; Optuna's reader skips it, but the next append would glue
a complete line onto it and make the journal unreadable for good. Here the torn bytes are
cut off under the journal's own lock, just before anything is appended, and kept beside the
journal in ``<journal>.torn``: no reader could parse them, so nothing readable is lost."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from optuna.storages.journal import JournalFileBackend

from biotune_optuna.app.optuna_internals import journal_lock

TORN_SUFFIX = ".torn"
_NEW_LOG = b'{"op_code"'  # how each of Optuna's journal lines starts


class MendingJournalBackend(JournalFileBackend):
    """Optuna's file backend whose appends first cut a torn tail off, under the same lock."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = Path(path)

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        lines = "".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs)
        with journal_lock(self):
            cut_torn_tail(self.path)
            with open(self.path, "ab") as handle:
                handle.write(lines.encode("utf-8"))
                handle.flush()
                os.fsync(handle.fileno())

    def mend(self) -> int | None:
        """Repair lines damaged by an older writer (a torn line with a complete one appended
        to it), under the lock; the line number mended first, or None when all were fine."""
        with journal_lock(self):
            return mend_damaged_lines(self.path)


def cut_torn_tail(path: Path) -> int:
    """Cut a last line that has no newline off ``path`` (keeping it in the .torn file);
    how many bytes were cut."""
    size = path.stat().st_size
    if size == 0:
        return 0
    with open(path, "rb") as handle:
        handle.seek(-1, os.SEEK_END)
        if handle.read(1) == b"\n":
            return 0
        handle.seek(0)
        data = handle.read()
    keep = data.rfind(b"\n") + 1
    kept = _keep_aside(path, data[keep:])
    os.truncate(path, keep)
    print(f"biotune-optuna: note: {path} ended in a line torn by a crash or a full disk "
          f"({size - keep} bytes, unreadable); cut it off" + (
              f" and kept it in {kept}" if kept else " (no room to keep it)"),
          file=sys.stderr, flush=True)
    return size - keep


def first_damaged_line(path: Path) -> int | None:
    """The number (from 1) of the first complete line that is not a journal entry."""
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if line.endswith(b"\n") and _suspect(line) and not _parses(line):
                return number
    return None


def _suspect(line: bytes) -> bool:
    """Cheap first look (a journal may hold many thousand lines): a sound line starts one
    entry and, but for rare user values, holds no second start."""
    return not line.startswith(_NEW_LOG) or line.find(_NEW_LOG, 1) != -1


def mend_damaged_lines(path: Path) -> int | None:
    """Each complete line that does not parse is replaced by the entry at its end (a torn
    write that a later, complete one was appended to) or dropped; the cut bytes go to the
    .torn file. Returns the first line mended."""
    first = first_damaged_line(path)
    if first is None:
        return None
    mended, cut = [], []
    for line in path.read_bytes().splitlines(keepends=True):
        if line.endswith(b"\n") and _suspect(line) and not _parses(line):
            start = _last_entry_start(line)
            cut.append(line[:start] if start is not None else line)
            line = line[start:] if start is not None else b""
        mended.append(line)
    kept = _keep_aside(path, b"\n".join(cut) + b"\n")
    temporary = path.with_name(path.name + ".mending")
    temporary.write_bytes(b"".join(mended))
    os.replace(temporary, path)
    print(f"biotune-optuna: note: {path} was damaged from line {first} (a torn write that "
          "later writes were appended to); mended it" + (
              f", the unreadable bytes kept in {kept}" if kept else ""),
          file=sys.stderr, flush=True)
    return first


def _parses(line: bytes) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


def _last_entry_start(line: bytes) -> int | None:
    start = line.rfind(_NEW_LOG)
    while start > 0:
        if _parses(line[start:]):
            return start
        start = line.rfind(_NEW_LOG, 0, start)
    return None


def _keep_aside(path: Path, torn: bytes) -> Path | None:
    """Append the cut bytes to the .torn file; None when the disk has no room for them."""
    aside = path.with_name(path.name + TORN_SUFFIX)
    try:
        with open(aside, "ab") as handle:
            handle.write(torn)
    except OSError:
        return None
    return aside
