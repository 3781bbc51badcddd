"""BioTune's strategies, one per role of a position: what genome a trial proposes, given the
population entering its generation (docs/algorithm.md). The Optuna adapter
(:mod:`.core`) decides a trial's generation and role, fixes populations and stores records;
this module only computes, from the study's seed and the trial's keys, so that every worker
proposes the same genome for the same position.

- initial and enqueued positions, immigrants: a random genome (:meth:`Evolution.random`);
- elite local search, ``elite+`` / ``elite-``: one gene moved by +delta / -delta;
- re-scoring: the elite's genome again (a fresh evaluation of it);
- promotion: the elite's genome again, at the full fidelity, unless promoted before;
- children: rank-linear selection, blend crossover, extinction-driven mutation and adoption
  toward the parents' mean and a prototype (:func:`.operators.make_child`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import operators
from .records import CHILD, ELITE_PLUS, FULL, IMMIGRANT, Individual, TrialRecord

SLOT_STREAM, ELITE_STREAM, INDEPENDENT_STREAM = 0, 1, 2  # random streams, keyed by the seed


@dataclass(frozen=True)
class Proposal:
    """A proposed genome (normalised, in the order of the names it was made for) and what the
    record says about it besides."""

    genes: np.ndarray
    fields: dict[str, Any]


@dataclass(frozen=True)
class Evolution:
    """The operators' settings (see :class:`.core.BioTuneSampler` for each)."""

    exploration_rate: float = 0.25
    threshold_param: str | None = "threshold"
    clip_elite_genes: bool = True
    resample_empty: bool = False
    mutation: bool = True  # the ablations (docs/algorithm.md, section 9) turn these off
    adoption: bool = True
    immigrants: bool = True

    def threshold_index(self, names: Sequence[str]) -> int | None:
        return (list(names).index(self.threshold_param) if self.threshold_param in names
            else None)

    @staticmethod
    def rng(seed: int, *key: int) -> np.random.Generator:
        return np.random.default_rng([seed, *key])

    def random(self, seed: int, slot: int, names: Sequence[str], **fields: Any) -> Proposal:
        """A random genome, redrawn until it trains some block (a slot's own stream)."""
        genes = operators.random_genome(self.rng(seed, SLOT_STREAM, slot), len(names),
                                        self.threshold_index(names))
        return Proposal(genes, fields)

    def explore_elite(self, seed: int, elite: Individual, names: Sequence[str],
                      record: TrialRecord) -> Proposal:
        """Elite local search: both trials of a pair draw from the same stream, so they move
        the same gene by opposite steps."""
        genes = elite.vector(names)
        rng = self.rng(seed, ELITE_STREAM, record.generation, record.position // 2)
        gene, delta = operators.elite_move(rng, genes, self.threshold_index(names),
                                           self.exploration_rate)
        step = delta if record.role == ELITE_PLUS else -delta
        moved = genes.copy()
        moved[gene] += step
        fields: dict[str, Any] = {"elite": elite.trial, "gene": names[gene], "delta": step}
        if not self.clip_elite_genes:
            fields["unclipped_genes"] = dict(zip(names, map(float, moved)))
        return Proposal(np.clip(moved, 0.0, 1.0), fields)

    @staticmethod
    def rescore(elite: Individual, names: Sequence[str]) -> Proposal:
        return Proposal(elite.vector(names), {"elite": elite.trial})

    @staticmethod
    def promote(elite: Individual, names: Sequence[str]) -> Proposal:
        return Proposal(elite.vector(names), {"elite": elite.trial, "fidelity": FULL})

    def breed(self, seed: int, slot: int, pool: Sequence[Individual],
              names: Sequence[str], population: Sequence[Individual] = ()) -> Proposal:
        """A child of two parents of the mating pool, or an immigrant once the pool has two
        parents or fewer (without immigrants, the whole ``population`` is the pool then)."""
        if len(pool) <= 2 and not self.immigrants and len(population) > 2:
            pool = population
        if len(pool) <= 2:
            return self.random(seed, slot, names, role=IMMIGRANT)
        rng = self.rng(seed, SLOT_STREAM, slot)
        first, second, proto = operators.select_parents(rng, len(pool))
        p1, p2, prototype = (pool[i].vector(names) for i in (first, second, proto))
        extinction = (pool[first].extinction + pool[second].extinction) / 2.0
        threshold = self.threshold_index(names)
        for _ in range(operators.MAX_REDRAWS):
            child = operators.make_child(rng, p1, p2, prototype, extinction, self.mutation,
                                         self.adoption)
            if not self.resample_empty or operators.selects_any_block(child, threshold):
                break
        return Proposal(child, {"role": CHILD, "parents": [pool[first].trial,
                                                           pool[second].trial],
                                "prototype": pool[proto].trial})
