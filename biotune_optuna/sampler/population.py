"""BioTune's population, rebuilt from the trials in storage.

Everything the sampler knows comes from here: the record each trial carries (its generation,
position, role, parents and proposed genome), each trial's fitness, the generation a new trial
joins, the population entering a generation, elite local-search outcomes and the mating pool.
Nothing here keeps state between calls.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from optuna.distributions import FloatDistribution
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from biotune_optuna.sampler import operators

ATTR = "biotune:"
RECORD = ATTR + "trial"  # the trial's TrialRecord
POPULATION_PREFIX = ATTR + "population:"  # + g: the population entering generation g
ADOPTED_PREFIX = ATTR + "adopted:"  # + g: trials the sampler never saw, counted in generation g
RETRY_OF = "failed_trial"  # set by optuna.storages.RetryFailedTrialCallback

INITIAL, ELITE_PLUS, ELITE_MINUS = "initial", "elite+", "elite-"
CHILD, IMMIGRANT, ENQUEUED, INDEPENDENT = "child", "immigrant", "enqueued", "independent"
RESCORE = "rescore"  # an elite evaluated once more, to average out its lucky draw
PROMOTE = "promote"  # a new elite evaluated at the objective's full fidelity
ELITE_ROLES = (ELITE_PLUS, ELITE_MINUS)
LOW, FULL = "low", "full"  # the fidelity a trial asks its objective for
FINISHED = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)


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

    def generation_size(self, generation: int) -> int:
        return self.population_size if generation == 0 else \
            self.population_size + self.elite_size * (1 + self.rescore + self.promote)

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


@dataclass(frozen=True)
class TrialRecord:
    """What the sampler decided for a trial, kept in one system attr (``biotune:trial``).

    ``slot`` numbers the trials that are not retries (a retry copies its original's record);
    it keys the trial's random stream. ``position`` is the trial's place in its generation:
    below ``2E`` an elite exploration, from ``N + E`` on an extra child. ``proposal`` holds the
    genome as parameter values; ``fallback`` says why a trial was sampled independently.
    """

    slot: int
    generation: int
    role: str
    proposal: dict[str, float] = field(default_factory=dict)
    position: int | None = None
    parents: list[int] | None = None
    prototype: int | None = None
    elite: int | None = None
    gene: str | None = None
    delta: float | None = None
    unclipped_genes: dict[str, float] | None = None
    fallback: str | None = None
    fidelity: str | None = None  # LOW or FULL in a multi-fidelity search

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def of(cls, trial: FrozenTrial) -> TrialRecord | None:
        """The trial's record, None for trials the sampler never decided."""
        return cls.from_attrs(trial.system_attrs)

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> TrialRecord | None:
        stored = attrs.get(RECORD)
        if stored is not None:
            return cls(**stored)
        if ATTR + "generation" not in attrs:
            return None
        # biotune-optuna 0.1 wrote one system attr per field
        legacy = {name: attrs[ATTR + key] for name, key in _LEGACY_KEYS.items()
                  if ATTR + key in attrs}
        return cls(**legacy)


def generation_of(trial: FrozenTrial) -> int:
    """The generation a trial joined (0 for trials the sampler never decided)."""
    record = TrialRecord.of(trial)
    return record.generation if record else 0


def rescore_round(trial: FrozenTrial | Mapping[str, Any]) -> int:
    """0 for a trial evaluated for the first time; for a re-scoring trial (an elite evaluated
    again) its generation, which no earlier evaluation of that genome has, so an objective
    can derive fresh seeds from it. Takes a trial or its system attrs."""
    attrs = trial if isinstance(trial, Mapping) else trial.system_attrs
    record = TrialRecord.from_attrs(attrs)
    return record.generation if record is not None and record.role == RESCORE else 0


def fidelity_of(trial: FrozenTrial | Mapping[str, Any]) -> str:
    """``"low"`` for a trial a multi-fidelity search evaluates cheaply (the objective decides
    what that means: fewer epochs, fewer seeds), else ``"full"``: promotions, trials of a
    search without multi-fidelity and trials the sampler never decided. Takes a trial or its
    system attrs."""
    attrs = trial if isinstance(trial, Mapping) else trial.system_attrs
    record = TrialRecord.from_attrs(attrs)
    return LOW if record is not None and record.fidelity == LOW else FULL


def role_of(trial: FrozenTrial) -> str | None:
    record = TrialRecord.of(trial)
    return record.role if record else None


_LEGACY_KEYS = {"slot": "slot", "generation": "generation", "role": "role",
                "proposal": "proposal", "parents": "parents", "prototype": "prototype",
                "elite": "elite", "gene": "gene", "delta": "delta",
                "unclipped_genes": "unclipped_genes"}


Known = tuple[FrozenTrial, "TrialRecord | None"]  # a trial with its record, read once


def with_records(trials: Sequence[FrozenTrial]) -> list[Known]:
    return [(t, TrialRecord.of(t)) for t in trials]


def slot_of(number: int, retries: Iterable[int]) -> int:
    """The slot of a new trial: how many trials that are not retries precede it (trial
    numbers are dense from 0 and assigned atomically, so every worker agrees on it)."""
    return number - sum(1 for r in retries if r < number)


@dataclass
class Individual:
    """A genome in [0, 1]^n with its fitness (minimised; inf when its trial failed): the mean
    of ``evaluations`` values (its trial's, then re-scoring runs and, with the pair mean, its
    local-search neighbours')."""

    trial: int
    genes: dict[str, float]
    fitness: float
    extinction: float = 0.0
    evaluations: int = 1

    def averaged_with(self, values: Sequence[float]) -> Individual:
        """This individual with ``values`` folded into its mean fitness."""
        if not values:
            return self
        total = self.evaluations + len(values)
        fitness = (self.fitness * self.evaluations + sum(values)) / total \
            if math.isfinite(self.fitness) and all(map(math.isfinite, values)) else math.inf
        return Individual(self.trial, self.genes, fitness, self.extinction, total)

    def vector(self, names: Sequence[str]) -> np.ndarray:
        return np.array([self.genes[n] for n in names])

    def has(self, names: Sequence[str]) -> bool:
        return all(n in self.genes for n in names)

    def to_json(self) -> dict:
        data = {"trial": self.trial, "genes": self.genes,
                "fitness": self.fitness if math.isfinite(self.fitness) else None,
                "extinction": self.extinction}
        return data | ({"evaluations": self.evaluations} if self.evaluations > 1 else {})

    @classmethod
    def from_json(cls, data: Mapping) -> Individual:
        fitness = math.inf if data["fitness"] is None else float(data["fitness"])
        return cls(int(data["trial"]), dict(data["genes"]), fitness, float(data["extinction"]),
                   int(data.get("evaluations", 1)))


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
    rescores: dict[int, list[float]] = field(default_factory=dict)  # fitness, by elite trial
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
                     adopted: Sequence[FrozenTrial], direction: StudyDirection,
                     space: Mapping[str, FloatDistribution],
                     known_genes: dict[int, dict[str, float]] | None = None) -> Generation:
    """The finished members of one generation (the latest trial of each slot) and the trials
    it adopted (run without this sampler: ``study.add_trial``, another sampler), which join
    like enqueued ones. Members without any gene of the space carry nothing to evolve.
    ``known_genes`` caches finished trials' genes (they never change) for this space."""
    records = {t.number: r for t, r in members}
    known_genes = {} if known_genes is None else known_genes
    generation = Generation()
    for t in [*latest_per_slot(members).values(), *adopted]:
        fitness = trial_fitness(t, direction)
        if fitness is None:
            continue
        record = records.get(t.number)
        if record is not None and record.role == RESCORE:
            generation.rescores.setdefault(record.elite, []).append(fitness)
            continue
        if record is not None and record.role == PROMOTE:
            continue  # another fidelity: it ranks what the search hands over, not parents
        genes = known_genes.get(t.number)
        if genes is None:
            genes = (record and record.unclipped_genes) or \
                trial_genes(t, space, record.proposal if record else None)
            known_genes[t.number] = genes
        if not genes:
            continue
        individual = Individual(t.number, dict(genes), fitness)
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


