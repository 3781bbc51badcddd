"""Export a study's best plan: JSON, and plain PyTorch that builds its param groups."""

from __future__ import annotations

import json
from collections import Counter

import optuna

from biotune_optuna import contents
from biotune_optuna.app.config import ConfigError


def handed_over(study: optuna.Study, max_cost: float | None = None,
                ) -> list[contents.RankedPlan]:
    """The plans the study hands over, best first (:func:`contents.ranked_plans`); with
    ``max_cost``, those whose first cost objective is at most that."""
    ranked = contents.ranked_plans(study)
    if not ranked:
        raise ConfigError(no_plan(study))
    if max_cost is None:
        return ranked
    names = contents.config(study).get("objectives", "accuracy").split(",")[1:]
    if not ranked[0].costs:
        raise ConfigError(f"study {study.study_name!r} optimises one objective, so there is "
                          "no cost to cap; drop --max-cost (search with --objectives "
                          "accuracy,train-gflops for a front)")
    kept = contents.within_cost(ranked, max_cost)
    if not kept:
        cheapest = min(p.costs[0] for p in ranked)
        raise ConfigError(f"no plan of study {study.study_name!r} costs at most {max_cost:g} "
                          f"{names[0] if names else 'cost'} (the cheapest costs "
                          f"{cheapest:.4g}); raise --max-cost")
    return kept


def best(study: optuna.Study, max_cost: float | None = None) -> contents.RankedPlan:
    """The plan the study hands over: the first of :func:`handed_over`."""
    return handed_over(study, max_cost)[0]


def front_table(study: optuna.Study) -> str:
    """The Pareto front of a study of several objectives, cheapest first: each plan's
    trial, metric, costs and frozen blocks, and which plan ``export`` hands over."""
    ranked = handed_over(study)
    names = contents.config(study).get("objectives", "").split(",")[1:] or [
        f"objective {k + 1}" for k in range(1, len(ranked[0].costs) + 1)]
    front = sorted((p for p in ranked if p.front == 0 and p.fidelity == ranked[0].fidelity),
                   key=lambda p: (p.costs, -p.value))
    metric = contents.config(study).get("metric", "value")
    alike: dict[tuple, list[contents.RankedPlan]] = {}  # plans of equal values: one row
    for p in front:
        alike.setdefault((p.value, *p.costs), []).append(p)
    shown = [same[0] for same in alike.values()]
    plans = contents.trial_plans(study, [p.trial for p in shown])
    rows = [[str(p.trial.number) + (f" (+{len(same) - 1} alike)" if len(same) > 1 else ""),
             f"{p.value:.4f}", *(f"{c:.4g}" for c in p.costs),
             ", ".join(plan.frozen_blocks) or "-"]
            for p, same, plan in zip(shown, alike.values(), plans)]
    header = ["trial", metric, *names, "frozen blocks"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
             for r in [header, *rows]]
    volume = contents.hypervolume(study, ranked)
    lines.append(f"{len(front)} plan{'s' * (len(front) != 1)} on the front" + (
        f" ({ranked[0].fidelity} fidelity)" if ranked[0].fidelity != contents.FULL else "")
        + ("" if volume is None else f", hypervolume {volume:.4f}")
        + f"; export and train-best hand over trial {ranked[0].trial.number} (the most "
        "accurate), or the most accurate within --max-cost")
    return "\n".join(lines)


def no_plan(study: optuna.Study) -> str:
    """Why a study has no plan to hand over, and what to do."""
    trials = study.get_trials(deepcopy=False)
    if not trials:
        return f"study {study.study_name!r} has no trial yet; run biotune-optuna search first"
    states = Counter(t.state.name.lower() for t in trials)
    counts = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
    reasons = [r for r in map(contents.failed_reason, trials) if r is not None]
    finished = sum(states[s] for s in ("fail", "pruned"))
    if finished < len(trials):
        return (f"study {study.study_name!r} has no completed trial yet ({counts}); let its "
                "search finish a trial first")
    return (f"study {study.study_name!r} has no completed trial: all {len(trials)} failed or "
            f"were pruned ({counts})" + (f"; the first failure: {reasons[0]}" if reasons else
                                         "; look at the trials' failed_reason in status or "
                                         "optuna-dashboard") +
            ". Fix that and search again (a new --study-name starts afresh)")


