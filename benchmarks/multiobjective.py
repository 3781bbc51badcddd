"""Accuracy against training cost: the hypervolume of the front each search finds, at equal
compute, for BioTune, NSGA-II, TPE, GP and random search.

    .venv/bin/python -m benchmarks.multiobjective --synthetic     # minutes; RESULTS.md
    .venv/bin/python -m benchmarks.multiobjective --transfer      # hours; resumes (every
        # seed of FIRST_PASS's searches first, then NSGA-II and random search)
    .venv/bin/python -m benchmarks.multiobjective --transfer --report   # the section so far

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
from benchmarks.common import OUT, RECORDS, TRANSFERS, Retrainer, finished, prepare, task_config
from biotune_optuna import BioTuneSampler, contents
from biotune_optuna.app.comparison import COST_CAP
from biotune_optuna.app.jobs import objective_for, plan_costs
from biotune_optuna.app.objective import Pricing
from biotune_optuna.app.studies import open_study
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
    "biotune-lean-k64-costs": ("BioTune, no adoption or elite search, K=64, costs known", (
        lambda task, seed: BioTuneSampler(
            10, 3, seed=seed, search_space=task.search_space, adoption=False,
            elite_search=False, surrogate_candidates=64, known_values=task.known_values))),
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
        ordered = list(found)  # each BioTune search minus every search after it
        for i, first in enumerate(ordered):
            for method in ordered[i + 1:] if first.startswith("biotune") else ():
                diffs.append([name, f"{SAMPLERS[first][0]} - {SAMPLERS[method][0]}",
                              results.paired([r[0] for r in found[first]],
                                             [r[0] for r in found[method]]), str(seeds)])
    return (results.table(["task", "search", "hypervolume (mean ± se)",
                           "compute (full fine-tunes)", "trials"], rows)
            + "\n\nPaired differences of the hypervolume (same seed):\n\n"
            + results.table(["task", "difference", "mean ± se", "pairs"], diffs))


FRONT_SEARCHES = {  # key: (label, the search's settings, pinned); the first sets the budget
    "biotune": ("BioTune, the paper's operators, K=1", {
        "sampler": "biotune", "adoption": True, "elite_search": True,
        "surrogate_candidates": 1}),
    # the front default of `search`: a plan's cost is computed, not predicted, by the
    # pre-selection; 64 candidates: a child's chance to include a plan from the middle of the
    # cost axis (about 1 random genome in 20 on the small CNN) goes from 1 in 5 to ~1
    "biotune-lean-k64-costs": ("BioTune's default: no adoption or elite search, K=64", {
        "sampler": "biotune", "adoption": False, "elite_search": False,
        "surrogate_candidates": 64}),
    # the default with elite local search back: does refining the elites (one of them the
    # most accurate plan) close the gap at the accurate end once pre-selection spreads the
    # children?
    "biotune-elite-k64-costs": ("BioTune's default with elite local search", {
        "sampler": "biotune", "adoption": False, "elite_search": True,
        "surrogate_candidates": 64}),
    "nsga2": ("NSGA-II", {"sampler": "nsga2"}), "tpe": ("TPE", {"sampler": "tpe"}),
    "gp": ("GP", {"sampler": "gp"}), "random": ("random search", {"sampler": "random"})}
FRONT_DEFAULT = "biotune-lean-k64-costs"  # the search the paired differences start from
TRANSFER_TRIALS = 46  # BioTune N=6, E=2, 5 generations, as the transfer benchmarks run it
# a search of cheap plans stops there (at twice the reference's trials GP stopped short of
# the budget in 26 of 40 runs, at 0.47-0.94 of it: far from equal compute)
TRANSFER_MAX_TRIALS = 6 * TRANSFER_TRIALS
CHECKPOINTS = (1 / 3, 2 / 3, 1.0)  # shares of the reference's compute the fronts are read at
HANDOVER_TOP_K = 3
GFLOPS = "train-gflops"


def trial_gflops(trial: optuna.trial.FrozenTrial) -> float:
    """Training GFLOPs a trial spent: its image-epochs times its plan's GFLOPs per image."""
    return (contents.trial_compute(trial).image_epochs
            * (contents.trial_cost(trial, GFLOPS) or 0.0))