def audit(trials: Sequence[FrozenTrial], study_attrs: Mapping[str, Any],
          population_size: int) -> list[str]:
    """The invariants parallel workers must keep, as a list of violations (empty when all
    hold): no slot or position of a generation taken twice (and so no elite exploration,
    re-scoring run or child), no elite promoted twice in the whole study, both explorations
    of an elite move the same gene by opposite steps, and every stored population has N
    members."""
    decided = [r for t, r in with_records(trials)
               if r is not None and RETRY_OF not in t.system_attrs]
    problems = []
    for what, keys in (("slot", [r.slot for r in decided]),
                       ("position", [(r.generation, r.position) for r in decided]),
                       ("exploration", [(r.generation, r.elite, r.role) for r in decided
                                        if r.role in ELITE_ROLES]),
                       ("re-scoring", [(r.generation, r.elite) for r in decided
                                       if r.role == RESCORE]),
                       ("promotion of trial", [r.elite for r in decided if r.role == PROMOTE])):
        seen: set = set()
        problems += [f"{what} {k} taken twice" for k in keys if k in seen or seen.add(k)]
    pairs: dict[tuple[int, int], list[TrialRecord]] = {}
    for r in decided:
        if r.role in ELITE_ROLES:
            pairs.setdefault((r.generation, r.elite), []).append(r)
    problems += [f"elite pair {k} moves {a.gene} by {a.delta} and {b.gene} by {b.delta}"
                 for k, (a, b) in ((k, v) for k, v in pairs.items() if len(v) == 2)
                 if a.gene != b.gene or a.delta != -b.delta]
    problems += [f"{key} has {len(value)} members" for key, value in study_attrs.items()
                 if key.startswith(POPULATION_PREFIX) and len(value) != population_size]
    return problems
