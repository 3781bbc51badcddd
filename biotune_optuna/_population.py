"""Rebuilding BioTune's population from the trials in storage.

Everything the sampler knows comes from here: which slot (generation, position) a trial
fills, each trial's fitness, the population entering a generation, elite local-search
outcomes and the mating pool. Nothing here keeps state between calls.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from optuna.distributions import FloatDistribution
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from biotune_optuna import operators

ATTR = "biotune:"
SLOT = ATTR + "slot"
GENERATION = ATTR + "generation"
ROLE = ATTR + "role"
PARENTS = ATTR + "parents"
PROTOTYPE = ATTR + "prototype"
ELITE = ATTR + "elite"
MOVED_GENE = ATTR + "gene"
DELTA = ATTR + "delta"
UNCLIPPED = ATTR + "unclipped_genes"  # only with clip_elite_genes=False
PROPOSAL = ATTR + "proposal"
POPULATION_PREFIX = ATTR + "population:"
RETRY_OF = "failed_trial"  # set by optuna.storages.RetryFailedTrialCallback

INITIAL, ELITE_PLUS, ELITE_MINUS = "initial", "elite+", "elite-"
CHILD, IMMIGRANT, ENQUEUED = "child", "immigrant", "enqueued"
ELITE_ROLES = (ELITE_PLUS, ELITE_MINUS)
NEWCOMER_ROLES = (CHILD, IMMIGRANT, ENQUEUED)


@dataclass(frozen=True)
class Layout:
    """The generation structure: N initial trials, then N + E trials per generation
    (2 elite explorations for each of the E elites, then N - E children or immigrants)."""

    population_size: int
    elite_size: int

    def locate(self, slot: int) -> tuple[int, int]:
        """(generation, position in generation) of a slot; generation 0 is the initial one."""
        n, e = self.population_size, self.elite_size
        if slot < n:
            return 0, slot
        generation, position = divmod(slot - n, n + e)
        return generation + 1, position

    def generation_size(self, generation: int) -> int:
        return self.population_size if generation == 0 else \
            self.population_size + self.elite_size

    def role(self, generation: int, position: int) -> str:
        """The role a slot plays when nothing overrides it (enqueued trials, immigrants)."""
        if generation == 0:
            return INITIAL
        if position < 2 * self.elite_size:
            return ELITE_PLUS if position % 2 == 0 else ELITE_MINUS
        return CHILD

    def n_trials(self, generations: int) -> int:
        """The budget N + G (N + E) of an initial population and G generations."""
        return self.population_size + generations * (self.population_size + self.elite_size)


def slot_of(number: int, trials: Sequence[FrozenTrial]) -> int:
    """The slot the trial with this number fills: its rank among the trials that are not
    retries. Trial numbers are assigned atomically by the storage and a retry is recognisable
    from its creation, so every worker agrees on the slot without talking to the others."""
    return sum(1 for t in trials if t.number < number and RETRY_OF not in t.system_attrs)


def assign_slots(trials: Sequence[FrozenTrial]) -> dict[int, int]:
    """Slot of every trial by number; a retry shares the slot of the trial it retries."""
    slots: dict[int, int] = {}
    count = 0
    for t in sorted(trials, key=lambda t: t.number):
        if RETRY_OF in t.system_attrs:
            original = slots.get(t.system_attrs[RETRY_OF])
            slot = t.system_attrs.get(SLOT, original)
            if slot is not None:
                slots[t.number] = slot
        else:
            slots[t.number] = count
            count += 1
    return slots


@dataclass
class Individual:
    """A genome in [0, 1]^n with its fitness (minimised; inf when its trial failed)."""

    trial: int
    genes: dict[str, float]
    fitness: float
    extinction: float = 0.0

    def vector(self, names: Sequence[str]) -> np.ndarray:
        return np.array([self.genes[n] for n in names])

    def has(self, names: Sequence[str]) -> bool:
        return all(n in self.genes for n in names)

    def to_json(self) -> dict:
        return {"trial": self.trial, "genes": self.genes,
                "fitness": self.fitness if math.isfinite(self.fitness) else None,
                "extinction": self.extinction}

    @classmethod
    def from_json(cls, data: Mapping) -> Individual:
        fitness = math.inf if data["fitness"] is None else float(data["fitness"])
        return cls(int(data["trial"]), dict(data["genes"]), fitness, float(data["extinction"]))


def normalize(value: float, dist: FloatDistribution) -> float:
    if dist.log:
        return (math.log(value) - math.log(dist.low)) / (math.log(dist.high) - math.log(dist.low))
    return (value - dist.low) / (dist.high - dist.low)


def denormalize(unit: float, dist: FloatDistribution) -> float:
    unit = min(max(unit, 0.0), 1.0)
    if dist.log:
        value = math.exp(math.log(dist.low) + unit * (math.log(dist.high) - math.log(dist.low)))
    else:
        value = dist.low + unit * (dist.high - dist.low)
    if dist.step is not None:
        value = dist.low + round((value - dist.low) / dist.step) * dist.step
    return min(max(value, dist.low), dist.high)


def trial_fitness(trial: FrozenTrial, direction: StudyDirection) -> float | None:
    """Minimised fitness of a finished trial, None while it runs or waits.

    FAIL (including NaN objectives, which Optuna fails) counts as inf, the worst value. A
    PRUNED trial counts with its last reported intermediate value, inf when it reported none.
    """
    sign = 1.0 if direction == StudyDirection.MINIMIZE else -1.0
    if trial.state == TrialState.COMPLETE:
        value = trial.value
    elif trial.state == TrialState.PRUNED and trial.intermediate_values:
        value = trial.intermediate_values[max(trial.intermediate_values)]
    elif trial.state in (TrialState.PRUNED, TrialState.FAIL):
        return math.inf
    else:
        return None
    return sign * value if value is not None and math.isfinite(value) else math.inf


def trial_genes(trial: FrozenTrial, space: Mapping[str, FloatDistribution]) -> dict[str, float]:
    """The normalised genes of a trial: its parameters, else what the sampler proposed (a
    trial that failed before suggesting everything still has a genome)."""
    proposal = trial.system_attrs.get(PROPOSAL, {})
    genes = {}
    for name, dist in space.items():
        value = trial.params.get(name, proposal.get(name))
        if value is not None and name in trial.distributions and trial.distributions[name] != dist:
            value = None
        if value is not None and dist.low <= value <= dist.high:
            genes[name] = normalize(value, dist)
    return genes


@dataclass
class Generation:
    """The finished trials of one generation, grouped by role. A retried trial is represented
    by its latest retry."""

    explorations: dict[int, list[Individual]] = field(default_factory=dict)  # by elite trial
    newcomers: list[Individual] = field(default_factory=list)
    children: list[tuple[Individual, list[int]]] = field(default_factory=list)  # with parents


def group_by_generation(trials: Sequence[FrozenTrial], layout: Layout,
                        direction: StudyDirection, space: Mapping[str, FloatDistribution],
                        wanted: set[int]) -> dict[int, Generation]:
    """Finished trials of the wanted generations. For each slot only its latest trial (the
    last retry) counts. Trials the sampler never saw (added with ``study.add_trial`` or run
    under another sampler) join their generation like enqueued ones."""
    latest: dict[int, int] = {}
    for number, slot in assign_slots(trials).items():
        if layout.locate(slot)[0] in wanted:
            latest[slot] = max(number, latest.get(slot, -1))
    by_number = {t.number: t for t in trials}
    generations: dict[int, Generation] = {}
    for slot in sorted(latest):
        t = by_number[latest[slot]]
        fitness = trial_fitness(t, direction)
        if fitness is None:
            continue
        attrs = t.system_attrs
        genes = attrs.get(UNCLIPPED) or trial_genes(t, space)
        individual = Individual(t.number, dict(genes), fitness)
        generation = generations.setdefault(layout.locate(slot)[0], Generation())
        role = attrs.get(ROLE, ENQUEUED)
        if role in ELITE_ROLES:
            generation.explorations.setdefault(attrs[ELITE], []).append(individual)
        else:
            generation.newcomers.append(individual)
            if role == CHILD:
                generation.children.append((individual, list(attrs[PARENTS])))
    return generations


def sort_population(individuals: Sequence[Individual]) -> list[Individual]:
    """Best first; ties keep the older trial first, so every worker sorts alike."""
    return sorted(individuals, key=lambda ind: (ind.fitness, ind.trial))


def resolve_elites(parents: Sequence[Individual], elite_size: int,
                   generation: Generation) -> list[Individual]:
    """Apply elite local search: an elite takes an exploration's genome and fitness when that
    exploration is strictly better than the elite and than every other exploration of it.
    The elite keeps its extinction probability; ties revert, as in the paper."""
    elites = []
    for elite in parents[:elite_size]:
        tried = sorted(generation.explorations.get(elite.trial, []), key=lambda i: i.fitness)
        best = tried[0] if tried else None
        runner_up = tried[1].fitness if len(tried) > 1 else math.inf
        if best is not None and best.fitness < elite.fitness and best.fitness < runner_up:
            elite = Individual(best.trial, best.genes, best.fitness, elite.extinction)
        elites.append(elite)
    return elites


def next_population(parents: Sequence[Individual], generation: Generation, population_size: int,
                    elite_size: int, ideal: float | None) -> list[Individual]:
    """Generational replacement with elitism: the (locally improved) elites plus this
    generation's children, immigrants and enqueued trials, sorted, extinction updated."""
    elites = resolve_elites(parents, elite_size, generation)
    newcomers = [Individual(i.trial, i.genes, i.fitness, 0.0) for i in generation.newcomers]
    population = sort_population(elites + newcomers)[:population_size]
    update_extinction(population, ideal)
    return population


def update_extinction(population: list[Individual], ideal: float | None) -> None:
    probabilities = operators.extinction_probabilities(
        [i.fitness for i in population], [i.extinction for i in population], ideal)
    for individual, p in zip(population, probabilities):
        individual.extinction = float(p)


def mating_pool(parents: Sequence[Individual], elite_size: int,
                generation: Generation) -> list[Individual]:
    """The previous population with its elites improved in place (not re-sorted, as in the
    authors' code), minus every parent that one of this generation's finished children
    outcompeted (strictly better fitness). Removals do not depend on the order children
    finish in, so workers that see the same finished trials build the same pool."""
    pool = resolve_elites(parents, elite_size, generation) + list(parents[elite_size:])
    for child, child_parents in generation.children:
        pool = [p for p in pool if not (p.trial in child_parents and p.fitness > child.fitness)]
    return pool
