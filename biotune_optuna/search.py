"""The jobs behind the command line: run a search, report its status, retrain its best
plan, and the offline demo."""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import optuna
import torch
from optuna.trial import TrialState

from biotune_optuna import _keys as keys
from biotune_optuna._population import RETRY_OF, Layout, Progress, with_records
from biotune_optuna.baselines import baseline
from biotune_optuna.config import ConfigError, SearchConfig, with_legacy_options
from biotune_optuna.dashboard import publish
from biotune_optuna.evaluation import evaluate_plan, recipe_plans, results_table, tune_base_lr
from biotune_optuna.objective import FineTuneObjective
from biotune_optuna.progress import SearchProgress
from biotune_optuna.study import open_study, run_search, trial_plan
from biotune_optuna.task import Task, build_task


def task_for(config: SearchConfig) -> Task:
    return build_task(config.model, config.dataset, config.weights, config.shots,
                      config.val_shots, config.split_seed, config.data_root, config.download,
                      config.image_size, config.max_test, workers=config.workers)


def describe_blocks(task: Task) -> dict[str, dict]:
    return {b.name: {"modules": list(b.modules), "n_params": b.n_params,
                     **({"params": list(b.params)} if not b.modules else {})}
            for b in task.blocks}


def search(config: SearchConfig, n_jobs: int = 1, quiet: bool = False, verbose: bool = False,
           task: Task | None = None) -> optuna.Study:
    """Run (or resume) the search the configuration describes, with progress bars."""
    task = task or task_for(config)
    study = open_study(config, task.block_names)
    if keys.BLOCKS not in study.user_attrs:
        study.set_user_attr(keys.BLOCKS, describe_blocks(task))
    study.set_user_attr(keys.BUDGET, config.n_trials)
    if not quiet:
        print(f"study {config.study_name!r} in {config.storage_label}: {config.model} "
              f"({len(task.blocks)} blocks) on {task.data.name}, {task.splits.summary()}, "
              f"{config.sampler} sampler, {config.n_trials} trials")
    progress = SearchProgress(study, config.n_trials, quiet=quiet, epochs=verbose)
    objective = FineTuneObjective(task, config.train_config(), tuple(config.train_seeds),
                                  config.folds, on_epoch=progress.epoch,
                                  train_head=config.train_head,
                                  trainable_penalty=config.trainable_penalty)
    try:
        run_search(study, objective, config.n_trials, n_jobs=n_jobs, callbacks=[progress],
                   timeout=config.timeout, on_wait=progress.waiting)
    finally:
        progress.close()
    publish(study, config.storage_url)  # the note optuna-dashboard shows (secrets masked)
    return study


def status_report(study: optuna.Study) -> str:
    """Trials by state, generation progress, best so far, elapsed and remaining time."""
    trials = study.get_trials(deepcopy=False)
    config = study.user_attrs.get(keys.CONFIG) or {}
    states = Counter(t.state.name for t in trials)
    lines = [f"study {study.study_name}: {len(trials)} trials (" +
             ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items())) + ")"]
    if config:
        lines.append(f"  {config.get('sampler')} sampler, {config.get('model')} on "
                     f"{config.get('dataset')}, seeds {config.get('train_seeds')}")
    slots = [t for t in trials if RETRY_OF not in t.system_attrs]
    if config.get("sampler") == "biotune":
        progress = Progress.of(with_records(trials))
        size = Layout(config["population"], config["elite"]).generation_size(progress.generation)
        lines.append(f"  generation {progress.generation}: {progress.finished()} of {size} "
                     "trials finished")
    try:
        best = study.best_trial
        lines.append(f"  best so far: trial {best.number}, value {best.value:.4f}, trains "
                     f"{', '.join(best.user_attrs.get('trained_blocks', [])) or '-'}")
    except ValueError:
        lines.append("  best so far: none completed yet")
    starts = [t.datetime_start for t in trials if t.datetime_start]
    durations = [(t.datetime_complete - t.datetime_start).total_seconds() for t in trials
                 if t.state == TrialState.COMPLETE and t.datetime_complete and t.datetime_start]
    if starts:
        ends = [t.datetime_complete for t in trials if t.datetime_complete] or starts
        elapsed = (max(ends) - min(starts)).total_seconds()
        lines.append(f"  elapsed: {_duration(elapsed)} (first start to last finish)")
    budget = study.user_attrs.get(keys.BUDGET)
    if durations and budget:
        left = max(budget - len(slots), 0) + states.get("RUNNING", 0)
        workers = max(states.get("RUNNING", 0), 1)
        mean = sum(durations) / len(durations)
        lines.append(f"  remaining: {left} of {budget} trials, about "
                     f"{_duration(left * mean / workers)} at {mean:.1f} s per trial "
                     f"and {workers} worker(s)")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def config_of(study: optuna.Study, **runtime) -> SearchConfig:
    """The study's stored configuration with run-time options (device, data root)."""
    stored = dict(study.user_attrs.get(keys.CONFIG) or {})
    stored.pop("blocks", None)
    if not stored:
        raise ConfigError(f"study {study.study_name!r} was not created by biotune-optuna; "
                          "its configuration is unknown")
    return SearchConfig(study_name=study.study_name, **with_legacy_options(stored),
                        **{k: v for k, v in runtime.items() if v is not None})


