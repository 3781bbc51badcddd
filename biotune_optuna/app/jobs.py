"""The jobs behind the command line: run a search, report its status, retrain its best
plan, and the offline demo."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import optuna

from biotune_optuna import contents
from biotune_optuna.app.config import SAMPLER_LABELS, SearchConfig
from biotune_optuna.app.cores import CoreShare
from biotune_optuna.app.dashboard import publish
from biotune_optuna.app.export import handed_over
from biotune_optuna.app.files import writable_folder
from biotune_optuna.app.objective import FineTuneObjective, PlanCosts, Pricing
from biotune_optuna.app.progress import SearchProgress
from biotune_optuna.app.runner import Budget, StopRequests, run_search
from biotune_optuna.app.storage_urls import storage_file
from biotune_optuna.app.studies import config_of, describe_study, open_study, reports_epochs
from biotune_optuna.contents import trial_plan
from biotune_optuna.finetuning.baselines import baseline
from biotune_optuna.finetuning.build import build_task
from biotune_optuna.finetuning.device import resolve_device, use_threads
from biotune_optuna.finetuning.evaluation import (
    evaluate_plan,
    recipe_plans,
    results_table,
    save_checkpoint,
    tune_base_lr,
)
from biotune_optuna.finetuning.models import is_torchvision_model
from biotune_optuna.finetuning.names import BUILTIN_DATASETS, BUILTIN_MODELS
from biotune_optuna.finetuning.task import Task
from biotune_optuna.sampler.records import is_retry


def task_for(config: SearchConfig) -> Task:
    return build_task(config.model, config.dataset, weights=config.weights,
                      shots=config.shots, val_shots=config.val_shots,
                      split_seed=config.split_seed, data_root=config.data_root,
                      download=config.download, image_size=config.image_size,
                      max_test=config.max_test, workers=config.workers, head=config.head,
                      input_mean=config.input_mean, input_std=config.input_std,
                      activation_cache_mb=config.activation_cache_mb
                      if config.activation_cache else None)


def notices(config: SearchConfig, task: Task) -> list[str]:
    """What a search is about to do that the user may not mean (said, not refused)."""
    said = [*task.data.notes, *task.model.notes]
    if not task.model.input.declared:
        said.append(f"{config.model} declares no input format, so it gets "
                    f"{task.model.input.describe()}; if it expects another, declare "
                    "biotune_input on the model or give --image-size, --input-mean and "
                    "--input-std")
    if (config.model not in BUILTIN_MODELS and ":" not in config.model and
            not is_torchvision_model(config.model)):
        said.append(f"the study records model {config.model!r}, which only this Python "
                    "session can build: name a module:function instead so that train-best, "
                    "baseline and compare can rebuild it")
    if config.weights == "none":
        said.append(f"{config.model} starts from random weights (--weights none); name "
                    "weights to fine-tune a pre-trained network")
    if (config.sampler == "biotune" and config.n_trials is not None and
            config.n_trials <= config.population):
        first = config.layout.n_trials(1)
        said.append(f"--trials {config.n_trials} ends inside BioTune's initial population "
                    f"(--population {config.population}): that is random search; give at "
                    f"least {first} trials for one generation of evolution")
    if config.shots is not None and config.dataset not in BUILTIN_DATASETS:
        counts = np.bincount(task.data.labels, minlength=task.data.num_classes)
        if counts.min() > config.shots + (config.val_shots or config.shots):
            said.append(f"training on {config.shots} images per class of the "
                        f"{counts.min()}-{counts.max()} available (--shots); --shots all "
                        "trains on every image not kept for validation and testing")
    if config.folds > 1:
        per_fold = len(task.splits.fold(task.data.labels, 0, config.folds).train)
        said.append(f"--folds {config.folds}: each generation trains on one fold, "
                    f"{per_fold} of the {len(task.splits.train)} training images")
    return said


def search(config: SearchConfig, n_jobs: int = 1, quiet: bool = False, verbose: bool = False,
           task: Task | None = None) -> optuna.Study:
    """Run (or resume) the search the configuration describes, with progress bars. A given
    ``task`` (your own model, built in Python) names the model the study records."""
    resolve_device(config.device)  # a device that cannot be used is refused before any trial
    if task is not None and task.model.name != config.model:
        config = config.replace(model=task.model.name,
                                weights=task.options.get("weights", task.model.weights))
    task = task or task_for(config)
    pricing = Pricing(task, config.train_config()) if config.cost_objectives else None
    study = open_study(config, task.block_names,
                       known_values=plan_costs(config, task, pricing))
    describe_study(study, task, None)
    budget = budget_of(config)
    contents.set_budget(study, budget.trials, budget.epochs)
    for line in notices(config, task) + spent_notice(study, budget):
        print(f"biotune-optuna: note: {line}", file=sys.stderr, flush=True)
    if not quiet:
        print(f"study {config.study_name!r} in {config.storage_label}: {config.model} "
              f"({len(task.blocks)} blocks; input {task.model.input.describe()}) on "
              f"{task.data.name}, {task.splits.summary()}, "
              f"{config.sampler} sampler, {describe_budget(budget)}"
              + (f", multi-fidelity (low: {config.low_fidelity.epochs} epochs, 1 seed)"
                 if config.multi_fidelity else ""))
    progress = SearchProgress(study, budget, quiet=quiet, epochs=verbose, grace=config.grace)
    stops = StopRequests()
    objective = objective_for(config, task, pricing=pricing, on_epoch=progress.epoch,
                              should_stop=stops.training_should_stop)
    try:
        with CoreShare(n_jobs, config.threads) as share:
            run_search(study, share.before(objective), budget, n_jobs=n_jobs,
                       callbacks=[progress], timeout=config.timeout, on_wait=progress.waiting,
                       stops=stops)
    finally:
        progress.close()
    publish(study, config.storage_url)  # the note optuna-dashboard shows (secrets masked)
    return study


def objective_for(config: SearchConfig, task: Task, **hooks) -> FineTuneObjective:
    """The objective a search with this configuration trains (``hooks``: ``on_epoch``,
    ``should_stop``, and ``pricing`` when the network was profiled already)."""
    return FineTuneObjective(task, config.train_config(), tuple(config.train_seeds),
                             config.folds, train_head=config.train_head, genome=config.genome,
                             trainable_penalty=config.trainable_penalty,
                             report_epochs=reports_epochs(config),
                             low_fidelity=config.low_fidelity,
                             costs=tuple(config.cost_objectives), **hooks)


def plan_costs(config: SearchConfig, task: Task, pricing: Pricing | None) -> PlanCosts | None:
    """The costs a search's plans fix before they train (``pricing``: the task's network
    profiled), for BioTune's pre-selection; None without cost objectives or without
    pre-selection."""
    if pricing is None or config.sampler != "biotune" or config.surrogate_candidates == 1:
        return None
    return PlanCosts(pricing, tuple(config.cost_objectives), tuple(task.block_names),
                     config.train_head, config.genome)


def spent_notice(study: optuna.Study, budget: Budget) -> list[str]:
    """A resume whose budget the study has spent already runs nothing: say so."""
    if budget.has_room(study):
        return []
    slots = sum(1 for t in study.get_trials(deepcopy=False) if not is_retry(t))
    if budget.trials is not None and slots >= budget.trials:
        return [f"the study has {slots} trials already and --trials {budget.trials} counts "
                f"the study's total: nothing to run (give --trials above {slots} to run more)"]
    return [f"the study has spent its --compute-budget of {budget.epochs:,} epochs: nothing "
            "to run (raise it to run more)"]


def _take_machine(config: SearchConfig) -> None:
    """The device checked and ``--threads`` applied, for commands outside a search."""
    resolve_device(config.device)
    if config.threads:
        use_threads(config.threads)


def budget_of(config: SearchConfig) -> Budget:
    return Budget(config.n_trials, config.compute_budget)


def describe_budget(budget: Budget) -> str:
    parts = (([f"{budget.trials} trials"] if budget.trials is not None else []) +
        ([f"{budget.epochs:,} epochs of compute"] if budget.epochs is not None else []))
    return " or ".join(parts)


def select_plan(study: optuna.Study, task: Task, train, seeds: list[int], top_k: int,
                quiet: bool = False, trainable_penalty: float = 0.0,
                max_cost: float | None = None):
    """Retrain the ``top_k`` best trials' plans with ``seeds`` and keep the one with the best
    mean *validation* value (less the search's trainable penalty): one noisy search score no
    longer decides alone (the winner's curse of picking the maximum of many noisy
    estimates). Test metrics play no part. ``max_cost``: among the plans within that
    cost (a study of several objectives)."""
    candidates = [plan.trial for plan in handed_over(study, max_cost)[:top_k]]
    if not quiet:
        print(f"re-validating the top {len(candidates)} trials with seeds {seeds} ...",
              flush=True)
    scored = []
    for trial in candidates:
        plan = trial_plan(study, trial, task.block_names)
        evaluation = evaluate_plan(task, plan, train, seeds, f"trial {trial.number}",
                                   keep_first_model=True, quiet=quiet)
        validation = (sum(r.value for r in evaluation.runs) / len(evaluation.runs) -
            trainable_penalty * evaluation.trainable_fraction)
        scored.append((validation, -trial.number, trial, plan, evaluation))
    validation, _, trial, plan, evaluation = max(scored, key=lambda item: item[:2])
    if not quiet:
        print("  " + ", ".join(f"trial {t.number}: {v:.4f}" for v, _, t, _, _ in scored) +
              f" -> trial {trial.number}", flush=True)
    return trial, plan, evaluation


def train_best(study: optuna.Study, seeds: list[int], out: str | None = None,
               device: str | None = None, data_root: str | None = None, compare: bool = True,
               quiet: bool = False, task: Task | None = None, top_k: int = 5,
               storage_url: str | None = None, threads: int | None = None,
               max_cost: float | None = None) -> str:
    """Pick the best plan among the study's ``top_k`` plans by their mean validation value
    over ``seeds`` (retrained on the training split), test it, save the first seed's
    best-epoch weights (to ``out``, else beside the study's SQLite or journal file at
    ``storage_url``), and (with ``compare``) put full fine-tuning and linear probing beside
    it on the same seeds. ``max_cost``: the top plans within that cost (a study of several
    objectives)."""
    handed_over(study, max_cost)  # a study without a plan to hand over stops here
    config = config_of(study, device=device, data_root=data_root, threads=threads)
    path = Path(out) if out else _beside_study(study, storage_url or config.storage_url,
                                               "-best.pt")
    writable_folder(path.parent, "pass --out with a writable path")  # before the training
    _take_machine(config)
    task = task or task_for(config)
    train = config.train_config()
    trial, plan, result = select_plan(study, task, train, seeds, top_k, quiet,
                                      config.trainable_penalty, max_cost)
    searcher = SAMPLER_LABELS.get(config.sampler, config.sampler)
    result.name = f"{searcher} (trial {trial.number})"
    evaluations = [result]
    for name, recipe in (recipe_plans(task.block_names) if compare else {}).items():
        if not quiet:
            print(f"training {name} with seeds {seeds} ...", flush=True)
        evaluations.append(evaluate_plan(task, recipe, train, seeds, name, quiet=quiet))
    save_checkpoint(path, result, plan=plan.as_dict(), params=trial.params,
                    classes=list(task.data.classes), model=config.model, head=task.model.heads,
                    config=config.fingerprint(), test=result.as_dict())
    study.set_user_attr(contents.FINAL, [e.as_dict() for e in evaluations])
    return (results_table(evaluations) + f"\n{searcher}'s plan: the best of the top {top_k} "
            f"trials by mean validation over these seeds; checkpoint of seed {seeds[0]} "
            f"saved to {path}")


def _beside_study(study: optuna.Study, storage_url: str, suffix: str) -> Path:
    """``<study><suffix>`` beside a SQLite or journal file, else in ./studies/."""
    file = storage_file(storage_url)
    folder = file.parent if file else Path("studies")
    return folder / f"{contents.file_name(study.study_name)}{suffix}"


REVALIDATION_SEEDS = (100, 101, 102)  # fresh seeds to pick each search's plan by validation


def run_baselines(config: SearchConfig, methods: list[str], seeds: list[int],
                  alpha: float = 0.01, beta: float = 0.01, rank: int = 4,
                  task: Task | None = None, quiet: bool = False,
                  lr_grid: list[float] | None = None) -> list:
    """Each baseline on the search's task, training protocol and splits, same seeds. With
    ``lr_grid``, each method first gets the base learning rate of the grid with the best
    mean validation value over the re-validation seeds (never the tested ones)."""
    _take_machine(config)
    task = task or task_for(config)
    evaluations = []
    for name in methods:
        plan, method = baseline(name, task.block_names, alpha, beta, rank)
        train, label = config.train_config(), name
        if lr_grid:
            lr, scores = tune_base_lr(task, plan, train, lr_grid, REVALIDATION_SEEDS, method)
            train, label = replace(train, base_lr=lr), f"{name} (lr {lr:g})"
            if not quiet:
                print(f"{name}: validation by base lr " + ", ".join(
                    f"{r:g} {v:.4f}" for r, v in scores.items()) + f" -> {lr:g}", flush=True)
        if not quiet:
            print(f"training {label} with seeds {seeds} ...", flush=True)
        evaluations.append(evaluate_plan(task, plan, train, seeds, label, method=method,
                                         quiet=quiet))
    return evaluations
