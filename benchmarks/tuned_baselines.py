"""Fine-tuning baselines at the paper's learning rate and with their base learning rate tuned
on validation (what ``biotune-optuna baseline --tune-lr`` does), on the transfer tasks;
rewrites the ``tuned-baselines`` section of benchmarks/RESULTS.md.

    .venv/bin/python -m benchmarks.tuned_baselines                 # all four tasks
    .venv/bin/python -m benchmarks.tuned_baselines --tasks mnist    # one task

Model, splits, training loop and test seeds are those of ``benchmarks.transfer`` at the same
batch size and patience, so these rows sit beside that section's searches. The rate is picked
once per task and method, by mean validation over seeds 100-102, as each search's plan is.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

from benchmarks import results
from benchmarks.common import (
    PAPER_PROTOCOL,
    TRANSFERS,
    Transfer,
    add_protocol_options,
    cell,
    protocol_config,
)
from biotune_optuna.app.config import LR_GRID
from biotune_optuna.app.jobs import REVALIDATION_SEEDS, task_for
from biotune_optuna.finetuning.baselines import baseline
from biotune_optuna.finetuning.evaluation import evaluate_plan, tune_base_lr
from biotune_optuna.finetuning.names import BASELINES


def run_task(task: Transfer, args: argparse.Namespace) -> str:
    config = protocol_config(task, args)
    problem = task_for(config)
    train = config.train_config()
    seeds = list(range(args.seeds))
    rows = []
    start = time.perf_counter()
    for name in BASELINES:
        plan, method = baseline(name, problem.block_names)
        paper = evaluate_plan(problem, plan, train, seeds, name, method=method)
        lr, scores = tune_base_lr(problem, plan, train, LR_GRID, REVALIDATION_SEEDS, method)
        tuned = evaluate_plan(problem, plan, replace(train, base_lr=lr), seeds, name,
                              method=method)
        gain = tuned.mean() - paper.mean()
        rows.append([name, f"{100 * paper.trainable_fraction:.1f}%",
                     cell([r.test.balanced_accuracy for r in paper.runs]),
                     " / ".join(f"{scores[r]:.3f}" for r in LR_GRID), f"{lr:g}",
                     cell([r.test.balanced_accuracy for r in tuned.runs]), f"{gain:+.4f}"])
        print(task.key, " | ".join(rows[-1]), flush=True)
    elapsed = time.perf_counter() - start
    header = ["method", "trainable", f"test at lr {train.base_lr:g}",
              "validation at lr " + " / ".join(f"{r:g}" for r in LR_GRID), "chosen lr",
              "test at chosen lr", "gain"]
    title = (f"### {task.source} -> {task.target}" + (f" ({task.note})" if task.note else "")
             + f"\n\n{problem.splits.summary()} images; {elapsed / 60:.1f} min for this task.\n")
    return title + "\n" + results.table(header, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_protocol_options(parser)
    args = parser.parse_args()
    sections = []
    for key in args.tasks.split(","):
        sections.append(run_task(TRANSFERS[key], args))
        print(sections[-1], flush=True)
    command = (f".venv/bin/python -m benchmarks.tuned_baselines --tasks {args.tasks} "
               f"--seeds {args.seeds} --batch-size {args.batch_size} "
               f"--patience {args.patience}")
    body = (f"Command: `{command}` ({results.machine()}).\n\n"
            f"The `small` CNN, splits ({args.shots} labels per class for training and for "
            f"validation) and test seeds 0..{args.seeds - 1} of the transfer section at batch "
            f"{args.batch_size} and patience {args.patience}; test balanced accuracy, mean ± "
            "std. Each method's base learning rate is chosen from the grid by mean validation "
            "balanced accuracy over seeds 100-102 (the seeds that pick each search's plan), "
            "then retrained and tested with the test seeds. L2-SP/L1-SP at alpha = beta = "
            "0.01, LoRA rank 4.\n\n" + "\n\n".join(sections))
    if not args.no_write:
        paper = (args.batch_size, args.patience) == tuple(PAPER_PROTOCOL.values())
        key = "tuned-baselines" + ("" if paper else f"-b{args.batch_size}-p{args.patience}")
        results.write_section(key, "Baselines with a tuned learning rate" + (
            "" if paper else f" (batch {args.batch_size}, patience {args.patience})"), body)


if __name__ == "__main__":
    main()
