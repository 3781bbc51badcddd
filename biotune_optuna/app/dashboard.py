"""optuna-dashboard integration: the study's note (configuration, best plan, how to
reproduce) and its plots as artifacts, through optuna-dashboard's own APIs."""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

import optuna
from optuna.artifacts import FileSystemArtifactStore, upload_artifact
from optuna.artifacts.exceptions import ArtifactNotFound

from biotune_optuna import contents
from biotune_optuna.analysis._table import surrogate_quality
from biotune_optuna.app.config import ConfigError
from biotune_optuna.app.optuna_internals import set_study_attr
from biotune_optuna.app.storage import open_storage
from biotune_optuna.app.storage_urls import ENV_VAR, has_secret, masked, storage_file


def artifact_dir_for(storage_url: str) -> Path:
    """Artifacts sit beside a SQLite or journal file (``<file>-artifacts/``), else under
    ``studies/artifacts``."""
    file = storage_file(storage_url)
    return file.with_name(file.name + "-artifacts") if file else Path("studies") / "artifacts"


def artifact_store_for(storage_url: str) -> FileSystemArtifactStore:
    folder = artifact_dir_for(storage_url)
    folder.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(folder))


def storage_option(storage_url: str) -> str:
    """How a command in the note names the storage: the URL, or, when the URL carries a
    secret, the environment variable that holds it (the note is stored in the study and
    shown to everyone who opens optuna-dashboard)."""
    return f'--storage "${ENV_VAR}"' if has_secret(storage_url) else f"--storage {storage_url}"


def reproduce_command(study: optuna.Study, storage_url: str) -> str:
    """The ``biotune-optuna search`` command that continues (or recreates) this study."""
    from biotune_optuna.app.config import AUTOMATIC, SearchConfig

    stored = contents.config(study)
    # the defaults; those that follow the sampler and objectives as this study has them
    plain = SearchConfig()
    alike = SearchConfig(**{k: stored[k] for k in ("sampler", "objectives") if k in stored})
    defaults = {f.name: getattr(alike if f.name in AUTOMATIC else plain, f.name)
                for f in fields(SearchConfig)}
    parts = ["biotune-optuna search", f"--study-name {study.study_name}",
             storage_option(storage_url)]
    for name, value in stored.items():
        if name == "blocks" or defaults.get(name, object()) == value:
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value else f"--no-{flag[2:]}")
        elif isinstance(value, list):
            parts.append(f"{flag} {','.join(map(str, value))}")
        else:
            parts.append(f"{flag} {value}")
    trials, epochs = contents.stored_budget(study)
    if trials:
        parts.append(f"--trials {trials}")
    if epochs:
        parts.append(f"--compute-budget {epochs}")
    return " \\\n    ".join(parts)


