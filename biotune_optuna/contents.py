"""What biotune_optuna writes into a study and reads back: the study's user attrs (readable in
optuna-dashboard) and the trials' user attrs, named once, with their readers. No other module
outside the sampler reads a study's or a trial's attrs; the sampler's own records are read
through :mod:`biotune_optuna.sampler.records`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import optuna

from biotune_optuna.sampler import genome, pareto
from biotune_optuna.sampler.plan import FROZEN_BLOCKS as FROZEN_BLOCKS
from biotune_optuna.sampler.plan import LR_MULTIPLIERS as LR_MULTIPLIERS  # FineTunePlan.as_dict
from biotune_optuna.sampler.plan import TRAINED_BLOCKS as TRAINED_BLOCKS
from biotune_optuna.sampler.records import FULL, LOW
from biotune_optuna.sampler.storage_io import study_attrs

CONFIG = "biotune_optuna:config"  # the search configuration (its fingerprint) and blocks
BLOCKS = "biotune_optuna:blocks"  # block -> modules and parameter count
INPUT = "biotune_optuna:input"  # the model's input format: channels, size, mean, std
BUDGET = "biotune_optuna:budget"  # trials the last search command asked for
COMPUTE_BUDGET = "biotune_optuna:compute_budget"  # epochs the last search command asked for
FINAL = "biotune_optuna:final"  # test results of train-best
DEMO = "biotune_optuna:demo"  # the demo's summary
# several objectives: the hypervolume's reference point (chance metric, full fine-tuning's costs)
REFERENCE = "biotune_optuna:reference"
BASE_LR = "biotune_optuna:base_lr"  # a bare-sampler study's base learning rate (record_model)

ARTIFACT_PREFIX = "artifacts:"  # Optuna's study system attrs of artifact metadata (plots)

# trial user attrs
TRAINABLE_PARAMS = "trainable_params"
TRAINABLE_FRACTION = "trainable_fraction"
FAILED_REASON = "failed_reason"  # why a trial failed (a diverged loss)
EMPTY_PLAN = "empty_plan"  # the genome trains no block: scored without training
FOLD = "fold"
SECONDS = "seconds"
EPOCHS = "epochs"
VALUE_STD = "value_std"
LEARNING_CURVES = "learning_curves"  # validation value per epoch of each seed run
RESCORE_SEEDS = "rescore_seeds"  # the fresh training seeds of an elite's re-scoring run
INTERRUPTED = "interrupted"  # failed by Ctrl-C: the next run retries it
WORKER = "worker"  # without a database's heartbeat: [host, pid, process start] of its worker
BEAT = "biotune_optuna:beat"  # a system attr: when the journal heartbeat last beat
IMAGE_EPOCHS = "image_epochs"  # the trial's compute: epochs trained x training images
FIDELITY = "fidelity"  # low or full: what the trial trained (multi-fidelity searches)


def file_name(name: str) -> str:
    """A study's name as one file name (the default storage, checkpoints, plots): path
    separators and other unsafe characters become '_', a leading '.' is dropped."""
    safe = "".join(c if c.isalnum() or c in "-_. " else "_" for c in name).lstrip(".")
    return safe or "_"


def validation_key(metric: str) -> str:
    """The trial user attr of the mean validation ``metric`` (before any penalty)."""
    return f"val_{metric}"


def trial_plan(study: optuna.Study, trial: optuna.trial.FrozenTrial,
               block_names: list[str]) -> genome.FineTunePlan:
    """The plan a trial of this study trained (decoded as the study's configuration says)."""
    return trial_plans(study, [trial], block_names)[0]


def trial_plans(study: optuna.Study, trials: Sequence[optuna.trial.FrozenTrial],
                names: list[str] | None = None) -> list[genome.FineTunePlan]:
    """The plans trials of this study trained, its configuration (and, without the block
    ``names``, its blocks) read once for all of them."""
    config = study_config(study) or {}
    names = block_names(study) if names is None else names
    return [genome.decode(t.params, names, bool(config.get("train_head", False)),
                          config.get("genome", genome.FULL)) for t in trials]


def block_names(study: optuna.Study) -> list[str]:
    """The study's blocks in network order (stored at creation, else from parameter names)."""
    stored = blocks(study)
    if stored:
        return list(stored)
    for trial in study.get_trials(deepcopy=False):
        genes = [n.removeprefix(genome.GENE_PREFIX) for n in trial.params
                 if n.startswith(genome.GENE_PREFIX)]
        if genes:
            return genes
    raise ValueError(f"study {study.study_name!r} has no BioTune genome parameters "
                     "(gene:<block>); it was not a fine-tuning search")


def plan_of(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> genome.FineTunePlan:
    """The plan a trial trained, from its parameters (a bare sampler's trials record no
    plan attrs)."""
    return trial_plans(study, [trial])[0]


def base_lr(study: optuna.Study) -> float | None:
    """The learning rate the plans' multipliers scale: the search's ``--lr``, or what
    ``record_model`` recorded for a study made with the bare sampler; None if neither."""
    return config(study).get("lr") or study.user_attrs.get(BASE_LR)


def study_config(study: optuna.Study) -> dict[str, Any] | None:
    """The stored configuration (None for a study biotune-optuna did not make)."""
    return study.user_attrs.get(CONFIG)


def config(study: optuna.Study) -> dict[str, Any]:
    """The stored configuration, empty for a study biotune-optuna did not make."""
    return dict(study_config(study) or {})


def stored_options(study: optuna.Study) -> dict[str, Any]:
    """The stored configuration as search options: without the block listing, in today's
    option names (:func:`biotune_optuna.app.config.with_legacy_options` renames older ones)."""
    options = config(study)
    options.pop("blocks", None)
    return options


def blocks(study: optuna.Study) -> dict[str, Any]:
    """Block -> its modules and parameter count, as stored by the search."""
    return dict(study.user_attrs.get(BLOCKS) or {})


def study_input(study: optuna.Study) -> dict[str, Any] | None:
    return study.user_attrs.get(INPUT)


def trainable_fraction(trial: optuna.trial.FrozenTrial) -> float | None:
    return trial.user_attrs.get(TRAINABLE_FRACTION)


def failed_reason(trial: optuna.trial.FrozenTrial) -> str | None:
    return trial.user_attrs.get(FAILED_REASON)


def interrupted(trial: optuna.trial.FrozenTrial) -> bool:
    """Failed by Ctrl-C (the next run retries it)."""
    return bool(trial.user_attrs.get(INTERRUPTED))


def worker(trial: optuna.trial.FrozenTrial) -> list | None:
    """[host, pid, process start] of the process running the trial (storages without a
    database's heartbeat record it)."""
    return trial.user_attrs.get(WORKER)


def beat(trial: optuna.trial.FrozenTrial) -> float | None:
    """When (the worker's clock) the trial's worker last beat on a journal (None: never);
    compared only with its earlier beats, never with another machine's clock."""
    return trial.system_attrs.get(BEAT)


def fidelity(trial: optuna.trial.FrozenTrial) -> str:
    """What the trial trained: LOW in a multi-fidelity search, else FULL."""
    return trial.user_attrs.get(FIDELITY, FULL)



def artifacts(study: optuna.Study) -> dict[str, dict]:
    """The metadata of the study's live artifacts (the plots optuna-dashboard shows), by
    system attr; deleted ones (stored as null) skipped."""
    found = {}
    for key, raw in study_attrs(study).items():
        meta = json.loads(raw) if key.startswith(ARTIFACT_PREFIX) and raw else None
        if meta:
            found[key] = meta
    return found


def describe(study: optuna.Study, config: dict[str, Any] | None, blocks: dict[str, Any],
             model_input: dict[str, Any]) -> None:
    """Write the study's configuration, blocks and input format, each unless it is there."""
    attrs = study.user_attrs
    for key, value in ((CONFIG, config), (BLOCKS, blocks), (INPUT, model_input)):
        if value is not None and key not in attrs:
            study.set_user_attr(key, value)


def set_base_lr(study: optuna.Study, lr: float) -> None:
    study.set_user_attr(BASE_LR, float(lr))


def set_budget(study: optuna.Study, trials: int | None, epochs: int | None) -> None:
    """The budget the last search command asked for (a resume without options keeps it)."""
    for key, value in ((BUDGET, trials), (COMPUTE_BUDGET, epochs)):  # one write per change
        if study.user_attrs.get(key) != value:
            study.set_user_attr(key, value)


def set_reference(study: optuna.Study, point: Sequence[float]) -> None:
    """The point a study's hypervolume is measured from, each objective as the study
    states it: the metric by chance and full fine-tuning's costs."""
    if study.user_attrs.get(REFERENCE) != list(point):
        study.set_user_attr(REFERENCE, list(point))


def hypervolume(study: optuna.Study, plans: Sequence[RankedPlan] | None = None,
                ) -> float | None:
    """The hypervolume of the study's front at the full fidelity (of ``plans`` when given),
    from its reference point; None for a study of one objective or without the point."""
    plans = ranked_plans(study) if plans is None else plans
    return hypervolume_of(study, [(p.value, *p.costs) for p in plans if p.fidelity == FULL])


def reference_point(study: optuna.Study) -> list[float] | None:
    """The study's hypervolume reference (chance metric, full fine-tuning's costs); None
    for a study of one objective or without one."""
    reference = study.user_attrs.get(REFERENCE)
    return None if reference is None or len(study.directions) < 2 else list(reference)


def hypervolume_of(study: optuna.Study, points: Sequence[Sequence[float]],
                   reference: Sequence[float] | None = None) -> float | None:
    """The hypervolume of ``points`` (objective values as the study states them) from the
    study's reference point (``reference``, when read already), as a share of the box
    between it and the ideal point (metric 1, every cost 0): 0 for nothing better than
    chance or than full fine-tuning's cost, 1 for a perfect plan that costs nothing. None
    for a study of one objective or without the point."""
    reference = reference_point(study) if reference is None else reference
    if reference is None:
        return None
    signs = _minimising_signs(study)
    ideal = [1.0] + [0.0] * (len(reference) - 1)
    box = float(np.prod([abs(r - i) for r, i in zip(reference, ideal)]))
    volume = pareto.hypervolume([[s * v for s, v in zip(signs, p)] for p in points],
                                [s * r for s, r in zip(signs, reference)])
    return volume / box if box > 0 else 0.0


def stored_budget(study: optuna.Study) -> tuple[int | None, int | None]:
    """(trials, epochs) the last search command asked for."""
    return study.user_attrs.get(BUDGET), study.user_attrs.get(COMPUTE_BUDGET)


@dataclass(frozen=True)
class Compute:
    """What trials cost: epochs trained (seed runs summed), epochs x training images, seed
    runs and training seconds."""

    epochs: int = 0
    image_epochs: int = 0
    seed_runs: int = 0
    seconds: float = 0.0

    def __add__(self, other: Compute) -> Compute:
        return Compute(self.epochs + other.epochs, self.image_epochs + other.image_epochs,
                       self.seed_runs + other.seed_runs, self.seconds + other.seconds)

    def describe(self) -> str:
        return (f"{self.epochs:,} epochs in {self.seed_runs:,} seed runs "
                f"({self.image_epochs:,} image-epochs), {self.seconds:,.0f} s of training")


def trial_compute(trial: optuna.trial.FrozenTrial) -> Compute:
    """What one trial cost (nothing for a trial still running or that recorded nothing)."""
    attrs = trial.user_attrs
    epochs = attrs.get(EPOCHS, [])
    return Compute(sum(epochs), int(attrs.get(IMAGE_EPOCHS, 0)), len(epochs),
                   float(attrs.get(SECONDS, 0.0)))


def compute_spent(trials) -> Compute:
    """What the trials cost together."""
    return sum((trial_compute(t) for t in trials), Compute())


@dataclass(frozen=True)
class RankedPlan:
    """A distinct plan of a study: its first trial at the fidelity it is ranked by, the mean
    value (the first objective) of its completed trials there, and how many they are. In a
    study of several objectives, ``costs`` holds the other objectives' means and ``front``
    the plan's Pareto front among the plans at its fidelity (0: not dominated)."""

    trial: optuna.trial.FrozenTrial
    value: float
    evaluations: int
    fidelity: str
    costs: tuple[float, ...] = ()
    front: int = 0


def describe_value(plan: RankedPlan) -> str:
    """``0.8123``, or ``0.8123 (mean of 3 evaluations)``, and the fidelity when low."""
    text = f"{plan.value:.4f}"
    if plan.evaluations > 1:
        text += f" (mean of {plan.evaluations} evaluations)"
    return text + (" at the low fidelity" if plan.fidelity == LOW else "")


def evaluations_by_plan(trials: Sequence[optuna.trial.FrozenTrial]
                        ) -> list[dict[str, list[optuna.trial.FrozenTrial]]]:
    """The completed trials grouped by distinct plan (the same parameters), each group by
    fidelity, trials in the given order."""
    plans: dict[tuple, dict[str, list[optuna.trial.FrozenTrial]]] = {}
    for t in trials:
        if t.state == optuna.trial.TrialState.COMPLETE and t.values is not None:
            plans.setdefault(plan_key(t), {}).setdefault(fidelity(t), []).append(t)
    return list(plans.values())


def plan_key(trial: optuna.trial.FrozenTrial) -> tuple:
    """What makes two trials the same plan: the same parameters."""
    return tuple(sorted((n, round(v, 9)) for n, v in trial.params.items()))


def ranked_plans(study: optuna.Study,
                 trials: Sequence[optuna.trial.FrozenTrial] | None = None) -> list[RankedPlan]:
    """The study's distinct plans as a search hands them over, best first: the plans
    evaluated at the full fidelity (every trial of a search without multi-fidelity), ranked
    by the mean of those evaluations (an elite's re-scoring runs and its first run
    together, so one lucky draw does not decide), then the plans only evaluated at the low
    fidelity, ranked likewise (a low-fidelity value trains fewer epochs and is not comparable
    with a full one). Ties: the older trial first. ``trials``: rank these instead of all
    the study's (e.g. those a search had finished at some compute).

    Several objectives: the plans of the Pareto front first (at each fidelity), each front
    ranked by the first objective (the metric) as above."""
    signs = _minimising_signs(study)
    ranked = []
    for by_fidelity in evaluations_by_plan(
            study.get_trials(deepcopy=False) if trials is None else trials):
        level = FULL if FULL in by_fidelity else LOW
        trials = by_fidelity[level]
        means = [sum(t.values[k] for t in trials) / len(trials) for k in range(len(signs))]
        ranked.append(RankedPlan(trials[0], means[0], len(trials), level, tuple(means[1:])))
    if len(signs) > 1:
        ranked = _with_fronts(ranked, signs)
    return sorted(ranked, key=lambda p: (p.fidelity != FULL, p.front, signs[0] * p.value,
                                         p.trial.number))


def within_cost(plans: Sequence[RankedPlan], max_cost: float | None) -> list[RankedPlan]:
    """The plans a search hands over under a cap on its first cost objective (the most
    accurate first, full-fidelity evaluations before low ones); all of ``plans`` without a
    cap."""
    if max_cost is None:
        return list(plans)
    kept = [p for p in plans if p.costs and p.costs[0] <= max_cost]
    return sorted(kept, key=lambda p: (p.fidelity != FULL, -p.value, p.trial.number))


def _minimising_signs(study: optuna.Study) -> list[float]:
    """Per objective, the factor that makes it minimised."""
    return [-1.0 if d == optuna.study.StudyDirection.MAXIMIZE else 1.0
            for d in study.directions]


def _with_fronts(plans: list[RankedPlan], signs: Sequence[float]) -> list[RankedPlan]:
    ranked = []
    for level in (FULL, LOW):
        at_level = [p for p in plans if p.fidelity == level]
        points = [[s * v for s, v in zip(signs, (p.value, *p.costs))] for p in at_level]
        for index, front in enumerate(pareto.fronts(points)):
            ranked += [replace(at_level[i], front=index) for i in front]
    return ranked


def cost_key(name: str) -> str:
    """The user attr of a trial's cost objective (``train-gflops``: ``cost:train-gflops``)."""
    return f"cost:{name}"


def trial_cost(trial: optuna.trial.FrozenTrial, name: str) -> float | None:
    """The trial's cost ``name`` (a cost objective's), None when it recorded none."""
    return trial.user_attrs.get(cost_key(name))
