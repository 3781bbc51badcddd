"""The Optuna objective: trial -> genome -> plan -> fine-tune (several seeds) -> value."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import optuna

from biotune_optuna import contents
from biotune_optuna.app.fidelity import FULL, Fidelity, training_at
from biotune_optuna.app.optuna_internals import study_key
from biotune_optuna.finetuning.cost import profile
from biotune_optuna.finetuning.task import Task
from biotune_optuna.finetuning.train import METRICS, RunResult, TrainConfig, fine_tune
from biotune_optuna.sampler import genome, trial_context
from biotune_optuna.sampler.plan import FineTunePlan, recipe_plan

EMPTY_PLAN_VALUE = 0.0  # the paper's fitness 1.0 (accuracy 0) for a plan that trains nothing


RESCORE_SEED_STRIDE = 1000  # a re-scoring run in generation g trains with seeds s + 1000 g


def training_seeds(rescore_round: int, seeds: Sequence[int]) -> list[int]:
    """The seeds a trial trains with: the study's, except for an elite's re-scoring run
    (``rescore_round`` > 0), whose seeds no earlier evaluation of that plan used."""
    shift = RESCORE_SEED_STRIDE * rescore_round
    return [seed + shift for seed in seeds]


def plan_attrs(plan: FineTunePlan, task: Task) -> dict[str, object]:
    """User attrs describing a plan, readable in optuna-dashboard."""
    sizes = {b.name: b.n_params for b in task.blocks}
    trainable = sum(sizes[b] for b in plan.trained_blocks)
    total = sum(sizes.values())
    return {**plan.as_dict(), contents.TRAINABLE_PARAMS: trainable,
            contents.TRAINABLE_FRACTION: round(trainable / total, 6)}


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
        report_epochs: Report the trial's running value after every epoch (a pruner needs
            it; without one it costs a storage write per epoch): at step k (epochs trained so
            far, all seed runs together) the best value of the first seed run so far, then
            the mean of the finished seed runs. The validation value of every epoch is stored
            once, at the end, in the ``learning_curves`` user attr.
        costs: Costs minimised beside the metric (names of ``cost_of``, such as
            ``train-gflops``): the trial then returns (metric, cost, ...), each cost known
            from the plan and the network before training, and also stored as a user attr.
            A study of several objectives cannot be pruned, so nothing is reported.
        low_fidelity: How a trial the sampler marks low-fidelity (a multi-fidelity BioTune
            search, :func:`biotune_optuna.sampler.fidelity_of`) trains: at most its epochs
            (the first epochs of a full run, on the same schedule) and its number of seeds.

    Every trial records what it cost (``epochs`` per seed run, ``image_epochs``,
    ``seconds``) and the fidelity it trained at, pruned and diverged trials included. A
    study that holds no configuration yet (one made in Python) gets one from the task,
    this objective, the study's sampler and pruner, so the command line can read it.
    """

    task: Task
    config: TrainConfig
    seeds: Sequence[int] = (0,)
    n_folds: int = 1
    on_epoch: Callable[[int, int, float], None] | None = None
    train_head: bool = False
    genome: str = genome.FULL  # the genome variant (genome.VARIANTS)
    trainable_penalty: float = 0.0
    should_stop: Callable[[], bool] | None = None
    report_epochs: bool = True
    low_fidelity: Fidelity | None = None
    costs: Sequence[str] = ()
    pricing: Pricing | None = None  # the task's network profiled already (else: here)
    _described: set = field(default_factory=set, init=False, repr=False)

    def __post_init__(self) -> None:
        self._pricing = (self.pricing or Pricing(self.task, self.config)) if self.costs else None

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        self._describe(trial.study)
        names = self.task.block_names
        plan = genome.decode(genome.suggest_genome(trial, names, self.genome), names,
                             self.train_head, self.genome)
        value = self._value(trial, plan)
        if self._pricing is None:
            return value
        costs = [self._pricing.cost(name, plan) for name in self.costs]
        for name, cost in zip(self.costs, costs):
            trial.set_user_attr(contents.cost_key(name), cost)
        return (value, *costs)

    def _describe(self, study: optuna.Study) -> None:
        """Once per study and process: its configuration when it has none (a study made in
        Python) and, with costs, its hypervolume reference."""
        if study_key(study) not in self._described:  # made in Python?
            from biotune_optuna.app.studies import config_of_objective, describe_study

            if contents.study_config(study) is None:
                describe_study(study, self.task, config_of_objective(study, self))
            if self._pricing is not None:
                full = recipe_plan("full", self.task.block_names)
                contents.set_reference(study, [1.0 / self.task.data.num_classes] + [
                    self._pricing.cost(name, full) for name in self.costs])
            self._described.add(study_key(study))

    def _value(self, trial: optuna.Trial, plan: FineTunePlan) -> float:
        """The plan's mean validation value (less the trainable penalty)."""
        attrs = plan_attrs(plan, self.task)
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        penalty = self.trainable_penalty * attrs[contents.TRAINABLE_FRACTION]
        if plan.is_empty:
            trial.set_user_attr(contents.EMPTY_PLAN, True)
            return EMPTY_PLAN_VALUE
        context = trial_context(trial)  # what the sampler decided for this trial
        task = self.task
        if self.n_folds > 1:
            fold = max(context.generation - 1, 0) % self.n_folds
            trial.set_user_attr(contents.FOLD, fold)
            task = task.for_fold(fold, self.n_folds)
        seeds = training_seeds(context.rescore_round, self.seeds)
        if seeds != list(self.seeds):
            trial.set_user_attr(contents.RESCORE_SEEDS, seeds)
        fidelity = context.fidelity if self.low_fidelity else FULL
        config, seeds = training_at(fidelity, self.config, seeds, self.low_fidelity)
        run = _Runs(trial, task, time.perf_counter(), fidelity,
                    self.report_epochs and not self.costs, penalty)
        for index, seed in enumerate(seeds):
            try:
                result = fine_tune(task, plan, config, seed, report=run.reporter(),
                                   on_epoch=run.epoch_callback(index, self.on_epoch),
                                   should_stop=self.should_stop)
            except optuna.TrialPruned:
                run.record()
                raise
            run.finished(result)
            if result.diverged:
                run.record()
                trial.set_user_attr(contents.FAILED_REASON, result.diverged)
                return math.nan  # Optuna fails the trial and the study goes on
        run.record()
        return run.value()


