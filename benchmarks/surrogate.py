"""Surrogate-assisted BioTune (children pre-selected among K candidates) against the paper's
BioTune (K=1), TPE and CMA-ES on the synthetic fine-tuning tasks, at equal trials (on these
objectives a trial is the unit of compute).

    .venv/bin/python -m benchmarks.surrogate --seeds 20                 # minutes
    .venv/bin/python -m benchmarks.surrogate --part mnist --seeds 5     # about an hour

synthetic: each search's hand-over is picked as ``train-best`` picks (its 5 best distinct plans
re-evaluated 3 times, best mean) and scored by its noise-free accuracy: mean ± standard
error over the seeds, and BioTune's paired differences against K=1 and against TPE on the
same task and seed. BioTune N=6, E=2 at 46 trials and N=10, E=3 at 140, no re-scoring.

mnist: the fashion -> mnist5k search that showed the GA's sample efficiency gap (N=10, E=3,
140 trials, one training seed, no re-scoring): how many trials each search needs before one
reaches a validation target, its best validation, and the test accuracy of its hand-over.

At equal compute on the four transfer tasks, with the same fidelity machinery for all:
``benchmarks.multifidelity --part transfer --methods sur``.
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import optuna

from benchmarks import results
from benchmarks.common import (
    OUT,
    RECHECK_TOP_K,
    RECHECKS,
    TRANSFERS,
    Retrainer,
    handed_over,
    prepare,
    protocol_config,
)
from benchmarks.results import mean_se, paired
from biotune_optuna import BioTuneSampler
from biotune_optuna.app.jobs import search
from biotune_optuna.app.studies import other_sampler
from biotune_optuna.sampler import genome
from biotune_optuna.sampler.synthetic import TASKS

METHODS = (("biotune K=1 (paper)", "biotune", 1), ("biotune K=3", "biotune", 3),
           ("biotune K=5", "biotune", 5), ("tpe", "tpe", None), ("cmaes", "cmaes", None))
BUDGETS = {46: (6, 2), 140: (10, 3)}
NOISE = 0.02


def search_truth(task, sampler: str, candidates: int | None, seed: int, trials: int) -> float:
    """Noise-free accuracy of the plan a search hands over."""
    if sampler == "biotune":
        population, elite = BUDGETS[trials]
        chosen = BioTuneSampler(population, elite, seed=seed, search_space=task.search_space,
                                ideal_value=1.0, surrogate_candidates=candidates)
    else:
        chosen = other_sampler(sampler, seed)
    study = optuna.create_study(direction="maximize", sampler=chosen)
    study.optimize(task, n_trials=trials)
    return task.accuracy(genome.decode(handed_over(task, study).params, task.blocks))


def trials_to_reach(study: optuna.Study, target: float) -> int | None:
    """Trials run until the first one whose value reaches ``target`` (None: never)."""
    for count, trial in enumerate(study.get_trials(deepcopy=False), start=1):
        if trial.value is not None and trial.value >= target:
            return count
    return None


def mnist_check(seeds: int, threads: int | None) -> str:
    """The fashion -> mnist5k protocol: trials to reach the validation target, per method."""
    prepare(threads)
    config = protocol_config(TRANSFERS["mnist"], argparse.Namespace(
        shots=10, patience=3, batch_size=96)).replace(
        population=10, elite=3, generations=10, rescore_elites=False, train_seeds=[0],
        storage=f"sqlite:///{OUT}/surrogate-mnist.db", threads=threads)
    retrainer = Retrainer(config, OUT / "surrogate-mnist-retrained.json")
    rows, reached = [], {}
    for label, sampler, candidates in CHECK_METHODS:
        counts, best, tests = [], [], []
        for seed in range(seeds):
            study = search(config.replace(
                study_name=f"{sampler}-k{candidates or 0}-s{seed}", sampler=sampler, seed=seed,
                surrogate_candidates=candidates or 1), quiet=True, task=retrainer.task)
            counts.append(trials_to_reach(study, TARGET))
            best.append(study.best_value)
            tests.append(retrainer.handover(study, float("inf")))
            print(label, seed, counts[-1], round(best[-1], 4), round(tests[-1], 4), flush=True)
        reached[label] = tests
        shown = [str(c) if c is not None else "never" for c in counts]
        # a search that never reaches the target counts as needing more than all its trials
        median = np.median([c if c is not None else np.inf for c in counts])
        rows.append([label, mean_se(best), mean_se(tests), ", ".join(shown),
                     "never" if np.isinf(median) else f"{median:g}"])
    header = ["method", "best validation", "test of the hand-over (seeds 0-2)",
              f"trials to reach {TARGET} validation, per seed", "median"]
    differences = [[f"{label} - tpe", paired(reached[label], reached["tpe"])]
                   for label, *_ in CHECK_METHODS if label != "tpe"]
    return (f"fashion -> mnist5k, `small`, 10 labels per class, BioTune N=10, E=3, 140 trials "
            f"per search, one training seed per trial, no re-scoring; {seeds} seeds. The "
            "hand-over is picked as train-best picks (top 5 re-validated with seeds 100-102) "
            "and tested with training seeds 0-2.\n\n" + results.table(header, rows)
            + "\n\nPaired differences of the hand-over's test balanced accuracy:\n\n"
            + results.table(["difference", "mean ± se"], differences))


CHECK_METHODS = (("biotune K=1 (paper)", "biotune", None), ("biotune K=3", "biotune", 3),
                 ("tpe", "tpe", None))
TARGET = 0.76


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("synthetic", "mnist"), default="synthetic")
    parser.add_argument("--seeds", type=int, default=None,
                        help="search seeds per task (default: 20 synthetic, 5 mnist)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads, mnist part (1 when two benchmarks share 2 cores)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    if args.part == "mnist":
        seeds = args.seeds or 5
        command = f".venv/bin/python -m benchmarks.surrogate --part mnist --seeds {seeds}"
        body = f"Command: `{command}` ({results.machine()}).\n\n" + mnist_check(seeds,
                                                                                 args.threads)
        results.publish("surrogate_mnist", "Surrogate-assisted BioTune on fashion -> mnist5k",
                        body, write=not args.no_write)
        return
    args.seeds = args.seeds or 20
    sections = []
    for trials in BUDGETS:
        found = {label: [] for label, *_ in METHODS}  # per (task, seed), in one order
        for name, base in TASKS.items():
            for seed in range(args.seeds):
                task = dataclasses.replace(base, noise=NOISE, seed=seed)
                for label, sampler, candidates in METHODS:
                    found[label].append(search_truth(task, sampler, candidates, seed, trials))
            print(trials, name, {k: round(float(np.mean(v[-args.seeds:])), 4)
                                 for k, v in found.items()}, flush=True)
        n = args.seeds
        per_task = {label: [values[i * n:(i + 1) * n] for i in range(len(TASKS))]
                    for label, values in found.items()}
        rows = [[label, *(mean_se(v) for v in per_task[label]), mean_se(found[label]),
                 paired(found[label], found[METHODS[0][0]]) if label != METHODS[0][0] else "",
                 paired(found[label], found["tpe"]) if label != "tpe" else ""]
                for label, *_ in METHODS]
        header = ["method", *TASKS, "all tasks", "minus K=1 (paired)", "minus TPE (paired)"]
        sections.append(f"### {trials} trials\n\n" + results.table(header, rows))
    command = f".venv/bin/python -m benchmarks.surrogate --seeds {args.seeds}"
    body = (f"Command: `{command}` ({results.machine()}).\n\nThe synthetic fine-tuning tasks "
            f"with evaluation noise σ = {NOISE}; noise-free test accuracy of each search's "
            f"hand-over (its {RECHECK_TOP_K} best plans re-evaluated {RECHECKS} times, best mean), "
            f"mean ± standard error over {args.seeds} seeds per task; paired differences over "
            "every (task, seed).\n\n" + "\n\n".join(sections))
    results.publish("surrogate_synthetic", "Surrogate-assisted BioTune on the synthetic "
                    "tasks", body, write=not args.no_write)


if __name__ == "__main__":
    main()
