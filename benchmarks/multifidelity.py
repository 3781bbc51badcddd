"""Multi-fidelity BioTune (and its surrogate-assisted form) against the paper's BioTune,
re-scored BioTune, and TPE and CMA-ES with Hyperband on the same rungs, at equal compute:
anytime curves of the test balanced accuracy of the plan ``train-best`` would hand over,
against the compute spent.

    .venv/bin/python -m benchmarks.multifidelity --part transfer --seeds 10   # hours
    .venv/bin/python -m benchmarks.multifidelity --part protocol --seeds 10   # hours
    .venv/bin/python -m benchmarks.multifidelity --part fidelity              # minutes
    .venv/bin/python -m benchmarks.multifidelity --part transfer --tasks digits --seeds 2 \\
        --no-write                                                           # a look

transfer: the four offline transfer tasks of ``benchmarks.transfer`` (built-in ``small``
CNN, 10 labels per class, one training seed per trial, at most 30 epochs, patience 3,
BioTune N=6, E=2). The reference is the paper's BioTune with 46 trials, i.e. 46 full
fine-tunes; every other search of the same seed gets the epochs that search trained as its
compute budget.

protocol: the paper's protocol of ``benchmarks.search_cost`` (N=10, E=3, 140 trials, 3
training seeds per trial) on mnist5k -> digits with ``small`` and with a ResNet-18 at 32 px
pretrained here. The reference is the paper's BioTune with 140 trials; the other searches
get a third of the epochs it trained.

fidelity: how well a run capped at k epochs ranks random plans, against a full run.

At each checkpoint (a share of the reference's compute) a search's hand-over is what
``train-best`` would pick from the trials it had finished by then: its 5 best plans
(:func:`biotune_optuna.contents.ranked_plans`: full-fidelity plans by the mean of their
evaluations first) re-validated with seeds 100-102, the best mean kept, then trained with
seeds 0-2 and tested. Retraining results are cached per plan in benchmarks/out, and the
studies persist there, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import optuna

from benchmarks import results
from benchmarks.common import OUT, Retrainer, prepare, search_seconds, task_config
from benchmarks.results import mean_se, paired
from biotune_optuna import contents
from biotune_optuna.app.jobs import search, task_for
from biotune_optuna.finetuning.train import fine_tune
from biotune_optuna.sampler import genome

# (label, key, sampler, options)
METHODS = (
    ("multi-fidelity biotune", "mf", "biotune", {"multi_fidelity": True,
                                                 "rescore_elites": True}),
    ("paper biotune", "paper", "biotune", {"multi_fidelity": False, "rescore_elites": False}),
    ("re-scored biotune", "rescored", "biotune", {"multi_fidelity": False,
                                                 "rescore_elites": True}),
    ("tpe + hyperband", "tpe", "tpe", {"multi_fidelity": True}),
    ("cmaes + hyperband", "cmaes", "cmaes", {"multi_fidelity": True}),
    ("surrogate biotune (K=3, multi-fidelity)", "sur", "biotune", {
        "multi_fidelity": True, "rescore_elites": True, "surrogate_candidates": 3}),
    ("surrogate biotune (K=3, full fidelity)", "sur-full", "biotune", {
        "multi_fidelity": False, "rescore_elites": False, "surrogate_candidates": 3}),
    # a cheaper low fidelity: 2 epochs rank random plans about as 4 do on three of the four
    # transfer tasks (RESULTS.md, "How much a low-fidelity trial tells")
    ("multi-fidelity biotune (2 epochs low)", "mf2", "biotune", {
        "multi_fidelity": True, "rescore_elites": True, "low_epochs": 2}),
)
REFERENCE = "paper"
# the BioTune searches whose paired differences against every other method are tabled
CHALLENGERS = (REFERENCE, "mf", "sur", "sur-full", "mf2")
PARTS = {
    # part: (reference trials, the others' budget as a share of the reference's compute,
    #        checkpoints as shares of the reference's compute)
    "transfer": (46, 1.0, (1 / 3, 2 / 3, 1.0)),
    "protocol": (140, 1 / 3, (1 / 6, 1 / 3, 2 / 3, 1.0)),
}
TRANSFER_TASKS = ("digits", "mnist", "fashion", "control")
PROTOCOL_TASKS = ("small", "resnet18")


def run_task(part: str, key: str, methods, seeds, threads: int | None) -> dict:
    """Every method's searches on one task, and their hand-overs at each checkpoint:
    {method key: {"tests": [[test per checkpoint] per seed], "trials": [...], ...}}."""
    reference_trials, share, checkpoints = PARTS[part]
    config = task_config(part, key).replace(
        storage=f"sqlite:///{OUT}/multifidelity-{key}.db", threads=threads)
    retrainer = Retrainer(config, OUT / f"multifidelity-{key}-retrained.json")
    found: dict[str, dict] = {}
    start, searching = time.perf_counter(), 0.0
    for seed in seeds:
        budget = 0  # the reference's epochs: it runs first
        for label, method, sampler, options in sorted(METHODS, key=lambda m: m[1] != REFERENCE):
            if method not in methods and method != REFERENCE:
                continue
            own = config.replace(study_name=f"{key}-{method}-s{seed}", sampler=sampler,
                                 seed=seed, **options)
            if method == REFERENCE:
                own = own.replace(trials=reference_trials)
            else:
                own = own.replace(trials=None, compute_budget=max(int(budget * share), 1))
            study = search(own, quiet=True, task=retrainer.task)
            searching += search_seconds(study)  # from the trials: right after a resume too
            spent = contents.compute_spent(study.get_trials(deepcopy=False))
            if method == REFERENCE:
                budget = spent.epochs
            points = [c for c in checkpoints if method == REFERENCE or c <= share + 1e-9]
            tests = [retrainer.handover(study, c * budget) for c in points]
            entry = found.setdefault(method, {"label": label, "points": points, "tests": [],
                                              "trials": [], "epochs": [], "seconds": [],
                                              "promotions": []})
            entry["tests"].append(tests)
            entry["trials"].append(len(study.trials))
            entry["epochs"].append(spent.epochs)
            entry["seconds"].append(spent.seconds)
            full = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE
                    and contents.fidelity(t) == contents.FULL]
            entry["promotions"].append(len(full))
            # early stopping already makes a full trial short: what a low one saves
            entry.setdefault("full_epochs", []).extend(
                contents.trial_compute(t).epochs for t in full)
            entry.setdefault("promoted", []).extend(promoted_pairs(study))
            print(f"{key} s{seed} {method}: {len(study.trials)} trials, {spent.epochs} epochs, "
                  "tests " + ", ".join("-" if t is None else f"{t:.4f}" for t in tests),
                  flush=True)
    found["_minutes"] = (time.perf_counter() - start) / 60
    found["_search_minutes"] = searching / 60
    return found


def promoted_pairs(study: optuna.Study) -> list[tuple[float, float]]:
    """(mean low-fidelity value, full value) of each plan a multi-fidelity search promoted."""
    return [(float(np.mean([t.value for t in plan[contents.LOW]])), full.value)
            for plan in contents.evaluations_by_plan(study.get_trials(deepcopy=False))
            if contents.LOW in plan and contents.FULL in plan for full in plan[contents.FULL]]


def promoted_rank_correlation(pairs) -> str:
    """How well the low fidelity ranked the plans it promoted (Spearman, all seeds pooled)."""
    from scipy.stats import spearmanr

    return f"{spearmanr(*zip(*pairs))[0]:.2f}" if len(pairs) > 2 else "-"


def by_checkpoint(entry: dict) -> dict[float, tuple]:
    """A method's hand-over tests per checkpoint: {share of compute: (test per seed)}."""
    return dict(zip(entry["points"], zip(*entry["tests"])))


