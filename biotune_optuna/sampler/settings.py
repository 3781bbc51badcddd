"""The sampler's options: one validated, frozen type, written once. The sampler's constructor
takes its fields as keywords, a study stores them (and refuses to resume under others), and
the toolkit's command line builds one from its flags."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from .evolution import Breeding, EliteLocalSearch
from .pareto import ParetoSelection
from .population import Layout, Selection

# what a search of a front changes from the paper's operators (docs/algorithm.md, section
# 11): on two objectives the elites are the front's ends, and elite local search and
# adoption pull toward them; pre-selection among many candidates, with each plan's cost
# given as ``known_values``, finds the middle of the cost axis
FRONT_SETTINGS = {"elite_search": False, "adoption": False, "surrogate_candidates": 64}


@dataclass(frozen=True)
class SamplerSettings:
    """BioTune's options (docs/algorithm.md says what each changes).

    Attributes:
        population_size: N, at least 3.
        elite_size: E, with 0 <= E < N.
        exploration_rate: Largest step of elite local search (the paper's 0.25).
        threshold_param: Name of the freezing-threshold parameter. When present, random
            genomes are redrawn until some block gene exceeds it, and elite local search
            moves only selected blocks' genes.
        ideal_value: Best value the objective can reach (1.0 for accuracy, 0.0 for error).
            Extinction probabilities then follow the paper's formula on the distance to it;
            without it, on the distance to the population's best (min-max normalised). A
            study of several objectives takes none: extinction follows the Pareto front.
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
            should evaluate a re-scoring trial with fresh randomness (``rescore_round``
            gives it a number to derive a seed from); a deterministic objective gains nothing.
        elite_pair_mean: Rank an elite that its local search did not replace by the mean of
            its evaluations and its two explorations' values (they sample the objective's
            noise near it), rather than by its best single draw.
        multi_fidelity: Evaluate the evolution at the objective's low fidelity and only the
            plans it may hand over at the full one. Every trial's record then says
            ``fidelity: low`` (``fidelity_of`` tells the objective; it decides what low
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
            the one a surrogate (``surrogate.py``, fitted on the finished trials of the same
            fidelity) predicts best is evaluated; its record keeps ``candidates`` and the
            prediction (``surrogate``). 1 (the default) is the paper's algorithm
            (docs/algorithm.md, section 10). With several objectives, one surrogate per
            objective, and the candidate predicted to add the most hypervolume to the front
            of the finished trials is evaluated (section 11).
    """

    population_size: int = 10
    elite_size: int = 3
    exploration_rate: float = 0.25
    threshold_param: str | None = "threshold"
    ideal_value: float | None = None
    clip_elite_genes: bool = True
    extinction_after_init: bool = False
    resample_empty: bool = False
    rescore_elites: bool = False
    elite_pair_mean: bool = False
    multi_fidelity: bool = False
    mutation: bool = True
    elite_search: bool = True
    adoption: bool = True
    immigrants: bool = True
    surrogate_candidates: int = 1

    def __post_init__(self) -> None:
        check_settings(asdict(self))

    def as_dict(self) -> dict[str, Any]:
        """What a study keeps (its system attrs) to be resumed under the same settings."""
        return asdict(self)

    def changed_from(self, stored: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
        """Each setting that differs from a study's stored ones, as (stored, now); a setting
        added after the study was made counts as its default."""
        before = {**asdict(SamplerSettings()), **stored}
        return {k: (before.get(k), v) for k, v in self.as_dict().items() if before.get(k) != v}

    @property
    def layout(self) -> Layout:
        return Layout(self.population_size, self.elite_size, self.rescore_elites,
                      self.multi_fidelity, self.elite_search)

    def selection(self, objectives: int = 1) -> Selection | ParetoSelection:
        """BioTune's selection for a study of that many objectives."""
        kind = Selection if objectives == 1 else ParetoSelection
        return kind(self.population_size, self.elite_size, self.elite_pair_mean,
                    self.extinction_after_init)

    def elite_local_search(self) -> EliteLocalSearch:
        return EliteLocalSearch(self.exploration_rate, self.threshold_param,
                                self.clip_elite_genes)

    def breeding(self) -> Breeding:
        return Breeding(self.threshold_param, self.resample_empty, self.mutation,
                        self.adoption, self.immigrants, self.surrogate_candidates)


def check_settings(values: Mapping[str, Any], names: Mapping[str, str] | None = None) -> None:
    """Raise a one-line ValueError naming the fix for impossible settings (``values`` by
    field; a field left out is not checked); ``names`` says how to call a field in the
    message (a command line names its flags)."""
    name = {f.name: f.name for f in fields(SamplerSettings)} | dict(names or {})
    population, elite = values.get("population_size", 10), values.get("elite_size", 0)
    if population < 3:
        raise ValueError(f"{name['population_size']} must be at least 3 (rank selection "
                         f"needs a pool of three), got {population}")
    if not 0 <= elite < population:
        raise ValueError(f"{name['elite_size']} must be between 0 and "
                         f"{name['population_size']} - 1 ({population - 1}), got {elite}")
    rate = values.get("exploration_rate", 0.25)
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"{name['exploration_rate']} must be in (0, 1], got {rate}")
    if values.get("multi_fidelity") and elite < 1:
        raise ValueError(f"{name['multi_fidelity']} promotes elites to the full fidelity, so "
                         f"{name['elite_size']} must be at least 1")
    if values.get("surrogate_candidates", 1) < 1:
        raise ValueError(f"{name['surrogate_candidates']} must be at least 1, got "
                         f"{values['surrogate_candidates']}")