class FrontRuns(Retrainer):
    """One transfer task's front searches, their measures kept in the committed
    benchmarks/records/mo-<task>.json (a search interrupted in its study, in benchmarks/out,
    resumes there)."""

    def __init__(self, task: str) -> None:
        config = task_config("transfer", task).replace(
            objectives=f"accuracy,{GFLOPS}", storage=f"sqlite:///{OUT}/mo-{task}.db")
        super().__init__(config, RECORDS / f"mo-{task}.json")
        self.key = task

    def search(self, search: str, seed: int, budget: float | None,
               max_trials: int) -> optuna.Study:
        """The study of a search, run on until it has spent ``budget`` GFLOPs (or, without
        one, the reference's trials) or run ``max_trials``."""
        config = self.config.replace(study_name=f"{self.key}-{search}-s{seed}", seed=seed,
                                     **FRONT_SEARCHES[search][1])
        pricing = Pricing(self.task, config.train_config())  # as `search` runs it
        study = open_study(config, self.task.block_names,
                           known_values=plan_costs(config, self.task, pricing))
        objective = objective_for(config, self.task, pricing=pricing)
        while True:
            trials = study.get_trials(deepcopy=False)
            if (len(trials) >= (TRANSFER_TRIALS if budget is None else max_trials) or
                    budget is not None and sum(map(trial_gflops, trials)) >= budget):
                return study
            study.optimize(objective, n_trials=1)

    def measure(self, sampler: str, seed: int, budget: float | None, max_trials: int) -> dict:
        key = f"search|{sampler}|{seed}"
        measured = self.cache.get(key)
        if measured is not None and "band_trials" in measured and (
                not measured["short"] or measured["max_trials"] >= max_trials):
            return measured
        study = self.search(sampler, seed, budget, max_trials)  # at once when it has finished
        trials = study.get_trials(deepcopy=False)
        spent = np.cumsum([trial_gflops(t) for t in trials])
        budget = budget or float(spent[-1])
        volumes, ranked = [], []
        for share in CHECKPOINTS:
            within = [t for t, s in zip(trials, spent) if s <= share * budget * (1 + 1e-9)]
            ranked = contents.ranked_plans(study, within)
            volumes.append(contents.hypervolume(study, ranked) or 0.0)
        full_cost = contents.reference_point(study)[1]
        # the plans of the whole budget: a search stops on the trial that crosses it, and
        # that trial counts neither in the hypervolume nor in the hand-over
        bands, spread = band_bests(ranked, full_cost), band_trials(within, full_cost)
        candidates = contents.within_cost(ranked, COST_CAP * full_cost)[:HANDOVER_TOP_K]
        plans = {p.trial.number: contents.trial_plan(study, p.trial, self.task.block_names)
                 for p in candidates}
        chosen = max(candidates, default=None, key=lambda p: (
            self.validation(plans[p.trial.number]), -p.trial.number))
        found = {"volumes": volumes, "gflops": float(spent[-1]), "trials": len(within),
                 "short": bool(spent[-1] < budget * (1 - 1e-9)),
                 "max_trials": max_trials, "bands": bands, "band_trials": spread,
                 "test": None if chosen is None else self.test(plans[chosen.trial.number]),
                 "cost": None if chosen is None else chosen.costs[0] / full_cost}
        self._store(key, found)
        return found


def stopped_short(runs: list[dict]) -> str:
    """Seeds whose search ran its most trials before it had spent the budget."""
    short = sum(r["short"] for r in runs)
    return f" ({short} short of the budget)" if short else ""


def missing_handovers(runs: list[dict]) -> str:
    """Seeds whose search found no plan under the cap (they are left out of the mean and
    the pairs, so say how many)."""
    missing = sum(r["test"] is None for r in runs)
    return f" (none under the cap in {missing})" if missing else ""


COST_BANDS = (0.05, COST_CAP)  # band edges, shares of full fine-tuning's cost


def band(cost: float, full_cost: float) -> int:
    """The cost band of a plan (below 0.05 of full fine-tuning's cost, which on these
    networks is the head alone; up to the hand-over cap; above it)."""
    share = cost / full_cost
    return 0 if share < COST_BANDS[0] else 1 if share <= COST_BANDS[1] * (1 + 1e-9) else 2


