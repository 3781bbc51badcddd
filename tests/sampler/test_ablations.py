"""The paper's ablations: genome variants (freeze-only, LR-only) and each operator turned off
(mutation, elite local search, adoption, immigrants). Each does what it says, keeps the
sampler's invariants under parallel workers, and is stored with the study."""

from collections import Counter

import numpy as np
import optuna
import pytest

from biotune_optuna import BioTuneSampler
from biotune_optuna.sampler import genome, operators, records, storage_io
from tests.sampler.near_domain import TASK, search

optuna.logging.set_verbosity(optuna.logging.WARNING)
ABLATIONS = ("mutation", "elite_search", "adoption", "immigrants")


def roles(study):
    return Counter(records.role_of(t) for t in study.trials)


def test_genome_variants_decode_as_their_names_say():
    blocks = ["stem", "stage1", "head"]
    params = {"gene:stem": 0.9, "gene:stage1": 0.2, "gene:head": 0.7, "threshold": 0.5}
    full = genome.decode(params, blocks)
    freeze = genome.decode(params, blocks, variant=genome.FREEZE_ONLY)
    assert full.trained_blocks == freeze.trained_blocks == ["stem", "head"]
    assert set(freeze.multipliers) == {0.0, 1.0} and full.multipliers[0] > 1.0
    lr_only = {k: v for k, v in params.items() if k != "threshold"}
    assert "threshold" not in genome.search_space(blocks, genome.LR_ONLY)
    plan = genome.decode(lr_only, blocks, variant=genome.LR_ONLY)
    assert plan.frozen_blocks == [] and plan.multipliers[1] == pytest.approx(10 ** -0.6)
    with pytest.raises(ValueError, match="freeze-only"):
        genome.search_space(blocks, "frozen")


def test_without_elite_search_the_explorations_positions_breed_children():
    study = search(elite_search=False)
    assert roles(study)[records.ELITE_PLUS] == roles(study)[records.ELITE_MINUS] == 0
    later = [records.TrialRecord.of(t) for t in study.trials if records.generation_of(t) > 0]
    assert {r.role for r in later if r.position < 4} <= {records.CHILD, records.IMMIGRANT}


def test_without_immigrants_a_dry_pool_is_refilled_from_the_population():
    with_them, without = search(generations=8), search(generations=8, immigrants=False)
    assert roles(with_them)[records.IMMIGRANT] > 0  # the setting exercises the fallback
    assert roles(without)[records.IMMIGRANT] == 0


@pytest.mark.parametrize("operator", ["mutation", "adoption"])
def test_an_operator_turned_off_is_skipped(operator):
    rng = np.random.default_rng(0)
    p1, p2, proto = rng.random(5), rng.random(5), rng.random(5)
    off = operators.make_child(np.random.default_rng(1), p1, p2, proto, 0.9,
                               **{operator: False})
    rng = np.random.default_rng(1)
    child = operators.blend_crossover(rng, p1, p2)
    if operator == "adoption":  # crossover and mutation only
        child = operators.mutate(rng, child, 0.9)
    else:  # crossover and adoption only
        child = operators.adopt(rng, child, p1, p2, proto)
    assert np.allclose(off, child)
    default = operators.make_child(np.random.default_rng(1), p1, p2, proto, 0.9)
    assert not np.allclose(default, off)


@pytest.mark.parametrize("ablation", ABLATIONS)
def test_each_ablation_keeps_the_invariants_under_parallel_threads(ablation):
    for seed in range(3):
        study = search(n_jobs=4, seed=seed, rescore_elites=True, **{ablation: False})
        attrs = storage_io.study_attrs(study)
        assert records.audit(study.trials, attrs, 6) == [], (ablation, seed)
        assert len(study.trials) == study.sampler.n_trials(5)


@pytest.mark.parametrize("ablation", ABLATIONS)
@pytest.mark.slow
def test_an_ablation_is_stored_replayed_and_refused_on_a_different_resume(ablation, tmp_path):
    storage = f"sqlite:///{tmp_path}/a.db"
    first = search(storage=storage, generations=3, **{ablation: False})
    again = search(generations=3, **{ablation: False})
    assert [t.params for t in first.trials] == [t.params for t in again.trials]
    assert storage_io.study_attrs(first)[records.SETTINGS][ablation] is False
    if ablation != "elite_search":
        assert [t.params for t in search(generations=3).trials] != \
            [t.params for t in first.trials]
    resumed = optuna.load_study(study_name=first.study_name, storage=storage,
                                sampler=BioTuneSampler(6, 2, seed=0))
    with pytest.raises(ValueError, match=f"{ablation}=False"):
        resumed.optimize(TASK, n_trials=1)