def top_trials(study: optuna.Study, k: int) -> list[optuna.trial.FrozenTrial]:
    """The ``k`` best completed trials with distinct parameters, best first."""
    sign = -1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
    complete = sorted((t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                       if t.value is not None), key=lambda t: (sign * t.value, t.number))
    chosen, seen = [], set()
    for t in complete:
        key = tuple(sorted((n, round(v, 9)) for n, v in t.params.items()))
        if key not in seen:
            seen.add(key)
            chosen.append(t)
        if len(chosen) == k:
            break
    return chosen


def select_plan(study: optuna.Study, task: Task, train, seeds: list[int], top_k: int,
                quiet: bool = False, trainable_penalty: float = 0.0):
    """Retrain the ``top_k`` best trials' plans with ``seeds`` and keep the one with the best
    mean *validation* value (less the search's trainable penalty): one noisy search score no
    longer decides alone (the winner's curse of picking the maximum of many noisy
    estimates). Test metrics play no part."""
    candidates = top_trials(study, top_k)
    if not candidates:
        raise ConfigError(f"study {study.study_name!r} has no completed trial yet; run "
                          "biotune-optuna search first")
    if not quiet:
        print(f"re-validating the top {len(candidates)} trials with seeds {seeds} ...",
              flush=True)
    scored = []
    for trial in candidates:
        plan = trial_plan(study, trial, task.block_names)
        evaluation = evaluate_plan(task, plan, train, seeds, f"trial {trial.number}",
                                   keep_first_model=True)
        validation = sum(r.value for r in evaluation.runs) / len(evaluation.runs) - \
            trainable_penalty * evaluation.trainable_fraction
        scored.append((validation, -trial.number, trial, plan, evaluation))
    validation, _, trial, plan, evaluation = max(scored, key=lambda item: item[:2])
    if not quiet:
        print("  " + ", ".join(f"trial {t.number}: {v:.4f}" for v, _, t, _, _ in scored) +
              f" -> trial {trial.number}", flush=True)
    return trial, plan, evaluation


def train_best(study: optuna.Study, seeds: list[int], out: str | None = None,
               device: str | None = None, data_root: str | None = None, compare: bool = True,
               quiet: bool = False, task: Task | None = None, top_k: int = 5) -> str:
    """Pick the best plan among the study's ``top_k`` trials by their mean validation value
    over ``seeds`` (retrained on the training split), test it, save the first seed's
    best-epoch weights, and (with ``compare``) put full fine-tuning and linear probing
    beside it on the same seeds."""
    config = config_of(study, device=device, data_root=data_root)
    task = task or task_for(config)
    train = config.train_config()
    trial, plan, result = select_plan(study, task, train, seeds, top_k, quiet,
                                      config.trainable_penalty)
    result.name = f"BioTune (trial {trial.number})"
    evaluations = [result]
    for name, recipe in (recipe_plans(task.block_names) if compare else {}).items():
        if not quiet:
            print(f"training {name} with seeds {seeds} ...", flush=True)
        evaluations.append(evaluate_plan(task, recipe, train, seeds, name))
    path = Path(out) if out else _beside_study(study, "-best.pt")
    torch.save({"state_dict": result.runs[0].model.state_dict(), "plan": plan.as_dict(),
                "params": trial.params, "config": config.fingerprint(),
                "test": result.as_dict()}, path)
    study.set_user_attr(keys.FINAL, [e.as_dict() for e in evaluations])
    return (results_table(evaluations) + f"\nBioTune's plan: the best of the top {top_k} "
            f"trials by mean validation over these seeds; checkpoint of seed {seeds[0]} "
            f"saved to {path}")


def _beside_study(study: optuna.Study, suffix: str) -> Path:
    folder = Path("studies")
    folder.mkdir(exist_ok=True)
    return folder / f"{study.study_name}{suffix}"


DEMO = dict(study_name="demo", model="small", weights="mnist5k", dataset="digits", shots=10,
            population=10, elite=3, generations=10, train_seeds=[0, 1, 2], epochs=30,
            patience=3, seed=0)
QUICK = dict(DEMO, study_name="demo-quick", population=6, elite=2, generations=4,
             train_seeds=[0, 1], epochs=20)
FINAL_SEEDS = {"demo": [100, 101, 102, 103, 104], "demo-quick": [100, 101, 102]}


