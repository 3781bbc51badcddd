"""Property-based tests (hypothesis): configuration parsing and genome decoding."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from biotune_optuna.app.config import ConfigError, SearchConfig, make_config, option_names
from biotune_optuna.sampler import genome

BLOCKS = ["stem", "layer1", "layer2", "layer3", "layer4", "fc"]
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
    assert config.epochs >= 1 and config.n_trials >= 1 and config.patience >= 1
    assert 0 < config.lr < math.inf and 0 <= config.weight_decay < math.inf
    assert all(isinstance(s, int) for s in config.train_seeds) and config.train_seeds
    config.train_config()  # an accepted configuration always makes a valid TrainConfig


@given(st.integers(3, 40), st.integers(0, 39), st.integers(0, 30))
def test_budget_follows_the_formula(population, elite, generations):
    if elite >= population:
        with pytest.raises(ConfigError):
            SearchConfig(population=population, elite=elite)
        return
    config = SearchConfig(population=population, elite=elite, generations=generations)
    assert config.n_trials == population + generations * (population + elite)


genes = st.floats(0.0, 1.0, allow_nan=False)


@given(st.lists(genes, min_size=len(BLOCKS), max_size=len(BLOCKS)), genes)
def test_decoding_trains_exactly_the_genes_above_the_threshold(values, threshold):
    params = {genome.gene_name(b): v for b, v in zip(BLOCKS, values)}
    params[genome.THRESHOLD] = threshold
    plan = genome.decode(params, BLOCKS)
    for block, value, multiplier in zip(BLOCKS, values, plan.multipliers):
        assert (multiplier > 0) == (value > threshold)
        if multiplier > 0:
            assert 0.1 <= multiplier <= 10.0
            assert math.isclose(math.log10(multiplier), 2 * (value - 0.5), abs_tol=1e-12)
            assert block in plan.trained_blocks
    assert set(plan.trained_blocks) | set(plan.frozen_blocks) == set(BLOCKS)
    assert plan.is_empty == (not plan.trained_blocks)


@given(st.lists(genes, min_size=len(BLOCKS), max_size=len(BLOCKS)), genes)
def test_train_head_always_trains_the_last_block_and_nothing_else(values, threshold):
    params = {genome.gene_name(b): v for b, v in zip(BLOCKS, values)}
    params[genome.THRESHOLD] = threshold
    paper, forced = genome.decode(params, BLOCKS), genome.decode(params, BLOCKS, True)
    assert forced.multipliers[:-1] == paper.multipliers[:-1]
    assert math.isclose(forced.multipliers[-1], genome.lr_multiplier(values[-1]))
    assert not forced.is_empty


@given(st.dictionaries(st.sampled_from(BLOCKS),
                       st.floats(0.1, 10.0, exclude_min=True, allow_nan=False), min_size=1))
def test_encode_then_decode_gives_back_the_plan(multipliers):
    plan = genome.decode(genome.encode(multipliers, BLOCKS), BLOCKS)
    assert plan.trained_blocks == [b for b in BLOCKS if b in multipliers]
    for block, multiplier in zip(BLOCKS, plan.multipliers):
        if block in multipliers:
            assert math.isclose(multiplier, multipliers[block], rel_tol=1e-9)