def band_bests(plans: list[contents.RankedPlan], full_cost: float) -> list[float | None]:
    """The best mean validation value among ``plans`` in each cost band: where on the cost
    axis a search found good plans, what its hypervolume is made of."""
    return [max((p.value for p in plans if band(p.costs[0], full_cost) == b), default=None)
            for b in range(3)]


def band_trials(trials: list[optuna.trial.FrozenTrial], full_cost: float) -> list[int]:
    """How many of the finished ``trials`` fell in each cost band: where a search spent."""
    bands = [band(t.values[1], full_cost) for t in trials if t.values is not None]
    return [bands.count(b) for b in range(3)]


FIRST_PASS = ("biotune", FRONT_DEFAULT, "tpe", "gp")  # every seed of these before the rest


def run_transfer(tasks: list[str], seeds: int, samplers: list[str]) -> None:
    reference = next(iter(FRONT_SEARCHES))
    passes = [[s for s in samplers if s in FIRST_PASS], [s for s in samplers
                                                         if s not in FIRST_PASS]]
    for chosen in filter(None, passes):
        for seed in range(seeds):
            for task in tasks:
                runs, budget = FrontRuns(task), None
                for sampler in [reference] + [s for s in chosen if s != reference]:
                    found = runs.measure(sampler, seed, budget, TRANSFER_MAX_TRIALS)
                    budget = budget or found["gflops"]
                    print(f"{task} s{seed} {sampler}: {found['trials']} trials, hypervolume "
                          f"{found['volumes'][-1]:.4f}, capped hand-over test "
                          f"{found['test']}", flush=True)


def transfer_section(task: str) -> str | None:
    found = finished(RECORDS / f"mo-{task}.json", lambda kind, _: kind == "search")
    first = next(iter(FRONT_SEARCHES))
    reference = found.get(first)
    if not reference:
        return None
    rows, diffs, bands = [], [], []
    for sampler, (label, _) in FRONT_SEARCHES.items():
        by_seed = found.get(sampler, {})
        if not by_seed:
            continue
        runs = list(by_seed.values())
        banded = [r["bands"] for r in runs]
        bands.append([label, *(f"{results.mean_se([b[i] for b in banded])} "
                               f"({sum(b[i] is not None for b in banded)}/{len(banded)}; "
                               f"{np.mean([r['band_trials'][i] for r in runs]):.0f} trials)"
                               for i in range(3))])
        rows.append([label, str(len(runs)),
                     *(results.mean_se([r["volumes"][i] for r in runs])
                       for i in range(len(CHECKPOINTS))),
                     results.mean_se([r["test"] for r in runs]) + missing_handovers(runs),
                     f"{np.mean([r['cost'] for r in runs if r['cost'] is not None]):.2f}",
                     f"{np.mean([r['trials'] for r in runs]):.0f}" + stopped_short(runs)])
        default = found.get(FRONT_DEFAULT, {})
        if sampler != FRONT_DEFAULT and default:
            common = sorted(default.keys() & by_seed.keys())
            diffs.append([f"BioTune's default - {label}",
                          *(results.paired([default[s]["volumes"][i] for s in common],
                                           [by_seed[s]["volumes"][i] for s in common])
                            for i in (0, -1)),
                          results.paired([default[s]["test"] for s in common],
                                         [by_seed[s]["test"] for s in common]),
                          str(len(common))])
    transfer = TRANSFERS[task]
    return (f"### {transfer.source} -> {transfer.target}"
            + (f" ({transfer.note})" if transfer.note else "") + "\n\n"
            + results.table(["search", "seeds",
                             *(f"hypervolume at {c:.2f} of the compute" for c in CHECKPOINTS),
                             "capped hand-over: test balanced acc",
                             "its cost (of full fine-tuning's)", "trials"], rows)
            + "\n\nPaired differences (same seed):\n\n"
            + results.table(["difference", f"hypervolume at {CHECKPOINTS[0]:.2f}",
                             "hypervolume at 1.00", "capped hand-over test", "pairs"], diffs)
            + "\n\nWhere each front is made: the best validation value (a plan's mean) a "
            "search found at each training cost, as a share of full fine-tuning's (in how "
            "many seeds it found a plan there; how many of its trials within the budget fell "
            "there, the mean over seeds):\n\n"
            + results.table(["search", f"cost below {COST_BANDS[0]:.2f}",
                             f"{COST_BANDS[0]:.2f} to {COST_BANDS[1]:.2f}",
                             f"above {COST_BANDS[1]:.2f}"], bands))


