"""BioTune's population, rebuilt from the trials and their records: the generation structure,
each trial's fitness and genes, the generation a new trial joins, the population entering a
generation (elitism with elite local search, generational replacement) and the mating pool.
Nothing here keeps state between calls.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from optuna.distributions import FloatDistribution
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from . import operators
from .records import (
    CHILD,
    ELITE_MINUS,
    ELITE_PLUS,
    ELITE_ROLES,
    ENQUEUED,
    FINISHED,
    INITIAL,
    PROMOTE,
    RESCORE,
    Individual,
    Known,
    TrialRecord,
    unranked_fitness,
)


@dataclass(frozen=True)
class Layout:
    """The generation structure: N initial trials, then N + E trials per generation
    (2 elite explorations for each of the E elites, then N - E children or immigrants).
    With re-scoring, E more positions follow the explorations: each elite evaluated once
    more. With promotion (multi-fidelity), E more positions follow: each elite that has
    never been an elite before evaluated at the full fidelity (a position whose elite was
    promoted already breeds a child instead). Trials asked while a generation still waits
    for results are extra children of it."""

    population_size: int
    elite_size: int
    rescore: bool = False
    promote: bool = False
    explore: bool = True  # False (an ablation): the explorations' positions breed children

    def generation_size(self, generation: int) -> int:
        return (self.population_size if generation == 0 else
            self.population_size + self.elite_size * (1 + self.rescore + self.promote))

    @property
    def rescore_start(self) -> int:
        return 2 * self.elite_size

    @property
    def promote_start(self) -> int:
        return self.elite_size * (2 + self.rescore)

    def role(self, generation: int, position: int) -> str:
        """The role of a position when nothing overrides it (enqueued trials, immigrants,
        promotions of elites promoted already)."""
        if generation == 0:
            return INITIAL
        if position < 2 * self.elite_size:
            if not self.explore:
                return CHILD
            return ELITE_PLUS if position % 2 == 0 else ELITE_MINUS
        if self.rescore and position < self.promote_start:
            return RESCORE
        if self.promote and position < self.promote_start + self.elite_size:
            return PROMOTE
        return CHILD

    def n_trials(self, generations: int) -> int:
        """The budget N + G (N + E) of an initial population and G generations (E more per
        generation with re-scoring, E more with promotion)."""
        return self.population_size + generations * self.generation_size(1)


def slot_of(number: int, retries: Iterable[int]) -> int:
    """The slot of a new trial: how many trials that are not retries precede it (trial
    numbers are dense from 0 and assigned atomically, so every worker agrees on it)."""
    return number - sum(1 for r in retries if r < number)


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
    sign = minimising_sign(direction)
    if trial.state == TrialState.COMPLETE:
        value = trial.value
    elif trial.state == TrialState.PRUNED and trial.intermediate_values:
        value = trial.intermediate_values[max(trial.intermediate_values)]
    elif trial.state in (TrialState.PRUNED, TrialState.FAIL):
        return math.inf
    else:
        return None
    return sign * value if value is not None and math.isfinite(value) else math.inf


def trial_values(trial: FrozenTrial, directions: Sequence[StudyDirection],
                 ) -> tuple[float, ...] | None:
    """Minimised objective values of a finished trial of several objectives, None while it
    runs or waits; every value inf when it failed (Optuna cannot prune such trials)."""
    if trial.state == TrialState.COMPLETE and trial.values is not None:
        return tuple(v if math.isfinite(v) else math.inf
                     for v in (minimising_sign(d) * v for d, v in zip(directions, trial.values)))
    if trial.state in FINISHED:
        return (math.inf,) * len(directions)
    return None


def minimising_sign(direction: StudyDirection) -> float:
    """+1 for a minimised objective, -1 for a maximised one (the sampler minimises)."""
    return 1.0 if direction == StudyDirection.MINIMIZE else -1.0


def trial_genes(trial: FrozenTrial, space: Mapping[str, FloatDistribution],
                proposal: Mapping[str, float] | None = None) -> dict[str, float]:
    """The normalised genes of a trial: its parameters, else what the sampler proposed (a
    trial that failed before suggesting everything still has a genome). A parameter whose
    distribution is not the space's (a range that changed) has no gene."""
    proposal = proposal or {}
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
    rescores: dict[int, list] = field(default_factory=dict)  # fitness or values, by elite trial
    newcomers: list[Individual] = field(default_factory=list)
    children: list[tuple[Individual, list[int]]] = field(default_factory=list)  # with parents


