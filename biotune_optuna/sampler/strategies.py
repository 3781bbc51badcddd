"""What a strategy passed to :class:`.core.BioTuneSampler` implements, in the manner of Optuna's
``NSGAIISampler`` (``elite_population_selection_strategy``, ``child_generation_strategy``).
BioTune's own are the defaults: :class:`.population.Selection`,
:class:`.evolution.EliteLocalSearch` and :class:`.evolution.Breeding`.

Fitness is minimised whatever the study's direction (a maximised value is negated), and a
strategy draws only from the streams it is given (a seed and the position's keys), so that
every worker proposes the same genome for the same position. A strategy is fixed for a
study: its class is stored with the study's settings when it is not the default.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from .evolution import Proposal
from .population import Generation
from .records import Individual, TrialRecord
from .surrogate import Surrogate


class SelectionStrategy(Protocol):
    def initial(self, generation: Generation, ideal: float | None) -> list[Individual]:
        """The population entering generation 1, from the initial trials."""

    def next(self, parents: Sequence[Individual], generation: Generation,
             ideal: float | None) -> list[Individual]:
        """The population entering the generation after ``generation``, whose trials were
        bred from ``parents``; its first E individuals are the elites."""

    def mating_pool(self, parents: Sequence[Individual],
                    generation: Generation) -> list[Individual]:
        """The parents a child of ``generation`` may be bred from, given its trials finished
        so far."""


class EliteSearchStrategy(Protocol):
    def explore(self, seed: int, elite: Individual, names: Sequence[str],
                record: TrialRecord) -> Proposal:
        """The genome of an exploration (``record.role`` ``elite+`` or ``elite-``) of
        ``elite``."""


class ChildGenerationStrategy(Protocol):
    def random(self, seed: int, slot: int, names: Sequence[str],
               model: Surrogate | None = None, **fields) -> Proposal:
        """A random genome for the slot (initial and enqueued positions)."""

    def breed(self, seed: int, slot: int, pool: Sequence[Individual], names: Sequence[str],
              population: Sequence[Individual] = (), model: Surrogate | None = None,
              ) -> Proposal:
        """A child of the mating ``pool`` (or an immigrant), for the slot."""
