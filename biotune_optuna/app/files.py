"""Folders a command writes to, checked before the work that fills them."""

from __future__ import annotations

import os
from pathlib import Path

from biotune_optuna.app.config import ConfigError


def writable_folder(folder: Path, fix: str) -> Path:
    """``folder``, created if missing; a one-line error naming ``fix`` when it cannot be
    created or written (a read-only file system, no permission)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"cannot create the folder {folder} ({error.strerror}); {fix}"
                          ) from None
    if not os.access(folder, os.W_OK):
        raise ConfigError(f"the folder {folder} is not writable; {fix}")
    return folder


def write_whole(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all: a full disk or Ctrl-C mid-write
    leaves the earlier file (or none), never half of one."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial")
    try:
        partial.write_text(text)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
