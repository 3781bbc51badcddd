"""A study's trials as arrays for plotting, read from storage alone (no re-training)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import optuna
from optuna.trial import TrialState

from biotune_optuna import contents
from biotune_optuna.contents import block_names, trial_plan
from biotune_optuna.sampler import genome
from biotune_optuna.sampler.records import Individual, TrialRecord, generation_of, role_of
from biotune_optuna.sampler.storage_io import populations_of


def block_sizes(study: optuna.Study, blocks: list[str]) -> np.ndarray | None:
    stored = contents.blocks(study)
    if all(isinstance(stored.get(b), dict) and "n_params" in stored[b] for b in blocks):
        return np.array([stored[b]["n_params"] for b in blocks], dtype=float)
    return None


@dataclass
class TrialTable:
    """One row per finished trial with a full genome."""

    study_name: str
    direction: optuna.study.StudyDirection
    blocks: list[str]
    numbers: np.ndarray
    values: np.ndarray  # NaN for failed trials; pruned ones carry their last report
    generations: np.ndarray
    roles: list[str]
    genes: np.ndarray  # trials x blocks, in [0, 1]
    thresholds: np.ndarray
    multipliers: np.ndarray  # trials x blocks, 0 where frozen
    trainable_fraction: np.ndarray  # NaN when the block sizes are unknown
    costs: np.ndarray  # trials x the objectives after the first (none for one objective)

    @property
    def trained(self) -> np.ndarray:
        return self.multipliers > 0

    @property
    def maximize(self) -> bool:
        return self.direction == optuna.study.StudyDirection.MAXIMIZE

    def __len__(self) -> int:
        return len(self.numbers)


def trial_table(study: optuna.Study) -> TrialTable:
    blocks = block_names(study)
    sizes = block_sizes(study, blocks)
    names = [genome.gene_name(b) for b in blocks] + [genome.THRESHOLD]
    rows = []
    for t in study.get_trials(deepcopy=False):
        if not t.state.is_finished() or not all(n in t.params for n in names):
            continue
        if t.state == TrialState.COMPLETE:
            value = t.values[0]
        elif t.state == TrialState.PRUNED and t.intermediate_values:
            value = t.intermediate_values[max(t.intermediate_values)]
        else:
            value = np.nan
        plan = trial_plan(study, t, blocks)
        fraction = contents.trainable_fraction(t)
        if fraction is None and sizes is not None:
            fraction = float(sizes[np.array(plan.trained)].sum() / sizes.sum())
        costs = (t.values[1:] if t.state == TrialState.COMPLETE else
                 [np.nan] * (len(study.directions) - 1))
        rows.append((t.number, value, generation_of(t), role_of(t) or "-",
                     [t.params[n] for n in names[:-1]], t.params[genome.THRESHOLD],
                     plan.multipliers, np.nan if fraction is None else fraction, costs))
    columns = list(zip(*rows)) if rows else [[]] * 9
    return TrialTable(
        study.study_name, study.directions[0], blocks,
        np.array(columns[0], dtype=int), np.array(columns[1], dtype=float),
        np.array(columns[2], dtype=int), list(columns[3]),
        np.array(columns[4], dtype=float).reshape(len(rows), len(blocks)),
        np.array(columns[5], dtype=float),
        np.array(columns[6], dtype=float).reshape(len(rows), len(blocks)),
        np.array(columns[7], dtype=float),
        np.array(columns[8], dtype=float).reshape(len(rows), len(study.directions) - 1))


def populations(study: optuna.Study) -> dict[int, list[Individual]]:
    """The population entering each generation, as the sampler stored it."""
    return populations_of(study)


def best_so_far(study: optuna.Study) -> tuple[np.ndarray, np.ndarray]:
    """(compute, best value) after each finished trial, in trial order: the epochs the
    trials trained so far, and the best plan so far as ``best`` ranks plans: by the mean of
    its full-fidelity evaluations, so a lucky re-scoring run does not count alone (and a
    later one may lower the curve). A multi-fidelity search's low-fidelity trials train
    fewer epochs and are not compared; failed and pruned trials repeat the best. A study of
    several objectives: the hypervolume of those plan means (:func:`contents.hypervolume_of`)."""
    several = len(study.directions) > 1
    reference = contents.reference_point(study) if several else None  # read once
    pick = max if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else min
    best, spent, values, compute = np.nan, 0, [], []
    sums: dict[tuple, tuple[np.ndarray, int]] = {}  # plan -> (sum of values, evaluations)
    for t in study.get_trials(deepcopy=False):
        if not t.state.is_finished():
            continue
        spent += contents.trial_compute(t).epochs
        if (t.state == TrialState.COMPLETE and t.values is not None
                and np.all(np.isfinite(t.values)) and contents.fidelity(t) != contents.LOW):
            total, count = sums.get(contents.plan_key(t), (0.0, 0))
            sums[contents.plan_key(t)] = (total + np.asarray(t.values, dtype=float), count + 1)
            means = [total / count for total, count in sums.values()]
            best = (contents.hypervolume_of(study, means, reference) if several
                    else pick(float(m[0]) for m in means))
        values.append(np.nan if best is None else best)
        compute.append(spent)
    return np.array(compute, dtype=float), np.array(values, dtype=float)


def surrogate_points(study: optuna.Study) -> list[tuple[int, float, float]]:
    """(generation, the surrogate's prediction, the value) of each completed trial whose
    child or immigrant was pre-selected by the surrogate."""
    points = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        record = TrialRecord.of(t)
        if record is not None and record.surrogate is not None:
            predicted = record.surrogate  # one value, or one per objective: the metric's
            points.append((record.generation,
                           predicted[0] if isinstance(predicted, list) else predicted,
                           t.values[0]))
    return points


def surrogate_quality(study: optuna.Study) -> list[tuple[int, int, float]]:
    """Per generation: (generation, pre-selected trials, Spearman rank correlation of the
    surrogate's predictions with the values; nan below 3 trials)."""
    by_generation: dict[int, list[tuple[float, float]]] = {}
    for generation, predicted, value in surrogate_points(study):
        by_generation.setdefault(generation, []).append((predicted, value))
    return [(g, len(pairs), rank_correlation(*zip(*pairs)) if len(pairs) >= 3 else math.nan)
            for g, pairs in sorted(by_generation.items())]


def rank_correlation(a, b) -> float:
    """Spearman's rho (average ranks for ties); nan when either side is constant."""
    ranks = [_ranks(np.asarray(x, dtype=float)) for x in (a, b)]
    if any(r.std() == 0 for r in ranks):
        return math.nan
    return float(np.corrcoef(*ranks)[0, 1])


def _ranks(x: np.ndarray) -> np.ndarray:
    order = x.argsort(kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x))
    for value in np.unique(x):  # ties share their mean rank
        ranks[x == value] = ranks[x == value].mean()
    return ranks
