"""BioTune's selection on several objectives (docs/algorithm.md, section 11): individuals are
ranked by Pareto front, then by crowding distance within a front (NSGA-II's order), and
"better" means "dominates" wherever the single-objective algorithm compares two fitness
values (elite local search, the mating pool's removals). Objective values are minimised.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from .population import Generation, update_extinction
from .records import Individual


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """``a`` is no worse than ``b`` in every objective and better in one (minimised)."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def fronts(points: Sequence[Sequence[float]]) -> list[list[int]]:
    """Indices of ``points`` by non-dominated front, the first front first, each in index
    order: the first front peeled off, then the first of the rest, and so on."""
    if not len(points):
        return []
    values = np.asarray(points, dtype=float)
    left, found = np.arange(len(values)), []
    while len(left):
        front = left[non_dominated(values[left])]
        found.append([int(i) for i in front])
        left = np.setdiff1d(left, front)
    return found


def non_dominated(points: np.ndarray) -> np.ndarray:
    """Indices of the points no other point dominates (the first front), vectorised for the
    hundreds of finished trials a surrogate sees."""
    points = np.asarray(points, dtype=float)
    no_worse = np.all(points[:, None, :] <= points[None, :, :], axis=2)  # [j, i]: j <= i
    better = np.any(points[:, None, :] < points[None, :, :], axis=2)
    return np.flatnonzero(~np.any(no_worse & better, axis=0))


def crowding_distances(points: Sequence[Sequence[float]]) -> np.ndarray:
    """NSGA-II's crowding distance of each point within its front: the boundary points of
    each objective get inf, the others the sum over objectives of the normalised gap between
    their neighbours."""
    values = np.asarray(points, dtype=float)
    n = len(values)
    distance = np.zeros(n)
    if n <= 2:
        return np.full(n, math.inf)
    for k in range(values.shape[1]):
        order = np.argsort(values[:, k], kind="stable")
        span = values[order[-1], k] - values[order[0], k]
        distance[order[0]] = distance[order[-1]] = math.inf
        if span > 0:
            distance[order[1:-1]] += (values[order[2:], k] - values[order[:-2], k]) / span
    return distance


def pareto_sort(individuals: Sequence[Individual]) -> list[Individual]:
    """Best first: by front, then by crowding distance (largest first), then the older
    trial; each a copy whose fitness is its front index. Failed individuals (an objective
    inf) come last with fitness inf."""
    failed = [i for i in individuals if not all(map(math.isfinite, i.values))]
    ranked = [i for i in individuals if all(map(math.isfinite, i.values))]
    ordered = []
    for index, front in enumerate(fronts([i.values for i in ranked])):
        crowding = crowding_distances([ranked[i].values for i in front])
        members = sorted(zip(front, crowding), key=lambda m: (-m[1], ranked[m[0]].trial))
        ordered += [replace(ranked[i], fitness=float(index)) for i, _ in members]
    return ordered + [replace(i, fitness=math.inf) for i in sorted(failed, key=lambda i: i.trial)]


def resolve_elites(parents: Sequence[Individual], elite_size: int, generation: Generation,
                   pair_mean: bool = False) -> list[Individual]:
    """Elite local search on several objectives: an elite takes an exploration's genome and
    values when that exploration dominates it and the other exploration does not dominate
    that one; when both qualify, the one that improves the elite more (the volume of the box
    between them) wins. Re-scoring runs and, with ``pair_mean``, an unreplaced elite's
    neighbours are averaged into its values, objective by objective."""
    elites = []
    for elite in parents[:elite_size]:
        elite = elite.averaged_with(generation.rescores.get(elite.trial, []))
        tried = generation.explorations.get(elite.trial, [])
        better = [x for x in tried if dominates(x.values, elite.values)
                  and not any(dominates(y.values, x.values) for y in tried)]
        if better:
            best = max(better, key=lambda x: (_improvement(x, elite), -x.trial))
            elite = Individual(best.trial, best.genes, best.fitness, elite.extinction,
                               values=best.values)
        elif pair_mean:
            elite = elite.averaged_with([x.values for x in tried
                                         if all(map(math.isfinite, x.values))])
        elites.append(elite)
    return elites


@dataclass(frozen=True)
class ParetoSelection:
    """BioTune's selection strategy for several objectives: the population entering each
    generation is the (locally improved) elites and the generation's newcomers ranked by
    :func:`pareto_sort`, extinction following the front (0 on the first, 1 on the last),
    and a parent leaves the mating pool when a child of it dominates it."""

    population_size: int
    elite_size: int
    pair_mean: bool = False
    extinction_after_init: bool = False

    def initial(self, generation: Generation, ideal: float | None) -> list[Individual]:
        population = pareto_sort([replace(i, extinction=0.0)
                                  for i in generation.newcomers])[:self.population_size]
        if self.extinction_after_init:
            update_extinction(population, None)
        return population

    def next(self, parents: Sequence[Individual], generation: Generation,
             ideal: float | None) -> list[Individual]:
        elites = resolve_elites(parents, self.elite_size, generation, self.pair_mean)
        newcomers = [replace(i, extinction=0.0) for i in generation.newcomers]
        population = pareto_sort(elites + newcomers)[:self.population_size]
        update_extinction(population, None)
        return population

    def mating_pool(self, parents: Sequence[Individual],
                    generation: Generation) -> list[Individual]:
        pool = (resolve_elites(parents, self.elite_size, generation, self.pair_mean)
                + list(parents[self.elite_size:]))
        for child, child_parents in generation.children:
            pool = [p for p in pool
                    if not (p.trial in child_parents and dominates(child.values, p.values))]
        return pool


def hypervolume(points: Sequence[Sequence[float]], reference: Sequence[float]) -> float:
    """The volume dominated by ``points`` and bounded by ``reference`` (every objective
    minimised; points not better than the reference in every objective add nothing). Exact,
    by slicing along the last objective: quick for the fronts of a search (tens of points)."""
    kept = [tuple(p) for p in points if all(x < r for x, r in zip(p, reference))]
    if not kept:
        return 0.0
    if len(reference) == 1:
        return float(reference[0] - min(p[0] for p in kept))
    kept.sort(key=lambda p: p[-1])
    volume = 0.0
    for i, point in enumerate(kept):
        top = kept[i + 1][-1] if i + 1 < len(kept) else reference[-1]
        if top > point[-1]:
            volume += (top - point[-1]) * hypervolume([p[:-1] for p in kept[:i + 1]],
                                                      reference[:-1])
    return volume


def _improvement(better: Individual, elite: Individual) -> float:
    return float(np.prod([e - b for b, e in zip(better.values, elite.values)]))
