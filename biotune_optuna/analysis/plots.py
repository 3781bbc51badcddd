"""Plots of a fine-tuning search, each a matplotlib Figure built from storage alone."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import optuna
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from biotune_optuna import contents
from biotune_optuna.analysis._table import (
    TrialTable,
    best_so_far,
    populations,
    surrogate_points,
    surrogate_quality,
    trial_table,
)
from biotune_optuna.sampler import genome, pareto

logger = logging.getLogger(__name__)
LOG_MULTIPLIER = "log10 learning-rate multiplier"
CMAP = "coolwarm"
FROZEN = "#3a3a3a"  # darker than any multiplier colour, so frozen blocks stand out


def _figure(width: float, height: float) -> Figure:
    return plt.figure(figsize=(width, height), dpi=110, layout="constrained")


def _finite(table: TrialTable) -> np.ndarray:
    return np.isfinite(table.values)


def _top_quarter(table: TrialTable) -> np.ndarray:
    ok = _finite(table)
    values = np.where(ok, table.values, -np.inf if table.maximize else np.inf)
    order = np.argsort(-values if table.maximize else values, kind="stable")
    top = np.zeros(len(table), dtype=bool)
    top[order[:max(1, ok.sum() // 4)]] = True
    return top & ok


def plot_layer_importance(study: optuna.Study) -> Figure:
    """Which blocks matter: Optuna's parameter importances over the genes, how often each
    block is trained in the top quarter of trials against all trials, and the objective
    against each block's learning-rate multiplier where the block is trained."""
    table = trial_table(study)
    blocks = table.blocks
    fig = _figure(max(9, 1.1 * len(blocks) + 4), 8)
    grid = fig.add_gridspec(2, max(len(blocks), 2))
    ax = fig.add_subplot(grid[0, : len(blocks) // 2 or 1])
    importances = _importances(study)
    names = [f"gene:{b}" for b in blocks] + [genome.THRESHOLD]
    ax.barh(range(len(names)), [importances.get(n, 0.0) for n in names], color="tab:blue")
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlabel("importance (fANOVA)" if importances else "importance (not enough trials)")
    ax.set_title("Parameter importance")
    ax = fig.add_subplot(grid[0, len(blocks) // 2 or 1:])
    top = _top_quarter(table)
    x = np.arange(len(blocks))
    ax.bar(x - 0.2, table.trained.mean(0) if len(table) else 0, 0.4, label="all trials",
           color="tab:gray")
    ax.bar(x + 0.2, table.trained[top].mean(0) if top.any() else 0, 0.4,
           label="top quarter", color="tab:green")
    ax.set_xticks(x, blocks, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("fraction of trials training the block")
    ax.set_title("Trained in the best trials vs all")
    ax.legend(loc="upper left")
    ok = _finite(table)
    first = None
    for i, block in enumerate(blocks):
        ax = fig.add_subplot(grid[1, i], sharey=first)
        first = first or ax
        trained = table.trained[:, i] & ok
        ax.scatter(np.log10(table.multipliers[trained, i]), table.values[trained], s=10,
                   alpha=0.6, color="tab:purple")
        ax.set_title(f"{block}: objective vs rate" if i == 0 else block, fontsize=9)
        ax.set_xlabel("log10 multiplier", fontsize=8)
        ax.set_xlim(-1.05, 1.05)
        if i == 0:
            ax.set_ylabel("objective (trials training the block)")
        else:
            ax.tick_params(labelleft=False)
    fig.suptitle(f"{study.study_name}: layer importance ({len(table)} trials)")
    return fig


def _importances(study: optuna.Study) -> dict[str, float]:
    complete = [t for t in study.get_trials(deepcopy=False)
                if t.state == optuna.trial.TrialState.COMPLETE]
    if len(complete) < 4:
        return {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # several objectives: the importance for the metric, the first
            target = (lambda t: t.values[0]) if len(study.directions) > 1 else None
            return optuna.importance.get_param_importances(study, target=target)
    except (RuntimeError, ValueError) as error:  # e.g. all values equal
        logger.info("no parameter importances: %s", error)
        return {}


def plot_frozen_heatmap(study: optuna.Study, order: str = "number") -> Figure:
    """Trials x blocks: grey where frozen, coloured by the learning-rate multiplier where
    trained; trials ordered by number (generations separated by lines) or by value."""
    table = trial_table(study)
    if order == "value":
        key = np.where(_finite(table), table.values, -np.inf if table.maximize else np.inf)
        rows = np.argsort(-key if table.maximize else key, kind="stable")
    else:
        rows = np.lexsort((table.numbers, table.generations))
    log_m = np.where(table.trained, np.log10(np.where(table.trained, table.multipliers, 1)),
                     np.nan)[rows]
    fig = _figure(max(6, 0.9 * len(table.blocks) + 3), min(max(4, 0.06 * len(table) + 2), 16))
    ax = fig.add_subplot()
    cmap = matplotlib.colormaps[CMAP].with_extremes(bad=FROZEN)
    image = ax.imshow(np.ma.masked_invalid(log_m), aspect="auto", cmap=cmap, vmin=-1, vmax=1,
                      interpolation="nearest")
    ax.set_xticks(range(len(table.blocks)), table.blocks, rotation=30, ha="right")
    ticks = np.linspace(0, len(rows) - 1, min(len(rows), 20)).astype(int) if len(rows) else []
    ax.set_yticks(ticks, [str(table.numbers[rows][t]) for t in ticks])
    ax.set_ylabel("trial (by value)" if order == "value" else "trial (by generation)")
    ax.set_xlabel("block")
    if order != "value":
        generations = table.generations[rows]
        for boundary in np.flatnonzero(np.diff(generations)) + 0.5:
            ax.axhline(boundary, color="black", linewidth=0.6)
    bar = fig.colorbar(image, ax=ax, ticks=[-1, -0.5, 0, 0.5, 1])
    bar.set_label(LOG_MULTIPLIER + " (dark grey: frozen)")
    ax.set_title(f"{study.study_name}: frozen and trained blocks per trial")
    return fig


def plot_lr_heatmap(study: optuna.Study) -> Figure:
    """Generations x blocks: the mean learning-rate multiplier where trained, annotated
    with the share of the generation's trials that train the block."""
    table = trial_table(study)
    generations = np.unique(table.generations)
    mean_log = np.full((len(generations), len(table.blocks)), np.nan)
    share = np.zeros_like(mean_log)
    for r, g in enumerate(generations):
        rows = table.generations == g
        trained = table.trained[rows]
        share[r] = trained.mean(0)
        for c in range(len(table.blocks)):
            if trained[:, c].any():
                mean_log[r, c] = np.log10(table.multipliers[rows][trained[:, c], c]).mean()
    fig = _figure(max(6, 0.9 * len(table.blocks) + 3), max(3.5, 0.45 * len(generations) + 2))
    ax = fig.add_subplot()
    cmap = matplotlib.colormaps[CMAP].with_extremes(bad="lightgray")
    image = ax.imshow(np.ma.masked_invalid(mean_log), aspect="auto", cmap=cmap, vmin=-1, vmax=1)
    for (r, c), s in np.ndenumerate(share):
        ax.text(c, r, f"{100 * s:.0f}%", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(table.blocks)), table.blocks, rotation=30, ha="right")
    ax.set_yticks(range(len(generations)), [str(g) for g in generations])
    ax.set_ylabel("generation")
    ax.set_xlabel("block (text: share of trials training it)")
    fig.colorbar(image, ax=ax).set_label("mean " + LOG_MULTIPLIER)
    ax.set_title(f"{study.study_name}: learning rates per generation")
    return fig


def plot_convergence(groups: Mapping[str, Sequence[optuna.Study]],
                     title: str = "Convergence") -> Figure:
    """Best full-fidelity value so far, one line per group of studies (e.g. per sampler),
    against trials and against the compute spent (epochs trained); with several studies
    (seeds) in a group, the mean and a band from min to max."""
    fig = _figure(12, 5)
    by_trials, by_compute = fig.subplots(1, 2)
    direction, several = None, False
    for label, studies in groups.items():
        curves = [c for c in (best_so_far(s) for s in studies) if len(c[1])]
        if not curves:
            continue
        direction, several = studies[0].directions[0], len(studies[0].directions) > 1
        length = max(len(values) for _, values in curves)
        padded = np.array([np.pad(v, (0, length - len(v)), mode="edge") for _, v in curves])
        line = _band(by_trials, np.arange(1, length + 1), padded, f"{label} (n={len(curves)})")
        if all(compute[-1] > 0 for compute, _ in curves):  # compute was recorded
            grid = np.linspace(0, max(compute[-1] for compute, _ in curves), 200)
            stepped = np.array([_at(grid, compute, values) for compute, values in curves])
            _band(by_compute, grid, stepped, f"{label} (n={len(curves)})", line.get_color())
    better = "higher" if direction == optuna.study.StudyDirection.MAXIMIZE or several else "lower"
    measure = "hypervolume" if several else "best full-fidelity value"
    for ax, xlabel in ((by_trials, "trials"), (by_compute, "compute (epochs trained)")):
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"{measure} so far ({better} is better)")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    fig.suptitle(title + " (band: min-max across seeds)")
    return fig


def _at(grid: np.ndarray, compute: np.ndarray, values: np.ndarray) -> np.ndarray:
    """A best-so-far curve read at each compute of ``grid`` (NaN before its first value;
    the last value after its end, as a finished search keeps its best)."""
    index = np.searchsorted(compute, grid, side="right") - 1
    return np.where(index >= 0, values[np.clip(index, 0, None)], np.nan)


def _band(ax, x: np.ndarray, curves: np.ndarray, label: str, color=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN prefixes
        mean = np.nanmean(curves, 0)
        line, = ax.plot(x, mean, label=label, color=color)
        if len(curves) > 1:
            ax.fill_between(x, np.nanmin(curves, 0), np.nanmax(curves, 0), alpha=0.2,
                            color=line.get_color())
    return line


def pareto_front(fraction: np.ndarray, values: np.ndarray, maximize: bool) -> np.ndarray:
    """Indices of trials no other trial beats on both value and trainable fraction."""
    if not len(values):
        return np.array([], dtype=int)
    front = pareto.non_dominated(np.column_stack([-values if maximize else values, fraction]))
    return np.array(sorted(front, key=lambda i: fraction[i]), dtype=int)


def plot_pareto(study: optuna.Study) -> Figure:
    """Objective against the trainable-parameter fraction, the Pareto front marked; a
    search with a trainable penalty shows its validation value before the penalty. A study
    of several objectives: the metric against its first cost objective."""
    table = trial_table(study)
    cost = _first_cost(study)
    if cost is not None:
        return _metric_against_cost(study, table, cost)
    ok = _finite(table) & np.isfinite(table.trainable_fraction)
    penalty = contents.config(study).get("trainable_penalty", 0.0)
    fraction = table.trainable_fraction[ok]
    values = table.values[ok] + penalty * fraction
    fig = _figure(8, 5)
    ax = fig.add_subplot()
    points = ax.scatter(100 * fraction, values, c=table.generations[ok], cmap="viridis", s=14,
                        alpha=0.7)
    front = pareto_front(fraction, values, table.maximize)
    if len(front):
        ax.step(100 * fraction[front], values[front], where="post", color="tab:red",
                label="Pareto front")
        ax.scatter(100 * fraction[front], values[front], color="tab:red", s=30, zorder=3)
        ax.legend(loc="lower right")
    fig.colorbar(points, ax=ax).set_label("generation")
    ax.set_xlabel("trainable parameters (%)")
    ax.set_ylabel(f"validation (before the penalty {penalty:g} x fraction)" if penalty
                  else "objective")
    ax.grid(alpha=0.3)
    ax.set_title(f"{study.study_name}: accuracy vs trainable parameters")
    return fig


def _first_cost(study: optuna.Study) -> str | None:
    """The name of a study's first cost objective; None for a study of one objective."""
    if len(study.directions) < 2:
        return None
    names = contents.config(study).get("objectives", "").split(",")[1:]
    return names[0] if names else "objective 2"


def _metric_against_cost(study: optuna.Study, table: TrialTable, cost: str) -> Figure:
    ok = _finite(table) & np.isfinite(table.costs[:, 0])
    costs, values = table.costs[ok, 0], table.values[ok]
    fig = _figure(8, 5)
    ax = fig.add_subplot()
    points = ax.scatter(costs, values, c=table.generations[ok], cmap="viridis", s=14,
                        alpha=0.7)
    front = pareto_front(costs, values, table.maximize)
    if len(front):
        ax.step(costs[front], values[front], where="post", color="tab:red",
                label="Pareto front")
        ax.scatter(costs[front], values[front], color="tab:red", s=30, zorder=3)
        ax.legend(loc="lower right")
    fig.colorbar(points, ax=ax).set_label("generation")
    ax.set_xlabel(cost)
    ax.set_ylabel("validation " + contents.config(study).get("metric", "value"))
    ax.grid(alpha=0.3)
    ax.set_title(f"{study.study_name}: accuracy against {cost}")
    return fig


def plot_front(study: optuna.Study) -> Figure:
    """A study of several objectives: the front of the trials finished by the end of each
    generation (metric against the first cost), and which blocks each plan of the final
    front freezes, cheapest first."""
    table = trial_table(study)
    cost = _first_cost(study) or "cost"
    ok = _finite(table) & np.all(np.isfinite(table.costs), axis=1)
    fig = _figure(13, 5)
    fronts, pattern = fig.subplots(1, 2, width_ratios=[3, 2])
    generations = sorted(set(table.generations[ok]))
    colors = plt.get_cmap("viridis")(np.linspace(0, 1, max(len(generations), 1)))
    for g, color in zip(generations, colors):
        seen = ok & (table.generations <= g)
        costs, values = table.costs[seen, 0], table.values[seen]
        front = pareto_front(costs, values, table.maximize)
        fronts.step(costs[front], values[front], where="post", color=color,
                    label=f"by generation {g}")
    fronts.set_xlabel(cost)
    fronts.set_ylabel("validation " + contents.config(study).get("metric", "value"))
    fronts.set_title("The front, generation by generation")
    fronts.grid(alpha=0.3)
    if generations:
        fronts.legend(fontsize=7, loc="lower right")
    final = pareto_front(table.costs[ok, 0], table.values[ok], table.maximize)
    rows = {}  # one row per distinct point and pattern (plans that differ in rates alone)
    for i in final:
        rows.setdefault((table.costs[ok, 0][i], tuple(table.trained[ok][i])), i)
    final = np.array(list(rows.values()), dtype=int)
    frozen = ~table.trained[ok][final]
    pattern.imshow(frozen.astype(float) if len(final) else np.zeros((1, len(table.blocks))),
                   aspect="auto", cmap="Greys", vmin=0, vmax=1, interpolation="nearest")
    pattern.set_xticks(range(len(table.blocks)), table.blocks, rotation=60, ha="right")
    pattern.set_yticks(range(len(final)), [f"{c:.3g}" for c in table.costs[ok, 0][final]])
    pattern.set_ylabel(f"plans of the final front, by {cost}")
    pattern.set_title("Frozen blocks along the front (black: frozen)")
    fig.suptitle(f"{study.study_name}: accuracy against {cost}")
    return fig


def plot_population(study: optuna.Study) -> Figure:
    """Per generation: the population's genetic diversity (mean per-gene standard deviation
    and mean pairwise distance) and its extinction probabilities."""
    stored = populations(study)
    fig = _figure(10, 4.5)
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    generations = sorted(stored)
    spread, distance = [], []
    for g in generations:
        genes = np.array([list(ind.genes.values()) for ind in stored[g]], dtype=float)
        spread.append(genes.std(0).mean() if len(genes) > 1 else 0.0)
        diffs = genes[:, None, :] - genes[None, :, :]
        distance.append(np.sqrt((diffs ** 2).sum(-1)).mean() if len(genes) > 1 else 0.0)
        probs = [ind.extinction for ind in stored[g]]
        right.scatter([g - 1] * len(probs), probs, s=12, alpha=0.6, color="tab:orange")
    x = [g - 1 for g in generations]
    left.plot(x, spread, marker="o", label="mean per-gene std")
    left.plot(x, distance, marker="s", label="mean pairwise distance")
    left.set_xlabel("generation (population at its end)")
    left.set_ylabel("diversity (genes in [0, 1])")
    left.set_title("Population diversity")
    left.legend()
    left.grid(alpha=0.3)
    right.set_xlabel("generation (population at its end)")
    right.set_ylabel("extinction probability")
    right.set_ylim(-0.05, 1.05)
    right.set_title("Extinction probabilities (mutation pressure)")
    right.grid(alpha=0.3)
    for ax in (left, right):  # generations are whole numbers
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(f"{study.study_name}: BioTune population" +
                 ("" if stored else " (no BioTune populations stored)"))
    return fig


def plot_surrogate(study: optuna.Study) -> Figure:
    """How well the surrogate that pre-selected children predicted them: predicted against
    obtained values, and the rank correlation per generation."""
    points = surrogate_points(study)
    fig = _figure(10, 4.5)
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    if points:
        generations, predicted, values = map(np.array, zip(*points))
        shown = left.scatter(predicted, values, c=generations, cmap="viridis", s=14)
        fig.colorbar(shown, ax=left, label="generation")
        low, high = min(predicted.min(), values.min()), max(predicted.max(), values.max())
        left.plot([low, high], [low, high], color="gray", lw=1, ls="--")
    quality = [(g, rho) for g, _, rho in surrogate_quality(study) if np.isfinite(rho)]
    if quality:
        right.plot(*zip(*quality), marker="o")
    right.axhline(0.0, color="gray", lw=1)
    obtained = "value" if len(study.directions) == 1 else "metric (first objective)"
    left.set_xlabel(f"surrogate's prediction of the {obtained}")
    left.set_ylabel(f"{obtained} obtained")
    left.set_title("Pre-selected children and immigrants")
    right.set_xlabel("generation")
    right.set_ylabel("Spearman rank correlation")
    right.set_ylim(-1.05, 1.05)
    right.set_title("Surrogate quality per generation")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    return fig