def demo(quick: bool = False, storage: str | None = None, quiet: bool = False,
         verbose: bool = False) -> str:
    """The offline demo: search, then the best plan against full fine-tuning and linear
    probing on the test split, same seeds. Running it again resumes the same study."""
    options = dict(QUICK if quick else DEMO)
    config = SearchConfig(**options, storage=storage)
    start = time.perf_counter()
    task = task_for(config)  # pretrains the small CNN on MNIST-5k once (cached)
    study = search(config, quiet=quiet, verbose=verbose, task=task)
    seeds = FINAL_SEEDS[config.study_name]
    table = train_best(study, seeds, compare=True, quiet=quiet, task=task)
    elapsed = time.perf_counter() - start
    summary = {"trials": len(study.trials), "seconds": round(elapsed, 1)}
    study.set_user_attr(keys.DEMO, summary)
    return (f"\n{config.model} pretrained on MNIST-5k -> digits, {config.shots} labels per "
            f"class; BioTune search of {config.n_trials} trials in {config.storage_label}\n\n"
            f"{table}\n\ntotal time {elapsed:.0f} s; `biotune-optuna status --storage "
            f"{config.storage_label}` and `biotune-optuna dashboard --storage "
            f"{config.storage_label}` inspect it\n" + json.dumps(summary))


REVALIDATION_SEEDS = (100, 101, 102)  # fresh seeds to pick each search's plan by validation


def run_baselines(config: SearchConfig, methods: list[str], seeds: list[int],
                  alpha: float = 0.01, beta: float = 0.01, rank: int = 4,
                  task: Task | None = None, quiet: bool = False,
                  lr_grid: list[float] | None = None) -> list:
    """Each baseline on the search's task, training protocol and splits, same seeds. With
    ``lr_grid``, each method first gets the base learning rate of the grid with the best
    mean validation value over the re-validation seeds (never the tested ones)."""
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
        evaluations.append(evaluate_plan(task, plan, train, seeds, label, method=method))
    return evaluations


def compare_samplers(config: SearchConfig, samplers: list[str], n_seeds: int,
                     target: float | None = None, out_dir: str = "plots",
                     quiet: bool = False) -> str:
    """One study per sampler and seed in one storage at equal budget: best validation
    value, test accuracy of each study's plan (picked as train-best does: the best of its
    top 5 trials re-validated with fresh seeds), trials to reach ``target`` (default: the
    lowest best value, which every study reached), and a convergence plot."""
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np

    from biotune_optuna.analysis import best_so_far, plot_convergence

    task = task_for(config)
    studies: dict[str, list[optuna.Study]] = {}
    for sampler in samplers:
        for seed in range(n_seeds):
            name = f"{config.study_name}-{sampler}-s{seed}"
            if not quiet:
                print(f"{name}: {config.n_trials} trials", flush=True)
            study = search(config.replace(study_name=name, sampler=sampler, seed=seed,
                                          storage=config.storage_url),
                           quiet=quiet, task=task)
            studies.setdefault(sampler, []).append(study)
    target = target if target is not None else min(
        s.best_value for group in studies.values() for s in group)
    rows = []
    for sampler, group in studies.items():
        best = np.array([s.best_value for s in group])
        tests = []
        for study in group:
            _, plan, _ = select_plan(study, task, config.train_config(),
                                     list(REVALIDATION_SEEDS), top_k=5, quiet=True,
                                     trainable_penalty=config.trainable_penalty)
            evaluation = evaluate_plan(task, plan, config.train_config(),
                                       config.train_seeds, study.study_name)
            tests.append(evaluation.mean())
        reach = [int(np.argmax(best_so_far(s) >= target)) + 1
                 if np.nanmax(best_so_far(s)) >= target else None for s in group]
        reached = [r for r in reach if r is not None]
        rows.append((sampler, best, np.array(tests), reached, len(reach)))
    figure = plot_convergence(studies, title=f"{config.study_name}: samplers at "
                              f"{config.n_trials} trials")
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    plot = Path(out_dir) / f"{config.study_name}_convergence.png"
    figure.savefig(plot)
    header = (f"{'sampler':<8} {'best validation':>17} {'test (retrained best)':>22} "
              f"{'trials to reach ' + format(target, '.4f'):>24}")
    lines = [header, "-" * len(header)]
    for sampler, best, tests, reached, total in rows:
        trials = f"median {int(np.median(reached))} ({len(reached)}/{total} reach)" \
            if reached else f"never (0/{total})"
        lines.append(f"{sampler:<8} {best.mean():>8.4f} ± {best.std():.4f} "
                     f"{tests.mean():>12.4f} ± {tests.std():.4f} {trials:>24}")
    lines.append(f"({n_seeds} seeds per sampler, {config.n_trials} trials each, in "
                 f"{config.storage_label}; convergence plot {plot})")
    return "\n".join(lines)
