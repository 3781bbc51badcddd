"""optuna-dashboard integration: where a study's artifacts live."""

from __future__ import annotations

from pathlib import Path

from optuna.artifacts import FileSystemArtifactStore


def artifact_dir_for(storage_url: str) -> Path:
    """Artifacts sit beside a SQLite or journal file (``<file>-artifacts/``), else under
    ``studies/artifacts``."""
    for prefix in ("sqlite:///", "journal://"):
        if storage_url.startswith(prefix):
            path = Path(storage_url.removeprefix(prefix))
            return path.with_name(path.name + "-artifacts")
    return Path("studies") / "artifacts"


def artifact_store_for(storage_url: str) -> FileSystemArtifactStore:
    folder = artifact_dir_for(storage_url)
    folder.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(folder))
