"""BioTuneSampler: BioTune's evolutionary search as an Optuna sampler whose whole state lives
in the study's storage."""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution, FloatDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.search_space import IntersectionSearchSpace
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from biotune_optuna import _population as pop
from biotune_optuna import operators
from biotune_optuna._population import Individual, Layout

SETTINGS = pop.ATTR + "settings"
_SLOT_STREAM, _ELITE_STREAM, _INDEPENDENT_STREAM = 0, 1, 2


class BioTuneSampler(BaseSampler):
    """Evolutionary selective fine-tuning (BioTune; Davila, Colan and Hasegawa, 2025).

    One gene per network block and a freezing threshold, each in [0, 1]: a block is trained
    when its gene exceeds the threshold, with a learning-rate multiplier set by its gene
    (see :mod:`biotune_optuna.genome`). Any study whose parameters are floats works: every
    float parameter is normalised to [0, 1] (log scale for log distributions) and evolved;
    other parameters are sampled independently.

    A search is an initial population of N random genomes, then generations of N + E trials:
    two local-search trials (+delta, -delta on one gene) for each of the E elites, then N - E
    children (rank-linear selection, blend crossover, extinction-driven mutation, adoption
    toward the parents' mean and a prototype) or random immigrants once the mating pool has
    two parents or fewer. The budget of G generations is ``n_trials(G) = N + G (N + E)``.

    State lives in storage: each trial's system attrs hold its slot, generation, role
    (``initial``, ``elite+``, ``elite-``, ``child``, ``immigrant``, ``enqueued``), parents,
    prototype and proposed genome, and the population entering each generation is saved in
    the study's system attrs. A new process on the same storage continues the same search;
    with a seed and ``n_jobs=1`` an interrupted search proposes exactly what an uninterrupted
    one would.

    Parallel workers (``n_jobs > 1`` or several processes on one storage): every trial's
    slot is derived from its trial number, so no two trials take the same elite exploration
    or child slot. The sequential algorithm sees each result before the next proposal; in
    parallel a proposal uses only the trials finished so far: a generation's population is
    fixed (and saved) from the trials finished when its first trial starts, children use
    the mating-pool removals of finished siblings only, and elites not yet resolved enter
    the pool unimproved. Late results still join the population of their own generation if
    it has not been fixed yet.

    Trial outcomes: FAIL (and NaN objectives, which Optuna fails) count as the worst
    fitness; PRUNED trials count with their last reported intermediate value (worst when
    they reported none); RUNNING trials are not known yet. Enqueued trials
    (``study.enqueue_trial``, e.g. the full fine-tuning genome) take the next slot: in the
    initial population they are initial individuals, later they join their generation's
    population like immigrants. Retries made by ``RetryFailedTrialCallback`` take over the
    slot of the trial they retry.

    Args:
        population_size: N, at least 3.
        elite_size: E, with 0 <= E < N.
        exploration_rate: Largest step of elite local search (the paper's 0.25).
        threshold_param: Name of the freezing-threshold parameter. When present, random
            genomes are redrawn until some block gene exceeds it, and elite local search
            moves only selected blocks' genes.
        seed: Seed of every random choice; the same seed gives the same trials.
        search_space: The parameters to evolve (e.g. :func:`biotune_optuna.genome.search_space`).
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
        independent_sampler: Sampler for parameters outside the evolved space. The default
            draws uniformly with a generator derived from the seed and the trial number.
    """

    def __init__(
        self,
        population_size: int = 10,
        elite_size: int = 3,
        exploration_rate: float = 0.25,
        threshold_param: str | None = "threshold",
        seed: int | None = None,
        *,
        search_space: Mapping[str, BaseDistribution] | None = None,
        ideal_value: float | None = None,
        clip_elite_genes: bool = True,
        extinction_after_init: bool = False,
        resample_empty: bool = False,
        independent_sampler: BaseSampler | None = None,
    ) -> None:
        validate_settings(population_size, elite_size, exploration_rate)
        if seed is not None and seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed}")
        self._layout = Layout(population_size, elite_size)
        self._exploration_rate = exploration_rate
        self._threshold_param = threshold_param
        self._seed_given = seed is not None
        self._seed = seed if seed is not None else _fresh_seed()
        self._search_space = _evolvable(search_space) if search_space is not None else None
        self._ideal_value = ideal_value
        self._clip_elite_genes = clip_elite_genes
        self._extinction_after_init = extinction_after_init
        self._resample_empty = resample_empty
        self._independent_sampler = independent_sampler
        self._intersection = IntersectionSearchSpace(include_pruned=True)
        self._proposals: dict[int, dict[str, float]] = {}

    @property
    def population_size(self) -> int:
        return self._layout.population_size

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
            "exploration_rate": self._exploration_rate,
            "threshold_param": self._threshold_param,
            "ideal_value": self._ideal_value,
            "clip_elite_genes": self._clip_elite_genes,
            "extinction_after_init": self._extinction_after_init,
            "resample_empty": self._resample_empty,
        }

    def reseed_rng(self) -> None:
        if not self._seed_given:
            self._seed = _fresh_seed()
        if self._independent_sampler is not None:
            self._independent_sampler.reseed_rng()

    # -- Optuna's sampler interface ------------------------------------------------------

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial,
                                    ) -> dict[str, BaseDistribution]:
        if self._search_space is not None:
            return dict(self._search_space)
        return _evolvable(self._intersection.calculate(study, use_cache=True))

    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        if not search_space:
            return {}
        proposal = self._proposals.pop(trial._trial_id, None)
        if proposal is None:  # a retry, or a trial begun by another sampler object
            attrs = study._storage.get_trial_system_attrs(trial._trial_id)
            proposal = attrs.get(pop.PROPOSAL, {})
        return {name: value for name, value in proposal.items()
                if name in search_space and search_space[name]._contains(value)}

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        sampler = self._independent_sampler
        if sampler is None:
            stream = zlib.crc32(param_name.encode())
            sampler = RandomSampler(seed=_derive_seed(self._seed, _INDEPENDENT_STREAM,
                                                      trial.number, stream))
        return sampler.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        if study._is_multi_objective():
            _fail(study, trial)
            raise ValueError("BioTuneSampler supports single-objective studies only; use "
                             "optuna.samplers.NSGAIISampler for several objectives")
        study_attrs = study._storage.get_study_system_attrs(study._study_id)
        self._check_settings(study, trial, study_attrs)
        if pop.SLOT in trial.system_attrs:  # a retry keeps its original's slot and genome
            return
        trials = study._get_trials(deepcopy=False, use_cache=True)
        slot = pop.slot_of(trial.number, trials)
        generation, position = self._layout.locate(slot)
        space = self.infer_relative_search_space(study, trial)
        if "fixed_params" in trial.system_attrs:
            role, genes, extra = pop.ENQUEUED, self._random_genome(slot, space), {}
        elif generation == 0:
            role, genes, extra = pop.INITIAL, self._random_genome(slot, space), {}
        else:
            role, genes, extra = self._evolve(study, study_attrs, trials, space, slot,
                                              generation, position)
        proposal = {name: pop.denormalize(float(g), space[name]) for name, g in zip(space, genes)}
        attrs = {pop.SLOT: slot, pop.GENERATION: generation, pop.ROLE: role,
                 pop.PROPOSAL: proposal, **extra}
        for key, value in attrs.items():
            study._storage.set_trial_system_attr(trial._trial_id, key, value)
        self._proposals[trial._trial_id] = proposal

    # -- the algorithm -------------------------------------------------------------------

    def _evolve(self, study: Study, study_attrs: dict, trials: Sequence[FrozenTrial],
                space: dict[str, BaseDistribution], slot: int, generation: int,
                position: int) -> tuple[str, np.ndarray, dict[str, Any]]:
        names = list(space)
        parents = self._population_entering(study, study_attrs, trials, space, generation)
        role = self._layout.role(generation, position)
        if role in pop.ELITE_ROLES:
            index = position // 2
            if index < len(parents) and parents[index].has(names):
                return self._explore_elite(parents[index], names, generation, index, role)
        current = pop.group_by_generation(trials, self._layout, study.direction, space,
                                          {generation}).get(generation, pop.Generation())
        pool = [p for p in pop.mating_pool(parents, self.elite_size, current) if p.has(names)]
        rng = self._rng(_SLOT_STREAM, slot)
        if len(pool) <= 2:
            return pop.IMMIGRANT, self._random_genome(slot, space), {}
        first, second, proto = operators.select_parents(rng, len(pool))
        p1, p2, prototype = (pool[i].vector(names) for i in (first, second, proto))
        extinction = (pool[first].extinction + pool[second].extinction) / 2.0
        threshold = self._threshold_index(names)
        for _ in range(operators.MAX_REDRAWS):
            child = operators.make_child(rng, p1, p2, prototype, extinction)
            if not self._resample_empty or operators.selects_any_block(child, threshold):
                break
        return pop.CHILD, child, {pop.PARENTS: [pool[first].trial, pool[second].trial],
                                  pop.PROTOTYPE: pool[proto].trial}

    def _explore_elite(self, elite: Individual, names: list[str], generation: int, index: int,
                       role: str) -> tuple[str, np.ndarray, dict[str, Any]]:
        # Both trials of a pair draw from the same stream: same gene, opposite steps.
        genes = elite.vector(names)
        rng = self._rng(_ELITE_STREAM, generation, index)
        gene, delta = operators.elite_move(rng, genes, self._threshold_index(names),
                                           self._exploration_rate)
        step = delta if role == pop.ELITE_PLUS else -delta
        moved = genes.copy()
        moved[gene] += step
        extra: dict[str, Any] = {pop.ELITE: elite.trial, pop.MOVED_GENE: names[gene],
                                 pop.DELTA: step}
        if not self._clip_elite_genes:
            extra[pop.UNCLIPPED] = dict(zip(names, map(float, moved)))
        return role, np.clip(moved, 0.0, 1.0), extra

    def _population_entering(self, study: Study, study_attrs: dict,
                             trials: Sequence[FrozenTrial], space: dict[str, BaseDistribution],
                             generation: int) -> list[Individual]:
        """The population a generation evolves from, fixed by the first trial that needs it."""
        def key(g: int) -> str:
            return f"{pop.POPULATION_PREFIX}{g}"

        if key(generation) in study_attrs:
            return [Individual.from_json(d) for d in study_attrs[key(generation)]]
        start = generation - 1
        while start >= 1 and key(start) not in study_attrs:
            start -= 1
        groups = pop.group_by_generation(trials, self._layout, study.direction, space,
                                         set(range(max(start, 0), generation)))
        if start == 0:
            initial = groups.get(0, pop.Generation()).newcomers
            population = pop.sort_population(initial)[: self.population_size]
            if self._extinction_after_init:
                pop.update_extinction(population, self._signed_ideal(study))
            start = 1
        else:
            population = [Individual.from_json(d) for d in study_attrs[key(start)]]
        for g in range(start, generation):
            population = pop.next_population(population, groups.get(g, pop.Generation()),
                                             self.population_size, self.elite_size,
                                             self._signed_ideal(study))
        study._storage.set_study_system_attr(study._study_id, key(generation),
                                             [i.to_json() for i in population])
        # Another worker may have fixed it at the same moment: everyone uses the stored one.
        stored = study._storage.get_study_system_attrs(study._study_id)[key(generation)]
        return [Individual.from_json(d) for d in stored]

    def _random_genome(self, slot: int, space: Mapping[str, BaseDistribution]) -> np.ndarray:
        names = list(space)
        return operators.random_genome(self._rng(_SLOT_STREAM, slot), len(names),
                                       self._threshold_index(names))

    def _threshold_index(self, names: list[str]) -> int | None:
        return names.index(self._threshold_param) if self._threshold_param in names else None

    def _signed_ideal(self, study: Study) -> float | None:
        if self._ideal_value is None:
            return None
        return self._ideal_value if study.direction == StudyDirection.MINIMIZE \
            else -self._ideal_value

    def _rng(self, *key: int) -> np.random.Generator:
        return np.random.default_rng([self._seed, *key])

    def _check_settings(self, study: Study, trial: FrozenTrial, study_attrs: dict) -> None:
        stored = study_attrs.get(SETTINGS)
        mine = self.settings()
        if stored is None:
            study._storage.set_study_system_attr(study._study_id, SETTINGS, mine)
            study_attrs[SETTINGS] = mine
            return
        differ = {k: (stored.get(k), v) for k, v in mine.items() if stored.get(k) != v}
        if differ:
            _fail(study, trial)
            described = ", ".join(f"{k}={old!r} (now {new!r})" for k, (old, new)
                                  in differ.items())
            raise ValueError(f"study {study.study_name!r} was started with {described}; "
                             "resume it with the same sampler settings or start a new study")


