"""A search process's share of the machine's CPU cores.

Two torch processes that each start as many threads as there are cores slow each other
down several-fold on a small machine. Each search process registers itself in a folder of
the machine's temporary directory; before every trial it sets torch's threads to the cores
it may use (the machine's cores, shared among the live search processes and the trials this
process runs at once), unless ``--threads`` fixes the number.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from biotune_optuna.finetuning.device import use_threads


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class CoreShare:
    """Registered while the search runs (a context manager)."""

    def __init__(self, n_jobs: int = 1, threads: int | None = None,
                 folder: Path | None = None) -> None:
        self.n_jobs, self.threads = max(n_jobs, 1), threads
        self.folder = folder or Path(tempfile.gettempdir()) / f"biotune-optuna-{os.getuid()}"
        self._mine = self.folder / str(os.getpid())

    def __enter__(self) -> CoreShare:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._mine.touch()
        self.apply()
        return self

    def __exit__(self, *exc: object) -> None:
        self._mine.unlink(missing_ok=True)

    def processes(self) -> int:
        """Live search processes on this machine (files of dead ones are removed)."""
        alive = 0
        for entry in self.folder.iterdir():
            try:
                os.kill(int(entry.name), 0)
                alive += 1
            except ProcessLookupError:
                entry.unlink(missing_ok=True)
            except (ValueError, PermissionError):
                continue
        return max(alive, 1)

    def share(self) -> int:
        return self.threads or max(1, cores() // (self.processes() * self.n_jobs))

    def apply(self) -> int:
        threads = self.share()
        use_threads(threads)
        return threads

    def before(self, objective):
        """The objective, taking this process's current share before each trial (a worker
        started or ended since the last one)."""
        def with_share(trial):
            self.apply()
            return objective(trial)
        return with_share
