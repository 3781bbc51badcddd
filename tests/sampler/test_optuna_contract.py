"""Optuna's own generic sampler tests (optuna.testing.pytest_samplers), run on BioTuneSampler
at small and default settings, with the noise-aware options, with multi-fidelity, with
every operator ablation and with surrogate pre-selection."""

import pytest
from optuna.testing.pytest_samplers import (
    BasicSamplerTestCase,
    MultiObjectiveSamplerTestCase,
    RelativeSamplerTestCase,
)

from biotune_optuna import BioTuneSampler

SETTINGS = {"N4-E1": {"population_size": 4, "elite_size": 1},
            "N3-E0": {"population_size": 3, "elite_size": 0},
            "N4-E1-noise-aware": {"population_size": 4, "elite_size": 1,
                                  "rescore_elites": True, "elite_pair_mean": True},
            "N4-E1-multi-fidelity": {"population_size": 4, "elite_size": 1,
                                     "rescore_elites": True, "multi_fidelity": True},
            "N4-E1-ablations": {"population_size": 4, "elite_size": 1, "mutation": False,
                                "elite_search": False, "adoption": False,
                                "immigrants": False},
            "N4-E1-surrogate": {"population_size": 4, "elite_size": 1,
                                "surrogate_candidates": 3},
            "default": {}}


@pytest.fixture(params=list(SETTINGS))
def settings(request):
    return SETTINGS[request.param]


class TestBasic(BasicSamplerTestCase):
    @pytest.fixture
    def sampler(self, settings):
        return lambda: BioTuneSampler(seed=0, **settings)


class TestMultiObjective(MultiObjectiveSamplerTestCase):
    @pytest.fixture
    def sampler(self, settings):
        return lambda: BioTuneSampler(seed=0, **settings)


class TestRelative(RelativeSamplerTestCase):
    @pytest.fixture
    def sampler(self, settings):
        return lambda: BioTuneSampler(seed=0, **settings)
