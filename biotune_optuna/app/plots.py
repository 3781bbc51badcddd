"""The ``plot`` job: a study's analysis plots, grouped with other studies by sampler, written
as PNG files and attached to the study in optuna-dashboard."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import optuna

from biotune_optuna import contents
from biotune_optuna.app.config import ConfigError
from biotune_optuna.app.dashboard import artifact_dir_for
from biotune_optuna.app.files import writable_folder


def plot_study(study: optuna.Study, others: Sequence[optuna.Study], out: str,
               publish_to: str | None = None) -> list[Path]:
    """Write the plots of ``study`` (convergence beside ``others``, grouped by their sampler)
    to ``out``; with ``publish_to`` (the storage URL), attach them and a note to the study.
    A study with no finished plan draws nothing."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    from biotune_optuna.analysis import plot_all
    from biotune_optuna.app.dashboard import publish
    from biotune_optuna.app.export import no_plan

    if not contents.ranked_plans(study):
        raise ConfigError(no_plan(study))
    writable_folder(Path(out), "pass --out with a writable folder")
    if publish_to is not None:  # checked before drawing: no plots left half attached
        writable_folder(artifact_dir_for(publish_to), "give --no-dashboard to write the "
                        "PNG files only, or make the study's folder writable")
    groups: dict[str, list[optuna.Study]] = {}
    for each in (study, *others):
        groups.setdefault(contents.config(each).get("sampler", each.study_name), []).append(each)
    paths = plot_all(study, out, compare=groups)
    if publish_to is not None:
        publish(study, publish_to, paths)
    return paths
