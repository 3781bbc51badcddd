"""BioTuneSampler on several objectives: Pareto ranking with crowding distance where the
single-objective algorithm sorts by fitness, domination where it compares two values, and
the same guarantees (resume, threads, processes, audits) as on one objective."""

import math
import subprocess
import sys
from collections import Counter

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from benchmarks.sampler_parallel import WORKER
from biotune_optuna import BioTuneSampler
from biotune_optuna.sampler import genome, pareto, records, storage_io
from biotune_optuna.sampler.population import Generation
from biotune_optuna.sampler.records import Individual
from biotune_optuna.sampler.settings import FRONT_SETTINGS
from biotune_optuna.sampler.synthetic import COST_AWARE

optuna.logging.set_verbosity(optuna.logging.WARNING)
TASK = COST_AWARE["near-domain"]
# the paper's operators, and what a front search runs by default (costs computed)
OPERATORS = {"paper": {}, "front": dict(FRONT_SETTINGS, known_values=TASK.known_values)}


def sampler(seed=0, population_size=6, elite_size=2, **options):
    return BioTuneSampler(population_size, elite_size, seed=seed,
                          search_space=TASK.search_space, **options)


def search(seed=0, generations=5, n_jobs=1, storage=None, study_name=None, **options):
    s = sampler(seed, **options)
    study = optuna.create_study(directions=TASK.directions, sampler=s, storage=storage,
                                study_name=study_name, load_if_exists=True)
    study.optimize(TASK, n_trials=s.n_trials(generations), n_jobs=n_jobs)
    return study


def audit(study, population_size=6):
    attrs = study._storage.get_study_system_attrs(study._study_id)
    return records.audit(study.get_trials(deepcopy=False), attrs, population_size)


def pre_selected(study):
    """Whether some trial of the study was chosen among surrogate candidates."""
    return any(records.TrialRecord.of(t).candidates for t in study.trials)


def individual(trial, *values, extinction=0.0):
    return Individual(trial, {"x": 0.5}, records.unranked_fitness(values), extinction,
                      values=tuple(values))


# -- ranking ---------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(20))
def test_fronts_are_mutually_non_dominated_and_each_dominated_by_the_one_before(seed):
    rng = np.random.default_rng(seed)
    points = [tuple(p) for p in rng.integers(0, 6, size=(25, int(rng.integers(2, 4))))]
    found = pareto.fronts(points)
    assert sorted(i for front in found for i in front) == list(range(25))
    first = {i for i in range(25) if not any(pareto.dominates(q, points[i]) for q in points)}
    assert set(found[0]) == first == set(pareto.non_dominated(np.array(points)))
    for k, front in enumerate(found):
        assert not any(pareto.dominates(points[i], points[j]) for i in front for j in front)
        if k:
            assert all(any(pareto.dominates(points[i], points[j]) for i in found[k - 1])
                       for j in front)


def test_no_points_have_no_fronts():
    assert pareto.fronts([]) == []


def test_domination_needs_one_strict_improvement():
    assert pareto.dominates((0, 1), (1, 1))
    assert not pareto.dominates((1, 1), (1, 1))
    assert not pareto.dominates((0, 2), (1, 1))


def test_crowding_gives_the_extremes_infinity_and_the_rest_their_normalised_gaps():
    distance = pareto.crowding_distances([(0, 4), (1, 2), (2, 1), (4, 0)])
    assert math.isinf(distance[0]) and math.isinf(distance[3])
    assert distance[1] == pytest.approx(2 / 4 + 3 / 4)
    assert distance[2] == pytest.approx(3 / 4 + 2 / 4)


def test_pareto_sort_ranks_by_front_then_crowding_and_puts_failures_last():
    population = [individual(0, 1, 3), individual(1, math.inf, math.inf),
                  individual(2, 2, 2), individual(3, 0, 4), individual(4, 3, 0),
                  individual(5, 3, 3)]
    ordered = pareto.pareto_sort(population)
    # front 0: the extremes 3 and 4, then 2 (crowding 2/3 + 3/4) before 0 (2/3 + 2/4)
    assert [i.trial for i in ordered] == [3, 4, 2, 0, 5, 1]
    assert [i.fitness for i in ordered] == [0, 0, 0, 0, 1, math.inf]


