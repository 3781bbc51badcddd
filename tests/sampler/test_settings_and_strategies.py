"""The sampler's settings are one validated, frozen object; selection, elite search and child
generation are strategies passed in, fixed for a study like its settings."""

import dataclasses

import numpy as np
import optuna
import pytest

from biotune_optuna.sampler import BioTuneSampler, SamplerSettings, records
from biotune_optuna.sampler.evolution import Breeding, Proposal
from biotune_optuna.sampler.population import Selection
from biotune_optuna.sampler.synthetic import TASKS

optuna.logging.set_verbosity(optuna.logging.WARNING)
TASK = TASKS["near-domain"]


def run(sampler, n_trials, storage=None):
    study = optuna.create_study(sampler=sampler, direction="maximize", storage=storage,
                                study_name="s", load_if_exists=True)
    study.optimize(TASK, n_trials=n_trials)
    return study


def sampler(**kwargs):
    return BioTuneSampler(seed=0, search_space=TASK.search_space, ideal_value=1.0,
                          **{"population_size": 5, "elite_size": 1, **kwargs})


def test_settings_are_frozen_and_checked_and_given_one_way():
    settings = SamplerSettings(5, 1, ideal_value=1.0, rescore_elites=True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.elite_size = 2
    with pytest.raises(ValueError, match="surrogate_candidates must be at least 1"):
        SamplerSettings(surrogate_candidates=0)
    given = BioTuneSampler(seed=0, search_space=TASK.search_space, settings=settings)
    assert given.settings == settings and given.n_trials(2) == 5 + 2 * (5 + 1 + 1)
    assert len(run(given, 12).trials) == 12
    with pytest.raises(TypeError, match="not both"):
        BioTuneSampler(settings=settings, mutation=False)
    with pytest.raises(TypeError, match="unexpected keyword argument 'mutaton'"):
        BioTuneSampler(mutaton=False)


class MiddleChildren(Breeding):
    """Every child at the middle of the space: a strategy anyone could write."""

    def breed(self, seed, slot, pool, names, population=(), model=None):
        return Proposal(np.full(len(names), 0.5), {"role": records.CHILD})


def test_a_child_generation_strategy_breeds_the_children_and_stays_with_the_study(tmp_path):
    storage = f"sqlite:///{tmp_path}/s.db"
    study = run(sampler(child_generation_strategy=MiddleChildren()), 5 + 6, storage)
    children = [t for t in study.trials if records.role_of(t) == records.CHILD]
    assert children and all(set(t.params.values()) == {0.5} for t in children)
    assert all(len(set(t.params.values())) > 1 for t in study.trials[:5])  # initial: random
    with pytest.raises(ValueError, match="child_generation_strategy="):
        run(sampler(), 1, storage)  # resumed with BioTune's own: refused


class KeepParents(Selection):
    """A selection that never replaces the population (the next issue's multi-objective
    selection is such a class)."""

    def next(self, parents, generation, ideal):
        return list(parents)


def test_a_selection_strategy_fixes_the_populations():
    study = run(sampler(selection_strategy=KeepParents(5, 1)), 5 + 3 * 6)
    attrs = study._storage.get_study_system_attrs(study._study_id)
    populations = records.stored_populations(attrs)
    assert [i.trial for i in populations[3]] == [i.trial for i in populations[1]]
    default = run(sampler(), 5 + 3 * 6)
    attrs = default._storage.get_study_system_attrs(default._study_id)
    populations = records.stored_populations(attrs)
    assert [i.trial for i in populations[3]] != [i.trial for i in populations[1]]
