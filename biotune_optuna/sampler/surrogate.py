"""A cheap model of the evaluations so far, to pre-select among candidate children
(docs/algorithm.md, section 10): kernel ridge regression with a Gaussian kernel on the
genome and the plan it decodes to. NumPy only.

Features of a genome: its genes, and for each block gene how far it lies above the threshold
(zero when the block is frozen): the decoded plan, which two genomes with close genes but
opposite sides of the threshold do not share. Targets are fitness values (minimised),
standardised; the kernel's length scale is the median distance between the training points
(a rule with no parameter to tune), the ridge term a fixed fraction of the kernel's scale.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

MIN_POINTS = 8  # fewer finished evaluations than this: no model, the first candidate wins
RIDGE = 0.1


def features(genes: np.ndarray, threshold_index: int | None) -> np.ndarray:
    """Rows of genes (n x d) and, per block gene, its margin above the threshold."""
    genes = np.atleast_2d(genes)
    if threshold_index is None:
        return genes
    threshold = genes[:, [threshold_index]]
    blocks = np.delete(genes, threshold_index, axis=1)
    return np.hstack([genes, np.maximum(blocks - threshold, 0.0)])


class Surrogate:
    """Predicted fitness (minimised) of genomes, fitted on finished ones."""

    def recorded(self, predicted: np.ndarray, chosen: int, genes: np.ndarray) -> float:
        """What the record keeps of the chosen candidate: its predicted fitness."""
        return float(predicted[chosen])

    def __init__(self, genes: np.ndarray, fitness: Sequence[float],
                 threshold_index: int | None) -> None:
        self.threshold_index = threshold_index
        self.x = features(np.asarray(genes, dtype=float), threshold_index)
        y = np.asarray(fitness, dtype=float)
        self.mean, self.scale = y.mean(), y.std() or 1.0
        distances = _distances(self.x, self.x)
        positive = distances[distances > 0]
        self.length = float(np.median(positive)) if positive.size else 1.0
        kernel = np.exp(-(distances / self.length) ** 2)
        self.weights = np.linalg.solve(kernel + RIDGE * np.eye(len(y)),
                                       (y - self.mean) / self.scale)

    def predict(self, genes: np.ndarray) -> np.ndarray:
        x = features(np.asarray(genes, dtype=float), self.threshold_index)
        kernel = np.exp(-(_distances(x, self.x) / self.length) ** 2)
        return self.mean + self.scale * kernel @ self.weights


def fit(genes: Sequence[np.ndarray], fitness: Sequence[float],
        threshold_index: int | None) -> Surrogate | None:
    """A surrogate of the finite evaluations, None while there are fewer than MIN_POINTS."""
    pairs = [(g, f) for g, f in zip(genes, fitness) if np.isfinite(f)]
    if len(pairs) < MIN_POINTS:
        return None
    return Surrogate(np.array([g for g, _ in pairs]), [f for _, f in pairs], threshold_index)


class FrontSurrogate:
    """Several objectives: one :class:`Surrogate` per objective (each minimised). A
    candidate scores minus the hypervolume its predicted point adds to the front of the
    finished evaluations (reference: each objective's worst value plus a tenth of its
    range), so the best candidate is the one predicted to extend the front most; a
    candidate predicted dominated adds nothing, and ties keep the first candidate.

    ``known`` gives the objectives a genome fixes before any run (a plan's training cost):
    rows of genes to rows of minimised values, NaN where only a run tells. Those values
    replace the predictions: a model of the cost cannot extrapolate to plans far from the
    finished ones (it predicts their mean), which hid the cheap plans from the search."""

    def __init__(self, models: list[Surrogate], observed: np.ndarray,
                 known: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        from .pareto import hypervolume, non_dominated

        self.models, self.known, self._hypervolume = models, known, hypervolume
        span = observed.max(0) - observed.min(0)
        self.reference = observed.max(0) + 0.1 * np.where(span > 0, span, 1.0)
        self.front = observed[non_dominated(observed)].tolist()
        self.base = hypervolume(self.front, self.reference)

    def values(self, genes: np.ndarray) -> np.ndarray:
        predicted = np.column_stack([m.predict(genes) for m in self.models])
        if self.known is None:
            return predicted
        exact = np.asarray(self.known(np.atleast_2d(genes)), dtype=float)
        return np.where(np.isfinite(exact), exact, predicted)

    def predict(self, genes: np.ndarray) -> np.ndarray:
        gains = [self._hypervolume([*self.front, list(point)], self.reference) - self.base
                 for point in self.values(np.atleast_2d(genes))]
        return -np.maximum(gains, 0.0)  # rounding must not rank dominated candidates

    def recorded(self, predicted: np.ndarray, chosen: int, genes: np.ndarray) -> list[float]:
        """What the record keeps of the chosen candidate: its predicted objective values."""
        return [float(v) for v in self.values(genes[None, :])[0]]


def fit_front(genes: Sequence[np.ndarray], values: Sequence[Sequence[float]],
              threshold_index: int | None,
              known: Callable[[np.ndarray], np.ndarray] | None = None,
              ) -> FrontSurrogate | None:
    """A surrogate of each objective on the evaluations finite in all of them (the
    ``known`` ones computed, not predicted), None while there are fewer than MIN_POINTS."""
    pairs = [(g, v) for g, v in zip(genes, values) if all(map(np.isfinite, v))]
    if len(pairs) < MIN_POINTS:
        return None
    x = np.array([g for g, _ in pairs])
    y = np.array([v for _, v in pairs], dtype=float)
    return FrontSurrogate([Surrogate(x, y[:, k], threshold_index) for k in range(y.shape[1])],
                          y, known)


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    squared = (a ** 2).sum(1)[:, None] + (b ** 2).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(squared, 0.0))