def task_section(part: str, key: str, found: dict, seeds) -> str:
    _, share, checkpoints = PARTS[part]
    config = task_config(part, key)
    columns = [f"{c:.2f} of the reference's compute" for c in checkpoints]
    rows = []
    for method, entry in found.items():
        if method.startswith("_"):
            continue
        by_point = by_checkpoint(entry)
        rows.append([entry["label"], *(mean_se(by_point[c]) if c in by_point else "-"
                                       for c in checkpoints),
                     f"{np.mean(entry['trials']):.0f}", f"{np.mean(entry['epochs']):.0f}",
                     f"{np.mean(entry['promotions']):.0f}",
                     f"{np.mean(entry['full_epochs']):.1f}" if entry.get("full_epochs") else "-",
                     promoted_rank_correlation(entry.get("promoted", [])),
                     f"{np.mean(entry['seconds']):.0f}"])
    header = ["method", *columns, "trials", "epochs trained", "trials completed at full fidelity",
              "epochs per full-fidelity trial",
              "low ~ full rank correlation of the promoted plans", "training seconds"]
    diffs = []
    for challenger, method in comparisons(found):
        mine, theirs = by_checkpoint(found[challenger]), by_checkpoint(found[method])
        diffs.append([f"{found[challenger]['label']} - {found[method]['label']}",
                      *(paired(mine[c], theirs[c]) if c in mine and c in theirs else "-"
                        for c in checkpoints)])
    if share < 1.0:  # at full compute the last column already says it
        reference = by_checkpoint(found[REFERENCE])
        for challenger in CHALLENGERS[1:]:
            if challenger in found:
                mine = by_checkpoint(found[challenger])
                diffs.append([f"{found[challenger]['label']} at {share:.2f} - paper biotune "
                              "at 1.00", paired(mine[share], reference[1.0]),
                              *[""] * (len(checkpoints) - 1)])
    return (f"### {key}: {config.model} on {config.dataset} (weights {Path(config.weights).name})"
            f"\n\n{len(seeds)} seeds; the searches took {found['_search_minutes']:.0f} min "
            f"(this run of the command: {found['_minutes']:.0f} min, the hand-overs' "
            "retraining included).\n\n"
            + results.table(header, rows) + "\n\nPaired differences of the test balanced "
            "accuracy (mean ± standard error over the seeds):\n\n"
            + results.table(["difference", *columns], diffs))


