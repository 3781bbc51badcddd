"""The objective: learning curves stored once unless a pruner needs every epoch, and seed
racing (a trial below the population's worst member stops its remaining seed runs)."""

import optuna
import pytest
from optuna.trial import TrialState

from biotune_optuna.app import keys
from biotune_optuna.app.objective import FineTuneObjective, worst_member_value
from biotune_optuna.finetuning.build import build_task
from biotune_optuna.finetuning.train import TrainConfig
from biotune_optuna.sampler import BioTuneSampler, search_space
from biotune_optuna.sampler.population import TrialRecord, generation_of

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
        if trial.user_attrs.get(keys.EMPTY_PLAN):
            continue
        assert bool(trial.intermediate_values) == report_epochs
        curves = trial.user_attrs.get(keys.LEARNING_CURVES)
        assert (curves is None) == report_epochs
        if curves:
            assert [len(c) for c in curves] == trial.user_attrs[keys.EPOCHS]


def test_racing_stops_trials_below_the_population_and_they_keep_their_mean(task):
    study, sampler = study_for(task)
    objective = FineTuneObjective(task, TrainConfig(epochs=2, patience=2), seeds=(0, 1, 2),
                                  report_epochs=False, race_margin=0.0)
    study.optimize(objective, n_trials=sampler.n_trials(4), catch=())
    raced = [t for t in study.trials if keys.RACED in t.user_attrs]
    assert raced, "a margin of 0 must race some trials out"
    for trial in raced:
        assert trial.state == TrialState.PRUNED and generation_of(trial) >= 1
        runs = trial.user_attrs[keys.RACED]
        assert runs < 3 and len(trial.user_attrs[keys.EPOCHS]) == runs
        mean = trial.user_attrs[keys.validation_key("balanced_accuracy")]
        assert trial.intermediate_values[max(trial.intermediate_values)] == pytest.approx(mean)
    assert all(generation_of(t) >= 1 for t in raced)  # the initial population runs in full


def test_the_racing_bar_is_the_worst_member_of_the_trials_population(task):
    study, sampler = study_for(task)
    objective = FineTuneObjective(task, TrainConfig(epochs=1, patience=1), seeds=(0,))
    study.optimize(objective, n_trials=sampler.n_trials(1) + 1)
    trial = study.ask()
    members = study._storage.get_study_system_attrs(study._study_id)[
        f"biotune:population:{generation_of(study.trials[trial.number])}"]
    bar = worst_member_value(trial)
    if all(m["fitness"] is not None for m in members):
        assert bar == min(-m["fitness"] for m in members)
    else:
        assert bar is None


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
            assert trial.user_attrs[keys.RESCORE_SEEDS] == [shift, 1 + shift]
        else:
            assert keys.RESCORE_SEEDS not in trial.user_attrs
    assert sum(TrialRecord.of(t).role == "rescore" for t in study.trials) == 2