@dataclass
class Progress:
    """Where the search stands: the latest generation any trial joined, how many positions of
    it are taken (one per slot: a retry shares its original's), and its members (trial,
    record), retries included."""

    generation: int = 0
    taken: int = 0
    members: list[tuple[FrozenTrial, TrialRecord]] = field(default_factory=list)

    @classmethod
    def of(cls, trials: Sequence[Known]) -> Progress:
        generation, members = -1, []
        for trial, record in trials:
            if record is None or record.generation < generation:
                continue
            if record.generation > generation:
                generation, members = record.generation, []
            members.append((trial, record))
        if not members:
            return cls()
        return cls(generation, len({r.slot for _, r in members}), members)

    def finished(self) -> int:
        """Positions of the generation whose latest trial has finished (a retry waiting to
        run keeps its position open)."""
        return sum(1 for t in latest_per_slot(self.members).values() if t.state in FINISHED)

    def next_position(self, layout: Layout) -> tuple[int, int]:
        """(generation, position) of the next trial: the next generation starts once as many
        of this generation's trials have finished as it has positions (as Optuna's GA
        samplers advance); until then new trials are extra members of this one."""
        if self.taken and self.finished() >= layout.generation_size(self.generation):
            return self.generation + 1, 0
        return self.generation, self.taken


def latest_per_slot(members: Sequence[tuple[FrozenTrial, TrialRecord]]) -> dict[int, FrozenTrial]:
    latest: dict[int, FrozenTrial] = {}
    for trial, record in members:
        if record.slot not in latest or trial.number > latest[record.slot].number:
            latest[record.slot] = trial
    return latest


def group_generation(members: Sequence[tuple[FrozenTrial, TrialRecord]],
                     adopted: Sequence[FrozenTrial], directions: Sequence[StudyDirection],
                     space: Mapping[str, FloatDistribution],
                     known_genes: dict[int, dict[str, float]] | None = None) -> Generation:
    """The finished members of one generation (the latest trial of each slot) and the trials
    it adopted (run without this sampler: ``study.add_trial``, another sampler), which join
    like enqueued ones. Members without any gene of the space carry nothing to evolve.
    ``known_genes`` caches finished trials' genes (they never change) for this space. With
    several ``directions``, individuals carry their objective values (re-scoring runs too)."""
    records = {t.number: r for t, r in members}
    known_genes = {} if known_genes is None else known_genes
    generation = Generation()
    for t in [*latest_per_slot(members).values(), *adopted]:
        if len(directions) == 1:
            values, fitness = None, trial_fitness(t, directions[0])
        else:
            values = trial_values(t, directions)
            fitness = None if values is None else unranked_fitness(values)
        if fitness is None:
            continue
        record = records.get(t.number)
        if record is not None and record.role == RESCORE:
            generation.rescores.setdefault(record.elite, []).append(
                fitness if values is None else values)
            continue
        if record is not None and record.role == PROMOTE:
            continue  # another fidelity: it ranks what the search hands over, not parents
        genes = known_genes.get(t.number)
        if genes is None:
            genes = ((record and record.unclipped_genes) or
                trial_genes(t, space, record.proposal if record else None))
            known_genes[t.number] = genes
        if not genes:
            continue
        individual = Individual(t.number, dict(genes), fitness, values=values)
        role = record.role if record else ENQUEUED
        if role in ELITE_ROLES:
            generation.explorations.setdefault(record.elite, []).append(individual)
        else:
            generation.newcomers.append(individual)
            if role == CHILD:
                generation.children.append((individual, list(record.parents)))
    generation.newcomers.sort(key=lambda i: i.trial)
    return generation


