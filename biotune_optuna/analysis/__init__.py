"""Analysis of fine-tuning searches from storage alone: plots, a study note and
optuna-dashboard artifacts."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import optuna

from biotune_optuna.analysis._table import (
    TrialTable,
    best_so_far,
    block_names,
    surrogate_quality,
    trial_table,
)
from biotune_optuna.analysis.plots import (
    pareto_front,
    plot_convergence,
    plot_front,
    plot_frozen_heatmap,
    plot_layer_importance,
    plot_lr_heatmap,
    plot_pareto,
    plot_population,
    plot_surrogate,
)
from biotune_optuna.contents import file_name

PLOTS = {
    "layer_importance": plot_layer_importance,
    "frozen_heatmap": plot_frozen_heatmap,
    "frozen_heatmap_by_value": lambda study: plot_frozen_heatmap(study, order="value"),
    "lr_heatmap": plot_lr_heatmap,
    "pareto": plot_pareto,
    "population": plot_population,
}


def plot_all(study: optuna.Study, out_dir: str | Path,
             compare: Mapping[str, Sequence[optuna.Study]] | None = None) -> list[Path]:
    """Write every plot of ``study`` as ``<out_dir>/<study>_<plot>.png``; the convergence
    plot overlays the groups of ``compare`` (default: this study alone)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    figures = {name: make(study) for name, make in PLOTS.items()}
    figures["convergence"] = plot_convergence(compare or {study.study_name: [study]},
                                              title=f"{study.study_name}: convergence")
    if len(study.directions) > 1:
        figures["front"] = plot_front(study)
    if surrogate_quality(study):  # the study pre-selected children with a surrogate
        figures["surrogate"] = plot_surrogate(study)
    for name, figure in figures.items():
        written.append(save_figure(figure, out / f"{file_name(study.study_name)}_{name}.png"))
    return written


def save_figure(figure, path: Path) -> Path:
    """Save and close ``figure`` as a PNG, whole or not at all (a full disk or Ctrl-C
    mid-write leaves no half file)."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        figure.savefig(partial, format="png")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
        plt.close(figure)
    return path


__all__ = [
    "PLOTS",
    "save_figure",
    "TrialTable",
    "best_so_far",
    "block_names",
    "pareto_front",
    "plot_all",
    "plot_convergence",
    "plot_front",
    "plot_frozen_heatmap",
    "plot_layer_importance",
    "plot_lr_heatmap",
    "plot_pareto",
    "plot_population",
    "plot_surrogate",
    "surrogate_quality",
    "trial_table",
]
