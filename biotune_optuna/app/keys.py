"""What biotune_optuna writes into a study, named once: the study's user attrs (readable in
optuna-dashboard) and the trials' user attrs, with the readers analysis and jobs share."""

from __future__ import annotations

from typing import Any

import optuna

from biotune_optuna.sampler import genome
from biotune_optuna.sampler.genome import LR_MULTIPLIERS as LR_MULTIPLIERS  # FineTunePlan.as_dict
from biotune_optuna.sampler.genome import TRAINED_BLOCKS as TRAINED_BLOCKS

CONFIG = "biotune_optuna:config"  # the search configuration (its fingerprint) and blocks
BLOCKS = "biotune_optuna:blocks"  # block -> modules and parameter count
BUDGET = "biotune_optuna:budget"  # trials the last search command asked for
FINAL = "biotune_optuna:final"  # test results of train-best
DEMO = "biotune_optuna:demo"  # the demo's summary

# trial user attrs
TRAINABLE_PARAMS = "trainable_params"
TRAINABLE_FRACTION = "trainable_fraction"
FAILED_REASON = "failed_reason"  # why a trial failed (a diverged loss)
EMPTY_PLAN = "empty_plan"  # the genome trains no block: scored without training
FOLD = "fold"
SECONDS = "seconds"
EPOCHS = "epochs"
VALUE_STD = "value_std"
LEARNING_CURVES = "learning_curves"  # validation value per epoch of each seed run
RACED = "raced"  # seed runs a raced-out trial ran before it stopped
RESCORE_SEEDS = "rescore_seeds"  # the fresh training seeds of an elite's re-scoring run
INTERRUPTED = "interrupted"  # failed by Ctrl-C: the next run retries it


def validation_key(metric: str) -> str:
    """The trial user attr of the mean validation ``metric`` (before any penalty)."""
    return f"val_{metric}"


def trial_plan(study: optuna.Study, trial: optuna.trial.FrozenTrial,
               block_names: list[str]) -> genome.FineTunePlan:
    """The plan a trial of this study trained (decoded as the study's configuration says)."""
    config = study_config(study) or {}
    return genome.decode(trial.params, block_names, bool(config.get("train_head", False)))


def study_config(study: optuna.Study) -> dict[str, Any] | None:
    return study.user_attrs.get(CONFIG)
