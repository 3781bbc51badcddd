"""What a BioTune search costs before and after the cost work (activation cache, learning
curves stored once, a core share per process), on the paper's protocol, in one run; and on a
real backbone, the paper's protocol against multi-fidelity BioTune at a third of its compute.

    .venv/bin/python -m benchmarks.search_cost                  # both tasks, rewrites RESULTS.md
    .venv/bin/python -m benchmarks.search_cost --tasks small --no-write
    .venv/bin/python -m benchmarks.search_cost --real lite0    # hours; its own section

The protocol is the paper's: N=10, E=3, 10 generations (140 trials), 3 training seeds per
trial, at most 30 epochs with patience 3. "before" trains every run from the images, runs
every seed of every trial and reports every epoch to storage; "now" is the default. Both use
the same sampler seed, splits and SQLite storage. Each search's plan is then chosen as
``train-best`` does (top 5 trials re-validated with seeds 100-102) and retrained and tested
with seeds 0-4. A last table times a fixed number of trials with one worker process and with
two on this machine.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time

import numpy as np
import optuna

from benchmarks import results
from benchmarks.common import COST_PROTOCOL, COST_TASKS, RECORDS, recorded_storage, resnet_source
from biotune_optuna import contents
from biotune_optuna.app.config import SearchConfig
from biotune_optuna.app.cores import CoreShare, cores
from biotune_optuna.app.jobs import REVALIDATION_SEEDS, search, select_plan, task_for
from biotune_optuna.app.objective import FineTuneObjective
from biotune_optuna.app.runner import run_search
from biotune_optuna.app.studies import open_study
from biotune_optuna.finetuning.build import build_task
from biotune_optuna.finetuning.evaluation import evaluate_plan
from biotune_optuna.finetuning.names import WHEEL_WEIGHTS

TEST_SEEDS = (0, 1, 2, 3, 4)
# real backbones: ImageNet weights, a real target (the demo's)
REAL = {"lite0": dict(model="timm:tf_efficientnet_lite0", weights=WHEEL_WEIGHTS,
                      dataset="emoji", download=True)}


def run_variant(name: str, options: dict, variant: str, storage: str) -> dict:
    now = variant == "now"
    config = SearchConfig(study_name=f"{name}-{variant}", storage=storage,
                          **{**COST_PROTOCOL, **options}, activation_cache=now,
                          multi_fidelity=False)
    task = build_task(config.model, config.dataset, weights=config.weights, shots=config.shots,
                      split_seed=config.split_seed, image_size=config.image_size,
                      activation_cache_mb=config.activation_cache_mb if now else None)
    study = open_study(config, task.block_names)
    objective = FineTuneObjective(task, config.train_config(), tuple(config.train_seeds),
                                  train_head=config.train_head, report_epochs=not now)
    written = _time_storage_writes()
    start = time.perf_counter()
    with CoreShare(1, None if now else cores()) as share:
        run_search(study, share.before(objective), config.n_trials)
    seconds = time.perf_counter() - start
    trials = study.get_trials(deepcopy=False)
    spent = contents.compute_spent(trials)
    _, plan, _ = select_plan(study, task, config.train_config(), list(REVALIDATION_SEEDS),
                             top_k=5, quiet=True)
    test = evaluate_plan(task, plan, config.train_config(), TEST_SEEDS, variant)
    scores = np.array([r.test.balanced_accuracy for r in test.runs])
    cache = task.activation_cache
    return {"seconds": seconds, "writes": written(), "trials": len(trials),
            "seed runs": spent.seed_runs, "epochs": spent.epochs,
            "cache hits": f"{cache.hits / max(cache.hits + cache.misses, 1):.0%}" if cache
            else "-", "test": scores.mean(), "se": scores.std(ddof=1) / np.sqrt(len(scores)),
            "plan": ", ".join(plan.trained_blocks)}


def _time_storage_writes():
    """Seconds spent in trial.report and trial.set_user_attr from now on (read by the call)."""
    spent = [0.0]
    originals = {name: getattr(optuna.Trial, name) for name in ("report", "set_user_attr")}

    def timed(method):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - start
        return wrapper

    for name, method in originals.items():
        setattr(optuna.Trial, name, timed(method))

    def read() -> float:
        for name, method in originals.items():
            setattr(optuna.Trial, name, method)
        return spent[0]
    return read


def cost_table(name: str, options: dict, folder: str) -> str:
    rows, runs = [], {}
    for variant in ("before", "now"):
        runs[variant] = run_variant(name, options, variant, f"sqlite:///{folder}/{name}.db")
        r = runs[variant]
        rows.append([variant, f"{r['seconds']:.0f}", f"{100 * r['writes'] / r['seconds']:.1f}%",
                     str(r["seed runs"]), str(r["epochs"]), r["cache hits"],
                     f"{r['test']:.4f} ± {r['se']:.4f}", r["plan"]])
        print(" | ".join(rows[-1]), flush=True)
    ratio = runs["before"]["seconds"] / runs["now"]["seconds"]
    header = ["", "search seconds", "storage writes", "seed runs", "epochs", "cache hits",
              "test balanced acc (5 seeds, ± se)", "chosen plan trains"]
    return (f"### {name}\n\n{results.table(header, rows)}\n\nSearch time before / now: "
            f"**{ratio:.2f}x**.")


def protocol_against_multifidelity(name: str) -> str:
    """The paper's protocol, then multi-fidelity BioTune (elites re-scored) at a third of the
    epochs it trained; each hands over as train-best picks and is tested with seeds 0-4.
    The studies are kept in the committed benchmarks/records (longer than a session: a run
    on a fresh clone goes on from the last trial)."""
    paper = SearchConfig(study_name=f"{name}-paper",
                         storage=recorded_storage(f"cost-{name}-paper"),
                         **{**COST_PROTOCOL, **REAL[name]}, multi_fidelity=False)
    task = task_for(paper)
    train = paper.train_config()
    rows, budget = [], None
    for label, config in (("the paper's protocol", paper),
                          ("multi-fidelity BioTune at a third", None)):
        if config is None:
            config = paper.replace(study_name=f"{name}-mf", multi_fidelity=True,
                                   storage=recorded_storage(f"cost-{name}-mf"),
                                   rescore_elites=True, trials=None,
                                   compute_budget=max(budget // 3, 1))
        study = search(config, quiet=True, task=task)
        spent = contents.compute_spent(study.get_trials(deepcopy=False))
        budget = budget or spent.epochs
        _, plan, _ = select_plan(study, task, train, list(REVALIDATION_SEEDS), top_k=5,
                                 quiet=True)
        test = evaluate_plan(task, plan, train, TEST_SEEDS, label)
        scores = np.array([r.test.balanced_accuracy for r in test.runs])
        rows.append([label, str(len(study.trials)), str(spent.epochs),
                     f"{spent.seconds / 60:.0f}", f"{spent.seconds / len(study.trials):.1f}",
                     f"{scores.mean():.4f} ± {scores.std(ddof=1) / np.sqrt(len(scores)):.4f}",
                     ", ".join(plan.trained_blocks)])
        print(" | ".join(rows[-1]), flush=True)
    header = ["search", "trials", "epochs", "training minutes", "seconds per trial",
              "test balanced acc (5 seeds, ± se)", "chosen plan trains"]
    return (f"### {name}: {paper.model} ({paper.weights}, {task.model.input.size} px) on "
            f"{paper.dataset}\n\n{task.splits.summary()} images.\n\n"
            + results.table(header, rows))


WORKER = [sys.executable, "-m", "biotune_optuna.cli", "search", "--model", "small",
          "--dataset", "digits", "--study-name", "w", "--population", "6", "--elite", "2",
          "--epochs", "10", "--train-seeds", "0,1,2", "--trials", "48", "-q",
          "--no-multi-fidelity"]


def workers_table(folder: str) -> str:
    rows, alone = [], 0.0
    for label, count, extra in (("1 process", 1, []), ("2 processes", 2, []),
                                ("2 processes, each with every core", 2,
                                 ["--threads", str(cores())])):
        storage = f"sqlite:///{folder}/workers-{count}-{len(extra)}.db"
        start = time.perf_counter()
        processes = [subprocess.Popen([*WORKER, "--storage", storage, *extra],
                                      stdout=subprocess.DEVNULL) for _ in range(count)]
        if any(p.wait() for p in processes):
            raise SystemExit(f"a worker failed ({label})")
        seconds = time.perf_counter() - start
        alone = alone if rows else seconds
        rows.append([label, f"{seconds:.0f}", f"{seconds / alone:.2f}"])
        print(" | ".join(rows[-1]), flush=True)
    return ("48 trials of the small task (N=6, E=2, 3 seeds, 10 epochs, the full protocol) "
            "in one new SQLite study, wall time from the first start to the last exit (each "
            "process imports torch and builds the task: a fixed cost of a few seconds each):\n\n"
            + results.table(["workers", "seconds", "/ 1 process"], rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="small,resnet18", help="comma-separated: "
                        + ", ".join(COST_TASKS) + ", or none")
    parser.add_argument("--workers", action=argparse.BooleanOptionalAction, default=True,
                        help="also time worker processes on one machine (own section)")
    parser.add_argument("--real", choices=sorted(REAL), help="only the real backbone's "
                        "protocol against multi-fidelity BioTune (own section)")
    parser.add_argument("--no-write", action="store_true", help="print, do not edit RESULTS.md")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    if args.real:
        RECORDS.mkdir(exist_ok=True)
        body = (f"Command: `.venv/bin/python -m benchmarks.search_cost --real {args.real}` "
                f"({results.machine()}).\n\nThe paper's protocol (N=10, E=3, 10 generations "
                "= 140 trials, 3 training seeds each, at most 30 epochs, patience 3, no "
                "re-scoring) against multi-fidelity BioTune (elites re-scored) given a third "
                "of the epochs the paper's search trained, one search each (seed 0), on the "
                "demo's task with 10 labels per class. Each plan is picked as train-best does "
                "(top 5 re-validated with seeds 100-102) and tested with seeds 0-4. Training "
                "minutes: the trials' own time, with the core share of one process.\n\n"
                + protocol_against_multifidelity(args.real) + "\n")
        results.publish(f"search_cost_{args.real}", "What a search costs on a real backbone",
                        body, write=not args.no_write)
        return
    sections = []
    tasks = [] if args.tasks == "none" else args.tasks.split(",")
    with tempfile.TemporaryDirectory() as folder:
        if args.workers:
            command = ".venv/bin/python -m benchmarks.search_cost --tasks none"
            results.publish("search_workers", "Worker processes on one machine",
                            f"Command: `{command}` ({results.machine()}).\n\n"
                            + workers_table(folder) + "\n", write=not args.no_write)
        for name in tasks:
            options = dict(COST_TASKS[name])
            if name == "resnet18":
                options["weights"] = resnet_source()
            sections.append(cost_table(name, options, folder))
    if not tasks:
        return
    body = (f"Command: `.venv/bin/python -m benchmarks.search_cost --tasks {args.tasks}` "
            f"({results.machine()}).\n\nThe paper's protocol (N=10, E=3, 10 generations = 140 "
            "trials, 3 training seeds each, at most 30 epochs, patience 3) on mnist5k -> "
            "digits with 10 labels per class; `small` is the built-in CNN pretrained on "
            "mnist5k, `resnet18` a torchvision ResNet-18 at 32x32 pretrained here on mnist5k. "
            "before: no activation cache, every epoch reported to SQLite, every core for the "
            "one process; now: the activation cache, learning curves stored once, the core "
            "share (every trial at the full protocol in both). Storage writes: the share of "
            "the search time spent in trial.report and trial.set_user_attr. The chosen plan is "
            "picked as train-best does and tested with seeds 0-4.\n\n"
            + "\n\n".join(sections) + "\n")
    results.publish("search_cost", "What a search costs", body, write=not args.no_write)


if __name__ == "__main__":
    main()
