"""BioTuneSampler: BioTune's evolutionary search as an Optuna sampler whose whole state lives
in the study's storage."""

from __future__ import annotations

import inspect
import logging
import threading
import warnings
import weakref
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution, FloatDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.search_space import IntersectionSearchSpace
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from . import population as pop
from . import records, surrogate
from .coordination import StudyLock, lock_for
from .evolution import INDEPENDENT_STREAM, Evolution, Proposal
from .population import Layout, Progress
from .records import SEED, SETTINGS, Individual, TrialRecord
from .storage_io import (
    TrialView,
    fail_trial,
    is_multi_objective,
    record_writer,
    set_study_attr,
    storage_of,
    stored_trial,
    study_attrs,
    study_id_of,
    trial_id_of,
)

logger = logging.getLogger(__name__)
# Optuna 4.2's IntersectionSearchSpace caches by itself; later ones ask for use_cache
_CACHED = {"use_cache": True} if "use_cache" in inspect.signature(
    IntersectionSearchSpace.calculate).parameters else {}
MULTI_OBJECTIVE = ("BioTuneSampler supports single-objective studies only; use "
                   "optuna.samplers.NSGAIISampler for several objectives")
NO_FLOAT = "no float parameter to evolve"
NO_PARENT = "no trial of the population has a genome for the search space and a finite value"


@dataclass
class _StudyState:
    """What a process keeps about a study between trials: the study's seed and the population
    entering each generation (immutable once stored), and its view of the trials."""

    lock: StudyLock
    seed: int
    view: TrialView
    write_record: Callable[[int, dict[str, Any]], None]
    populations: dict[int, list[Individual]] = field(default_factory=dict)
    genes: dict[tuple, dict[int, dict[str, float]]] = field(default_factory=dict)  # by space

    def known_genes(self, space: Mapping[str, BaseDistribution]) -> dict[int, dict[str, float]]:
        return self.genes.setdefault(tuple(space.items()), {})


