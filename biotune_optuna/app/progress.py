"""Progress display for searches: a bar of trials (and, verbosely, of epochs) on stderr."""

from __future__ import annotations

import sys
import time

import optuna
from optuna.trial import TrialState
from tqdm import tqdm

from biotune_optuna.app import keys
from biotune_optuna.sampler.population import RETRY_OF, TrialRecord


class SearchProgress:
    """An Optuna callback that advances a trial bar with the best value and generation."""

    def __init__(self, study: optuna.Study, budget: int, quiet: bool = False,
                 epochs: bool = False) -> None:
        done = sum(1 for t in study.get_trials(deepcopy=False)
                   if t.state.is_finished() and RETRY_OF not in t.system_attrs)
        self.quiet = quiet
        self.started = time.monotonic()
        # In a log file (no terminal) a line every 30 s instead of a redrawn bar.
        interval = 0.1 if sys.stderr.isatty() else 30.0
        self.trials = tqdm(total=budget, initial=min(done, budget), desc="trials", unit="trial",
                           file=sys.stderr, disable=quiet, dynamic_ncols=True,
                           mininterval=interval)
        self.epochs = tqdm(desc="epochs", unit="epoch", file=sys.stderr, leave=False,
                           disable=quiet or not epochs, dynamic_ncols=True,
                           mininterval=interval)
        self._describe(study)

    def _describe(self, study: optuna.Study) -> None:
        try:
            best = f"{study.best_value:.4f}"
        except ValueError:
            best = "-"
        trials = study.get_trials(deepcopy=False)
        generations = [TrialRecord.of(t) for t in trials]
        if any(generations):  # a BioTune study
            generation = max(r.generation for r in generations if r)
            self.trials.set_postfix_str(f"gen {generation} best {best}")
        else:
            self.trials.set_postfix_str(f"best {best}")

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if RETRY_OF not in trial.system_attrs:
            self.trials.update(1)
        reason = trial.user_attrs.get(keys.FAILED_REASON)
        if trial.state == TrialState.FAIL and reason:
            self.trials.write(f"trial {trial.number} failed: {reason}")
        self._describe(study)
        self.epochs.reset()

    def epoch(self, run: int, epoch: int, value: float) -> None:
        self.epochs.update(1)
        self.epochs.set_postfix_str(f"seed run {run + 1} val {value:.4f}")

    def waiting(self, running: list) -> None:
        numbers = ", ".join(str(t.number) for t in running)
        self.trials.write(f"waiting for running trial(s) {numbers}: another worker's, or a dead "
                          "worker's that will be retried once its heartbeat expires")

    def close(self) -> None:
        self.epochs.close()
        self.trials.close()