def comparisons(found: dict) -> list[tuple[str, str]]:
    """(challenger, other method) for each challenger run against each other method run,
    each pair once."""
    methods = [m for m in found if not m.startswith("_")]
    return [(challenger, method) for i, challenger in enumerate(CHALLENGERS)
            if challenger in methods for method in methods
            if method != challenger and method not in CHALLENGERS[i + 1:]]


def pooled_section(everything: dict) -> str:
    """The paired differences at the full budget over every (task, seed) pair: the mean over
    tasks and its standard error."""
    merged: dict[str, dict] = {}  # method -> {"label", "finals": {(task, seed index): test}}
    for key, found in everything.items():
        for method, entry in found.items():
            if not method.startswith("_"):
                merged.setdefault(method, {"label": entry["label"], "finals": {}})
                merged[method]["finals"].update(
                    {(key, i): row[-1] for i, row in enumerate(entry["tests"])})
    rows = []
    for challenger, method in comparisons(merged):
        pairs = sorted(merged[challenger]["finals"].keys() & merged[method]["finals"].keys())
        rows.append([f"{merged[challenger]['label']} - {merged[method]['label']}",
                     paired([merged[challenger]["finals"][p] for p in pairs],
                            [merged[method]["finals"][p] for p in pairs]), str(len(pairs))])
    return ("### All tasks\n\nPaired differences of the test balanced accuracy at the full "
            "budget, every (task, seed) pair of the tasks above pooled:\n\n"
            + results.table(["difference", "mean ± se", "pairs"], rows))