def sort_population(individuals: Sequence[Individual]) -> list[Individual]:
    """Best first; ties keep the older trial first, so every worker sorts alike."""
    return sorted(individuals, key=lambda ind: (ind.fitness, ind.trial))


def resolve_elites(parents: Sequence[Individual], elite_size: int,
                   generation: Generation, pair_mean: bool = False) -> list[Individual]:
    """Apply elite local search: an elite takes an exploration's genome and fitness when that
    exploration is strictly better than the elite and than every other exploration of it.
    The elite keeps its extinction probability; ties revert, as in the paper.

    Noise-aware variants: an elite's re-scoring runs are first averaged into its fitness;
    with ``pair_mean``, an elite that keeps its place is ranked by the mean of its own
    evaluations and its explorations' finite values (the pair samples the noise around
    it), rather than by its best single draw."""
    elites = []
    for elite in parents[:elite_size]:
        elite = elite.averaged_with(generation.rescores.get(elite.trial, []))
        tried = sorted(generation.explorations.get(elite.trial, []), key=lambda i: i.fitness)
        best = tried[0] if tried else None
        runner_up = tried[1].fitness if len(tried) > 1 else math.inf
        if best is not None and best.fitness < elite.fitness and best.fitness < runner_up:
            elite = Individual(best.trial, best.genes, best.fitness, elite.extinction)
        elif pair_mean:
            elite = elite.averaged_with([i.fitness for i in tried if math.isfinite(i.fitness)])
        elites.append(elite)
    return elites


@dataclass(frozen=True)
class Selection:
    """BioTune's selection strategy: the population entering each generation (elitism with
    elite local search, generational replacement, extinction probabilities) and the mating
    pool a child's parents are drawn from."""

    population_size: int
    elite_size: int
    pair_mean: bool = False
    extinction_after_init: bool = False

    def initial(self, generation: Generation, ideal: float | None) -> list[Individual]:
        population = initial_population(generation, self.population_size)
        if self.extinction_after_init:
            update_extinction(population, ideal)
        return population

    def next(self, parents: Sequence[Individual], generation: Generation,
             ideal: float | None) -> list[Individual]:
        return next_population(parents, generation, self.population_size, self.elite_size,
                               ideal, self.pair_mean)

    def mating_pool(self, parents: Sequence[Individual],
                    generation: Generation) -> list[Individual]:
        return mating_pool(parents, self.elite_size, generation, self.pair_mean)


def initial_population(generation: Generation, population_size: int) -> list[Individual]:
    return [Individual(i.trial, i.genes, i.fitness)
            for i in sort_population(generation.newcomers)[:population_size]]


def next_population(parents: Sequence[Individual], generation: Generation, population_size: int,
                    elite_size: int, ideal: float | None, pair_mean: bool = False,
                    ) -> list[Individual]:
    """Generational replacement with elitism: the (locally improved) elites plus this
    generation's children, immigrants and enqueued trials, sorted, extinction updated."""
    elites = resolve_elites(parents, elite_size, generation, pair_mean)
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
                generation: Generation, pair_mean: bool = False) -> list[Individual]:
    """The previous population with its elites improved in place (not re-sorted, as in the
    authors' code), minus every parent that one of this generation's finished children
    outcompeted (strictly better fitness). Removals do not depend on the order children
    finish in, so workers that see the same finished trials build the same pool."""
    pool = resolve_elites(parents, elite_size, generation, pair_mean) + list(parents[elite_size:])
    for child, child_parents in generation.children:
        pool = [p for p in pool if not (p.trial in child_parents and p.fitness > child.fitness)]
    return pool

