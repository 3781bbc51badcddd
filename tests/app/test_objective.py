"""The objective: reports only when a pruner needs them, learning curves and compute stored
once, low-fidelity trials of a multi-fidelity search, fresh seeds for re-scoring runs."""

import optuna
import pytest
from optuna.trial import TrialState

from biotune_optuna import contents
from biotune_optuna.app.fidelity import Fidelity
from biotune_optuna.app.objective import FineTuneObjective
from biotune_optuna.finetuning.build import build_task
from biotune_optuna.finetuning.train import TrainConfig, fine_tune
from biotune_optuna.sampler import BioTuneSampler, decode, fidelity_of, search_space
from biotune_optuna.sampler.records import TrialRecord

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def task():
    return build_task("tiny", "digits", shots=5, split_seed=0)


def study_for(task):
    sampler = BioTuneSampler(3, 1, seed=0, search_space=search_space(task.block_names),
                             ideal_value=1.0)
    return optuna.create_study(direction="maximize", sampler=sampler), sampler


@pytest.mark.parametrize("report_epochs", [True, False])
def test_epochs_are_reported_only_when_asked(task, report_epochs):
    study, _ = study_for(task)
    objective = FineTuneObjective(task, TrainConfig(epochs=3, patience=3), seeds=(0, 1),
                                  report_epochs=report_epochs)
    study.optimize(objective, n_trials=3)
    for trial in study.trials:
        if trial.user_attrs.get(contents.EMPTY_PLAN):
            continue
        assert bool(trial.intermediate_values) == report_epochs
        curves = trial.user_attrs[contents.LEARNING_CURVES]
        assert [len(c) for c in curves] == trial.user_attrs[contents.EPOCHS]


def test_low_fidelity_trials_train_the_first_epochs_of_one_seed_run_and_promotions_all(task):
    """A multi-fidelity search: every trial but a promotion trains one seed run of at most
    the low fidelity's epochs, and those epochs are exactly the first epochs of the full
    run with that seed (same schedule); promotions train the full protocol."""
    sampler = BioTuneSampler(3, 1, seed=0, search_space=search_space(task.block_names),
                             ideal_value=1.0, multi_fidelity=True)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    config = TrainConfig(epochs=4, patience=4)
    objective = FineTuneObjective(task, config, seeds=(0, 1), low_fidelity=Fidelity(2, 1))
    study.optimize(objective, n_trials=sampler.n_trials(2))
    trained = [t for t in study.trials if not t.user_attrs.get(contents.EMPTY_PLAN)
               and t.state == TrialState.COMPLETE]  # not diverged
    promoted = [t for t in trained if TrialRecord.of(t).role == "promote"]
    assert promoted and len(promoted) < len(trained)
    for trial in trained:
        low = fidelity_of(trial) == "low"
        assert trial.user_attrs[contents.FIDELITY] == fidelity_of(trial)
        assert trial.user_attrs[contents.EPOCHS] == ([2] if low else [4, 4])
        assert trial.user_attrs[contents.IMAGE_EPOCHS] == (2 if low else 8) * len(task.splits.train)
    names = task.block_names
    for trial in promoted:
        low = study.trials[TrialRecord.of(trial).elite]
        assert low.params == trial.params
        full = fine_tune(task, decode(trial.params, names), config, seed=0)
        assert low.user_attrs[contents.LEARNING_CURVES][0] == pytest.approx(full.history[:2])
        assert trial.user_attrs[contents.LEARNING_CURVES][0] == pytest.approx(full.history)


def test_a_pruned_trial_records_what_it_trained_and_reports_its_running_value(task):
    study = optuna.create_study(direction="maximize",
                                pruner=optuna.pruners.ThresholdPruner(upper=0.0))
    objective = FineTuneObjective(task, TrainConfig(epochs=3, patience=3), seeds=(0, 1),
                                  train_head=True)
    study.optimize(objective, n_trials=2)
    for trial in study.trials:
        assert trial.state == TrialState.PRUNED
        assert trial.user_attrs[contents.EPOCHS] == [1]  # pruned at its first report
        curve = trial.user_attrs[contents.LEARNING_CURVES][0]
        assert trial.intermediate_values == {1: pytest.approx(max(curve))}
        assert trial.user_attrs[contents.IMAGE_EPOCHS] == len(task.splits.train)


def test_reports_are_the_running_value_at_the_epochs_trained_so_far(task):
    study = optuna.create_study(direction="maximize")
    objective = FineTuneObjective(task, TrainConfig(epochs=2, patience=2), seeds=(0, 1),
                                  train_head=True)
    study.optimize(objective, n_trials=2)
    for trial in study.trials:
        first, second = trial.user_attrs[contents.LEARNING_CURVES]
        steps = len(first) + len(second)
        assert sorted(trial.intermediate_values) == list(range(1, steps + 1))
        for step, value in trial.intermediate_values.items():
            expected = max(first[:step]) if step <= len(first) else max(first)
            assert value == pytest.approx(expected)
        assert trial.value == pytest.approx((max(first) + max(second)) / 2)


def test_an_elites_rescoring_run_trains_with_fresh_seeds(task):
    sampler = BioTuneSampler(3, 1, seed=0, search_space=search_space(task.block_names),
                             ideal_value=1.0, rescore_elites=True)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    objective = FineTuneObjective(task, TrainConfig(epochs=1, patience=1), seeds=(0, 1))
    study.optimize(objective, n_trials=sampler.n_trials(2))
    for trial in study.trials:
        record = TrialRecord.of(trial)
        if record.role == "rescore":
            shift = 1000 * record.generation
            assert trial.user_attrs[contents.RESCORE_SEEDS] == [shift, 1 + shift]
        else:
            assert contents.RESCORE_SEEDS not in trial.user_attrs
    assert sum(TrialRecord.of(t).role == "rescore" for t in study.trials) == 2
