"""Each operator against the formulas of docs/algorithm.md, section 2."""

import numpy as np
import pytest

from biotune_optuna.sampler import operators


def enumerate_linear_dist(n):
    """The authors' linear_dist, run on every value of d."""
    counts = np.zeros(n)
    for d in range(n * (n + 3) // 2):
        if d == 0:
            counts[0] += 1
            continue
        subtractions, step = 0, n + 1
        while d > 0:
            d -= step
            step -= 1
            subtractions += 1
        counts[subtractions - 1] += 1
    return counts / counts.sum()


@pytest.mark.parametrize("n", [2, 3, 5, 10, 17])
def test_rank_probabilities_match_enumeration(n):
    np.testing.assert_allclose(operators.rank_probabilities(n), enumerate_linear_dist(n))


def test_rank_probabilities_for_ten_match_the_paper_table():
    expected = [.185, .154, .138, .123, .108, .092, .077, .062, .046, .015]
    np.testing.assert_allclose(operators.rank_probabilities(10), expected, atol=5e-4)


def test_rank_selection_distribution_for_ten_by_sampling():
    rng = np.random.default_rng(0)
    draws = 200_000
    counts = np.bincount([operators.rank_index(rng, 10) for _ in range(draws)], minlength=10)
    expected = operators.rank_probabilities(10) * draws
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 27.9  # 99.9 % quantile of chi-square with 9 degrees of freedom


def test_select_parents_are_distinct_and_prototype_may_repeat():
    rng = np.random.default_rng(1)
    triples = [operators.select_parents(rng, 3) for _ in range(2000)]
    assert all(a != b for a, b, _ in triples)
    assert any(p in (a, b) for a, b, p in triples)
    assert all(0 <= i < 3 for t in triples for i in t)


def test_blend_crossover_stays_in_the_parents_box():
    rng = np.random.default_rng(2)
    p1, p2 = rng.random(8), rng.random(8)
    for _ in range(500):
        child = operators.blend_crossover(rng, p1, p2)
        assert np.all(child >= np.minimum(p1, p2) - 1e-12)
        assert np.all(child <= np.maximum(p1, p2) + 1e-12)


def test_blend_crossover_weights_are_uniform_per_gene():
    rng = np.random.default_rng(3)
    p1, p2 = np.ones(4), np.zeros(4)
    alphas = np.array([operators.blend_crossover(rng, p1, p2) for _ in range(20000)])
    np.testing.assert_allclose(alphas.mean(axis=0), 0.5, atol=0.01)
    np.testing.assert_allclose(alphas.var(axis=0), 1 / 12, atol=0.003)
    assert abs(np.corrcoef(alphas[:, 0], alphas[:, 1])[0, 1]) < 0.03


@pytest.mark.parametrize("p, n, m", [(0.0, 7, 1 / 7), (1.0, 7, 1.0), (0.5, 5, 0.6)])
def test_mutation_rate_formula(p, n, m):
    assert operators.mutation_rate(p, n) == pytest.approx(m)


def test_mutation_rate_and_step_by_sampling():
    rng = np.random.default_rng(4)
    genes = np.full(7, 0.5)
    p = 0.4
    changes = np.array([operators.mutate(rng, genes, p) - genes for _ in range(20000)])
    assert (changes != 0).mean() == pytest.approx(operators.mutation_rate(p, 7), abs=0.01)
    moved = changes[changes != 0]
    assert np.abs(moved).max() <= p
    assert np.abs(moved).mean() == pytest.approx(p / 2, abs=0.01)  # |U(-p, p)| has mean p/2


def test_mutation_is_a_no_op_with_zero_extinction_and_clips():
    rng = np.random.default_rng(5)
    genes = np.array([0.0, 0.2, 1.0])
    np.testing.assert_array_equal(operators.mutate(rng, genes, 0.0), genes)
    edges = np.array([operators.mutate(rng, genes, 1.0) for _ in range(1000)])
    assert edges.min() >= 0.0 and edges.max() <= 1.0


def test_adoption_formula():
    child, p1, p2, proto = (np.array(v) for v in ([0.2, 0.9], [0.6, 0.1], [0.4, 0.3], [1.0, 0.0]))
    r1, r2, r3 = np.random.default_rng(6).random(3)
    expected = child + r3 * r1 * ((p1 + p2) / 2 - child) + (1 - r3) * r2 * (proto - child)
    got = operators.adopt(np.random.default_rng(6), child, p1, p2, proto)
    np.testing.assert_allclose(got, np.clip(expected, 0, 1))


def test_child_is_crossover_then_mutation_then_adoption():
    p1, p2, proto = np.full(5, 0.2), np.full(5, 0.8), np.full(5, 0.5)
    rng_a, rng_b = np.random.default_rng(7), np.random.default_rng(7)
    child = operators.blend_crossover(rng_b, p1, p2)
    child = operators.mutate(rng_b, child, 0.3)
    child = operators.adopt(rng_b, child, p1, p2, proto)
    np.testing.assert_array_equal(operators.make_child(rng_a, p1, p2, proto, 0.3), child)


def test_extinction_probabilities_formula():
    fitness = [0.1, 0.2, 0.25, 0.4]  # 1 - accuracy, sorted best first
    got = operators.extinction_probabilities(fitness, [0] * 4, ideal=0.0)
    expected = [(f - 0.1 * (1 - i / 3)) / 0.4 for i, f in enumerate(fitness)]
    np.testing.assert_allclose(got, expected)
    assert got[0] == 0 and got[-1] == 1


def test_extinction_probabilities_without_ideal_are_min_max_normalised():
    got = operators.extinction_probabilities([-0.9, -0.8, -0.5], [0] * 3)
    np.testing.assert_allclose(got, [0.0, 0.25, 1.0])


def test_extinction_update_skipped_when_all_equal_and_failures_count_as_worst():
    previous = [0.3, 0.6, 0.9]
    np.testing.assert_array_equal(
        operators.extinction_probabilities([0.5, 0.5, 0.5], previous, ideal=0.0), previous)
    with_failure = operators.extinction_probabilities([0.1, 0.3, np.inf], [0] * 3, ideal=0.0)
    np.testing.assert_allclose(with_failure, [0.0, (0.3 - 0.05) / 0.3, 1.0])


def test_random_genome_always_selects_a_block():
    rng = np.random.default_rng(8)
    for _ in range(2000):
        genes = operators.random_genome(rng, 4, threshold_index=3)
        assert np.any(genes[:3] > genes[3])


def test_elite_move_picks_a_selected_block_never_the_threshold():
    rng = np.random.default_rng(9)
    genes = np.array([0.9, 0.1, 0.7, 0.2, 0.5])  # threshold last: blocks 0 and 2 selected
    for _ in range(500):
        index, delta = operators.elite_move(rng, genes, 4, 0.25)
        assert index in (0, 2)
        assert abs(delta) <= 0.25
    # nothing selected: any block may move, still never the threshold
    empty = np.array([0.1, 0.2, 0.9])
    assert {operators.elite_move(rng, empty, 2, 0.25)[0] for _ in range(200)} == {0, 1}