def plot(part: str, everything: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(everything), figsize=(4.5 * len(everything), 4),
                             squeeze=False)
    for ax, (key, found) in zip(axes[0], everything.items()):
        for method, entry in found.items():
            if method.startswith("_"):
                continue
            tests = np.array([[np.nan if t is None else t for t in row]
                              for row in entry["tests"]], dtype=float)
            se = np.nanstd(tests, 0, ddof=1) / np.sqrt(len(tests))
            ax.errorbar(entry["points"], np.nanmean(tests, 0), yerr=se, marker="o",
                        capsize=3, label=entry["label"])
        ax.set_title(key)
        ax.set_xlabel("compute / the reference search's")
        ax.set_ylabel("test balanced accuracy of the hand-over")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def fidelity_part(tasks, n_plans: int, threads: int | None) -> str:
    """How well a capped run ranks plans: Spearman correlations over random genomes."""
    from scipy.stats import spearmanr

    from biotune_optuna.sampler import operators

    caps = (1, 2, 3, 4, 6, 8)
    rows = []
    for key in tasks:
        config = task_config("transfer", key).replace(threads=threads)
        task = task_for(config)
        space = genome.search_space(task.block_names)
        rng = np.random.default_rng(0)
        curves, epochs = {0: [], 1: []}, []
        for _ in range(n_plans):
            genes = operators.random_genome(rng, len(space), len(space) - 1)
            plan = genome.decode({n: float(g) for n, g in zip(space, genes)},
                                 task.block_names, config.train_head)
            for seed in (0, 1):
                run = fine_tune(task, plan, config.train_config(), seed)
                curves[seed].append(run.history)
                epochs.append(run.epochs_run)
        full = [np.array([max(h) for h in curves[s]]) for s in (0, 1)]
        row = [key, f"{np.mean(epochs):.1f}", f"{spearmanr(full[0], full[1])[0]:.2f}"]
        for cap in caps:
            low = np.array([max(h[:cap]) for h in curves[0]])
            row.append(f"{spearmanr(low, full[1])[0]:.2f} ({low.mean():.2f})")
        rows.append(row + [f"{full[0].mean():.2f}"])
        print(" | ".join(rows[-1]), flush=True)
    header = ["task", "epochs of a full run", "full seed 0 ~ full seed 1",
              *(f"{c} epochs seed 0 ~ full seed 1 (mean)" for c in caps), "full mean"]
    return ("Random genomes (the initial population's distribution), each trained twice at "
            "the full protocol (at most 30 epochs, patience 3) with training seeds 0 and 1, on "
            f"the transfer tasks; {n_plans} plans per task. A run capped at k epochs is the "
            "first k epochs of the full run (same schedule), so its value is the best of "
            "those epochs. Spearman rank correlation with the full run of the *other* seed, "
            "which carries none of the capped run's own noise: the capped run's information "
            "about a plan's true value, against that of a full run (third column).\n\n"
            + results.table(header, rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=(*PARTS, "fidelity"), required=True)
    parser.add_argument("--plans", type=int, default=40, help="fidelity part: random plans")
    parser.add_argument("--tasks", default=None, help="comma-separated (default: the part's)")
    parser.add_argument("--methods", default=",".join(m[1] for m in METHODS),
                        help="method keys besides the reference: "
                        + ", ".join(m[1] for m in METHODS if m[1] != REFERENCE))
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (1 when two benchmark processes share 2 cores)")
    parser.add_argument("--section", default=None, metavar="NAME",
                        help="publish as a section of its own, NAME in its title and key "
                        "(e.g. surrogate for a run of --methods sur-full)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    prepare(args.threads)
    if args.part == "fidelity":
        tasks = (args.tasks or ",".join(TRANSFER_TASKS)).split(",")
        command = (f".venv/bin/python -m benchmarks.multifidelity --part fidelity --tasks "
                   f"{','.join(tasks)} --plans {args.plans}")
        body = (f"Command: `{command}` ({results.machine()}).\n\n"
                + fidelity_part(tasks, args.plans, args.threads))
        results.publish("multifidelity_ranks", "How much a low-fidelity trial tells", body,
                        write=not args.no_write)
        return
    tasks = (args.tasks or ",".join(TRANSFER_TASKS if args.part == "transfer"
                                    else PROTOCOL_TASKS)).split(",")
    seeds = list(range(args.seeds))
    methods = args.methods.split(",")
    everything = {key: run_task(args.part, key, methods, seeds, args.threads) for key in tasks}
    # a run of other methods than the default section's is published as a section of its own
    key = f"multifidelity_{args.part}" + (f"_{args.section}" if args.section else "")
    figure = Path(__file__).with_name(f"{key}.png")
    command = (f".venv/bin/python -m benchmarks.multifidelity --part {args.part} --tasks "
               f"{','.join(tasks)} --methods {args.methods} --seeds {args.seeds}"
               + (f" --section {args.section}" if args.section else ""))
    sections = [task_section(args.part, key, found, seeds) for key, found in everything.items()]
    if len(everything) > 1:
        sections.append(pooled_section(everything))
    body = (f"Command: `{command}` ({results.machine()}).\n\n" + DESCRIPTION[args.part]
            + f"\n\nCurves: `benchmarks/{figure.name}`.\n\n" + "\n\n".join(sections))
    if args.no_write:
        print(body)
        return
    plot(args.part, everything, figure)
    title = TITLES[args.part] + (f" ({args.section})" if args.section else "")
    results.publish(key, title, body)


TITLES = {"transfer": "Multi-fidelity BioTune on the transfer tasks, at equal compute",
          "protocol": "Multi-fidelity BioTune against the paper's protocol"}
DESCRIPTION = {
    "transfer": (
        "Built-in `small` CNN pretrained on the source dataset, 10 labels per class for "
        "training and 10 for validation, one training seed per trial, at most 30 epochs with "
        "patience 3; BioTune N=6, E=2. Reference: the paper's BioTune with 46 trials (46 full "
        "fine-tunes); every other search of the same seed gets the epochs it trained. "
        "Multi-fidelity BioTune evolves at 4 epochs of training (the first 4 epochs of a full "
        "run) and promotes each new elite to the full protocol; it also re-scores elites at "
        "the low fidelity (the command line's defaults). Surrogate-assisted BioTune is "
        "multi-fidelity BioTune whose children and immigrants are each the best predicted "
        "of 3 candidates (`--surrogate-candidates 3`); with full fidelity, it is the paper's "
        "BioTune with that pre-selection. TPE and CMA-ES get Hyperband "
        "pruning with its first rung at 4 epochs (reduction factor 3). The rank correlation "
        "column pools every plan a multi-fidelity search promoted (all seeds) and correlates "
        "its low-fidelity value (the mean of its low-fidelity trials) with its full one: how "
        "well 4 epochs rank the plans good enough to be elites. At each checkpoint "
        "the hand-over is the plan train-best would pick from the trials finished within "
        "that compute (top 5 re-validated with seeds 100-102), trained with seeds 0-2 and "
        "tested: mean ± standard error over the search seeds."),
    "protocol": (
        "The paper's protocol (N=10, E=3, 3 training seeds per trial, at most 30 epochs, "
        "patience 3) on mnist5k -> digits, 10 labels per class, with the built-in `small` "
        "CNN and with a ResNet-18 at 32 px pretrained here on mnist5k. Reference: the paper's "
        "BioTune, 140 trials; the other searches get a third of the epochs it trained on the "
        "same seed. Multi-fidelity BioTune's low fidelity is one seed run of at most 4 "
        "epochs; promotions train all 3 seeds in full. Hand-overs as in the transfer part."),
}


if __name__ == "__main__":
    main()