def test_an_exploration_replaces_its_elite_only_when_it_dominates_it():
    elite = individual(0, 1.0, 1.0, extinction=0.3)
    incomparable = Generation(explorations={0: [individual(1, 0.5, 2.0), individual(2, 2, 0)]})
    assert pareto.resolve_elites([elite], 1, incomparable)[0].trial == 0
    better = Generation(explorations={0: [individual(1, 0.5, 1.0), individual(2, 2, 0)]})
    replaced = pareto.resolve_elites([elite], 1, better)[0]
    assert (replaced.trial, replaced.values, replaced.extinction) == (1, (0.5, 1.0), 0.3)


def test_when_both_explorations_dominate_the_one_improving_more_wins():
    elite = individual(0, 1.0, 1.0)
    both = Generation(explorations={0: [individual(1, 0.9, 0.9), individual(2, 0.2, 0.95)]})
    assert pareto.resolve_elites([elite], 1, both)[0].trial == 2  # 0.04 > 0.01
    chained = Generation(explorations={0: [individual(1, 0.5, 0.5), individual(2, 0.4, 0.4)]})
    assert pareto.resolve_elites([elite], 1, chained)[0].trial == 2


def test_rescoring_averages_each_objective():
    elite = individual(0, 1.0, 3.0)
    generation = Generation(rescores={0: [(2.0, 3.0), (3.0, 3.0)]})
    resolved = pareto.resolve_elites([elite], 1, generation)[0]
    assert resolved.values == (2.0, 3.0) and resolved.evaluations == 3


def test_a_parent_leaves_the_mating_pool_only_when_its_child_dominates_it():
    parents = [individual(0, 0, 3), individual(1, 1, 1), individual(2, 3, 0),
               individual(3, 2, 2)]
    selection = pareto.ParetoSelection(4, 1)
    generation = Generation(children=[(individual(9, 0.5, 0.5), [1, 2]),
                                      (individual(10, 1.5, 1.5), [3, 0])])
    assert [p.trial for p in selection.mating_pool(parents, generation)] == [0, 2]


def test_extinction_follows_the_front():
    selection = pareto.ParetoSelection(4, 0)
    generation = Generation(newcomers=[individual(0, 0, 1), individual(1, 1, 0),
                                       individual(2, 1, 1), individual(3, 2, 2)])
    population = selection.next([], generation, None)
    assert [(i.trial, i.extinction) for i in population] == [(0, 0), (1, 0), (2, 0.5),
                                                            (3, 1.0)]


# -- the sampler on a study ------------------------------------------------------------

def test_a_two_objective_search_evolves_a_front():
    study = search(generations=8)
    roles = Counter(records.role_of(t) for t in study.trials)
    assert roles[records.ELITE_PLUS] == roles[records.ELITE_MINUS] == 16
    assert roles[records.CHILD] + roles[records.IMMIGRANT] == 32
    assert audit(study) == []
    populations = storage_io.populations_of(study)
    assert len(populations) == 8
    assert all(len(i.values) == 2 and i.fitness >= 0 for p in populations.values() for i in p)
    front = {tuple(t.values) for t in study.best_trials}
    # the front spans cheap plans and accurate ones
    assert min(c for _, c in front) < 0.3 and max(a for a, _ in front) > 0.75


def test_the_elites_are_the_first_front(tmp_path):
    study = search(generations=4)
    for population in storage_io.populations_of(study).values():
        assert population[0].fitness == population[1].fitness == 0