def best_plan(study: optuna.Study, max_cost: float | None = None) -> dict:
    """The best plan (within ``max_cost``) with what it needs to be reused: rates, block
    modules."""
    ranked = best(study, max_cost)
    trial = ranked.trial
    plan = contents.plan_of(study, trial)
    config = contents.config(study)
    lr = contents.base_lr(study)
    return {"study": study.study_name, "trial": trial.number, "value": ranked.value,
            "evaluations": ranked.evaluations, "fidelity": ranked.fidelity,
            "metric": config.get("metric", "value"), "base_lr": lr,
            "optimizer": config.get("optimizer"), "model": config.get("model"),
            "weights": config.get("weights"), "dataset": config.get("dataset"),
            **plan.as_dict(),
            # without a recorded base rate only the multipliers are known
            "learning_rates": None if lr is None else plan.learning_rates(lr),
            "block_modules": contents.blocks(study),
            "params": trial.params,
            contents.TRAINABLE_FRACTION: contents.trainable_fraction(trial),
            **_costs(study, ranked)}


def _costs(study: optuna.Study, ranked: contents.RankedPlan) -> dict[str, float]:
    names = contents.config(study).get("objectives", "").split(",")[1:]
    return dict(zip(names, ranked.costs))


def torch_snippet(plan: dict) -> str:
    """Plain PyTorch that applies the plan to an already-built model; a study that records
    no block modules or base learning rate (made with the bare sampler) is refused."""
    if not plan["block_modules"] or plan["base_lr"] is None:
        raise ConfigError(
            f"study {plan['study']!r} records no " + ("block modules" if not plan[
                "block_modules"] else "base learning rate") + " (it was made with the bare "
            "sampler), so a snippet would freeze nothing; record them once with "
            "biotune_optuna.record_model(study, model, base_lr=...), or use --format json")
    modules = {b: v["modules"] if isinstance(v, dict) else v
               for b, v in plan["block_modules"].items()}
    own = {b: v.get("params", []) for b, v in plan["block_modules"].items()
           if isinstance(v, dict) and not v.get("modules")}
    optimizer = {"adamw": "AdamW", "sgd": "SGD"}.get(plan["optimizer"], "Adam")
    lines = [
        f"# plan of study {plan['study']!r}, trial {plan['trial']}, "
        f"validation {plan['metric']} {plan['value']:.4f}",
        (f"# model {plan['model']} (weights {plan['weights']}) with a new head for "
         f"{plan['dataset']}" if plan["model"] else "# the model the study's blocks describe"),
        "import torch",
        "from torch.nn.modules.batchnorm import _BatchNorm",
        "",
        "def biotune_param_groups(model):",
        f"    base_lr = {plan['base_lr']!r}",
        f"    multipliers = {json.dumps(plan[contents.LR_MULTIPLIERS])}",
        f"    block_modules = {json.dumps({b: modules[b] for b in modules if b not in own})}",
        f"    block_params = {json.dumps(own)}",
        "    def params_of(block):",
        "        for name in block_modules.get(block, []):",
        "            yield from model.get_submodule(name).parameters()",
        "        for name in block_params.get(block, []):",
        "            yield model.get_parameter(name)",
        "    groups, frozen_norms = [], []",
        "    for block in list(block_modules) + list(block_params):",
        "        trained = block in multipliers",
        "        for p in params_of(block):",
        "            p.requires_grad_(trained)",
        "        if trained:",
        "            groups.append({'params': list(params_of(block)),",
        "                           'lr': base_lr * multipliers[block], 'name': block})",
        "        else:  # keep frozen BatchNorm statistics: call .eval() on these after .train()",
        "            frozen_norms += [m for n in block_modules.get(block, [])",
        "                             for m in model.get_submodule(n).modules()",
        "                             if isinstance(m, _BatchNorm)]",
        "    return groups, frozen_norms",
        "",
        "# groups, frozen_norms = biotune_param_groups(model)",
        f"# optimizer = torch.optim.{optimizer}(groups)",
        "# each epoch: model.train(); [m.eval() for m in frozen_norms]",
    ]
    return "\n".join(lines) + "\n"
