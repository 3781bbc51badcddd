"""The ``biotune-optuna`` command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import optuna

from biotune_optuna import BioTuneSampler
from biotune_optuna.synthetic import TASKS


def demo(args: argparse.Namespace) -> int:
    """Run BioTune on a synthetic fine-tuning task into a SQLite study; rerun to resume."""
    task = TASKS["near-domain"]
    Path("studies").mkdir(exist_ok=True)
    sampler = BioTuneSampler(seed=args.seed, search_space=task.search_space, ideal_value=1.0)
    study = optuna.create_study(study_name="synthetic-demo", storage=args.storage,
                                direction="maximize", sampler=sampler, load_if_exists=True)
    remaining = sampler.n_trials(10) - len(study.trials)
    if remaining > 0:
        study.optimize(task, n_trials=remaining)
    print(f"best value {study.best_value:.4f} after {len(study.trials)} trials "
          f"(noise-free optimum {task.best_accuracy():.4f})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="biotune-optuna", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run_demo = commands.add_parser("demo", help=demo.__doc__)
    run_demo.add_argument("--storage", default="sqlite:///studies/synthetic-demo.db")
    run_demo.add_argument("--seed", type=int, default=0)
    run_demo.set_defaults(handler=demo)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
