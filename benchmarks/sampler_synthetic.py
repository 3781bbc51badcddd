"""BioTune against TPE, Random and CMA-ES on synthetic objectives, and the samplers' own cost.

    .venv/bin/python -m benchmarks.sampler_synthetic            # full run, rewrites RESULTS.md
    .venv/bin/python -m benchmarks.sampler_synthetic --seeds 2 --no-write  # quick look

Quality: the best value of each study at an equal budget of 140 trials (BioTune's paper
budget, N=10, E=3, 10 generations), mean and std over seeds, in one run. Cost: the
time spent inside the sampler's methods per trial, in memory and on SQLite, over trials
1-140, 141-400 and 401-1,000, side by side with TPE and Random.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings

import numpy as np
import optuna

from benchmarks import results
from biotune_optuna import BioTuneSampler
from biotune_optuna.app.studies import other_sampler
from biotune_optuna.sampler.synthetic import FUNCTIONS, TASKS, FineTuneTask

SAMPLERS = ("biotune", "tpe", "random", "cmaes")
BUDGET = 140


def make_sampler(name: str, seed: int, objective) -> optuna.samplers.BaseSampler:
    if name != "biotune":
        return other_sampler(name, seed)
    ideal = 1.0 if objective.direction == "maximize" else 0.0
    threshold = "threshold" if "threshold" in objective.search_space else None
    return BioTuneSampler(seed=seed, search_space=objective.search_space, ideal_value=ideal,
                          threshold_param=threshold)


def best_values(objective, sampler_name: str, seeds: int) -> list[float]:
    best = []
    for seed in range(seeds):
        study = optuna.create_study(direction=objective.direction,
                                    sampler=make_sampler(sampler_name, seed, objective))
        study.optimize(objective, n_trials=BUDGET)
        best.append(study.best_value)
    return best


class TimedSampler(optuna.samplers.BaseSampler):
    """Delegates to a sampler and adds up the time spent in its methods."""

    def __init__(self, inner: optuna.samplers.BaseSampler) -> None:
        self.inner, self.seconds = inner, 0.0

    def _timed(self, method, *args):
        start = time.perf_counter()
        try:
            return method(*args)
        finally:
            self.seconds += time.perf_counter() - start

    def infer_relative_search_space(self, study, trial):
        return self._timed(self.inner.infer_relative_search_space, study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._timed(self.inner.sample_relative, study, trial, search_space)

    def sample_independent(self, study, trial, name, distribution):
        return self._timed(self.inner.sample_independent, study, trial, name, distribution)

    def before_trial(self, study, trial):
        return self._timed(self.inner.before_trial, study, trial)

    def after_trial(self, study, trial, state, values):
        return self._timed(self.inner.after_trial, study, trial, state, values)


def sampler_ms_by_trial(sampler_name: str, n_trials: int, objective, storage=None,
                        ) -> np.ndarray:
    """Milliseconds spent inside the sampler's methods for each trial of one study."""
    sampler = TimedSampler(make_sampler(sampler_name, 0, objective))
    study = optuna.create_study(direction=objective.direction, sampler=sampler,
                                storage=storage)
    spent = np.zeros(n_trials)

    def record(study, trial):
        spent[trial.number] = sampler.seconds * 1e3
        sampler.seconds = 0.0

    study.optimize(objective, n_trials=n_trials, callbacks=[record])
    return spent


class ReportingTask:
    """A 12-block genome (13 genes) whose trials report 30 intermediate values, as a
    fine-tuning objective does once per epoch: what a persisted study holds per trial."""

    def __init__(self, reports: int = 30) -> None:
        blocks = tuple(f"block{i}" for i in range(12))
        self.task = FineTuneTask("cost", blocks, gains=tuple(np.linspace(-0.03, 0.1, 12)),
                                 ideal_multipliers=(1.0,) * 12)
        self.reports = reports
        self.direction, self.search_space = self.task.direction, self.task.search_space

    def __call__(self, trial: optuna.Trial) -> float:
        value = self.task(trial)
        for step in range(self.reports):
            trial.report(value, step)
        return value


COST_RANGES = ((1, 140), (141, 400), (401, 1000))
COST_SAMPLERS = ("biotune", "tpe", "random")


def cost_section() -> str:
    """Sampler time per trial in memory and on SQLite, by range of trial numbers."""
    objective = ReportingTask()
    n_trials = COST_RANGES[-1][1]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for storage in ("memory", "sqlite"):
            spent = {}
            for name in COST_SAMPLERS:
                url = None if storage == "memory" else f"sqlite:///{folder}/{name}.db"
                spent[name] = sampler_ms_by_trial(name, n_trials, objective, url)
            for low, high in COST_RANGES:
                means = {n: float(spent[n][low - 1:high].mean()) for n in COST_SAMPLERS}
                rows.append([storage, f"{low}-{high}", *(f"{means[n]:.2f}" for n in means),
                             f"{means['biotune'] / means['tpe']:.2f}"])
                print(" | ".join(rows[-1]), flush=True)
    return results.table(["storage", "trials", *(f"{n} ms/trial" for n in COST_SAMPLERS),
                          "BioTune / TPE"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--no-write", action="store_true", help="print, do not edit RESULTS.md")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

    objectives = {**TASKS, **FUNCTIONS}
    header = ["objective", "direction", *SAMPLERS, "BioTune - Random", "BioTune - TPE"]
    rows = []
    for name, objective in objectives.items():
        stats = {s: best_values(objective, s, args.seeds) for s in SAMPLERS}
        means = {s: float(np.mean(v)) for s, v in stats.items()}
        cells = [f"{means[s]:.4f} ± {np.std(stats[s]):.4f}" for s in SAMPLERS]
        rows.append([name, objective.direction, *cells,
                     f"{means['biotune'] - means['random']:+.4f}",
                     f"{means['biotune'] - means['tpe']:+.4f}"])
        print(" | ".join(rows[-1]), flush=True)
    quality = results.table(header, rows)

    cost = cost_section()

    command = f".venv/bin/python -m benchmarks.sampler_synthetic --seeds {args.seeds}"
    body = (f"Command: `{command}` ({results.machine()}).\n\n"
            f"Best value at {BUDGET} trials, mean ± std over {args.seeds} seeds (higher is "
            "better for the fine-tuning tasks, accuracy-like; lower for the functions). "
            "Tasks are `biotune_optuna.sampler.synthetic.TASKS` (6 blocks + threshold, noise "
            "σ=0.01), functions are 7-dimensional on [0, 1].\n\n"
            f"{quality}\n\nTime spent inside the sampler's methods per trial, by range of "
            "trial numbers, over one study of 1,000 trials per sampler and storage (13 genes, "
            "30 intermediate values reported per trial, as a fine-tuning objective reports "
            f"each epoch), one run:\n\n{cost}\n")
    results.publish("sampler_synthetic", "Samplers on synthetic objectives", body,
                    write=not args.no_write)


if __name__ == "__main__":
    main()