@dataclass(frozen=True)
class PlanCosts:
    """What a plan fixes before it trains: its costs (the metric only a run tells), for a
    sampler that can use them (``BioTuneSampler(known_values=...)``)."""

    pricing: Pricing
    costs: tuple[str, ...]
    block_names: tuple[str, ...]
    train_head: bool
    genome: str

    def __call__(self, params: dict[str, float]) -> list[float | None]:
        plan = genome.decode(params, list(self.block_names), self.train_head, self.genome)
        return [None, *(self.pricing.cost(name, plan) for name in self.costs)]


class Pricing:
    """What a plan costs on the task's network (``finetuning.cost``), by objective name; the
    network is profiled once."""

    def __init__(self, task: Task, config: TrainConfig) -> None:
        spec = task.model.input
        self.costs = profile(task.model.model, task.blocks, (spec.channels, spec.size, spec.size))
        self.config = config

    def cost(self, name: str, plan: FineTunePlan) -> float:
        if name == "train-gflops":
            return self.costs.training_gflops(plan)
        if name == "train-memory":
            return self.costs.memory_mb(plan, self.config.batch_size, self.config.optimizer)
        if name == "trainable-fraction":
            return sum(p for p, t in zip(self.costs.params, plan.trained) if t) / sum(
                self.costs.params)
        raise ValueError(f"unknown cost {name!r}")


class _Runs:
    """One trial's seed runs: its running value, the reports a pruner sees, and what it cost."""

    def __init__(self, trial: optuna.Trial, task: Task, start: float, fidelity: str,
                 report_epochs: bool, penalty: float) -> None:
        self.trial, self.start, self.fidelity = trial, start, fidelity
        self.train_images = len(task.splits.train)
        self.report_epochs, self.penalty = report_epochs, penalty
        self.runs: list[RunResult] = []
        self.current: list[float] = []  # the running seed run's validation values

    def value(self) -> float:
        """The mean of the finished runs' best values, else the first run's best so far."""
        values = [r.value for r in self.runs if not r.diverged] or [max(self.current)]
        return float(np.mean(values)) - self.penalty

    def epoch_callback(self, index: int, on_epoch: Callable | None):
        self.current = []

        def epoch(epoch: int, value: float) -> None:
            self.current.append(value)
            if on_epoch is not None:
                on_epoch(index, epoch, value)
        return epoch

    def reporter(self):
        if not self.report_epochs:
            return None

        def report(value: float, epoch: int) -> None:
            self.trial.report(self.value(), step=self.epochs_trained())
            if self.trial.should_prune():
                raise optuna.TrialPruned(f"pruned after {self.epochs_trained()} epochs")
        return report

    def finished(self, result: RunResult) -> None:
        self.runs.append(result)
        self.current = []

    def epochs_trained(self) -> int:
        return sum(r.epochs_run for r in self.runs) + len(self.current)

    def record(self) -> None:
        """The runs' figures and cost as user attrs (learning curves too when epochs were
        not reported)."""
        epochs = [r.epochs_run for r in self.runs] + ([len(self.current)] if self.current else [])
        attrs = {contents.SECONDS: round(time.perf_counter() - self.start, 3),
                 contents.EPOCHS: epochs, contents.IMAGE_EPOCHS: sum(epochs) * self.train_images,
                 contents.FIDELITY: self.fidelity}
        finished = [r for r in self.runs if r.val is not None]
        if finished:
            attrs[contents.VALUE_STD] = float(np.std([r.value for r in finished]))
            attrs |= {contents.validation_key(m): float(np.mean([r.val.get(m) for r in finished]))
                      for m in METRICS}
        curves = [r.history for r in self.runs] + ([self.current] if self.current else [])
        attrs[contents.LEARNING_CURVES] = [[round(v, 6) for v in c] for c in curves]
        for key, value in attrs.items():
            self.trial.set_user_attr(key, value)