@pytest.mark.parametrize("operators", OPERATORS)
def test_the_same_seed_gives_the_same_trials_and_a_resume_continues_the_same_search(
        tmp_path, operators):
    whole = search(seed=3, generations=6, **OPERATORS[operators])
    storage = f"sqlite:///{tmp_path}/r.db"
    s = sampler(3, **OPERATORS[operators])
    study = optuna.create_study(directions=TASK.directions, sampler=s, storage=storage,
                                study_name="r")
    study.optimize(TASK, n_trials=25)
    resumed = optuna.load_study(study_name="r", storage=storage,
                                sampler=sampler(3, **OPERATORS[operators]))
    resumed.optimize(TASK, n_trials=s.n_trials(6) - 25)
    assert [(t.params, t.values) for t in resumed.trials] == [
        (t.params, t.values) for t in whole.trials]


@pytest.mark.slow
@pytest.mark.parametrize("operators", OPERATORS)
def test_threads_never_take_a_position_twice_on_two_objectives(operators):
    for seed in range(20):
        study = search(seed, generations=5, n_jobs=4, **OPERATORS[operators])
        assert Counter(t.state for t in study.trials) == {TrialState.COMPLETE: 46}
        assert audit(study) == [], seed
        assert pre_selected(study) == (operators == "front")


@pytest.mark.slow
@pytest.mark.parametrize("operators", OPERATORS)
def test_processes_on_one_sqlite_file_share_a_two_objective_search(tmp_path, operators):
    for run in range(2):
        url = f"sqlite:///{tmp_path}/p{run}.db"
        optuna.create_study(storage=url, study_name="p", directions=TASK.directions)
        workers = [subprocess.Popen([sys.executable, "-c", WORKER, url, "20",
                                     "none" if run else "4", "p", operators],
                                    stderr=subprocess.PIPE, text=True) for _ in range(3)]
        errors = [w.communicate(timeout=300)[1] for w in workers]
        assert [w.returncode for w in workers] == [0, 0, 0], errors
        study = optuna.load_study(study_name="p", storage=url)
        assert Counter(t.state for t in study.trials) == {TrialState.COMPLETE: 60}
        assert audit(study) == [], run
        assert pre_selected(study) == (operators == "front")


def test_failed_trials_rank_last_and_the_search_goes_on():
    s = sampler(1)
    study = optuna.create_study(directions=TASK.directions, sampler=s)

    def sometimes_fails(trial):
        values = TASK(trial)
        if trial.number % 5 == 2:
            raise RuntimeError("out of memory")
        return values

    study.optimize(sometimes_fails, n_trials=s.n_trials(4), catch=(RuntimeError,))
    assert audit(study) == []
    for population in storage_io.populations_of(study).values():
        finite = [math.isfinite(i.fitness) for i in population]
        assert finite == sorted(finite, reverse=True)


def test_an_ideal_value_is_refused_on_several_objectives():
    study = optuna.create_study(directions=TASK.directions, sampler=sampler(ideal_value=1.0))
    with pytest.raises(ValueError, match="ideal_value .* 2 objectives"):
        study.optimize(TASK, n_trials=1)
    assert [t.state for t in study.trials] == [TrialState.FAIL]


def test_the_front_surrogate_prefers_a_candidate_that_extends_the_front():
    from biotune_optuna.sampler.surrogate import fit_front

    rng = np.random.default_rng(0)
    genes = rng.random((30, 2))
    values = np.column_stack([genes[:, 0], 1 - genes[:, 0] + genes[:, 1]])  # x1 = 0 is best
    model = fit_front(list(genes), values.tolist(), None)
    scores = model.predict(np.array([[0.5, 0.0], [0.5, 0.9]]))
    assert scores[0] < scores[1] <= 0


def test_surrogate_pre_selection_on_two_objectives_records_both_predictions():
    study = search(seed=2, generations=4, surrogate_candidates=3)
    assert audit(study) == []
    chosen = [records.TrialRecord.of(t) for t in study.trials]
    chosen = [r for r in chosen if r.candidates]
    assert chosen and all(len(r.surrogate) == 2 for r in chosen)
    # in the objectives' own terms: accuracy near the task's, cost a fraction
    assert all(0 < r.surrogate[0] < 1.2 and -0.2 < r.surrogate[1] < 1.2 for r in chosen)


