"""A study's generations as one process knows them: its seed, the population entering each
generation (fixed and stored by the trial that starts the generation, immutable after), the
genes read from trials, and the training data of a surrogate. The adapter (:mod:`.core`)
keeps one per study; every worker rebuilds the same populations from storage.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial

from . import population as pop
from . import records, surrogate
from .coordination import StudyLock
from .population import Layout, Progress
from .records import Individual, TrialRecord
from .storage_io import TrialView, set_study_attr, study_attrs
from .strategies import SelectionStrategy


@dataclass
class StudyState:
    """What a process keeps about a study between trials."""

    lock: StudyLock
    seed: int
    directions: tuple[StudyDirection, ...]
    view: TrialView
    write_record: Callable[[int, dict[str, Any]], None]
    populations: dict[int, list[Individual]] = field(default_factory=dict)
    genes: dict[tuple, dict[int, dict[str, float]]] = field(default_factory=dict)  # by space

    def known_genes(self, space: Mapping[str, BaseDistribution]) -> dict[int, dict[str, float]]:
        return self.genes.setdefault(tuple(space.items()), {})

    def population(self, study: Study, trials: Sequence[records.Known], progress: Progress,
                   generation: int, space: dict[str, BaseDistribution],
                   selection: SelectionStrategy, ideal: float | None) -> list[Individual]:
        """The population entering a generation: read once per process, or fixed (and
        stored) by the trial that starts the generation, under the study lock."""
        if generation in self.populations:
            return self.populations[generation]
        previous = generation - 1
        unseen = _unseen_finished(trials, self.populations)
        # A trial that starts the generation knows nobody has used its population yet; it
        # reads the study only for what this process has not seen (a previous population,
        # trials adopted elsewhere).
        starting = generation > progress.generation
        stored: Mapping[str, Any] = {}
        if not starting or unseen or (previous and previous not in self.populations):
            stored = study_attrs(study)
            self._learn(stored)
            if not starting and generation in self.populations:
                return self.populations[generation]
        members = progress.members if previous == progress.generation else [
            (t, r) for t, r in trials if r is not None and r.generation == previous]
        adopted = _adoptable(unseen, stored)
        closed = pop.group_generation(members, adopted, self.directions, space,
                                      self.known_genes(space))
        if previous == 0:
            population = selection.initial(closed, ideal)
        else:
            parents = self.population(study, trials, progress, previous, space, selection,
                                      ideal)
            population = selection.next(parents, closed, ideal)
        joined = sorted({t.number for t in adopted} & {i.trial for i in closed.newcomers})
        if joined:
            set_study_attr(study, f"{records.ADOPTED_PREFIX}{previous}", joined)
        set_study_attr(study, f"{records.POPULATION_PREFIX}{generation}",
                       [i.to_json() for i in population])
        self.populations[generation] = population
        return population

    def promoted_before(self, study: Study, generation: int, elite_size: int) -> set[int]:
        """Trials promoted before ``generation``: every elite of an earlier population, since
        each generation promotes its elites that were never elites before. Derived from the
        stored populations alone, so every worker agrees."""
        earlier = range(1, generation)
        if any(g not in self.populations for g in earlier):
            self._learn(study_attrs(study))
        return {i.trial for g in earlier for i in self.populations.get(g, [])[:elite_size]}

    def surrogate(self, study: Study, trials: Sequence[records.Known], fidelity: str | None,
                  space: dict[str, BaseDistribution], threshold_index: int | None,
                  computed: Callable[[np.ndarray], np.ndarray] | None = None,
                  ) -> surrogate.Surrogate | surrogate.FrontSurrogate | None:
        """A model of the finished evaluations at ``fidelity`` (promotions and low-fidelity
        trials are not mixed): of the fitness, or of each objective of several (those the
        genes fix ``computed``, see :class:`.surrogate.FrontSurrogate`)."""
        names = list(space)
        # its own cache: the population's may hold an elite's unclipped genes
        known = self.genes.setdefault(("surrogate", *space.items()), {})
        several = len(self.directions) > 1
        genes, targets = [], []
        for trial, record in trials:
            value = (pop.trial_values(trial, self.directions) if several else
                     pop.trial_fitness(trial, self.directions[0]))
            if value is None or not np.all(np.isfinite(value)) or (
                    record is not None and record.fidelity != fidelity):
                continue
            if trial.number not in known:
                known[trial.number] = pop.trial_genes(trial, space,
                                                      record.proposal if record else None)
            vector = known[trial.number]
            if all(n in vector for n in names):
                genes.append(np.array([vector[n] for n in names]))
                targets.append(value)
        if several:
            return surrogate.fit_front(genes, targets, threshold_index, computed)
        return surrogate.fit(genes, targets, threshold_index)

    def _learn(self, attrs: Mapping[str, Any]) -> None:
        for g, population in records.stored_populations(attrs).items():
            self.populations.setdefault(g, population)


def elite_at(layout: Layout, base: TrialRecord, parents: Sequence[Individual],
             names: list[str]) -> Individual | None:
    """The elite a re-scoring or promotion position evaluates again (None when it has
    nothing to evaluate)."""
    start = {records.RESCORE: layout.rescore_start,
             records.PROMOTE: layout.promote_start}.get(base.role)
    if start is None:
        return None
    elite = parents[base.position - start]
    return elite if elite.has(names) and np.isfinite(elite.fitness) else None


def _unseen_finished(trials: Sequence[records.Known],
                     populations: Mapping[int, list[Individual]]) -> list[FrozenTrial]:
    """Finished trials without a record that no known population holds."""
    unseen = [t for t, r in trials if r is None and t.state in records.FINISHED]
    if unseen:
        used = {i.trial for population in populations.values() for i in population}
        unseen = [t for t in unseen if t.number not in used]
    return unseen


def _adoptable(unseen: Sequence[FrozenTrial], attrs: Mapping[str, Any],
               ) -> list[FrozenTrial]:
    """The unseen trials no generation has adopted yet."""
    adopted = records.adopted_trials(attrs)
    return [t for t in unseen if t.number not in adopted]
