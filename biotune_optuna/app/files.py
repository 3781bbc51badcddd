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
