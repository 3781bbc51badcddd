"""Noise-aware BioTune (elite re-scoring, elite pair mean) against today's BioTune, TPE,
CMA-ES and Random, where validation noise misleads a search.

    .venv/bin/python -m benchmarks.noise_aware --part synthetic --seeds 20  # minutes
    .venv/bin/python -m benchmarks.noise_aware --part transfer     # about an hour

synthetic: the fine-tuning tasks of ``biotune_optuna.sampler.synthetic`` at two noise
levels, 20 seeds, 140 trials per search (one evaluation per trial, so equal trial and
evaluation budgets). A search's plan is chosen as ``train-best`` does (its 5 best trials
each evaluated 3 more times, best mean), and scored by its noise-free accuracy; 'gap' is
the search's best value minus the noise-free accuracy of that trial.

transfer: the four offline transfer tasks of ``benchmarks.transfer``, 5 seeds, 46 trials per
search with one training seed per trial (so equal trial and fine-tune budgets, re-scoring
runs included), full fine-tuning and L2-SP beside them; the chosen plan is retrained and
tested as in that benchmark.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
import warnings

import numpy as np
import optuna

from benchmarks import results
from benchmarks.common import (
    RECHECK_TOP_K,
    RECHECKS,
    TRANSFERS,
    add_protocol_options,
    handed_over,
    protocol_config,
    search_seconds,
)
from benchmarks.results import mean_se
from biotune_optuna import BioTuneSampler
from biotune_optuna.app.studies import other_sampler
from biotune_optuna.sampler import genome
from biotune_optuna.sampler.synthetic import TASKS

# (label, sampler, BioTune's noise-aware options)
VARIANTS = (
    ("biotune (today)", "biotune", {"rescore_elites": False}),
    ("biotune + re-scoring", "biotune", {"rescore_elites": True}),
    ("biotune + pair mean", "biotune", {"rescore_elites": False, "elite_pair_mean": True}),
    ("biotune + both", "biotune", {"rescore_elites": True, "elite_pair_mean": True}),
    ("tpe", "tpe", {}),
    ("cmaes", "cmaes", {}),
    ("random", "random", {}),
)
# the transfer tasks take an hour: the pair mean alone is measured on the synthetic tasks
TRANSFER_VARIANTS = tuple(v for v in VARIANTS if v[0] != "biotune + pair mean")
BUDGET = 140
NOISE_LEVELS = (0.01, 0.05)


# -- synthetic ----------------------------------------------------------------------------

def search_estimate(study: optuna.Study, params: dict) -> float:
    """What a search believes of a plan: the mean value of its trials with these parameters
    (one trial, or an elite and its re-scoring runs)."""
    return float(np.mean([t.value for t in study.trials
                          if t.params == params and t.value is not None]))


def synthetic_search(task, sampler: str, options: dict, seed: int) -> tuple[float, float]:
    """(noise-free accuracy of the chosen plan, the search's estimate of that plan minus
    its noise-free accuracy) of one search."""
    if sampler == "biotune":
        chosen = BioTuneSampler(10, 3, seed=seed, search_space=task.search_space,
                                ideal_value=1.0, **options)
    else:
        chosen = other_sampler(sampler, seed)
    study = optuna.create_study(direction="maximize", sampler=chosen)
    study.optimize(task, n_trials=BUDGET)
    handed = handed_over(task, study)
    truth = task.accuracy(genome.decode(handed.params, task.blocks))
    return truth, search_estimate(study, handed.params) - truth


def synthetic_part(seeds: int) -> str:
    tables = []
    for noise in NOISE_LEVELS:
        header = ["sampler"] + [f"{name}: {what}" for name in TASKS
                                for what in ("chosen plan", "gap")]
        rows = []
        for label, sampler, options in VARIANTS:
            row = [label]
            for base in TASKS.values():
                found = [synthetic_search(dataclasses.replace(base, noise=noise, seed=s),
                                          sampler, options, s) for s in range(seeds)]
                row += [mean_se([f[0] for f in found]), mean_se([f[1] for f in found])]
            rows.append(row)
            print(noise, " | ".join(row), flush=True)
        tables.append(f"Noise σ = {noise}:\n\n{results.table(header, rows)}")
    command = f".venv/bin/python -m benchmarks.noise_aware --part synthetic --seeds {seeds}"
    return (f"Command: `{command}` ({results.machine()}).\n\nThe fine-tuning tasks of "
            "`biotune_optuna.sampler.synthetic.TASKS` with evaluation noise σ, "
            f"{BUDGET} trials per search (BioTune N=10, E=3), mean ± standard error over "
            f"{seeds} seeds. 'chosen plan': noise-free accuracy of the plan picked as "
            f"train-best does (the {RECHECK_TOP_K} best trials re-evaluated {RECHECKS} times, best "
            "mean); 'gap': the search's own estimate of that plan (the mean value of its "
            "trials) minus its noise-free accuracy: how much the search fooled itself.\n\n"
            + "\n\n".join(tables))


# -- transfer -----------------------------------------------------------------------------

def transfer_part(args: argparse.Namespace) -> str:
    from biotune_optuna.app.jobs import REVALIDATION_SEEDS, search, select_plan, task_for
    from biotune_optuna.finetuning.baselines import baseline
    from biotune_optuna.finetuning.evaluation import evaluate_plan

    seeds = list(range(args.seeds))
    sections, summary = [], []
    for key in args.tasks.split(","):
        transfer = TRANSFERS[key]
        config = protocol_config(transfer, args).replace(
            study_name=key, storage="sqlite:///benchmarks/out/noise_aware.db",
            population=6, elite=2, trials=46, train_seeds=[0])
        problem = task_for(config)
        train = config.train_config()
        start = time.perf_counter()
        rows, tests_of = [], {}
        for method in ("full", "l2sp"):
            plan, hooks = baseline(method, problem.block_names)
            runs = evaluate_plan(problem, plan, train, seeds, method, method=hooks).runs
            tests_of[method] = [r.test.balanced_accuracy for r in runs]
            rows.append([method, mean_se(tests_of[method]), "-", "-", "-",
                         str(len(seeds))])
            print(key, " | ".join(rows[-1]), flush=True)
        for label, sampler, options in TRANSFER_VARIANTS:
            tests, best_val, gaps, runs_done, seconds = [], [], [], 0, 0.0
            for seed in seeds:
                part = label.split(" (")[0].replace(" + ", "-").replace(" ", "-")
                study = search(config.replace(study_name=f"{key}-{part}-s{seed}",
                                              sampler=sampler, seed=seed, **options),
                               quiet=True, task=problem)
                seconds += search_seconds(study)
                runs_done += len(study.trials)
                trial, plan, _ = select_plan(study, problem, train,
                                             list(REVALIDATION_SEEDS), top_k=5, quiet=True)
                test = evaluate_plan(problem, plan, train, [seed], label).runs[0]
                tests.append(test.test.balanced_accuracy)
                best_val.append(study.best_value)
                gaps.append(search_estimate(study, trial.params)
                            - test.test.balanced_accuracy)
            tests_of[label] = tests
            rows.append([f"{label} search + retrain", mean_se(tests), mean_se(best_val),
                         mean_se(gaps), f"{seconds:.0f}", str(runs_done)])
            print(key, " | ".join(rows[-1]), flush=True)
        summary.append((key, tests_of))
        header = ["method", "test balanced acc", "best validation", "validation gap",
                  "search seconds", "fine-tunes (searches)"]
        sections.append(f"### {transfer.source} -> {transfer.target}"
                        + (f" ({transfer.note})" if transfer.note else "")
                        + f"\n\n{problem.splits.summary()} images; "
                        f"{(time.perf_counter() - start) / 60:.1f} min for this task.\n\n"
                        + results.table(header, rows))
    command = (f".venv/bin/python -m benchmarks.noise_aware --part transfer --tasks "
               f"{args.tasks} --seeds {args.seeds}")
    return (f"Command: `{command}` ({results.machine()}).\n\nBuilt-in `small` CNN "
            "pretrained on the source dataset, 10 labels per class for training and 10 for "
            "validation, the paper's training protocol (batch 96, patience 3, at most 30 "
            "epochs). Every search: 46 trials, one training seed per trial, so the trial "
            "budget and the fine-tune budget are equal for all (BioTune today: N=6, E=2, 5 "
            "generations; with re-scoring 4 generations of N + 2E = 10, the re-scoring runs "
            "counted). Each search's plan is chosen as `train-best` does (top 5 trials "
            "re-validated with seeds 100-102) and retrained and tested with training seed "
            "s for search seed s, the seed the baselines use too. Mean ± standard error "
            f"over {args.seeds} seeds. 'validation gap': the search's validation estimate of "
            "the plan it hands over (the mean of that plan's trials: one, or an elite and its "
            "re-scoring runs) minus the retrained plan's test balanced accuracy.\n\n"
            + "\n\n".join(sections) + "\n\n" + win_table(summary))


def win_table(summary) -> str:
    """Which BioTune variant beats TPE, by task (mean test balanced accuracy)."""
    header = ["task", *(label for label, _, _ in TRANSFER_VARIANTS
                        if label.startswith("biotune")),
              "tpe"]
    rows = [[key, *(f"{np.mean(tests[label]):.4f}" for label in header[1:])]
            for key, tests in summary]
    return "Mean test balanced accuracy by task:\n\n" + results.table(header, rows)


def main() -> None:

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("synthetic", "transfer"), required=True)
    add_protocol_options(parser)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if args.part == "synthetic":
        body = synthetic_part(args.seeds)
        results.publish("noise_synthetic", "Noise-aware BioTune on noisy synthetic tasks",
                        body, write=not args.no_write)
    else:
        (results.RESULTS.parent / "out").mkdir(exist_ok=True)
        body = transfer_part(args)
        results.publish("noise_transfer", "Noise-aware BioTune on the transfer tasks", body,
                        write=not args.no_write)


if __name__ == "__main__":
    main()