class BioTuneSampler(BaseSampler):
    """Evolutionary selective fine-tuning (BioTune): which blocks of a pre-trained network to
    freeze and the learning-rate multiplier of each trained block.

    Reference: Davila, Colan and Hasegawa, "BioTune: evolutionary selective fine-tuning",
    IEEE Access 13 (2025), 129234-129249, doi:10.1109/ACCESS.2025.3587524. The algorithm as
    implemented, with its departures from the paper, is docs/algorithm.md.

    Example (a synthetic objective stands in for "fine-tune the plan, return its validation
    accuracy"; ``decode`` turns a trial's genes into a plan for a real network):

    >>> import optuna
    >>> from biotune_optuna.sampler import BioTuneSampler, decode, search_space
    >>> from biotune_optuna.sampler.synthetic import TASKS
    >>> optuna.logging.set_verbosity(optuna.logging.WARNING)
    >>> task = TASKS["near-domain"]
    >>> sampler = BioTuneSampler(10, 3, seed=0, search_space=search_space(task.blocks),
    ...                          ideal_value=1.0)
    >>> study = optuna.create_study(direction="maximize", sampler=sampler)
    >>> study.optimize(task, n_trials=sampler.n_trials(generations=10))
    >>> len(study.trials), decode(study.best_params, task.blocks).trained_blocks[-1]
    (140, 'head')

    One gene per network block and a freezing threshold, each in [0, 1]: a block is trained
    when its gene exceeds the threshold, with a learning-rate multiplier set by its gene
    (see :mod:`biotune_optuna.sampler.genome`). Any study whose parameters are floats works: every
    float parameter is normalised to [0, 1] (log scale for log distributions) and evolved;
    other parameters are sampled independently.

    A search is an initial population of N random genomes, then generations of N + E trials:
    two local-search trials (+delta, -delta on one gene) for each of the E elites, then N - E
    children (rank-linear selection, blend crossover, extinction-driven mutation, adoption
    toward the parents' mean and a prototype) or random immigrants once the mating pool has
    two parents or fewer. The budget of G generations is ``n_trials(G) = N + G (N + E)``
    (E more per generation with ``rescore_elites``, E more with ``multi_fidelity``).

    State lives in storage: each trial carries a record (system attr ``biotune:trial``: slot,
    generation, position, role ``initial``, ``elite+``, ``elite-``, ``rescore``,
    ``promote``, ``child``, ``immigrant``, ``enqueued`` or ``independent``, parents,
    prototype, proposed genome and, in a multi-fidelity search, fidelity), the study keeps
    its seed and the population entering each generation. A new
    process on the same storage continues the same search; with ``n_jobs=1`` an interrupted
    search proposes exactly what an uninterrupted one would.

    Parallel workers (``n_jobs > 1``, several processes or machines on one storage, or
    ``study.ask()`` before earlier trials are told) follow Optuna's GA samplers: a new trial
    joins the latest generation; the next generation starts, and its population is fixed,
    only once as many of this generation's trials have finished (COMPLETE, FAIL or PRUNED) as
    it has positions (N initially, N + E later). A trial asked before that is an extra child
    of the current generation, bred from its population, so workers never idle, every
    population holds N individuals, and a straggler or a dead worker cannot stall the search
    (its late result does not enter a population that is already fixed). Children use the
    mating-pool removals of the siblings finished so far; an elite whose explorations have
    not finished enters the pool unimproved. Each decision is made under a study lock
    (:mod:`biotune_optuna.sampler.coordination`), so no position, and so no elite exploration or
    child, is ever taken twice. Without a seed, the first worker draws one and stores it in
    the study: every worker then derives the same random streams, so an elite's two
    explorations always move the same gene by opposite steps.

    Trial outcomes: FAIL (and NaN objectives, which Optuna fails) count as the worst
    fitness; PRUNED trials count with their last reported intermediate value (worst when
    they reported none); RUNNING trials are not known yet. Enqueued trials
    (``study.enqueue_trial``, e.g. the full fine-tuning genome) take the next position; in
    the initial population they are initial individuals, later they join their generation's
    population like immigrants. Retries made by ``RetryFailedTrialCallback`` keep the record
    of the trial they retry. Trials the sampler never saw (``study.add_trial``, another
    sampler) join the generation whose population is fixed next. When there is nothing to
    evolve (no float parameter, no individual with a genome for the space and a finite
    value), a trial is sampled independently and its record says why (``fallback``); no
    hook raises for a valid single-objective study.

    Args:
        population_size: N, at least 3.
        elite_size: E, with 0 <= E < N.
        exploration_rate: Largest step of elite local search (the paper's 0.25).
        threshold_param: Name of the freezing-threshold parameter. When present, random
            genomes are redrawn until some block gene exceeds it, and elite local search
            moves only selected blocks' genes.
        seed: Seed of every random choice; the same seed gives the same trials. A study
            keeps the seed it started with.
        search_space: The parameters to evolve (e.g. :func:`biotune_optuna.sampler.search_space`).
            Without it the space is inferred from finished trials, as Optuna's relative
            samplers do, and the first trial is sampled independently.
        ideal_value: Best value the objective can reach (1.0 for accuracy, 0.0 for error).
            Extinction probabilities then follow the paper's formula on the distance to it;
            without it, on the distance to the population's best (min-max normalised).
        clip_elite_genes: Store an elite's moved gene clipped to [0, 1], as it was
            evaluated. False reproduces the authors' code, which keeps it unclipped.
        extinction_after_init: Compute extinction probabilities for the initial population.
            False follows the paper, where they start at 0 so first-generation mutation is
            a no-op.
        resample_empty: Redraw a child whose genome trains no block. False follows the
            paper, where such a child is evaluated (the objective scores it without training).
        rescore_elites: Evaluate each elite once more in every generation (role
            ``rescore``, E more trials per generation: ``n_trials`` counts them) and rank it
            by the mean of all its evaluations. The paper never re-evaluates an elite, so on
            a noisy objective an elite keeps the lucky score of its one run. The objective
            should evaluate a re-scoring trial with fresh randomness (:func:`rescore_round`
            gives it a number to derive a seed from); a deterministic objective gains nothing.
        elite_pair_mean: Rank an elite that its local search did not replace by the mean of
            its evaluations and its two explorations' values (they sample the objective's
            noise near it), rather than by its best single draw.
        multi_fidelity: Evaluate the evolution at the objective's low fidelity and only the
            plans it may hand over at the full one. Every trial's record then says
            ``fidelity: low`` (:func:`fidelity_of` tells the objective; it decides what low
            means, such as fewer epochs and one training seed), except promotions: E more
            positions per generation, where each elite that was never an elite before is
            evaluated at the full fidelity (role ``promote``, same parameters; a position
            whose elite was promoted already breeds a child). Selection, extinction and
            elitism compare low-fidelity values only; promotions rank the plans a search
            hands over (docs/algorithm.md, section 8). Needs ``elite_size >= 1``.
        mutation, elite_search, adoption, immigrants: The paper's ablations, each True
            by default (docs/algorithm.md, section 9). ``mutation=False``: children skip
            extinction-driven mutation; ``elite_search=False``: no elite local search, its
            2E positions breed children; ``adoption=False``: no pull toward the parents'
            mean and the prototype; ``immigrants=False``: a depleted mating pool is
            refilled from the whole population instead of drawing random immigrants.
        surrogate_candidates: K > 1 pre-selects children and immigrants: K candidates are
            drawn through BioTune's own operators from the position's random stream, and
            the one a surrogate (:mod:`biotune_optuna.sampler.surrogate`, fitted on the
            finished trials of the same fidelity) predicts best is evaluated; its record
            keeps ``candidates`` and the prediction (``surrogate``). 1 (the default) is the
            paper's algorithm (docs/algorithm.md, section 10).
        independent_sampler: Sampler for parameters outside the evolved space. The default
            draws uniformly with a generator derived from the seed and the trial number.
    """

    def __init__(
        self,
        population_size: int = 10,
        elite_size: int = 3,
        *positional: Any,
        exploration_rate: float = 0.25,
        threshold_param: str | None = "threshold",
        seed: int | None = None,
        search_space: Mapping[str, BaseDistribution] | None = None,
        ideal_value: float | None = None,
        clip_elite_genes: bool = True,
        extinction_after_init: bool = False,
        resample_empty: bool = False,
        rescore_elites: bool = False,
        elite_pair_mean: bool = False,
        multi_fidelity: bool = False,
        mutation: bool = True,
        elite_search: bool = True,
        adoption: bool = True,
        immigrants: bool = True,
        surrogate_candidates: int = 1,
        independent_sampler: BaseSampler | None = None,
    ) -> None:
        if positional:  # the 0.1 signature took these three positionally
            names = ("exploration_rate", "threshold_param", "seed")[:len(positional)]
            if len(positional) > 3:
                raise TypeError("BioTuneSampler takes population_size and elite_size "
                                "positionally; pass the other arguments by keyword")
            warnings.warn(f"pass {', '.join(names)} to BioTuneSampler by keyword; positional "
                          "use will stop working in a later version", FutureWarning,
                          stacklevel=2)
            exploration_rate, threshold_param, seed = (
                *positional, *(exploration_rate, threshold_param, seed)[len(positional):])
        validate_settings(population_size, elite_size, exploration_rate, multi_fidelity)
        if seed is not None and seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed}")
        self._layout = Layout(population_size, elite_size, rescore_elites, multi_fidelity,
                              elite_search)
        if surrogate_candidates < 1:
            raise ValueError(f"surrogate_candidates must be at least 1, got "
                             f"{surrogate_candidates}")
        self._evolution = Evolution(exploration_rate, threshold_param, clip_elite_genes,
                                    resample_empty, mutation, adoption, immigrants,
                                    surrogate_candidates)
        self._elite_pair_mean = elite_pair_mean
        self._seed = seed
        self._search_space = _evolvable(search_space) if search_space is not None else None
        self._ideal_value = ideal_value
        self._extinction_after_init = extinction_after_init
        self._independent_sampler = independent_sampler
        self._intersection = IntersectionSearchSpace(include_pruned=True)
        self._init_process_state()

    def _init_process_state(self) -> None:
        self._states: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._states_lock = threading.Lock()
        self._proposals: dict[int, dict[str, float]] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for name in ("_states", "_states_lock", "_proposals"):
            del state[name]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_process_state()

    @property
    def population_size(self) -> int:
        return self._layout.population_size

    @property
    def seed(self) -> int | None:
        """The seed given (a study keeps the seed it started with)."""
        return self._seed

    @property
    def elite_size(self) -> int:
        return self._layout.elite_size

    def n_trials(self, generations: int) -> int:
        """Trials for an initial population and ``generations`` generations: N + G (N + E)."""
        return self._layout.n_trials(generations)

    def settings(self) -> dict[str, Any]:
        """What a study must keep when it is resumed (saved in its system attrs)."""
        return {
            "population_size": self.population_size,
            "elite_size": self.elite_size,
            "exploration_rate": self._evolution.exploration_rate,
            "threshold_param": self._evolution.threshold_param,
            "ideal_value": self._ideal_value,
            "clip_elite_genes": self._evolution.clip_elite_genes,
            "extinction_after_init": self._extinction_after_init,
            "resample_empty": self._evolution.resample_empty,
            "rescore_elites": self._layout.rescore,
            "elite_pair_mean": self._elite_pair_mean,
            "multi_fidelity": self._layout.promote,
            "mutation": self._evolution.mutation,
            "elite_search": self._layout.explore,
            "adoption": self._evolution.adoption,
            "immigrants": self._evolution.immigrants,
            "surrogate_candidates": self._evolution.candidates,
        }

    def reseed_rng(self) -> None:
        # The evolution's streams derive from the study's seed, which every worker shares
        # (Optuna reseeds each thread's sampler when n_jobs > 1): only a given independent
        # sampler is reseeded.
        if self._independent_sampler is not None:
            self._independent_sampler.reseed_rng()

    # -- Optuna's sampler interface ------------------------------------------------------

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial,
                                    ) -> dict[str, BaseDistribution]:
        if self._search_space is not None:
            return dict(self._search_space)
        return _evolvable(self._intersection.calculate(study, **_CACHED))

    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        _refuse_multi_objective(study)
        if not search_space:
            return {}
        proposal = self._proposals.pop(trial_id_of(trial), None)
        if proposal is None:  # a retry, or a trial begun by another sampler object
            record = TrialRecord.of(trial) or TrialRecord.of(stored_trial(study, trial))
            if record is None:  # never passed through before_trial: nothing was decided
                return {name: self.sample_independent(study, trial, name, dist)
                        for name, dist in search_space.items()}
            proposal = record.proposal
        return {name: value for name, value in proposal.items()
                if name in search_space and _within(search_space[name], value)}

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        _refuse_multi_objective(study)
        sampler = self._independent_sampler
        if sampler is None:
            stream = zlib.crc32(param_name.encode())
            seed = self._state(study, trial).seed
            sampler = RandomSampler(seed=_derive_seed(seed, INDEPENDENT_STREAM, trial.number,
                                                      stream))
        return sampler.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        if is_multi_objective(study):
            fail_trial(study, trial)
            raise ValueError(MULTI_OBJECTIVE)
        state = self._state(study, trial)
        if TrialRecord.of(trial) is not None:  # a retry keeps its original's record
            return
        state.view.pending(trial)
        try:
            with state.lock:
                record = self._decide(study, trial, state, state.view.trials(study))
                state.write_record(trial_id_of(trial), record.to_json())
                state.view.decided(trial, record)
        except BaseException:  # storage failure or Ctrl-C: leave nothing RUNNING
            fail_trial(study, trial)
            raise
        self._proposals[trial_id_of(trial)] = record.proposal

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self._state(study, trial).view.finished(trial, state, values)

    # -- the algorithm -------------------------------------------------------------------

    def _decide(self, study: Study, trial: FrozenTrial, state: _StudyState,
                trials: Sequence[records.Known]) -> TrialRecord:
        """The trial's record; called under the study lock, with a fresh view of the trials."""
        progress = Progress.of(trials)
        generation, position = progress.next_position(self._layout)
        if records.is_retry(trial):  # a retry of a trial the sampler never saw
            slot = -1 - trial.number
        else:
            slot = pop.slot_of(trial.number, state.view.retries)
        base = TrialRecord(slot, generation, self._layout.role(generation, position),
                           position=position)
        if self._layout.promote:  # everything but a promotion evolves at the low fidelity
            base = replace(base, fidelity=records.LOW)
        space = self.infer_relative_search_space(study, trial)
        if not space:
            return _independent(base, NO_FLOAT)
        try:
            return self._propose(study, trial, state, trials, progress, base, space)
        except Exception as error:  # a bug must not stop the search: sample independently
            logger.warning("BioTuneSampler sampled trial %d independently after an error: %r",
                           trial.number, error, exc_info=True)
            return _independent(base, f"sampler error: {error!r}")

    def _propose(self, study: Study, trial: FrozenTrial, state: _StudyState,
                 trials: Sequence[records.Known], progress: Progress, base: TrialRecord,
                 space: dict[str, BaseDistribution]) -> TrialRecord:
        """The trial's genome, by the strategy of its position's role."""
        names = list(space)
        evolution, seed = self._evolution, state.seed

        def record(proposal: Proposal) -> TrialRecord:
            values = {n: pop.denormalize(float(g), space[n])
                      for n, g in zip(names, proposal.genes)}
            fields = dict(proposal.fields)
            if "predicted" in fields:  # a fitness (minimised): stored as an objective value
                predicted = fields.pop("predicted")
                fields["surrogate"] = (predicted if study.direction == StudyDirection.MINIMIZE
                                       else -predicted)
            return replace(base, proposal=values, **fields)

        if records.is_enqueued(trial):
            return record(evolution.random(seed, base.slot, names, role=records.ENQUEUED))
        if base.generation == 0:
            return record(evolution.random(seed, base.slot, names))
        parents = self._population(study, state, trials, progress, base.generation, space)
        if not any(p.has(names) and np.isfinite(p.fitness) for p in parents):
            return _independent(base, NO_PARENT)
        if base.role in records.ELITE_ROLES:
            index = base.position // 2
            if index < len(parents) and parents[index].has(names):
                return record(evolution.explore_elite(seed, parents[index], names, base))
        elite = self._elite_at(base, parents, names)
        if base.role == records.RESCORE and elite is not None:
            return record(evolution.rescore(elite, names))
        if base.role == records.PROMOTE:
            if elite is not None and elite.trial not in self._promoted_before(
                    study, state, base.generation):
                return record(evolution.promote(elite, names))
            base = replace(base, role=records.CHILD)  # promoted already: the position breeds
        members = progress.members if base.generation == progress.generation else []
        current = pop.group_generation(members, (), study.direction, space,
                                       state.known_genes(space))
        pool = [p for p in pop.mating_pool(parents, self.elite_size, current,
                                           self._elite_pair_mean) if p.has(names)]
        population = [p for p in parents if p.has(names)]  # refills a pool without immigrants
        model = self._surrogate(study, state, trials, base, space)
        return record(evolution.breed(seed, base.slot, pool, names, population, model))

    def _surrogate(self, study: Study, state: _StudyState, trials: Sequence[records.Known],
                   base: TrialRecord, space: dict[str, BaseDistribution],
                   ) -> surrogate.Surrogate | None:
        """A model of the finished evaluations at the fidelity this trial runs at (promotions
        and low-fidelity trials are not mixed), when children are pre-selected."""
        if self._evolution.candidates <= 1:
            return None
        names = list(space)
        # its own cache: the population's may hold an elite's unclipped genes
        known = state.genes.setdefault(("surrogate", *space.items()), {})
        genes, fitness = [], []
        for trial, record in trials:
            value = pop.trial_fitness(trial, study.direction)
            if value is None or not np.isfinite(value) or (
                    record is not None and record.fidelity != base.fidelity):
                continue
            if trial.number not in known:
                known[trial.number] = pop.trial_genes(trial, space,
                                                      record.proposal if record else None)
            vector = known[trial.number]
            if all(n in vector for n in names):
                genes.append(np.array([vector[n] for n in names]))
                fitness.append(value)
        return surrogate.fit(genes, fitness, self._evolution.threshold_index(names))

    def _elite_at(self, base: TrialRecord, parents: Sequence[Individual],
                  names: list[str]) -> Individual | None:
        """The elite a re-scoring or promotion position evaluates again (None when it has
        nothing to evaluate)."""
        start = {records.RESCORE: self._layout.rescore_start,
                 records.PROMOTE: self._layout.promote_start}.get(base.role)
        if start is None:
            return None
        elite = parents[base.position - start]
        return elite if elite.has(names) and np.isfinite(elite.fitness) else None

    def _population(self, study: Study, state: _StudyState, trials: Sequence[records.Known],
                    progress: Progress, generation: int,
                    space: dict[str, BaseDistribution]) -> list[Individual]:
        """The population entering a generation: read once per process, or fixed (and
        stored) by the trial that starts the generation, under the study lock."""
        if generation in state.populations:
            return state.populations[generation]
        previous = generation - 1
        unseen = _unseen_finished(trials, state.populations)
        # A trial that starts the generation knows nobody has used its population yet; it
        # reads the study only for what this process has not seen (a previous population,
        # trials adopted elsewhere).
        starting = generation > progress.generation
        stored: Mapping[str, Any] = {}
        if not starting or unseen or (previous and previous not in state.populations):
            stored = study_attrs(study)
            for g, population in records.stored_populations(stored).items():
                state.populations.setdefault(g, population)
            if not starting and generation in state.populations:
                return state.populations[generation]
        members = progress.members if previous == progress.generation else [
            (t, r) for t, r in trials if r is not None and r.generation == previous]
        adopted = _adoptable(unseen, stored)
        closed = pop.group_generation(members, adopted, study.direction, space,
                                      state.known_genes(space))
        if previous == 0:
            population = pop.initial_population(closed, self.population_size)
            if self._extinction_after_init:
                pop.update_extinction(population, self._signed_ideal(study))
        else:
            parents = self._population(study, state, trials, progress, previous, space)
            population = pop.next_population(parents, closed, self.population_size,
                                             self.elite_size, self._signed_ideal(study),
                                             self._elite_pair_mean)
        joined = sorted({t.number for t in adopted} & {i.trial for i in closed.newcomers})
        if joined:
            set_study_attr(study, f"{records.ADOPTED_PREFIX}{previous}", joined)
        set_study_attr(study, f"{records.POPULATION_PREFIX}{generation}",
                       [i.to_json() for i in population])
        state.populations[generation] = population
        return population

    def _promoted_before(self, study: Study, state: _StudyState, generation: int) -> set[int]:
        """Trials promoted before ``generation``: every elite of an earlier population, since
        each generation promotes its elites that were never elites before. Derived from the
        stored populations alone, so every worker agrees."""
        earlier = range(1, generation)
        if any(g not in state.populations for g in earlier):
            for g, population in records.stored_populations(study_attrs(study)).items():
                state.populations.setdefault(g, population)
        return {i.trial for g in earlier for i in state.populations.get(g, [])[:self.elite_size]}

    def _signed_ideal(self, study: Study) -> float | None:
        if self._ideal_value is None:
            return None
        return (self._ideal_value if study.direction == StudyDirection.MINIMIZE
            else -self._ideal_value)

    # -- per-study state -----------------------------------------------------------------

    def _state(self, study: Study, trial: FrozenTrial) -> _StudyState:
        """The study's seed and lock, and its settings checked: read from storage once per
        process (and written by the first worker)."""
        storage = storage_of(study)
        key = (study_id_of(study), study.study_name)
        with self._states_lock:
            state = self._states.setdefault(storage, {}).get(key)
        if state is not None:
            return state
        lock = lock_for(study)
        with lock:
            attrs = study_attrs(study)
            self._check_settings(study, trial, attrs)
            seed = attrs.get(SEED)
            if seed is None:
                seed = self._seed if self._seed is not None else _fresh_seed()
                set_study_attr(study, SEED, seed)
            elif self._seed is not None and seed != self._seed:
                logger.warning("study %r keeps the seed it started with (%d), not %d",
                               study.study_name, seed, self._seed)
        with self._states_lock:
            return self._states[storage].setdefault(
                key, _StudyState(lock, seed, TrialView(storage), record_writer(storage)))

    def _check_settings(self, study: Study, trial: FrozenTrial, attrs: dict) -> None:
        stored = attrs.get(SETTINGS)
        mine = self.settings()
        if stored is None:
            set_study_attr(study, SETTINGS, mine)
            return
        stored = {**_ADDED_SETTINGS, **stored}  # studies from before a setting existed
        differ = {k: (stored.get(k), v) for k, v in mine.items() if stored.get(k) != v}
        if differ:
            fail_trial(study, trial)
            described = ", ".join(f"{k}={old!r} (now {new!r})" for k, (old, new)
                                  in differ.items())
            raise ValueError(f"study {study.study_name!r} was started with {described}; "
                             "resume it with the same sampler settings or start a new study")


