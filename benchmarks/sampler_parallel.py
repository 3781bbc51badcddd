"""BioTuneSampler under parallel workers: search quality with trials in flight, and a stress
count of the invariants over hundreds of parallel runs.

    .venv/bin/python -m benchmarks.sampler_parallel             # full run, rewrites RESULTS.md
    .venv/bin/python -m benchmarks.sampler_parallel --seeds 3 --stress-runs 20 --no-write

Efficiency: ask/tell with 1, 4 or 8 trials in flight, the finished one chosen at random each
time (workers of unequal speed), best value at 140 trials (N=10, E=3) on the synthetic tasks.
Stress: seeded runs with ``n_jobs=4`` (threads, random trial durations) and runs of three
processes with two threads each on one SQLite file, checked by ``sampler.population.audit``.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter

import numpy as np
import optuna

from benchmarks import results
from biotune_optuna import BioTuneSampler
from biotune_optuna.sampler import records
from biotune_optuna.sampler.storage_io import audit_study
from biotune_optuna.sampler.synthetic import TASKS

IN_FLIGHT = (1, 4, 8)
BUDGET = 140


def biotune(task, seed, population_size=10, elite_size=3) -> BioTuneSampler:
    return BioTuneSampler(population_size, elite_size, seed=seed,
                          search_space=task.search_space, ideal_value=1.0)


def ask_tell(task, seed: int, in_flight: int, n_trials: int = BUDGET, **settings,
             ) -> optuna.Study:
    """Keep ``in_flight`` trials asked and tell a random one of them, until ``n_trials``."""
    rng = random.Random(seed)
    study = optuna.create_study(sampler=biotune(task, seed, **settings), direction="maximize")
    pending, asked = [], 0
    while asked < n_trials or pending:
        while len(pending) < in_flight and asked < n_trials:
            pending.append(study.ask())
            asked += 1
        trial = pending.pop(rng.randrange(len(pending)))
        study.tell(trial, task(trial))
    return study


def violations(study: optuna.Study, population_size: int) -> list[str]:
    return audit_study(study, population_size)


def efficiency_section(seeds: int) -> str:
    rows = []
    for name, task in TASKS.items():
        for in_flight in IN_FLIGHT:
            best, generations, problems = [], [], 0
            for seed in range(seeds):
                study = ask_tell(task, seed, in_flight)
                best.append(study.best_value)
                generations.append(max(records.generation_of(t) for t in study.trials))
                problems += len(violations(study, 10))
            rows.append([name, str(in_flight), f"{np.mean(best):.4f} ± {np.std(best):.4f}",
                         f"{np.std(best) / np.sqrt(seeds):.4f}", f"{np.mean(generations):.1f}",
                         str(problems)])
            print(" | ".join(rows[-1]), flush=True)
    return results.table(["task", "trials in flight", "best value (mean ± std)", "std error",
                          "generations reached", "invariant violations"], rows)


def slow(task):
    def objective(trial):
        value = task(trial)
        time.sleep(random.random() * 0.003)
        return value
    return objective


WORKER = """
import random, sys, time, optuna
from biotune_optuna import BioTuneSampler
from biotune_optuna.sampler.settings import FRONT_SETTINGS
from biotune_optuna.sampler.synthetic import COST_AWARE, TASKS
optuna.logging.set_verbosity(optuna.logging.WARNING)
seed = None if sys.argv[3] == "none" else int(sys.argv[3])
storage = sys.argv[1]
if storage.startswith("journal:"):
    from optuna.storages.journal import JournalFileBackend, JournalStorage
    storage = JournalStorage(JournalFileBackend(storage.removeprefix("journal:")))
name = sys.argv[4] if len(sys.argv) > 4 else "p"
several = len(optuna.load_study(study_name=name, storage=storage).directions) > 1
task = (COST_AWARE if several else TASKS)["near-domain"]
front = dict(FRONT_SETTINGS, known_values=task.known_values) if sys.argv[5:] == ["front"] else {}
sampler = BioTuneSampler(6, 2, seed=seed, search_space=task.search_space,
                         ideal_value=None if several else 1.0, **front)
study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
def objective(trial):
    time.sleep(random.random() * 0.01)
    return task(trial)
study.optimize(objective, n_trials=int(sys.argv[2]), n_jobs=2)
"""


def stress_section(thread_runs: int, process_runs: int) -> str:
    task = TASKS["near-domain"]
    thread_problems = Counter()
    for seed in range(thread_runs):
        sampler = biotune(task, seed, 6, 2)
        study = optuna.create_study(sampler=sampler, direction="maximize")
        study.optimize(slow(task), n_trials=sampler.n_trials(5), n_jobs=4)
        thread_problems.update(p.split()[0] for p in violations(study, 6))
    process_problems, wrong_counts = Counter(), 0
    with tempfile.TemporaryDirectory() as folder:
        for run in range(process_runs):
            url = f"sqlite:///{folder}/p{run}.db"
            optuna.create_study(storage=url, study_name="p", direction="maximize")
            seed = "none" if run % 2 else str(run)
            workers = [subprocess.Popen([sys.executable, "-c", WORKER, url, "20", seed])
                       for _ in range(3)]
            if any(w.wait() != 0 for w in workers):
                raise SystemExit(f"a worker failed in process run {run}")
            study = optuna.load_study(study_name="p", storage=url)
            wrong_counts += len(study.trials) != 60
            process_problems.update(p.split()[0] for p in violations(study, 6))
    rows = [[f"{thread_runs} runs, n_jobs=4, N=6, E=2, 46 trials, seeds 0..{thread_runs - 1}",
             str(sum(thread_problems.values())), "-"],
            [f"{process_runs} runs, 3 processes x n_jobs=2 on one SQLite file, 60 trials "
             "(seeded and unseeded alternately)", str(sum(process_problems.values())),
             str(wrong_counts)]]
    return results.table(["scenario", "invariant violations", "runs without 60 trials"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20, help="seeds per efficiency cell")
    parser.add_argument("--stress-runs", type=int, default=300,
                        help="seeded n_jobs=4 runs (a tenth as many multi-process runs)")
    parser.add_argument("--no-write", action="store_true", help="print, do not edit RESULTS.md")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)

    efficiency = efficiency_section(args.seeds)
    stress = stress_section(args.stress_runs, max(args.stress_runs // 10, 1))
    command = (f".venv/bin/python -m benchmarks.sampler_parallel --seeds {args.seeds} "
               f"--stress-runs {args.stress_runs}")
    body = (f"Command: `{command}` ({results.machine()}).\n\n"
            f"Best value at {BUDGET} trials (N=10, E=3) with trials asked before earlier ones "
            "are told: ask/tell keeps k trials in flight and tells a random one of them each "
            f"time; mean ± std over {args.seeds} seeds. 1 in flight is the sequential "
            "search. Trials asked while a generation waits for results become extra "
            "children, so generations are longer and fewer at equal budget.\n\n"
            f"{efficiency}\n\nInvariants under real concurrency (`sampler.population.audit`: no "
            "slot, position or elite exploration taken twice, elite pairs move one gene by "
            "opposite steps, every population holds N):\n\n"
            f"{stress}\n")
    results.publish("sampler_parallel", "Samplers under parallel workers", body,
                    write=not args.no_write)


if __name__ == "__main__":
    main()