def validate_settings(population_size: int, elite_size: int, exploration_rate: float) -> None:
    """Raise a one-line ValueError naming the fix for impossible sampler settings."""
    if population_size < 3:
        raise ValueError(f"population size must be at least 3 (rank selection needs a pool of "
                         f"three), got {population_size}")
    if not 0 <= elite_size < population_size:
        raise ValueError(f"elite size must be between 0 and population size - 1 "
                         f"({population_size - 1}), got {elite_size}")
    if not 0.0 < exploration_rate <= 1.0:
        raise ValueError(f"exploration rate must be in (0, 1], got {exploration_rate}")


def _evolvable(space: Mapping[str, BaseDistribution]) -> dict[str, BaseDistribution]:
    """Float parameters with a range: the genes the sampler evolves, in a fixed order."""
    return {name: dist for name, dist in space.items()
            if isinstance(dist, FloatDistribution) and not dist.single()}


def _fail(study: Study, trial: FrozenTrial) -> None:
    """Close a trial that cannot run, so a refused start leaves nothing RUNNING."""
    study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)


def _fresh_seed() -> int:
    return int(np.random.SeedSequence().entropy % (2**63))


def _derive_seed(*key: int) -> int:
    return int(np.random.SeedSequence(list(key)).generate_state(1, np.uint32)[0])


