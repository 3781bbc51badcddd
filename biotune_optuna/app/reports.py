"""What `status` prints about a study: trials by state, generation progress, best so far,
elapsed and remaining time."""

from __future__ import annotations

from collections import Counter

import optuna
from optuna.trial import TrialState

from biotune_optuna import contents
from biotune_optuna.sampler import records
from biotune_optuna.sampler.population import Layout, Progress
from biotune_optuna.sampler.records import is_retry, with_records


def status_report(study: optuna.Study) -> str:
    """Trials by state, generation progress, best so far, elapsed and remaining time."""
    trials = study.get_trials(deepcopy=False)
    config = contents.config(study)
    states = Counter(t.state.name for t in trials)
    lines = [f"study {study.study_name}: {len(trials)} trials (" +
             ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items())) + ")"]
    if config:
        lines.append(f"  {config.get('sampler')} sampler, {config.get('model')} on "
                     f"{config.get('dataset')}, seeds {config.get('train_seeds')}")
    slots = [t for t in trials if not is_retry(t)]
    if config.get("sampler") == "biotune":
        progress = Progress.of(with_records(trials))
        layout = Layout(config["population"], config["elite"], config.get("rescore_elites", False),
                        config.get("multi_fidelity", False))
        size = layout.generation_size(progress.generation)
        lines.append(f"  generation {progress.generation}: {progress.finished()} of {size} "
                     "trials finished")
    ranked = contents.ranked_plans(study)
    front = [p for p in ranked if p.front == 0 and p.fidelity == ranked[0].fidelity]
    if ranked and ranked[0].costs:
        volume = contents.hypervolume(study, ranked)
        lines.append(f"  front: {len(front)} plan{'s' * (len(front) != 1)}" + (
            "" if volume is None else f", hypervolume {volume:.4f} (share of the box from "
            "chance and full fine-tuning's costs to a perfect plan at no cost)")
            + "; `best` lists them")
    if ranked:
        best = ranked[0].trial
        lines.append(f"  best so far: trial {best.number}, value "
                     f"{contents.describe_value(ranked[0])}, trains "
                     f"{', '.join(contents.plan_of(study, best).trained_blocks) or '-'}")
    else:
        lines.append("  best so far: none completed yet")
    spent = contents.compute_spent(trials)
    if spent.seed_runs:
        lines.append(f"  compute: {spent.describe()}")
    busy = busy_seconds(trials)
    durations = [(t.datetime_complete - t.datetime_start).total_seconds() for t in trials
                 if t.state == TrialState.COMPLETE and t.datetime_complete and t.datetime_start]
    if busy:
        lines.append(f"  elapsed: {_duration(busy)} of searching (time with a trial "
                     "running; pauses between runs are not counted)")
    budget, epochs = contents.stored_budget(study)
    if durations and budget:
        left = max(budget - len(slots), 0) + states.get("RUNNING", 0)
        workers = max(states.get("RUNNING", 0), 1)
        mean = sum(durations) / len(durations)
        lines.append(f"  remaining: {left} of {budget} trials, about "
                     f"{_duration(left * mean / workers)} at {mean:.1f} s per trial "
                     f"and {workers} worker(s)")
    if epochs:
        lines.append(f"  compute budget: {spent.epochs:,} of {epochs:,} epochs spent" + (
            " (the trials running when it was reached finished past it)"
            if spent.epochs > epochs else ""))
    return "\n".join(lines)


def busy_seconds(trials) -> float:
    """The time at least one trial was running (the union of the trials' intervals). A
    trial whose worker died is left out: it was failed once its heartbeat expired, so its
    interval ends long after the worker stopped."""
    retried = records.retried(trials)
    intervals = sorted((t.datetime_start, t.datetime_complete) for t in trials
                       if t.datetime_start and t.datetime_complete and not (
                           t.number in retried and t.state == TrialState.FAIL
                           and not contents.interrupted(t)))
    total, end = 0.0, None
    for start, stop in intervals:
        if end is None or start > end:
            total += (stop - start).total_seconds()
            end = stop
        elif stop > end:
            total += (stop - end).total_seconds()
            end = stop
    return total


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def studies_listing(storage) -> str:
    """One line per study in ``storage``: trials, best value, sampler, model and dataset."""
    summaries = optuna.get_all_study_summaries(storage, include_best_trial=True)
    lines = []
    for s in summaries:
        config = contents.config(s)
        best = f"{s.best_trial.value:.4f}" if s.best_trial else "-"
        lines.append(f"{s.study_name:<28} {s.n_trials:>5} trials  best {best:<8} "
                     f"{config.get('sampler', '?'):<8} {config.get('model', '?')} on "
                     f"{config.get('dataset', '?')}")
    return "\n".join(lines) or "no studies"
