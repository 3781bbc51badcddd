"""BioTune's default elite search and child generation strategies, and the proposals of the
other roles of a position: what genome a trial proposes, given the population entering its
generation (docs/algorithm.md). The Optuna adapter
(:mod:`.core`) decides a trial's generation and role, fixes populations and stores records;
this module only computes, from the study's seed and the trial's keys, so that every worker
proposes the same genome for the same position.

- initial and enqueued positions, immigrants: a random genome (:meth:`Breeding.random`);
- elite local search, ``elite+`` / ``elite-``: one gene moved by +delta / -delta;
- re-scoring: the elite's genome again (a fresh evaluation of it);
- promotion: the elite's genome again, at the full fidelity, unless promoted before;
- children: rank-linear selection, blend crossover, extinction-driven mutation and adoption
  toward the parents' mean and a prototype (:func:`.operators.make_child`);
- with a surrogate, children and immigrants are the best predicted of several candidates
  (:mod:`.surrogate`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import operators
from .records import CHILD, ELITE_PLUS, FULL, IMMIGRANT, Individual, TrialRecord
from .surrogate import FrontSurrogate, Surrogate

SLOT_STREAM, ELITE_STREAM, INDEPENDENT_STREAM = 0, 1, 2  # random streams, keyed by the seed


@dataclass(frozen=True)
class Proposal:
    """A proposed genome (normalised, in the order of the names it was made for) and what the
    record says about it besides."""

    genes: np.ndarray
    fields: dict[str, Any]


def threshold_index(threshold_param: str | None, names: Sequence[str]) -> int | None:
    return list(names).index(threshold_param) if threshold_param in names else None


def rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng([seed, *key])


def rescore(elite: Individual, names: Sequence[str]) -> Proposal:
    return Proposal(elite.vector(names), {"elite": elite.trial})


def promote(elite: Individual, names: Sequence[str]) -> Proposal:
    return Proposal(elite.vector(names), {"elite": elite.trial, "fidelity": FULL})


@dataclass(frozen=True)
class EliteLocalSearch:
    """BioTune's elite search: one gene of the elite moved by +delta / -delta."""

    exploration_rate: float = 0.25
    threshold_param: str | None = "threshold"
    clip_elite_genes: bool = True

    def explore(self, seed: int, elite: Individual, names: Sequence[str],
                record: TrialRecord) -> Proposal:
        """Both trials of a pair draw from the same stream, so they move the same gene by
        opposite steps."""
        genes = elite.vector(names)
        stream = rng(seed, ELITE_STREAM, record.generation, record.position // 2)
        gene, delta = operators.elite_move(stream, genes,
                                           threshold_index(self.threshold_param, names),
                                           self.exploration_rate)
        step = delta if record.role == ELITE_PLUS else -delta
        moved = genes.copy()
        moved[gene] += step
        fields: dict[str, Any] = {"elite": elite.trial, "gene": names[gene], "delta": step}
        if not self.clip_elite_genes:
            fields["unclipped_genes"] = dict(zip(names, map(float, moved)))
        return Proposal(np.clip(moved, 0.0, 1.0), fields)


@dataclass(frozen=True)
class Breeding:
    """BioTune's child generation, and the random genomes of initial positions and
    immigrants."""

    threshold_param: str | None = "threshold"
    resample_empty: bool = False
    mutation: bool = True  # the ablations (docs/algorithm.md, section 9) turn these off
    adoption: bool = True
    immigrants: bool = True
    candidates: int = 1  # children and immigrants drawn per position (section 10)

    def random(self, seed: int, slot: int, names: Sequence[str],
               model: Surrogate | FrontSurrogate | None = None,
               **fields: Any) -> Proposal:
        """A random genome, redrawn until it trains some block (a slot's own stream); with a
        surrogate ``model``, the best predicted of ``candidates`` such draws."""
        stream = rng(seed, SLOT_STREAM, slot)
        threshold = threshold_index(self.threshold_param, names)
        draws = [Proposal(operators.random_genome(stream, len(names), threshold), fields)
                 for _ in range(self.candidates if model else 1)]
        return _preselect(draws, model)

    def breed(self, seed: int, slot: int, pool: Sequence[Individual],
              names: Sequence[str], population: Sequence[Individual] = (),
              model: Surrogate | FrontSurrogate | None = None) -> Proposal:
        """A child of two parents of the mating pool, or an immigrant once the pool has two
        parents or fewer (without immigrants, the whole ``population`` is the pool then).
        With a surrogate ``model``, ``candidates`` children are bred from the position's
        stream one after the other and the best predicted is proposed."""
        if len(pool) <= 2 and not self.immigrants and len(population) > 2:
            pool = population
        if len(pool) <= 2:
            return self.random(seed, slot, names, model, role=IMMIGRANT)
        stream = rng(seed, SLOT_STREAM, slot)
        children = [self._child(stream, pool, names)
                    for _ in range(self.candidates if model else 1)]
        return _preselect(children, model)

    def _child(self, stream: np.random.Generator, pool: Sequence[Individual],
               names: Sequence[str]) -> Proposal:
        first, second, proto = operators.select_parents(stream, len(pool))
        p1, p2, prototype = (pool[i].vector(names) for i in (first, second, proto))
        extinction = (pool[first].extinction + pool[second].extinction) / 2.0
        threshold = threshold_index(self.threshold_param, names)
        for _ in range(operators.MAX_REDRAWS):
            child = operators.make_child(stream, p1, p2, prototype, extinction, self.mutation,
                                         self.adoption)
            if not self.resample_empty or operators.selects_any_block(child, threshold):
                break
        return Proposal(child, {"role": CHILD, "parents": [pool[first].trial,
                                                           pool[second].trial],
                                "prototype": pool[proto].trial})


def _preselect(candidates: list[Proposal],
               model: Surrogate | FrontSurrogate | None) -> Proposal:
    """The candidate the surrogate predicts best (the first one without a model); its
    record says how many there were and what the model predicted for it."""
    if model is None or len(candidates) == 1:
        return candidates[0]
    predicted = model.predict(np.array([c.genes for c in candidates]))
    best = int(np.argmin(predicted))
    chosen = candidates[best]
    return Proposal(chosen.genes, {**chosen.fields, "candidates": len(candidates),
                                   "predicted": model.recorded(predicted, best, chosen.genes)})
