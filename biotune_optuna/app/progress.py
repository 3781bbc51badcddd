"""Progress display for searches: a bar of trials (and, verbosely, of epochs) on stderr."""

from __future__ import annotations

import sys
import time

import optuna
from optuna.trial import TrialState
from tqdm import tqdm

from biotune_optuna import contents
from biotune_optuna.app.runner import Budget
from biotune_optuna.sampler.records import TrialRecord, is_retry


class SearchProgress:
    """An Optuna callback that advances a bar of trials (or, for a search with a compute
    budget only, of the epochs trained) with the best value and generation."""

    def __init__(self, study: optuna.Study, budget: Budget, quiet: bool = False,
                 epochs: bool = False, grace: int = 180) -> None:
        self.grace, self._waited_for = grace, None
        trials = study.get_trials(deepcopy=False)
        self.by_compute = budget.trials is None
        if self.by_compute:
            total, done = budget.epochs, contents.compute_spent(trials).epochs
        else:
            total = budget.trials
            done = sum(1 for t in trials
                       if t.state.is_finished() and not is_retry(t))
        self.quiet = quiet
        self.started = time.monotonic()
        # In a log file (no terminal) a line every 30 s instead of a redrawn bar.
        interval = 0.1 if sys.stderr.isatty() else 30.0
        self.trials = tqdm(total=total, initial=min(done, total),
                           desc="compute" if self.by_compute else "trials",
                           unit="epoch" if self.by_compute else "trial", file=sys.stderr,
                           disable=quiet, dynamic_ncols=True, mininterval=interval)
        self.epochs = tqdm(desc="epochs", unit="epoch", file=sys.stderr, leave=False,
                           disable=quiet or not epochs, dynamic_ncols=True,
                           mininterval=interval)
        self._describe(study)

    def _describe(self, study: optuna.Study) -> None:
        ranked = contents.ranked_plans(study)
        best = "-" if not ranked else f"{ranked[0].value:.4f}" + (
            " (low fidelity)" if ranked[0].fidelity == contents.LOW else "") + (
            # a mean of re-scoring runs, which a later run may lower
            f" (mean of {ranked[0].evaluations})" if ranked[0].evaluations > 1 else "")
        if ranked and ranked[0].costs:  # several objectives: the front's size too
            front = sum(1 for p in ranked if p.front == 0 and p.fidelity == ranked[0].fidelity)
            best += f", front {front}"
        trials = study.get_trials(deepcopy=False)
        generations = [TrialRecord.of(t) for t in trials]
        if any(generations):  # a BioTune study
            generation = max(r.generation for r in generations if r)
            self.trials.set_postfix_str(f"gen {generation} best {best}")
        else:
            self.trials.set_postfix_str(f"best {best}")

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if self.by_compute:
            self.trials.update(contents.trial_compute(trial).epochs)
        elif not is_retry(trial):
            self.trials.update(1)
        reason = contents.failed_reason(trial)
        if trial.state == TrialState.FAIL and reason:
            self.trials.write(f"trial {trial.number} failed: {reason}", file=sys.stderr)
        self._describe(study)
        self.epochs.reset()

    def epoch(self, run: int, epoch: int, value: float) -> None:
        self.epochs.update(1)
        self.epochs.set_postfix_str(f"seed run {run + 1} val {value:.4f}")

    def waiting(self, running: list) -> None:
        """Said once per set of trials waited for (the wait polls every few seconds)."""
        numbers = [t.number for t in running]
        if self.quiet or numbers == self._waited_for:
            return
        self._waited_for = numbers
        deadline = time.strftime("%H:%M:%S", time.localtime(time.time() + self.grace))
        self.trials.write(f"waiting for running trial(s) {', '.join(map(str, numbers))}: "
                          "another worker's, or a dead worker's, which is failed and retried "
                          f"once its heartbeat is {self.grace} s old (--grace), by {deadline} "
                          "at the latest", file=sys.stderr)

    def close(self) -> None:
        self.epochs.close()
        self.trials.close()
