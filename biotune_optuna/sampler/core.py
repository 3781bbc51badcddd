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
from dataclasses import fields, replace
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution, FloatDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.search_space import IntersectionSearchSpace
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from . import population as pop
from . import records
from .coordination import lock_for
from .evolution import INDEPENDENT_STREAM, Proposal, promote, rescore, threshold_index
from .generations import StudyState, elite_at
from .population import Progress
from .records import SEED, SETTINGS, TrialRecord
from .settings import SamplerSettings
from .storage_io import (
    TrialView,
    fail_trial,
    record_writer,
    set_study_attr,
    storage_of,
    stored_trial,
    study_attrs,
    study_id_of,
    trial_id_of,
)
from .strategies import ChildGenerationStrategy, EliteSearchStrategy, SelectionStrategy

logger = logging.getLogger(__name__)
# Optuna 4.2's IntersectionSearchSpace caches by itself; later ones ask for use_cache
_CACHED = {"use_cache": True} if "use_cache" in inspect.signature(
    IntersectionSearchSpace.calculate).parameters else {}
NO_FLOAT = "no float parameter to evolve"
NO_PARENT = "no trial of the population has a genome for the search space and a finite value"


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
    hook raises for a valid study.

    Several objectives (``optuna.create_study(directions=[...])``): populations are ordered
    by Pareto front and crowding distance, and an exploration or a child replaces an
    individual when it dominates it (:mod:`biotune_optuna.sampler.pareto`); the rest of the
    algorithm is the same (docs/algorithm.md, section 11).

    Args:
        population_size, elite_size: N (at least 3) and E (0 <= E < N).
        seed: Seed of every random choice; the same seed gives the same trials. A study
            keeps the seed it started with.
        search_space: The parameters to evolve (e.g. :func:`biotune_optuna.sampler.search_space`).
            Without it the space is inferred from finished trials, as Optuna's relative
            samplers do, and the first trial is sampled independently.
        independent_sampler: Sampler for parameters outside the evolved space. The default
            draws uniformly with a generator derived from the seed and the trial number.
        selection_strategy, elite_search_strategy, child_generation_strategy: The
            population's selection, the elites' local search and the breeding of children
            (:mod:`biotune_optuna.sampler.strategies`); by default BioTune's own, built from
            the settings.
        known_values: For several objectives, the values a trial's parameters fix before
            it runs (a fine-tuning plan's training cost): a function of the parameters to
            one value per objective, in the study's directions, ``None`` for those only the
            run tells. Surrogate pre-selection (``surrogate_candidates`` > 1) then computes
            those objectives instead of predicting them. It is not stored with the study:
            give every worker, and a resumed search, the same function.
        settings: A :class:`~biotune_optuna.sampler.settings.SamplerSettings`, or its fields
            as keywords (``exploration_rate``, ``threshold_param``, ``ideal_value``,
            ``rescore_elites``, ``multi_fidelity``, the ablations, ``surrogate_candidates``
            and the authors' code's variants; each documented there).
    """

    def __init__(
        self,
        population_size: int = 10,
        elite_size: int = 3,
        *positional: Any,
        seed: int | None = None,
        search_space: Mapping[str, BaseDistribution] | None = None,
        independent_sampler: BaseSampler | None = None,
        selection_strategy: SelectionStrategy | None = None,
        elite_search_strategy: EliteSearchStrategy | None = None,
        child_generation_strategy: ChildGenerationStrategy | None = None,
        known_values: Callable[[dict[str, Any]], Sequence[float | None]] | None = None,
        settings: SamplerSettings | None = None,
        **options: Any,
    ) -> None:
        if positional:  # the 0.1 signature took these three positionally
            if len(positional) > 3:
                raise TypeError("BioTuneSampler takes population_size and elite_size "
                                "positionally; pass the other arguments by keyword")
            names = ("exploration_rate", "threshold_param", "seed")[:len(positional)]
            warnings.warn(f"pass {', '.join(names)} to BioTuneSampler by keyword; positional "
                          "use will stop working in a later version", FutureWarning,
                          stacklevel=2)
            given = dict(zip(names, positional))
            seed = given.pop("seed", seed)
            options = {**given, **options}
        if settings is None:
            unknown = sorted(set(options) - {f.name for f in fields(SamplerSettings)})
            if unknown:
                raise TypeError(f"BioTuneSampler got an unexpected keyword argument "
                                f"{unknown[0]!r}")
            settings = SamplerSettings(population_size, elite_size, **options)
        elif options:
            raise TypeError("pass BioTuneSampler's settings as a SamplerSettings or as "
                            "keywords, not both")
        if seed is not None and seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed}")
        if known_values is not None and settings.surrogate_candidates == 1:
            raise ValueError("known_values serves surrogate pre-selection; give "
                             "surrogate_candidates above 1, or leave known_values out")
        self._settings = settings
        self._layout = settings.layout
        self._selection = selection_strategy  # None: BioTune's, for the study's objectives
        self._elite_search = elite_search_strategy or settings.elite_local_search()
        self._breeding = child_generation_strategy or settings.breeding()
        self._known_values = known_values
        self._seed = seed
        self._search_space = _evolvable(search_space) if search_space is not None else None
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
    def settings(self) -> SamplerSettings:
        return self._settings

    @property
    def population_size(self) -> int:
        return self._settings.population_size

    @property
    def elite_size(self) -> int:
        return self._settings.elite_size

    @property
    def seed(self) -> int | None:
        """The seed given (a study keeps the seed it started with)."""
        return self._seed

    def n_trials(self, generations: int) -> int:
        """Trials for an initial population and ``generations`` generations: N + G (N + E)."""
        return self._layout.n_trials(generations)

    def _stored_settings(self) -> dict[str, Any]:
        """What a study must keep to be resumed: the settings, and the class of each strategy
        that is not BioTune's default."""
        selection = self._selection or self._settings.selection()
        defaults = (("selection_strategy", selection, self._settings.selection()),
                    ("elite_search_strategy", self._elite_search,
                     self._settings.elite_local_search()),
                    ("child_generation_strategy", self._breeding, self._settings.breeding()))
        return self._settings.as_dict() | {
            name: f"{type(given).__module__}.{type(given).__qualname__}"
            for name, given, default in defaults if given != default}

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
        sampler = self._independent_sampler
        if sampler is None:
            stream = zlib.crc32(param_name.encode())
            seed = self._state(study, trial).seed
            sampler = RandomSampler(seed=_derive_seed(seed, INDEPENDENT_STREAM, trial.number,
                                                      stream))
        return sampler.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
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

    def _decide(self, study: Study, trial: FrozenTrial, state: StudyState,
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

    def _propose(self, study: Study, trial: FrozenTrial, state: StudyState,
                 trials: Sequence[records.Known], progress: Progress, base: TrialRecord,
                 space: dict[str, BaseDistribution]) -> TrialRecord:
        """The trial's genome, by the strategy of its position's role."""
        names = list(space)
        seed = state.seed

        def record(proposal: Proposal) -> TrialRecord:
            values = {n: pop.denormalize(float(g), space[n])
                      for n, g in zip(names, proposal.genes)}
            extra = dict(proposal.fields)
            if "predicted" in extra:  # minimised: stored as the objective's values
                extra["surrogate"] = _as_objectives(extra.pop("predicted"), state.directions)
            return replace(base, proposal=values, **extra)

        if records.is_enqueued(trial):
            return record(self._breeding.random(seed, base.slot, names, role=records.ENQUEUED))
        if base.generation == 0:
            return record(self._breeding.random(seed, base.slot, names))
        selection = self._selection_for(state)
        parents = state.population(study, trials, progress, base.generation, space,
                                   selection, self._signed_ideal(state))
        if not any(p.has(names) and np.isfinite(p.fitness) for p in parents):
            return _independent(base, NO_PARENT)
        if base.role in records.ELITE_ROLES:
            index = base.position // 2
            if index < len(parents) and parents[index].has(names):
                return record(self._elite_search.explore(seed, parents[index], names, base))
        elite = elite_at(self._layout, base, parents, names)
        if base.role == records.RESCORE and elite is not None:
            return record(rescore(elite, names))
        if base.role == records.PROMOTE:
            if elite is not None and elite.trial not in state.promoted_before(
                    study, base.generation, self.elite_size):
                return record(promote(elite, names))
            base = replace(base, role=records.CHILD)  # promoted already: the position breeds
        members = progress.members if base.generation == progress.generation else []
        current = pop.group_generation(members, (), state.directions, space,
                                       state.known_genes(space))
        pool = [p for p in selection.mating_pool(parents, current) if p.has(names)]
        population = [p for p in parents if p.has(names)]  # refills a pool without immigrants
        model = None
        if self._settings.surrogate_candidates > 1:
            known = (None if self._known_values is None else
                     _known_rows(self._known_values, space, state.directions))
            model = state.surrogate(study, trials, base.fidelity, space,
                                    threshold_index(self._settings.threshold_param, names),
                                    known)
        return record(self._breeding.breed(seed, base.slot, pool, names, population, model))

    def _selection_for(self, state: StudyState) -> SelectionStrategy:
        return self._selection or self._settings.selection(len(state.directions))

    def _signed_ideal(self, state: StudyState) -> float | None:
        ideal = self._settings.ideal_value
        if ideal is None:
            return None
        return ideal if state.directions[0] == StudyDirection.MINIMIZE else -ideal

    # -- per-study state -----------------------------------------------------------------

    def _state(self, study: Study, trial: FrozenTrial) -> StudyState:
        """The study's seed and lock, and its settings checked: read from storage once per
        process (and written by the first worker)."""
        storage = storage_of(study)
        key = (study_id_of(study), study.study_name)
        with self._states_lock:
            state = self._states.setdefault(storage, {}).get(key)
        if state is not None:
            return state
        directions = tuple(study.directions)
        lock = lock_for(study)
        with lock:
            attrs = study_attrs(study)
            self._check_objectives(study, trial, len(directions))
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
                key, StudyState(lock, seed, directions, TrialView(storage),
                                record_writer(storage)))

    def _check_objectives(self, study: Study, trial: FrozenTrial, objectives: int) -> None:
        if objectives == 1:
            if self._known_values is not None:
                fail_trial(study, trial)
                raise ValueError("known_values gives the objectives a trial's parameters fix "
                                 "beside the one a run measures; a study of one objective "
                                 "has none: leave it out")
            return
        for setting, why in (("ideal_value", "is one objective's best value"),):
            if getattr(self._settings, setting) != getattr(SamplerSettings(), setting):
                fail_trial(study, trial)
                raise ValueError(f"{setting} {why}; leave it at its default for a study of "
                                 f"{objectives} objectives")

    def _check_settings(self, study: Study, trial: FrozenTrial, attrs: dict) -> None:
        stored, mine = attrs.get(SETTINGS), self._stored_settings()
        if stored is None:
            set_study_attr(study, SETTINGS, mine)
            return
        strategies = {k: v for k, v in mine.items() if k.endswith("_strategy")}
        differ = self._settings.changed_from(stored) | {
            k: (stored.get(k), v) for k, v in strategies.items() if stored.get(k) != v} | {
            k: (v, "the default") for k, v in stored.items()
            if k.endswith("_strategy") and k not in strategies}
        if differ:
            fail_trial(study, trial)
            described = ", ".join(f"{k}={old!r} (now {new!r})" for k, (old, new)
                                  in differ.items())
            raise ValueError(f"study {study.study_name!r} was started with {described}; "
                             "resume it with the same sampler settings or start a new study")


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


def _independent(base: TrialRecord, reason: str) -> TrialRecord:
    return replace(base, role=records.INDEPENDENT, fallback=reason)


def _as_objectives(predicted: float | list[float], directions: Sequence[StudyDirection],
                   ) -> float | list[float]:
    """A surrogate's prediction (minimised fitness, or one value per objective) in the
    terms of the study's objectives."""
    signs = [pop.minimising_sign(d) for d in directions]
    if isinstance(predicted, list):
        return [s * v for s, v in zip(signs, predicted)]
    return predicted if signs[0] > 0 else -predicted


def _known_rows(known_values: Callable[[dict[str, Any]], Sequence[float | None]],
                space: dict[str, BaseDistribution], directions: Sequence[StudyDirection],
                ) -> Callable[[np.ndarray], np.ndarray]:
    """``known_values`` on rows of normalised genes, as the surrogates see them: minimised
    values, NaN where the run alone tells."""
    names, signs = list(space), [pop.minimising_sign(d) for d in directions]

    def rows(genes: np.ndarray) -> np.ndarray:
        found = []
        for row in genes:
            values = list(known_values({n: pop.denormalize(float(g), space[n])
                                        for n, g in zip(names, row)}))
            if len(values) != len(signs):
                raise ValueError(f"known_values gave {len(values)} values for a study of "
                                 f"{len(signs)} objectives; give one per objective (None "
                                 "where only the run tells)")
            found.append([np.nan if v is None else s * float(v)
                          for s, v in zip(signs, values)])
        return np.array(found, dtype=float)

    return rows


def _fresh_seed() -> int:
    return int(np.random.SeedSequence().entropy % (2**63))


def _derive_seed(*key: int) -> int:
    return int(np.random.SeedSequence(list(key)).generate_state(1, np.uint32)[0])
