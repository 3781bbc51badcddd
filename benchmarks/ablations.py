"""The paper's ablations on the transfer tasks: BioTune with its full genome against
freeze-only, LR-only and each operator removed, at equal compute, with paired differences.

    .venv/bin/python -m benchmarks.ablations --seeds 10                   # hours
    .venv/bin/python -m benchmarks.ablations --tasks digits --seeds 2 --no-write   # a look

Protocol of ``benchmarks.multifidelity --part transfer`` (built-in ``small`` CNN, 10 labels
per class, one training seed, at most 30 epochs with patience 3, N=6, E=2): the full genome
runs 46 trials; every variant of the same seed gets the epochs it trained (``compare``'s
equal-compute rule). Each search's hand-over (the plan ``train-best`` picks: its top 5 plans
re-validated with seeds 100-102) is trained with seeds 0-2 and tested; retraining results
and studies are cached in benchmarks/out, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from benchmarks import results
from benchmarks.common import OUT, Retrainer, prepare, search_seconds, task_config
from benchmarks.results import mean_se, paired
from biotune_optuna import contents
from biotune_optuna.app.comparison import run_searches, runs_of
from biotune_optuna.app.config import VARIANTS

TASKS = ("digits", "mnist", "fashion", "control")
REFERENCE = "full"


def run_task(key: str, variants, seeds, threads: int | None) -> dict[str, dict]:
    """{variant: {"tests": [...], "epochs": [...], "trials": [...], "seconds": searching}}
    over the seeds."""
    config = task_config("transfer", key).replace(
        storage=f"sqlite:///{OUT}/ablations-{key}.db", study_name=f"abl-{key}", threads=threads,
        trials=46, rescore_elites=False, multi_fidelity=False)
    retrainer = Retrainer(config, OUT / f"multifidelity-{key}-retrained.json")
    found: dict[str, dict] = {v: {"tests": [], "epochs": [], "trials": [], "seconds": 0.0}
                              for v in variants}
    runs = runs_of(["biotune"], variants)
    for seed in seeds:
        studies = run_searches(config, runs, [seed], retrainer.task, quiet=True)
        for variant in variants:
            study = studies[variant][0]
            spent = contents.compute_spent(study.get_trials(deepcopy=False))
            found[variant]["tests"].append(retrainer.handover(study, math.inf))
            found[variant]["epochs"].append(spent.epochs)
            found[variant]["trials"].append(len(study.trials))
            found[variant]["seconds"] += search_seconds(study)  # right after a resume too
        print(f"{key} s{seed}: " + ", ".join(
            f"{v} {found[v]['tests'][-1]:.4f}" for v in variants), flush=True)
    return found


def same_handover(tests, reference) -> str:
    """Seeds whose hand-over scored exactly what the full genome's did: the same plan (tests
    are cached per plan), i.e. where removing the part changed nothing."""
    return f"{sum(a == b for a, b in zip(tests, reference))} of {len(tests)}"


def section(key: str, found: dict[str, dict]) -> str:
    reference = found[REFERENCE]["tests"]
    rows = [[v, mean_se(e["tests"]), paired(e["tests"], reference) if v != REFERENCE else "",
             same_handover(e["tests"], reference) if v != REFERENCE else "",
             f"{np.mean(e['trials']):.0f}", f"{np.mean(e['epochs']):.0f}"]
            for v, e in found.items()]
    return f"### {key}\n\n" + results.table(
        ["variant", "test balanced accuracy", "minus full (paired)", "same hand-over as full",
         "trials", "epochs trained"], rows)


def pooled_section(everything: dict[str, dict[str, dict]]) -> str:
    """Each variant minus the full genome over every (task, seed) pair of the tasks run."""
    rows = []
    for variant in next(iter(everything.values())):
        if variant == REFERENCE:
            continue
        mine = [t for found in everything.values() for t in found[variant]["tests"]]
        full = [t for found in everything.values() for t in found[REFERENCE]["tests"]]
        rows.append([variant, paired(mine, full), same_handover(mine, full)])
    return ("### All tasks\n\nEvery (task, seed) pair of the tasks above pooled:\n\n"
            + results.table(["variant", "minus full (paired)", "same hand-over as full"], rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    prepare(args.threads)
    variants = [REFERENCE] + [v for v in args.variants.split(",") if v != REFERENCE]
    tasks = args.tasks.split(",")
    everything = {key: run_task(key, variants, range(args.seeds), args.threads)
                  for key in tasks}
    sections = [section(key, found) for key, found in everything.items()]
    if len(tasks) > 1:
        sections.append(pooled_section(everything))
    command = (f".venv/bin/python -m benchmarks.ablations --tasks {args.tasks} --variants "
               f"{args.variants} --seeds {args.seeds}")
    minutes = sum(e["seconds"] for found in everything.values() for e in found.values()) / 60
    body = (f"Command: `{command}` ({results.machine()}); the searches took {minutes:.0f} "
            "min, the hand-overs' retraining not included.\n\n"
            "Each variant's hand-over, trained with seeds 0-2 and tested (mean ± standard "
            "error over the search seeds), and its paired difference from the full genome "
            "on the same seed, at the full genome's compute.\n\n" + "\n\n".join(sections))
    results.publish("ablations", "Ablations: which part of BioTune pays", body,
                    write=not args.no_write)


if __name__ == "__main__":
    main()
