"""BioTune against fine-tuning baselines and against other samplers on the offline transfer
tasks, 5 seeds each; rewrites the ``transfer`` section of benchmarks/RESULTS.md.

    .venv/bin/python -m benchmarks.transfer                 # all four tasks, about an hour
    .venv/bin/python -m benchmarks.transfer --tasks digits  # one task
    .venv/bin/python -m benchmarks.transfer --batch-size 16  # another protocol, own section
    .venv/bin/python -m benchmarks.transfer --train-seeds 3  # 3 seeds per trial, own section

Every method uses the same pre-trained model, splits (10 labels per class for training and
10 for validation, the rest or the official test split for testing), training loop and
seeds. Searches (BioTune, TPE, Random, CMA-ES) get an equal budget; each picks its plan as
``train-best`` does (top 5 trials re-validated), which is then retrained with training seed
s, the seed the baselines use too. Studies
persist in benchmarks/out/transfer.db, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks import results
from benchmarks.common import (
    PAPER_PROTOCOL,
    TRANSFERS,
    Transfer,
    add_protocol_options,
    cell,
    protocol_config,
    search_seconds,
)
from biotune_optuna.app.config import SearchConfig
from biotune_optuna.app.jobs import REVALIDATION_SEEDS, search, select_plan, task_for
from biotune_optuna.finetuning.baselines import baseline
from biotune_optuna.finetuning.evaluation import evaluate_plan
from biotune_optuna.finetuning.names import BASELINES
from biotune_optuna.sampler.population import Layout

# (row label, study name part, sampler, options): every search gets the same budget.
SEARCHES = (
    ("biotune", "biotune", "biotune", {"rescore_elites": False}),
    ("biotune, paper genome (head may freeze)", "biotune-paper", "biotune",
     {"train_head": False, "rescore_elites": False}),
    ("tpe", "tpe", "tpe", {}),
    ("random", "random", "random", {}),
    ("cmaes", "cmaes", "cmaes", {}),
)


def section_of(args: argparse.Namespace) -> str:
    """``transfer`` for the paper's protocol with one training seed per trial and no
    trainable penalty; for another, e.g. ``transfer-b16-p3``, ``transfer-b96-p3-t3`` (3
    training seeds per trial) or ``transfer-b96-p3-l0.1`` (trainable penalty 0.1)."""
    extras = (("" if args.train_seeds == 1 else f"-t{args.train_seeds}") +
        (f"-l{args.trainable_penalty:g}" if args.trainable_penalty else ""))
    if (args.batch_size, args.patience) == tuple(PAPER_PROTOCOL.values()) and not extras:
        return "transfer"
    return f"transfer-b{args.batch_size}-p{args.patience}{extras}"


def variant(args: argparse.Namespace) -> str:
    """How a section's protocol differs from the paper's, for its title."""
    return (f"batch {args.batch_size}, patience {args.patience}, {seeds_per_trial(args)} per "
            "trial" + (f", trainable penalty {args.trainable_penalty:g}"
                       if args.trainable_penalty else ""))


def seeds_per_trial(args: argparse.Namespace) -> str:
    return f"{args.train_seeds} training seed" + ("s" if args.train_seeds > 1 else "")


def config_for(task: Transfer, args: argparse.Namespace) -> SearchConfig:
    return protocol_config(task, args).replace(
        study_name=task.key, storage=f"sqlite:///benchmarks/out/{section_of(args)}.db",
        population=args.population, elite=args.elite, generations=args.generations,
        train_seeds=list(range(args.train_seeds)), trainable_penalty=args.trainable_penalty)


def run_task(task: Transfer, args: argparse.Namespace) -> tuple[str, list[str]]:
    config = config_for(task, args)
    problem = task_for(config)
    seeds = list(range(args.seeds))
    train = config.train_config()
    rows = []
    start = time.perf_counter()
    for method in BASELINES:
        plan, hooks = baseline(method, problem.block_names)
        e = evaluate_plan(problem, plan, train, seeds, method, method=hooks)
        rows.append([method, cell([r.test.balanced_accuracy for r in e.runs]),
                     cell([r.test.accuracy for r in e.runs]),
                     f"{100 * e.trainable_fraction:.1f}%", "-", "-",
                     f"{sum(r.seconds for r in e.runs):.0f}"])
        print(task.key, " | ".join(rows[-1]), flush=True)
    scratch = task_for(config.replace(weights="none"))
    plan, _ = baseline("full", scratch.block_names)
    # random weights start at chance, where patience 3 would stop them before they learn
    patience = max(config.patience, 10)
    e = evaluate_plan(scratch, plan, config.replace(patience=patience).train_config(), seeds,
                      "scratch")
    rows.append([f"from scratch (full, no pretraining, patience {patience})",
                 cell([r.test.balanced_accuracy for r in e.runs]),
                 cell([r.test.accuracy for r in e.runs]), "100.0%", "-", "-",
                 f"{sum(r.seconds for r in e.runs):.0f}"])
    for label, part, sampler, options in SEARCHES:
        best_val, tests, tops, fractions, seconds = [], [], [], [], 0.0
        for seed in seeds:
            study = search(config.replace(study_name=f"{task.key}-{part}-s{seed}",
                                          sampler=sampler, seed=seed, **options), quiet=True,
                           task=problem)
            seconds += search_seconds(study)
            best_val.append(study.best_value)
            _, plan, _ = select_plan(study, problem, train, list(REVALIDATION_SEEDS),
                                     top_k=5, quiet=True,
                                     trainable_penalty=config.trainable_penalty)
            run = evaluate_plan(problem, plan, train, [seed], label).runs[0]
            tests.append(run.test.balanced_accuracy)
            tops.append(run.test.accuracy)
            fractions.append(run.trainable_params / run.total_params)
        rows.append([f"{label} search + retrain", cell(tests), cell(tops),
                     f"{100 * np.mean(fractions):.1f}%", cell(best_val),
                     str(config.n_trials), f"{seconds:.0f}"])
        print(task.key, " | ".join(rows[-1]), flush=True)
    elapsed = time.perf_counter() - start
    header = ["method", "test balanced acc", "test top-1", "trainable", "best validation",
              "trials per search", "seconds (all seeds)"]
    # seconds: training time of the baselines' runs; for searches, the trials' own time
    title = (f"### {task.source} -> {task.target}" + (f" ({task.note})" if task.note else "")
             + f"\n\n{problem.splits.summary()} images; {elapsed / 60:.1f} min for this task.\n")
    return title + "\n" + results.table(header, rows), rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_protocol_options(parser)
    parser.add_argument("--population", type=int, default=6, help="BioTune N (default: 6)")
    parser.add_argument("--elite", type=int, default=2, help="BioTune E (default: 2)")
    parser.add_argument("--generations", type=int, default=5,
                        help="BioTune generations; fixes every search's budget (default: 5)")
    parser.add_argument("--train-seeds", type=int, default=1,
                        help="training seeds averaged per search trial (default: 1; the "
                        "paper: 3)")
    parser.add_argument("--trainable-penalty", type=float, default=0.0,
                        help="searches maximise validation - this x trainable fraction "
                        "(default: 0)")
    args = parser.parse_args()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    (results.RESULTS.parent / "out").mkdir(exist_ok=True)
    sections = []
    for key in args.tasks.split(","):
        text, _ = run_task(TRANSFERS[key], args)
        sections.append(text)
        print(text, flush=True)
    budget = Layout(args.population, args.elite).n_trials(args.generations)
    command = (f".venv/bin/python -m benchmarks.transfer --tasks {args.tasks} --seeds "
               f"{args.seeds} --population {args.population} --elite {args.elite} "
               f"--generations {args.generations}"
               + (f" --batch-size {args.batch_size} --patience {args.patience}"
                  f" --train-seeds {args.train_seeds}"
                  + (f" --trainable-penalty {args.trainable_penalty:g}"
                     if args.trainable_penalty else "")
                  if section_of(args) != "transfer" else ""))
    body = (f"Command: `{command}` ({results.machine()}).\n\n"
            f"Built-in `small` CNN (0.3M parameters) pretrained on the source dataset, "
            f"{args.shots} labels per class for training and {args.shots} for validation; "
            f"test balanced accuracy (the paper's metric) and top-1, mean ± std over "
            f"{args.seeds} seeds (0..{args.seeds - 1}), the same seeds for every method. "
            f"Searches: {budget} trials each (BioTune N={args.population}, "
            f"E={args.elite}, {args.generations} generations; TPE, Random and CMA-ES at the "
            "same budget; all with the head always trained, plus BioTune with the paper's "
            "genome, where the head's gene may freeze it), "
            f"{seeds_per_trial(args)} per trial, 30 epochs, "
            f"batch {args.batch_size}, patience {args.patience}. Each "
            "search's plan is chosen as `train-best` does: the best of its top 5 trials by "
            "mean validation over seeds 100-102; search seed s's plan is then retrained and "
            "tested with training seed s. 'best validation' is the search's own best "
            "objective (validation balanced accuracy over its training seeds, optimistic"
            + (f", less {args.trainable_penalty:g} x the trainable fraction, which also "
               "weighs in the choice of plan" if args.trainable_penalty else "") + ").\n\n"
            + "\n\n".join(sections))
    if not args.no_write:
        protocol = "" if section_of(args) == "transfer" else f" ({variant(args)})"
        results.write_section(section_of(args), "Transfer tasks: BioTune, baselines and "
                              f"samplers{protocol}", body)


if __name__ == "__main__":
    main()
