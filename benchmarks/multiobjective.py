"""Accuracy against training cost: the hypervolume of the front each search finds, at equal
compute, for BioTune, NSGA-II, TPE, GP and random search.

    .venv/bin/python -m benchmarks.multiobjective --synthetic     # minutes; RESULTS.md

Synthetic tasks (``sampler/synthetic.py``, ``COST_AWARE``): each trial returns the task's
accuracy and the plan's training FLOPs as a fraction of full fine-tuning's. Compute is what
the trials cost, so a search that evaluates cheap plans buys more of them: every search runs
until it has spent what BioTune spent in its 140 trials (N=10, E=3, 10 generations), in
units of one full fine-tuning, or has run twice as many trials. Hypervolume: of the points
(1 - accuracy, cost) below the reference (1 - chance accuracy, full fine-tuning's cost).
"""

from __future__ import annotations

import argparse
import os

# one BLAS thread, set before NumPy loads: the surrogates' small solves slowed 10x when
# OpenBLAS threads fought the other processes on this machine for its two cores
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import optuna

from benchmarks import results
from benchmarks.common import prepare
from biotune_optuna import BioTuneSampler
from biotune_optuna.sampler.pareto import hypervolume
from biotune_optuna.sampler.records import LOW, fidelity_of
from biotune_optuna.sampler.synthetic import CHANCE, COST_AWARE

REFERENCE_TRIALS = 140
MAX_TRIALS = 2 * REFERENCE_TRIALS  # default: plans that train nothing cost nothing, so stop
SAMPLERS = {  # key: (label, sampler for a task and a seed)
    "biotune": ("BioTune", lambda task, seed: BioTuneSampler(
        10, 3, seed=seed, search_space=task.search_space)),
    "biotune-lean": ("BioTune, no adoption or elite search", lambda task, seed: BioTuneSampler(
        10, 3, seed=seed, search_space=task.search_space, adoption=False, elite_search=False)),
    "biotune-k4": ("BioTune, surrogate pre-selection (K=4)", lambda task, seed: BioTuneSampler(
        10, 3, seed=seed, search_space=task.search_space, surrogate_candidates=4)),
    "biotune-lean-k4": ("BioTune, no adoption or elite search, K=4", lambda task, seed:
                        BioTuneSampler(10, 3, seed=seed, search_space=task.search_space,
                                       adoption=False, elite_search=False,
                                       surrogate_candidates=4)),
    "biotune-mf": ("BioTune, multi-fidelity (promotions by Pareto order)", lambda task, seed:
                   BioTuneSampler(10, 3, seed=seed, search_space=task.search_space,
                                  multi_fidelity=True)),
    "nsga2": ("NSGA-II", lambda task, seed: optuna.samplers.NSGAIISampler(
        population_size=10, seed=seed)),
    "tpe": ("TPE", lambda task, seed: optuna.samplers.TPESampler(seed=seed)),
    "gp": ("GP", lambda task, seed: optuna.samplers.GPSampler(seed=seed)),
    "random": ("random", lambda task, seed: optuna.samplers.RandomSampler(seed=seed)),
}
REFERENCE = "biotune"


def front_volume(values: list[tuple[float, float]]) -> float:
    return hypervolume([(-accuracy, cost) for accuracy, cost in values], (-CHANCE, 1.0))


LOW_FIDELITY_SHARE = 0.25  # what a low-fidelity trial trains of the full protocol