def transfer_report(tasks: list[str], seeds: int, write: bool) -> None:
    sections = {task: transfer_section(task) for task in tasks}
    missing = [task for task, section in sections.items() if section is None]
    body = (f"Command: `.venv/bin/python -m benchmarks.multiobjective --transfer --seeds "
            f"{seeds}`, then `--transfer --report` ({results.machine()}; one torch thread)."
            "\n\nTwo objectives on the transfer tasks (the small CNN pretrained here, 10 labels "
            "per class for training and for validation, at most 30 epochs, patience 3, batch "
            "96, one training seed per trial): validation balanced accuracy and the plan's "
            "training GFLOPs per image. Compute is training FLOPs (each trial's image-epochs "
            f"times its plan's GFLOPs per image); the paper's BioTune (N=6, E=2, "
            f"{TRANSFER_TRIALS} trials) sets the budget and each other search runs until it "
            f"has spent as much (or run {TRANSFER_MAX_TRIALS} trials); BioTune's front "
            "default (`search --objectives` with costs) is the row the differences start "
            "from. "
            "Hypervolume: the share of the box between (chance, full fine-tuning's cost) and "
            "(accuracy 1, no cost) that the search's validation front dominates, read when "
            "a third, two thirds and all of the budget was spent. Capped hand-over: the best "
            f"of the {HANDOVER_TOP_K} most accurate plans within {COST_CAP:.2f} of full "
            "fine-tuning's cost, re-validated with seeds 100-102, retrained with seeds 0-2 "
            "and tested." + (f" Not run yet: {', '.join(missing)}." if missing else "")
            + "\n\n" + "\n\n".join(s for s in sections.values() if s))
    results.publish("multiobjective_transfer", "Accuracy against training cost: transfer tasks",
                    body, write=write)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic", action="store_true", help="the synthetic tasks")
    parser.add_argument("--transfer", action="store_true",
                        help="the transfer tasks (real fine-tunes; resumes)")
    parser.add_argument("--tasks", default=",".join(TRANSFERS),
                        help=f"transfer tasks, of: {', '.join(TRANSFERS)} (default: all)")
    parser.add_argument("--report", action="store_true",
                        help="with --transfer: write the section from what has finished")
    parser.add_argument("--seeds", type=int, default=None,
                        help="seeds per search (default: 20 synthetic, 10 transfer)")
    parser.add_argument("--methods", default=None,
                        help=f"comma-separated, synthetic: {', '.join(SAMPLERS)}; transfer: "
                        f"{', '.join(FRONT_SEARCHES)} (default: all)")
    parser.add_argument("--max-trials", type=int, default=MAX_TRIALS,
                        help=f"stop a search there if its compute lasts (default: {MAX_TRIALS})")
    parser.add_argument("--section", default="synthetic",
                        help="the RESULTS.md section's name (default: synthetic)")
    parser.add_argument("--no-write", action="store_true", help="print, do not edit RESULTS.md")
    args = parser.parse_args()
    if args.synthetic == args.transfer:
        parser.error("say which tasks: --synthetic or --transfer")
    known = SAMPLERS if args.synthetic else FRONT_SEARCHES
    args.methods = args.methods or ",".join(known)
    methods = args.methods.split(",")
    unknown = sorted(set(methods) - set(known)) or sorted(
        set(args.tasks.split(",")) - set(TRANSFERS))
    if unknown:
        parser.error(f"unknown search or task {unknown[0]!r}; use some of: "
                     f"{', '.join(known)} (tasks: {', '.join(TRANSFERS)})")
    prepare(1 if args.transfer else None)
    if args.transfer:
        seeds, tasks = args.seeds or 10, args.tasks.split(",")
        if not args.report:
            run_transfer(tasks, seeds, methods)
        transfer_report(tasks, seeds, write=not args.no_write)
        return
    args.seeds = args.seeds or 20
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
