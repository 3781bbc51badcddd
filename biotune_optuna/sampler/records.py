"""The sampler's storage format: what it writes into a study and how it reads it back.

Each trial carries one record (system attr ``biotune:trial``: what the sampler decided for it);
the study keeps the sampler's settings, its seed, the population entering each generation and
the trials adopted into a generation. Everything outside the sampler that needs them (the
objective, the analysis, the command line) reads them through this module; :func:`audit`
checks the invariants the records must keep.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from optuna.trial import FrozenTrial, TrialState

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
RETRY_HISTORY = "retry_history"  # the retried trials, oldest first

SETTINGS = ATTR + "settings"  # the sampler settings a resumed study must keep
SEED = ATTR + "seed"  # the seed every worker derives its random streams from


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
    candidates: int | None = None  # candidates the surrogate chose among (when more than one)
    surrogate: float | list[float] | None = None  # its prediction of the objective value(s)

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


@dataclass(frozen=True)
class TrialContext:
    """What an objective needs to know of the trial it evaluates, read once: the generation
    it joined, its re-scoring round (:func:`rescore_round`) and the fidelity it is asked
    for (:func:`fidelity_of`)."""

    generation: int
    rescore_round: int
    fidelity: str

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> TrialContext:
        record = TrialRecord.from_attrs(attrs)
        return cls(record.generation if record else 0, rescore_round(attrs),
                   fidelity_of(attrs))


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



@dataclass
class Individual:
    """A genome in [0, 1]^n with its fitness (minimised; inf when its trial failed): the mean
    of ``evaluations`` values (its trial's, then re-scoring runs and, with the pair mean, its
    local-search neighbours').

    In a study of several objectives, ``values`` holds the mean of each objective (each
    minimised, inf when the trial failed) and ``fitness`` the individual's Pareto front in
    the population it was ranked in (0 for the non-dominated ones; 0 until it is ranked, inf
    when it failed)."""

    trial: int
    genes: dict[str, float]
    fitness: float
    extinction: float = 0.0
    evaluations: int = 1
    values: tuple[float, ...] | None = None

    def averaged_with(self, draws: Sequence[float] | Sequence[Sequence[float]]) -> Individual:
        """This individual with ``draws`` (fitness values, or objective vectors) folded into
        its mean."""
        if not draws:
            return self
        total = self.evaluations + len(draws)
        if self.values is None:
            return Individual(self.trial, self.genes, _mean(self.fitness, self.evaluations,
                                                             draws), self.extinction, total)
        values = tuple(_mean(v, self.evaluations, [d[k] for d in draws])
                       for k, v in enumerate(self.values))
        return Individual(self.trial, self.genes, unranked_fitness(values), self.extinction,
                          total, values)

    def vector(self, names: Sequence[str]) -> np.ndarray:
        return np.array([self.genes[n] for n in names])

    def has(self, names: Sequence[str]) -> bool:
        return all(n in self.genes for n in names)

    def to_json(self) -> dict:
        data = {"trial": self.trial, "genes": self.genes, "fitness": _finite_or_none(self.fitness),
                "extinction": self.extinction}
        if self.values is not None:
            data["values"] = [_finite_or_none(v) for v in self.values]
        return data | ({"evaluations": self.evaluations} if self.evaluations > 1 else {})

    @classmethod
    def from_json(cls, data: Mapping) -> Individual:
        values = data.get("values")
        return cls(int(data["trial"]), dict(data["genes"]), _float_or_inf(data["fitness"]),
                   float(data["extinction"]), int(data.get("evaluations", 1)),
                   None if values is None else tuple(map(_float_or_inf, values)))


def unranked_fitness(values: Sequence[float]) -> float:
    """The fitness of an individual of several objectives before it is ranked: inf when it
    failed (any objective inf), else 0."""
    return 0.0 if all(map(math.isfinite, values)) else math.inf


def _mean(value: float, count: int, draws: Sequence[float]) -> float:
    if not (math.isfinite(value) and all(map(math.isfinite, draws))):
        return math.inf
    return (value * count + sum(draws)) / (count + len(draws))


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _float_or_inf(value: float | None) -> float:
    return math.inf if value is None else float(value)


def stored_seed(study_attrs: Mapping[str, Any]) -> int | None:
    """The seed a study's workers share (None before the sampler stored one)."""
    return study_attrs.get(SEED)


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



def is_retry(trial: FrozenTrial) -> bool:
    """Made by Optuna's RetryFailedTrialCallback (it keeps its original's record)."""
    return RETRY_OF in trial.system_attrs


def retried(trials: Sequence[FrozenTrial]) -> set[int]:
    """The trials that a retry re-runs."""
    return {n for t in trials for n in [t.system_attrs.get(RETRY_OF),
                                        *t.system_attrs.get(RETRY_HISTORY, [])]
            if n is not None}


def is_enqueued(trial: FrozenTrial) -> bool:
    """Its parameters were fixed by ``study.enqueue_trial`` (or a retry)."""
    return "fixed_params" in trial.system_attrs or is_retry(trial)


def stored_populations(study_attrs: Mapping[str, Any]) -> dict[int, list[Individual]]:
    """Generation -> the population entering it, from the study's system attrs."""
    return {int(key.removeprefix(POPULATION_PREFIX)): [Individual.from_json(d) for d in value]
            for key, value in study_attrs.items() if key.startswith(POPULATION_PREFIX)}


def adopted_trials(study_attrs: Mapping[str, Any]) -> set[int]:
    """Trials the sampler never decided that some generation has adopted."""
    return {n for key, value in study_attrs.items() if key.startswith(ADOPTED_PREFIX)
            for n in value}

