"""BioTune against TPE, Random and CMA-ES on synthetic objectives, and the samplers' own cost.

    .venv/bin/python -m benchmarks.sampler_synthetic            # full run, rewrites RESULTS.md
    .venv/bin/python -m benchmarks.sampler_synthetic --seeds 2 --no-write  # quick look

Quality: the best value of each study at an equal budget of 140 trials (BioTune's paper
budget, N=10, E=3, 10 generations), mean and std over seeds, in one run. Cost: the
time spent inside the sampler's methods per trial, with the study in memory, at 140 and
1,000 trials, side by side with TPE and Random.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import optuna

from benchmarks import results
from biotune_optuna import BioTuneSampler
from biotune_optuna.study import other_sampler
from biotune_optuna.synthetic import FUNCTIONS, TASKS

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


def sampler_seconds_per_trial(sampler_name: str, n_trials: int, objective) -> float:
    """Time spent inside the sampler's methods, per trial, over a whole study."""
    sampler = TimedSampler(make_sampler(sampler_name, 0, objective))
    study = optuna.create_study(direction=objective.direction, sampler=sampler)
    study.optimize(objective, n_trials=n_trials)
    return sampler.seconds / n_trials


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

    task = TASKS["near-domain"]
    cost_rows = []
    for n in (140, 1000):
        times = {s: sampler_seconds_per_trial(s, n, task) for s in ("biotune", "tpe", "random")}
        cost_rows.append([str(n), *(f"{times[s] * 1e3:.2f}" for s in times),
                          f"{times['biotune'] / times['tpe']:.2f}"])
        print(" | ".join(cost_rows[-1]), flush=True)
    cost = results.table(["trials", "BioTune ms/trial", "TPE ms/trial", "Random ms/trial",
                          "BioTune / TPE"], cost_rows)

    command = f".venv/bin/python -m benchmarks.sampler_synthetic --seeds {args.seeds}"
    body = (f"Command: `{command}` ({results.machine()}).\n\n"
            f"Best value at {BUDGET} trials, mean ± std over {args.seeds} seeds (higher is "
            "better for the fine-tuning tasks, accuracy-like; lower for the functions). "
            "Tasks are `biotune_optuna.synthetic.TASKS` (6 blocks + threshold, noise "
            "σ=0.01), functions are 7-dimensional on [0, 1].\n\n"
            f"{quality}\n\nTime spent inside the sampler's methods, per trial over a whole "
            f"study on `near-domain`, study in memory, one run:\n\n{cost}\n")
    print(body)
    if not args.no_write:
        results.write_section("sampler_synthetic", "Samplers on synthetic objectives", body)


if __name__ == "__main__":
    main()
