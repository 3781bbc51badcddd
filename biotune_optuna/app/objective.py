"""The Optuna objective: trial -> genome -> plan -> fine-tune (several seeds) -> value."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import optuna

from biotune_optuna.app import keys
from biotune_optuna.finetuning.task import Task
from biotune_optuna.finetuning.train import METRICS, RunResult, TrainConfig, fine_tune
from biotune_optuna.sampler import genome
from biotune_optuna.sampler.genome import FineTunePlan
from biotune_optuna.sampler.population import POPULATION_PREFIX, TrialRecord, rescore_round

EMPTY_PLAN_VALUE = 0.0  # the paper's fitness 1.0 (accuracy 0) for a plan that trains nothing


RESCORE_SEED_STRIDE = 1000  # a re-scoring run in generation g trains with seeds s + 1000 g


def trial_generation(trial: optuna.Trial) -> int:
    """The BioTune generation of a running trial (0 for other samplers)."""
    record = TrialRecord.from_attrs(trial.study._storage.get_trial_system_attrs(trial._trial_id))
    return record.generation if record else 0


def training_seeds(trial: optuna.Trial, seeds: Sequence[int]) -> list[int]:
    """The seeds a trial trains with: the study's, except for an elite's re-scoring run,
    whose seeds no earlier evaluation of that plan used."""
    shift = RESCORE_SEED_STRIDE * rescore_round(
        trial.study._storage.get_trial_system_attrs(trial._trial_id))
    return [seed + shift for seed in seeds]


def worst_member_value(trial: optuna.Trial) -> float | None:
    """The value of the worst member of the population this trial's generation breeds from
    (BioTune studies only; None in the initial generation, for other samplers, and when a
    member failed, since nothing is worse than a failure)."""
    storage = trial.study._storage
    record = TrialRecord.from_attrs(storage.get_trial_system_attrs(trial._trial_id))
    if record is None or record.generation == 0:
        return None
    members = storage.get_study_system_attrs(trial.study._study_id).get(
        f"{POPULATION_PREFIX}{record.generation}")
    if not members or any(m["fitness"] is None for m in members):
        return None
    worst = max(m["fitness"] for m in members)  # fitness is minimised
    return -worst if trial.study.direction == optuna.study.StudyDirection.MAXIMIZE else worst


def plan_attrs(plan: FineTunePlan, task: Task) -> dict[str, object]:
    """User attrs describing a plan, readable in optuna-dashboard."""
    sizes = {b.name: b.n_params for b in task.blocks}
    trainable = sum(sizes[b] for b in plan.trained_blocks)
    total = sum(sizes.values())
    return {**plan.as_dict(), keys.TRAINABLE_PARAMS: trainable,
            keys.TRAINABLE_FRACTION: round(trainable / total, 6)}


@dataclass
class FineTuneObjective:
    """Fine-tune the plan a trial's genome decodes to and return the mean validation metric.

    Args:
        task: Model, blocks, data and splits.
        config: Training settings.
        seeds: One fine-tuning run per seed (fresh head, data order); the value is the mean
            of the runs' best validation metric, as in the paper (three seeds there).
        n_folds: With more than one, generation g trains and validates on fold
            ``max(g - 1, 0) mod n_folds`` (the paper's rotation: the initial population and
            the first generation share fold 0).
        on_epoch: Progress callback ``(run index, epoch, value)``.
        train_head: Always train the last block, the new head (see ``genome.decode``).
        trainable_penalty: Subtracted from the value (and from each report, so pruners
            compare like with like) times the plan's trainable-parameter fraction: a
            scalarized trade of accuracy against the share of the network that is trained.
        should_stop: Ends the training at its next batch once true (a search's Ctrl-C).
        report_epochs: Report every epoch's value to the trial (a pruner needs them); else
            the learning curves are stored once, at the end, in the ``learning_curves``
            user attr, which costs one storage write instead of one per epoch.
        race_margin: Seed racing: after each seed run but the last, stop a trial whose mean
            so far is below the population's worst member (:func:`worst_member_value`) by
            more than this; it ends PRUNED with that mean as its last report. None: off.
    """

    task: Task
    config: TrainConfig
    seeds: Sequence[int] = (0,)
    n_folds: int = 1
    on_epoch: Callable[[int, int, float], None] | None = None
    train_head: bool = False
    trainable_penalty: float = 0.0
    should_stop: Callable[[], bool] | None = None
    report_epochs: bool = True
    race_margin: float | None = None

    def __call__(self, trial: optuna.Trial) -> float:
        names = self.task.block_names
        plan = genome.decode(genome.suggest_genome(trial, names), names, self.train_head)
        attrs = plan_attrs(plan, self.task)
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        penalty = self.trainable_penalty * attrs[keys.TRAINABLE_FRACTION]
        if plan.is_empty:
            trial.set_user_attr(keys.EMPTY_PLAN, True)
            return EMPTY_PLAN_VALUE
        task = self.task
        if self.n_folds > 1:
            fold = max(trial_generation(trial) - 1, 0) % self.n_folds
            trial.set_user_attr(keys.FOLD, fold)
            task = task.for_fold(fold, self.n_folds)
        start = time.perf_counter()
        bar = worst_member_value(trial) if self.race_margin is not None else None
        runs: list[RunResult] = []
        seeds = training_seeds(trial, self.seeds)
        if seeds != list(self.seeds):
            trial.set_user_attr(keys.RESCORE_SEEDS, seeds)
        for index, seed in enumerate(seeds):
            run = fine_tune(task, plan, self.config, seed,
                            report=self._reporter(trial, index, penalty),
                            on_epoch=self._epoch_callback(index),
                            should_stop=self.should_stop)
            if run.diverged:
                trial.set_user_attr(keys.FAILED_REASON, run.diverged)
                return math.nan  # Optuna fails the trial and the study goes on
            runs.append(run)
            mean = float(np.mean([r.value for r in runs])) - penalty
            if bar is not None and index < len(self.seeds) - 1 and mean < bar - self.race_margin:
                self._record(trial, runs, start, raced=True)
                trial.report(mean, step=len(self.seeds) * self.config.epochs)
                raise optuna.TrialPruned(f"raced out after {len(runs)} seed run(s): mean "
                                         f"{mean:.4f} below the population's worst {bar:.4f}")
        self._record(trial, runs, start)
        return float(np.mean([r.value for r in runs])) - penalty

    def _record(self, trial: optuna.Trial, runs: list[RunResult], start: float,
                raced: bool = False) -> None:
        """The runs' figures as user attrs (learning curves too when epochs were not
        reported)."""
        attrs = {keys.SECONDS: round(time.perf_counter() - start, 3),
                 keys.EPOCHS: [r.epochs_run for r in runs],
                 keys.VALUE_STD: float(np.std([r.value for r in runs])),
                 **{keys.validation_key(m): float(np.mean([r.val.get(m) for r in runs]))
                    for m in METRICS}}
        if not self.report_epochs:
            attrs[keys.LEARNING_CURVES] = [[round(v, 6) for v in r.history] for r in runs]
        if raced:
            attrs[keys.RACED] = len(runs)
        for key, value in attrs.items():
            trial.set_user_attr(key, value)

    def _reporter(self, trial: optuna.Trial, index: int, penalty: float):
        if not self.report_epochs:
            return None

        def report(value: float, epoch: int) -> None:
            trial.report(value - penalty, step=index * self.config.epochs + epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {epoch + 1} of seed run {index + 1}")
        return report

    def _epoch_callback(self, index: int):
        if self.on_epoch is None:
            return None
        return lambda epoch, value: self.on_epoch(index, epoch, value)
