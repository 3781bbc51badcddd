"""Property-based tests (hypothesis): genome decoding and encoding."""

import math

from hypothesis import given
from hypothesis import strategies as st

from biotune_optuna.sampler import genome

BLOCKS = ["stem", "layer1", "layer2", "layer3", "layer4", "fc"]
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