def study_note(study: optuna.Study, storage_url: str, plots: Sequence[str] = ()) -> str:
    """Markdown for the study's note in optuna-dashboard."""
    config = contents.config(study)
    lines = [f"# {study.study_name}", ""]
    if config:
        lines += ["## Configuration", "", "| option | value |", "|---|---|"]
        lines += [f"| {k} | `{json.dumps(v)}` |" for k, v in config.items()]
        lines.append("")
    ranked = contents.ranked_plans(study)
    if ranked:
        best = ranked[0].trial
        plan = contents.plan_of(study, best)
        base = contents.base_lr(study)
        lines += ["## Best plan", "",
                  f"Trial {best.number}, validation {config.get('metric', 'value')} "
                  f"**{contents.describe_value(ranked[0])}**, trainable parameters "
                  f"{100 * (contents.trainable_fraction(best) or float('nan')):.2f} %.", "",
                  "| block | learning rate |", "|---|---|"]
        for block, multiplier in zip(plan.block_names, plan.multipliers):
            rate = ("frozen" if multiplier == 0 else f"{multiplier:.3g}x of the base rate"
                    if base is None else f"{base * multiplier:.3g} ({multiplier:.3g}x)")
            lines.append(f"| {block} | {rate} |")
        lines.append("")
        if ranked[0].costs:
            from biotune_optuna.app.export import front_table

            lines += ["## Front", "", "```", front_table(study), "```", ""]
    quality = surrogate_quality(study)
    if quality:
        lines += ["## Surrogate", "", "Children and immigrants pre-selected among "
                  f"{config.get('surrogate_candidates', '?')} candidates; how well the "
                  "surrogate ranked them (Spearman rank correlation of its predictions with "
                  "the values" + (" of the metric; costs are computed from the plan"
                                  if len(study.directions) > 1 else "") + "):", "",
                  "| generation | pre-selected trials | rank correlation |", "|---|---|---|"]
        lines += [f"| {g} | {n} | {rho:.2f} |" for g, n, rho in quality]
        lines.append("")
    spent = contents.compute_spent(study.get_trials(deepcopy=False))
    if spent.seed_runs:
        lines += ["## Compute", "", f"The trials trained {spent.describe()}.", ""]
    lines += ["## Reproduce", ""]
    if has_secret(storage_url):
        lines += [f"With `{ENV_VAR}` set to the study's storage URL ({masked(storage_url)}):",
                  ""]
    lines += ["```sh", reproduce_command(study, storage_url), "```", "",
              f"Then `biotune-optuna train-best {storage_option(storage_url)} --study-name "
              f"{study.study_name}` retrains and tests the best plan."]
    if plots:
        lines += ["", "## Plots", "", "Attached as artifacts: " + ", ".join(plots) + "."]
    return "\n".join(lines) + "\n"


def _replace_artifact(study: optuna.Study, store: FileSystemArtifactStore, path: Path) -> None:
    """Upload ``path``, first removing an earlier artifact of the same file name (the way
    optuna-dashboard deletes: the metadata attr becomes null)."""
    for key, meta in contents.artifacts(study).items():
        if meta.get("filename") == path.name:
            try:
                store.remove(meta["artifact_id"])
            except ArtifactNotFound:  # only the metadata was left
                pass
            set_study_attr(study, key, json.dumps(None))
    upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=study,
                    mimetype="image/png" if path.suffix == ".png" else None)


def publish(study: optuna.Study, storage_url: str, files: Sequence[Path] = ()) -> None:
    """Save the study's note and attach ``files`` (plots) as artifacts."""
    from optuna_dashboard import save_note

    if files:
        store = artifact_store_for(storage_url)
        for path in files:
            _replace_artifact(study, store, Path(path))
    save_note(study, study_note(study, storage_url, [Path(f).name for f in files]))


def artifacts(study: optuna.Study) -> list[dict]:
    """The study's live artifacts' metadata (deleted ones skipped)."""
    return list(contents.artifacts(study).values())

def serve(url: str, host: str, port: int) -> None:
    """Serve optuna-dashboard on the storage at ``url`` until Ctrl-C (or SIGTERM)."""
    from optuna_dashboard import run_server

    storage = open_storage(url, heartbeat=None, create=False)
    if not _is_loopback(host):
        print(f"biotune-optuna: warning: optuna-dashboard has no authentication; anyone who "
              f"can reach {host}:{port} can read and change the studies", file=sys.stderr)
    _check_listening(host, port)
    # A server has nothing to save: SIGTERM ends it at once (raised as KeyboardInterrupt
    # it could land inside the server's start-up, which swallows it and serves on).
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    print(f"optuna-dashboard on http://{host}:{port} for {masked(url)} (Ctrl-C stops it)")
    run_server(storage, host=host, port=port, artifact_store=artifact_store_for(url))


def _check_listening(host: str, port: int) -> None:
    """Refuse a port that is taken or not permitted before the server says it listens."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise ConfigError(f"--host {host} is not an address of this machine ({error.strerror})"
                          ) from None
    family, kind, _, _, address = infos[0]
    with socket.socket(family, kind) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            raise ConfigError(f"cannot listen on {host}:{port} ({error.strerror}); pick another "
                              "--port (or --host)") from None


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
