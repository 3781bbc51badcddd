"""Retrain plans with several seeds and report test metrics side by side."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from biotune_optuna.finetuning.task import Task
from biotune_optuna.finetuning.train import Method, RunResult, TrainConfig, fine_tune
from biotune_optuna.sampler.plan import FineTunePlan, recipe_plan


@dataclass
class Evaluation:
    """A method's runs on the test split, one per seed."""

    name: str
    runs: list[RunResult]
    trainable_fraction: float

    def _test(self, metric: str) -> np.ndarray:
        return np.array([getattr(r.test, metric) for r in self.runs])

    def mean(self, metric: str = "balanced_accuracy") -> float:
        return float(self._test(metric).mean())

    def std(self, metric: str = "balanced_accuracy") -> float:
        return float(self._test(metric).std())

    def as_dict(self) -> dict:
        return {"name": self.name, "seeds": [r.seed for r in self.runs],
                "test_balanced_accuracy": self._test("balanced_accuracy").tolist(),
                "test_accuracy": self._test("accuracy").tolist(),
                "trainable_fraction": self.trainable_fraction,
                "seconds": sum(r.seconds for r in self.runs)}


def save_checkpoint(path: str | Path, evaluation: Evaluation, **metadata) -> None:
    """The first run's best-epoch weights (kept with ``keep_first_model``) and metadata,
    written whole or not at all (a full disk leaves no half checkpoint)."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial")
    try:
        torch.save({"state_dict": evaluation.runs[0].model.state_dict(), **metadata}, partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def recipe_plans(block_names: Sequence[str]) -> dict[str, FineTunePlan]:
    """The usual hand-made recipes: full fine-tuning and linear probing (head only), 1x."""
    return {label: recipe_plan(name, block_names)
            for name, label in (("full", "full fine-tuning"), ("linear", "linear probing"))}


def evaluate_plan(task: Task, plan: FineTunePlan, config: TrainConfig, seeds: Sequence[int],
                  name: str, on_run: Callable[[RunResult], None] | None = None,
                  keep_first_model: bool = False, method: Method | None = None,
                  quiet: bool = True) -> Evaluation:
    """Train ``plan`` once per seed on the training split (early stopping on validation)
    and test the best epoch of each run; the first seed's model is kept on request. Unless
    ``quiet``, each run prints a line as it ends."""
    runs = []
    for seed in seeds:
        keep = keep_first_model and not runs
        run = fine_tune(task, plan, config, seed, evaluate_test=True, keep_model=keep,
                        method=method)
        if run.diverged:
            raise RuntimeError(f"{name} diverged with seed {seed}: {run.diverged}")
        runs.append(run)
        if not quiet:
            print(f"  {name}, seed {seed}: validation {run.value:.4f}, test balanced "
                  f"accuracy {run.test.balanced_accuracy:.4f} ({run.epochs_run} epochs, "
                  f"{run.seconds:.1f} s)", flush=True)
        if on_run is not None:
            on_run(run)
    fraction = runs[0].trainable_params / runs[0].total_params
    return Evaluation(name, runs, fraction)


def tune_base_lr(task: Task, plan: FineTunePlan, config: TrainConfig, grid: Sequence[float],
                 seeds: Sequence[int], method: Method | None = None
                 ) -> tuple[float, dict[float, float]]:
    """The base learning rate of ``grid`` with the best mean *validation* value over
    ``seeds`` (ties: the first; a rate that diverges scores -inf), and every rate's value:
    a baseline tuned as fairly as a search tunes its multipliers. The test split is not
    touched; keep ``seeds`` apart from the seeds that are tested."""
    scores = {}
    for lr in grid:
        runs = [fine_tune(task, plan, replace(config, base_lr=lr), seed, method=method)
                for seed in seeds]
        scores[lr] = (-math.inf if any(r.diverged for r in runs) else
            sum(r.value for r in runs) / len(runs))
    return max(scores, key=scores.get), scores


def results_table(evaluations: Sequence[Evaluation]) -> str:
    """A plain-text table: test balanced accuracy and top-1 (mean ± std), trainable share."""
    header = f"{'method':<24} {'test balanced acc':>18} {'test top-1':>16} {'trainable':>10}"
    lines = [header, "-" * len(header)]
    for e in evaluations:
        lines.append(f"{e.name:<24} {e.mean():>10.4f} ± {e.std():.4f} "
                     f"{e.mean('accuracy'):>8.4f} ± {e.std('accuracy'):.4f} "
                     f"{100 * e.trainable_fraction:>9.2f}%")
    seeds = ", ".join(str(r.seed) for r in evaluations[0].runs) if evaluations else ""
    lines.append(f"(mean ± std over seeds {seeds}; the same seeds for every method)")
    return "\n".join(lines)
