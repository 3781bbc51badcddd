"""``compare``: samplers, or variants of BioTune (the paper's ablations), on the same objective
at equal compute. Three steps, each its own function: run the searches, score them (retrain
and test what each hands over), and render the table."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np
import optuna

from biotune_optuna import contents
from biotune_optuna.app.config import VARIANTS, ConfigError, SearchConfig
from biotune_optuna.app.files import writable_folder
from biotune_optuna.app.jobs import (
    REVALIDATION_SEEDS,
    budget_of,
    describe_budget,
    search,
    select_plan,
    task_for,
)
from biotune_optuna.finetuning.evaluation import evaluate_plan
from biotune_optuna.finetuning.task import Task


@dataclass(frozen=True)
class Run:
    """What one row of the comparison searches with: a sampler, and a variant's options."""

    label: str
    options: dict


def runs_of(samplers: Sequence[str], variants: Sequence[str] = ()) -> list[Run]:
    """A run per sampler, or per sampler and variant (labelled ``variant``, or
    ``sampler:variant`` when several samplers are compared). Operator ablations change
    BioTune alone; the genome variants apply to every sampler."""
    if not variants:
        return [Run(s, {"sampler": s}) for s in samplers]
    runs = []
    for sampler in samplers:
        for variant in variants:
            options = VARIANTS[variant]
            if sampler != "biotune" and set(options) - {"genome"}:
                raise ConfigError(f"variant {variant} changes BioTune's operators; compare "
                                  "it with --samplers biotune")
            label = variant if len(samplers) == 1 else f"{sampler}:{variant}"
            runs.append(Run(label, {"sampler": sampler, **options}))
    return runs


@dataclass(frozen=True)
class Scores:
    """One run's searches, one entry per seed."""

    sampler: str
    best: np.ndarray  # validation value of the plan each search hands over (a front's
    # hypervolume, with several objectives)
    tests: np.ndarray  # test value of that plan (with several objectives: of the best plan
    # within a third of full fine-tuning's first cost), retrained
    epochs: np.ndarray  # epochs trained
    reach: list[int | None]  # epochs until the target was reached (None: never)


def run_searches(config: SearchConfig, runs: Sequence[Run], seeds: Sequence[int],
                 task: Task, quiet: bool = False) -> dict[str, list[optuna.Study]]:
    """One study per run and seed in one storage. The first run has the budget given
    (trials, or ``--compute-budget``); every other run gets the epochs the first one trained
    on the same seed, with the same fidelity machinery (under multi-fidelity, Hyperband from
    BioTune's low fidelity)."""
    configs = {r.label: config.replace(**r.options, storage=config.storage_url) for r in runs}
    studies: dict[str, list[optuna.Study]] = {}
    for seed in seeds:
        first = None
        for label in configs:
            name = f"{config.study_name}-{label.replace(':', '-')}-s{seed}"
            own = configs[label].replace(study_name=name, seed=seed)
            if first is not None and config.compute_budget is None:
                spent = contents.compute_spent(first.get_trials(deepcopy=False)).epochs
                own = own.replace(trials=None, compute_budget=max(spent, 1))
            elif config.compute_budget is None:  # BioTune's budget, its extra trials included
                own = own.replace(trials=config.n_trials)
            if not quiet:
                print(f"{own.study_name}: {describe_budget(budget_of(own))}", flush=True)
            study = search(own, quiet=quiet, task=task)
            first = first or study
            studies.setdefault(label, []).append(study)
    return studies


def score(studies: dict[str, list[optuna.Study]], config: SearchConfig, task: Task,
          target: float | None) -> tuple[list[Scores], float]:
    """Each search's hand-over (picked as train-best does: the best of its top 5 plans
    re-validated with fresh seeds) retrained and tested, its compute, and the compute it
    needed to reach ``target`` (default: the lowest best value, which every study
    reached)."""
    from biotune_optuna.analysis import best_so_far

    best = {sampler: np.array([measure(s) for s in group]) for sampler, group in studies.items()}
    if target is None:
        target = float(np.nanmin(np.concatenate(list(best.values()))))
    rows = []
    for sampler, group in studies.items():
        tests, spent, reach = [], [], []
        for study in group:
            try:
                _, plan, _ = select_plan(study, task, config.train_config(),
                                         list(REVALIDATION_SEEDS), top_k=5, quiet=True,
                                         trainable_penalty=config.trainable_penalty,
                                         max_cost=cost_cap(study))
            except ConfigError:  # nothing within the cap
                tests.append(np.nan)
            else:
                evaluation = evaluate_plan(task, plan, config.train_config(),
                                           config.train_seeds, study.study_name)
                tests.append(evaluation.mean())
            spent.append(contents.compute_spent(study.get_trials(deepcopy=False)).epochs)
            compute, values = best_so_far(study)
            hit = np.nonzero(values >= target)[0]
            reach.append(compute[hit[0]] if len(hit) else None)
        rows.append(Scores(sampler, best[sampler], np.array(tests), np.array(spent), reach))
    return rows, target