def run(task, sampler, budget: float | None, max_trials: int = MAX_TRIALS,
        ) -> tuple[float, float, int]:
    """(hypervolume, compute spent, trials) of a search stopped at ``budget`` compute (or,
    without one, at the reference's trials). A multi-fidelity search's low-fidelity trials
    cost a quarter and do not enter its front, as on the command line."""
    study = optuna.create_study(directions=task.directions, sampler=sampler)
    spent, values = 0.0, []

    def stop_at_budget(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        nonlocal spent
        low = fidelity_of(trial) == LOW
        if not low:
            values.append(tuple(trial.values))
        spent += trial.values[1] * (LOW_FIDELITY_SHARE if low else 1.0)
        if budget is not None and spent >= budget:
            study.stop()

    study.optimize(task, n_trials=REFERENCE_TRIALS if budget is None else max_trials,
                   callbacks=[stop_at_budget])
    return front_volume(values), spent, len(study.trials)


def synthetic_section(seeds: int, methods: list[str], max_trials: int = MAX_TRIALS) -> str:
    rows, diffs = [], []
    for name, task in COST_AWARE.items():
        found: dict[str, list[tuple[float, float, int]]] = {}
        for seed in range(seeds):
            reference = run(task, SAMPLERS[REFERENCE][1](task, seed), None)
            found.setdefault(REFERENCE, []).append(reference)
            for method in methods:
                if method != REFERENCE:
                    found.setdefault(method, []).append(
                        run(task, SAMPLERS[method][1](task, seed), reference[1], max_trials))
            print(f"{name} seed {seed} done", flush=True)
        for method, runs in found.items():
            volumes = [r[0] for r in runs]
            rows.append([name, SAMPLERS[method][0], results.mean_se(volumes),
                         f"{np.mean([r[1] for r in runs]):.1f}",
                         f"{np.mean([r[2] for r in runs]):.0f}"])
            if method != REFERENCE:
                diffs.append([name, f"{SAMPLERS[REFERENCE][0]} - {SAMPLERS[method][0]}",
                              results.paired([r[0] for r in found[REFERENCE]], volumes),
                              str(seeds)])
    return (results.table(["task", "search", "hypervolume (mean ± se)",
                           "compute (full fine-tunes)", "trials"], rows)
            + "\n\nPaired differences of the hypervolume (same seed):\n\n"
            + results.table(["task", "difference", "mean ± se", "pairs"], diffs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic", action="store_true", help="the synthetic tasks")
    parser.add_argument("--seeds", type=int, default=20, help="seeds per search (default: 20)")
    parser.add_argument("--methods", default=",".join(SAMPLERS),
                        help=f"comma-separated, of: {', '.join(SAMPLERS)} (default: all)")
    parser.add_argument("--max-trials", type=int, default=MAX_TRIALS,
                        help=f"stop a search there if its compute lasts (default: {MAX_TRIALS})")
    parser.add_argument("--section", default="synthetic",
                        help="the RESULTS.md section's name (default: synthetic)")
    parser.add_argument("--no-write", action="store_true", help="print, do not edit RESULTS.md")
    args = parser.parse_args()
    prepare(None)
    methods = args.methods.split(",")
    unknown = sorted(set(methods) - set(SAMPLERS))
    if unknown:
        parser.error(f"unknown search {unknown[0]!r}; use some of: {', '.join(SAMPLERS)}")
    if not args.synthetic:
        parser.error("say which tasks: --synthetic (the real backbones are not wired yet)")
    section = ("" if args.section == "synthetic" else f" --section {args.section}") + (
        "" if args.max_trials == MAX_TRIALS else f" --max-trials {args.max_trials}")
    body = (f"Command: `.venv/bin/python -m benchmarks.multiobjective --synthetic --seeds "
            f"{args.seeds} --methods {args.methods}{section}` ({results.machine()}).\n\n"
            "Two objectives on the synthetic tasks: accuracy (maximised) and the plan's "
            "training FLOPs as a fraction of full fine-tuning's (minimised). BioTune runs "
            f"{REFERENCE_TRIALS} trials (N=10, E=3); every other search runs until it has "
            "spent the same compute (the sum of its trials' costs; a low-fidelity trial "
            f"costs {LOW_FIDELITY_SHARE:g} of its plan's) or run {args.max_trials} trials. "
            f"Hypervolume of (1 - accuracy, cost) below the reference point (1 - {CHANCE}, "
            "1.0): chance accuracy and full fine-tuning's cost.\n\n"
            + synthetic_section(args.seeds, methods, args.max_trials) + "\n")
    title = "Accuracy against training cost: synthetic tasks" + (
        "" if args.section == "synthetic" else f" ({args.section})")
    results.publish(f"multiobjective_{args.section}", title, body, write=not args.no_write)


if __name__ == "__main__":
    main()
