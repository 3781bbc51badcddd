"""BioTune's genetic operators on genomes normalised to [0, 1] (docs/algorithm.md, section 2).

Pure numpy, every function takes its random generator: the sampler derives one generator per
trial from its seed, which is what makes a search reproducible and resumable.
Fitness is minimised here; index 0 of a population is its best individual.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MAX_REDRAWS = 1000


def rank_probabilities(n: int) -> np.ndarray:
    """Exact distribution of :func:`rank_index` over ranks 0..n-1 (best first).

    With D = n(n+3)/2: P(0) = (n+2)/D, P(k) = (n+1-k)/D for 1 <= k <= n-2, P(n-1) = 1/D.
    """
    if n < 1:
        raise ValueError("rank selection needs at least one individual")
    if n == 1:
        return np.ones(1)
    d = n * (n + 3) / 2
    probs = np.array([(n + 1 - k) / d for k in range(n)])
    probs[0] = (n + 2) / d
    probs[n - 1] = 1 / d
    return probs


def rank_index(rng: np.random.Generator, n: int) -> int:
    """Rank-linear selection of the authors' ``linear_dist``: draw d in [0, n(n+3)/2 - 1],
    subtract n+1, n, n-1, ... until d <= 0 and return the number of subtractions minus one."""
    if n == 1:
        return 0
    d = int(rng.integers(0, n * (n + 3) // 2))
    if d == 0:
        return 0
    count, step = 0, n + 1
    while d > 0:
        d -= step
        step -= 1
        count += 1
    return count - 1


def select_parents(rng: np.random.Generator, n: int) -> tuple[int, int, int]:
    """Indices of two distinct parents and a prototype (which may equal either parent)."""
    if n < 2:
        raise ValueError("parent selection needs at least two individuals")
    first = rank_index(rng, n)
    second = rank_index(rng, n)
    while second == first:
        second = rank_index(rng, n)
    return first, second, rank_index(rng, n)


def blend_crossover(rng: np.random.Generator, p1: np.ndarray, p2: np.ndarray) -> np.ndarray:
    """Per-gene blend: c_j = a_j p1_j + (1 - a_j) p2_j with a_j ~ U(0, 1)."""
    alpha = rng.random(p1.shape[0])
    return alpha * p1 + (1.0 - alpha) * p2


def mutation_rate(extinction: float, n_genes: int) -> float:
    """Per-gene mutation probability m = (p (n - 1) + 1) / n: 1/n for the best parents, 1 for
    the worst."""
    return (extinction * (n_genes - 1) + 1.0) / n_genes


def mutate(rng: np.random.Generator, genes: np.ndarray, extinction: float) -> np.ndarray:
    """Each gene mutates with probability :func:`mutation_rate` by ``extinction * U(-1, 1)``;
    the result is clipped to [0, 1]. ``extinction`` is the parents' mean extinction
    probability, so in the first generation (all zero) mutation changes nothing."""
    n = genes.shape[0]
    mask = rng.random(n) < mutation_rate(extinction, n)
    step = extinction * rng.uniform(-1.0, 1.0, n)
    return np.clip(genes + mask * step, 0.0, 1.0)


def adopt(rng: np.random.Generator, child: np.ndarray, p1: np.ndarray, p2: np.ndarray,
          prototype: np.ndarray) -> np.ndarray:
    """Pull toward the parents' mean and a prototype:
    c + r3 r1 (mean(p1, p2) - c) + (1 - r3) r2 (proto - c), with scalars r1, r2, r3 ~ U(0, 1)."""
    r1, r2, r3 = rng.random(3)
    mean = (p1 + p2) / 2.0
    moved = child + r3 * r1 * (mean - child) + (1.0 - r3) * r2 * (prototype - child)
    return np.clip(moved, 0.0, 1.0)


def make_child(rng: np.random.Generator, p1: np.ndarray, p2: np.ndarray, proto: np.ndarray,
               extinction: float, mutation: bool = True, adoption: bool = True) -> np.ndarray:
    """Crossover, then mutation, then adoption: the order of the authors' code. An ablation
    (``mutation`` or ``adoption`` False) skips that operator and its draws."""
    child = blend_crossover(rng, p1, p2)
    if mutation:
        child = mutate(rng, child, extinction)
    return adopt(rng, child, p1, p2, proto) if adoption else np.clip(child, 0.0, 1.0)


def selects_any_block(genes: np.ndarray, threshold_index: int | None) -> bool:
    """True when at least one block gene exceeds the threshold gene (or there is none)."""
    if threshold_index is None:
        return True
    blocks = np.delete(genes, threshold_index)
    return blocks.size == 0 or bool(np.any(blocks > genes[threshold_index]))


def random_genome(rng: np.random.Generator, n_genes: int,
                  threshold_index: int | None) -> np.ndarray:
    """U(0, 1) per gene, redrawn until at least one block is selected."""
    for _ in range(MAX_REDRAWS):
        genes = rng.random(n_genes)
        if selects_any_block(genes, threshold_index):
            return genes
    return genes  # only reachable for degenerate spaces; never loop forever


def elite_move(rng: np.random.Generator, genes: np.ndarray, threshold_index: int | None,
               step: float) -> tuple[int, float]:
    """The gene an elite explores and the signed step ``delta = step * U(-1, 1)``.

    The gene is drawn among the selected blocks; the threshold is never moved. When no block
    is selected (or there is no threshold) any block gene may move, where the authors' code
    would skip the elite and waste its two evaluations.
    """
    n = genes.shape[0]
    blocks = [i for i in range(n) if i != threshold_index]
    if threshold_index is not None:
        selected = [i for i in blocks if genes[i] > genes[threshold_index]]
        blocks = selected or blocks
    if not blocks:  # the only gene is the threshold
        blocks = list(range(n))
    index = int(blocks[rng.integers(len(blocks))])
    return index, float(step * rng.uniform(-1.0, 1.0))


def extinction_probabilities(fitness: Sequence[float], previous: Sequence[float],
                             ideal: float | None = None) -> np.ndarray:
    """The paper's update on a population sorted best first (fitness minimised):

        p_i = (f_i - f_min (1 - i / (N - 1))) / f_max

    on the distance ``f`` of each fitness to ``ideal`` (for accuracy, 1 - acc). Without an
    ideal, distances are taken to the population's best, which makes p the min-max normalised
    fitness. Failed individuals (inf) count as the worst finite fitness. When all fitness
    values are equal the update is skipped and ``previous`` is returned, as in the paper.
    """
    f = np.asarray(fitness, dtype=float)
    n = f.shape[0]
    finite = np.isfinite(f)
    if n < 2 or not finite.any():
        return np.asarray(previous, dtype=float)
    f = np.where(finite, f, f[finite].max())
    reference = f.min() if ideal is None else ideal
    f = np.maximum(f - reference, 0.0)
    f_min, f_max = f.min(), f.max()
    if f_max == f_min:
        return np.asarray(previous, dtype=float)
    ranks = np.arange(n) / (n - 1)
    return np.clip((f - f_min * (1.0 - ranks)) / f_max, 0.0, 1.0)
