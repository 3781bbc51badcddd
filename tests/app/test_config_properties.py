"""Property-based tests (hypothesis): configuration parsing."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from biotune_optuna.app.config import (
    SAMPLER_SETTINGS,
    ConfigError,
    SearchConfig,
    make_config,
    option_names,
)
from biotune_optuna.app.studies import make_sampler
from biotune_optuna.sampler.synthetic import TASKS

scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 50),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
                    st.lists(st.integers(-3, 5), max_size=3))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(option_names() + ["bogus"]), scalars, max_size=6),
       st.dictionaries(st.sampled_from(option_names()), scalars, max_size=4))
def test_config_parsing_either_succeeds_or_names_the_problem(file_options, flags):
    try:
        config = make_config(file_options, flags)
    except ConfigError as error:
        message = str(error)
        assert message and "\n" not in message
        return
    assert isinstance(config, SearchConfig)
    merged = {**file_options, **{k: v for k, v in flags.items() if v is not None}}
    for name, value in merged.items():
        if value is not None and isinstance(value, bool) and name in ("download", "augment"):
            assert getattr(config, name) == value
    assert config.population >= 3 and 0 <= config.elite < config.population
    assert config.epochs >= 1 and config.patience >= 1
    assert (config.n_trials >= 1 if config.compute_budget is None else
        config.n_trials is None or config.n_trials >= 1)
    assert 0 < config.lr < math.inf and 0 <= config.weight_decay < math.inf
    assert all(isinstance(s, int) for s in config.train_seeds) and config.train_seeds
    config.train_config()  # an accepted configuration always makes a valid TrainConfig


@given(st.integers(3, 40), st.integers(0, 39), st.integers(0, 30), st.booleans())
def test_budget_follows_the_formula(population, elite, generations, rescore):
    if elite >= population:
        with pytest.raises(ConfigError):
            SearchConfig(population=population, elite=elite)
        return
    config = SearchConfig(population=population, elite=elite, generations=generations,
                          rescore_elites=rescore)
    per_generation = population + elite * (2 if rescore else 1)
    assert config.n_trials == population + generations * per_generation


def test_rescoring_sets_the_budget_of_biotune_only():
    assert SearchConfig(population=6, elite=2, generations=5).n_trials == 6 + 5 * 10
    assert SearchConfig(population=6, elite=2, generations=5, sampler="tpe").n_trials == 46
    assert SearchConfig(population=6, elite=2, generations=5,
                        rescore_elites=False).n_trials == 46


def test_the_command_line_options_reach_the_sampler_settings():
    """Every option the CLI maps to a setting changes the sampler ``search`` builds."""
    base = SearchConfig(model="small", dataset="digits")
    space = TASKS["near-domain"].search_space
    assert make_sampler(base, space).settings == base.sampler_settings()
    for option, setting in SAMPLER_SETTINGS.items():
        value = getattr(base, option)
        other = {bool: lambda v: not v, int: lambda v: v + 1,
                 float: lambda v: v / 2}[type(value)](value)
        changed = make_sampler(base.replace(**{option: other}), space).settings
        assert getattr(changed, setting) == other, option


def test_a_front_search_has_its_own_operator_defaults_and_replace_follows_them():
    alone = SearchConfig()
    front = alone.replace(objectives="accuracy,train-gflops")
    operators = [(c.elite_search, c.adoption, c.surrogate_candidates)
                 for c in (alone, front, front.replace(sampler="tpe"))]
    assert operators == [(True, True, 1), (False, False, 64), (True, True, 1)]
    given = SearchConfig(objectives="accuracy,train-gflops", surrogate_candidates=8,
                         elite_search=True)
    assert (given.elite_search, given.adoption, given.surrogate_candidates) == (True, False, 8)
    assert given.replace(objectives="accuracy").surrogate_candidates == 8  # given: kept


def test_replace_resolves_the_weights_of_another_model_unless_they_were_given():
    assert SearchConfig(model="resnet18").replace(model="small").weights == "mnist5k"
    assert SearchConfig(model="resnet18", weights="none").replace(model="small").weights == \
        "none"