def measure(study: optuna.Study) -> float:
    """What a search found: the validation value of the plan it hands over, or with several
    objectives its front's hypervolume."""
    plans = contents.ranked_plans(study)
    if not plans:
        return np.nan
    if len(study.directions) > 1:
        volume = contents.hypervolume(study, plans)
        return np.nan if volume is None else volume
    return plans[0].value


COST_CAP = 1 / 3  # with several objectives, hand-overs are tested within this share of
# full fine-tuning's first cost


def cost_cap(study: optuna.Study) -> float | None:
    """The first cost a compared search's hand-over may have: a third of full
    fine-tuning's (None with one objective)."""
    reference = contents.reference_point(study)
    return None if reference is None else COST_CAP * reference[1]


def render(rows: Sequence[Scores], target: float, config: SearchConfig,
           seeds: Sequence[int], plot: Path) -> str:
    """The comparison table, with what was compared in one closing line."""
    width = max(8, *(len(r.sampler) for r in rows))
    several = bool(config.cost_objectives)
    found, tested = (("hypervolume", "test (best at <= 1/3 cost)") if several else
                     ("best validation", "test (retrained best)"))
    header = (f"{'run':<{width}} {found:>17} {tested:>26} "
              f"{'epochs trained':>15} {'epochs to reach ' + format(target, '.4f'):>24}")
    lines = [header, "-" * len(header)]
    for row in rows:
        reached = [r for r in row.reach if r is not None]
        needed = (f"median {int(np.median(reached))} ({len(reached)}/{len(row.reach)} reach)"
            if reached else f"never (0/{len(row.reach)})")
        lines.append(f"{row.sampler:<{width}} {np.nanmean(row.best):>8.4f} ± "
                     f"{np.nanstd(row.best):.4f} {_mean_of_tested(row.tests):>26} "
                     f"{row.epochs.mean():>15,.0f} {needed:>24}")
    fidelity = (f"multi-fidelity, low fidelity {config.low_fidelity.epochs} epochs of one "
                "seed run" if config.multi_fidelity else "every trial at the full protocol")
    per = f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''} per sampler"
    found = ("hypervolume: of each front, as a share of the box from chance accuracy and "
             "full fine-tuning's costs to a perfect plan that costs nothing; a test within "
             "the cap: (searches with a plan there / all)" if several else
             "best validation: the plan each search hands over")
    lines.append(f"({per}, {fidelity}; the others matched to "
                 f"{rows[0].sampler}'s compute per seed, in {config.storage_label}; "
                 f"{found}; convergence plot {plot})"
                 if config.compute_budget is None else
                 f"({per}, {fidelity}, {config.compute_budget:,} "
                 f"epochs each, in {config.storage_label}; convergence plot {plot})")
    return "\n".join(lines)


def _mean_of_tested(tests: np.ndarray) -> str:
    """Mean ± std of the tests that ran (a search with no plan within the cost cap has
    none), and how many ran when not all did."""
    ran = tests[~np.isnan(tests)]
    if not len(ran):
        return "none within"
    return f"{ran.mean():.4f} ± {ran.std():.4f}" + (
        f" ({len(ran)}/{len(tests)})" if len(ran) < len(tests) else "")


def compare_samplers(config: SearchConfig, samplers: list[str], seeds: Sequence[int],
                     target: float | None = None, out_dir: str = "plots",
                     quiet: bool = False, variants: Sequence[str] = ()) -> str:
    """Run, score and render a comparison of samplers (or of BioTune's ``variants``), and
    save its convergence plot (against trials and compute)."""
    import matplotlib

    matplotlib.use("Agg")

    from biotune_optuna.analysis import plot_convergence, save_figure

    if len(seeds) == 1 and not quiet:
        print(f"biotune-optuna: note: one seed ({seeds[0]}) per sampler shows no spread; "
              "--seeds is a list of seeds, such as 0,1,2,3,4", file=sys.stderr, flush=True)
    runs = runs_of(samplers, variants)
    configs = [config.replace(**run.options) for run in runs]  # checked before any search
    for (one, first), (other, second) in combinations(zip(runs, configs), 2):
        if first.fingerprint() == second.fingerprint():
            raise ConfigError(f"{other.label} searches as {one.label} does with these options "
                              f"(--objectives {config.objectives}); drop one of them")
    writable_folder(Path(out_dir), "pass --out with a writable folder")  # before the searches
    task = task_for(config)
    studies = run_searches(config, runs, seeds, task, quiet)
    rows, target = score(studies, config, task, target)
    figure = plot_convergence(studies, title=f"{config.study_name}: "
                              f"{'variants' if variants else 'samplers'} at equal compute")
    plot = save_figure(figure, Path(out_dir) / f"{config.study_name}_convergence.png")
    return render(rows, target, config, seeds, plot)