def known_cost(params):
    return [None, TASK.cost(genome.decode(params, TASK.task.blocks))]


def test_known_values_replace_the_front_surrogates_predictions():
    from biotune_optuna.sampler.surrogate import fit_front

    rng = np.random.default_rng(0)
    genes = rng.random((20, 2))
    values = np.column_stack([genes[:, 0], genes[:, 1] ** 2]).tolist()

    def exact(rows):
        return np.column_stack([np.full(len(rows), np.nan), rows[:, 1] ** 2])

    far = np.array([[0.5, 3.0]])  # far outside the data: a model predicts near the mean
    predicted = fit_front(list(genes), values, None).values(far)[0]
    computed = fit_front(list(genes), values, None, exact).values(far)[0]
    assert computed[1] == 9.0 and abs(predicted[1] - 9.0) > 5
    assert computed[0] == predicted[0]  # the objective no function knows stays predicted


def test_pre_selection_computes_the_known_cost_of_the_candidate_it_trains():
    study = search(seed=1, generations=4, surrogate_candidates=4, known_values=known_cost)
    assert audit(study) == []
    chosen = [(t, records.TrialRecord.of(t)) for t in study.trials]
    chosen = [(t, r) for t, r in chosen if r.candidates]
    assert chosen
    for trial, record in chosen:  # the recorded prediction of the cost is the trial's cost
        assert record.surrogate[1] == pytest.approx(trial.values[1])
        assert record.surrogate[0] != pytest.approx(trial.values[0], abs=1e-9)


def test_known_values_of_the_wrong_length_are_named():
    study = search(seed=1, generations=2, surrogate_candidates=4,
                   known_values=lambda params: [None])
    fallbacks = {records.TrialRecord.of(t).fallback for t in study.trials} - {None}
    assert any("known_values gave 1 values for a study of 2 objectives" in f
               for f in fallbacks)


def test_known_values_without_pre_selection_or_on_one_objective_are_refused():
    with pytest.raises(ValueError, match="give surrogate_candidates above 1"):
        sampler(known_values=known_cost)
    study = optuna.create_study(sampler=sampler(surrogate_candidates=4,
                                                known_values=known_cost))
    with pytest.raises(ValueError, match="a study of one objective has none"):
        study.optimize(lambda t: TASK(t)[0], n_trials=1)
    assert study.trials[0].state == TrialState.FAIL


def test_multi_fidelity_promotes_the_first_front():
    study = search(generations=4, multi_fidelity=True, rescore_elites=True)
    assert audit(study) == []
    promoted = [t for t in study.trials if records.role_of(t) == records.PROMOTE]
    assert promoted and all(records.fidelity_of(t) == records.FULL for t in promoted)


def test_hypervolume_of_a_staircase_and_of_a_box():
    assert pareto.hypervolume([(1, 3), (2, 2), (3, 1)], (4, 4)) == pytest.approx(6.0)
    assert pareto.hypervolume([(1, 3), (2, 2), (3, 1), (3, 3)], (4, 4)) == pytest.approx(6.0)
    assert pareto.hypervolume([(5, 0)], (4, 4)) == 0.0
    assert pareto.hypervolume([(0, 0, 0)], (1, 2, 3)) == pytest.approx(6.0)
    # three boxes of volume 2, each pair sharing 1, all three sharing 1: 6 - 3 + 1
    assert pareto.hypervolume([(0, 1, 1), (1, 0, 1), (1, 1, 0)], (2, 2, 2)) == pytest.approx(4)


@pytest.mark.parametrize("dims", [2, 3])
def test_hypervolume_agrees_with_optunas_own(dims):
    compute = pytest.importorskip("optuna._hypervolume").compute_hypervolume
    rng = np.random.default_rng(dims)
    for _ in range(10):
        points = rng.random((15, dims))
        assert pareto.hypervolume(points.tolist(), [1.1] * dims) == pytest.approx(
            compute(points, np.full(dims, 1.1)))