_ADDED_SETTINGS = {"rescore_elites": False, "elite_pair_mean": False, "multi_fidelity": False,
                   "mutation": True, "elite_search": True, "adoption": True,
                   "immigrants": True, "surrogate_candidates": 1}


def validate_settings(population_size: int, elite_size: int, exploration_rate: float,
                      multi_fidelity: bool = False, names: Mapping[str, str] | None = None,
                      ) -> None:
    """Raise a one-line ValueError naming the fix for impossible sampler settings; ``names``
    says how to call each parameter in the message (a command line names its flags)."""
    name = {"population_size": "population size", "elite_size": "elite size",
            "exploration_rate": "exploration rate", "multi_fidelity": "multi-fidelity",
            **(names or {})}
    if population_size < 3:
        raise ValueError(f"{name['population_size']} must be at least 3 (rank selection needs "
                         f"a pool of three), got {population_size}")
    if not 0 <= elite_size < population_size:
        raise ValueError(f"{name['elite_size']} must be between 0 and "
                         f"{name['population_size']} - 1 ({population_size - 1}), got "
                         f"{elite_size}")
    if not 0.0 < exploration_rate <= 1.0:
        raise ValueError(f"{name['exploration_rate']} must be in (0, 1], got "
                         f"{exploration_rate}")
    if multi_fidelity and elite_size < 1:
        raise ValueError(f"{name['multi_fidelity']} promotes elites to the full fidelity, so "
                         f"{name['elite_size']} must be at least 1")


def _evolvable(space: Mapping[str, BaseDistribution]) -> dict[str, BaseDistribution]:
    """Float parameters with a range: the genes the sampler evolves, in a fixed order."""
    return {name: dist for name, dist in space.items()
            if isinstance(dist, FloatDistribution) and not dist.single()}


def _within(distribution: FloatDistribution, value: float) -> bool:
    """Whether a stored proposal is still a value of the parameter's range (the range may
    have changed since); Optuna keeps its own such check private."""
    if not distribution.low <= value <= distribution.high:
        return False
    if distribution.step is None:
        return True
    steps = (value - distribution.low) / distribution.step
    return abs(steps - round(steps)) < 1e-8


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


def _independent(base: TrialRecord, reason: str) -> TrialRecord:
    return replace(base, role=records.INDEPENDENT, fallback=reason)


def _refuse_multi_objective(study: Study) -> None:
    if is_multi_objective(study):
        raise ValueError(MULTI_OBJECTIVE)


def _fresh_seed() -> int:
    return int(np.random.SeedSequence().entropy % (2**63))


def _derive_seed(*key: int) -> int:
    return int(np.random.SeedSequence(list(key)).generate_state(1, np.uint32)[0])
