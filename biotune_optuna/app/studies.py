"""Creating, resuming and reading a search's study: its sampler and pruner by name, its
configuration checked on resume, interrupted trials retried."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import optuna
from optuna.trial import TrialState

from biotune_optuna.app import keys as keys
from biotune_optuna.app.config import ConfigError, SearchConfig, differences, with_legacy_options
from biotune_optuna.app.fidelity import rung_pruner
from biotune_optuna.app.keys import INTERRUPTED, study_config
from biotune_optuna.app.storage import open_storage, retry_callback
from biotune_optuna.sampler import genome
from biotune_optuna.sampler.coordination import study_lock
from biotune_optuna.sampler.core import BioTuneSampler
from biotune_optuna.sampler.population import RETRY_OF

logger = logging.getLogger(__name__)


def other_sampler(name: str, seed: int, population: int = 10) -> optuna.samplers.BaseSampler:
    """One of Optuna's samplers BioTune is compared with, seeded."""
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=population, seed=seed)
    raise ConfigError(f"unknown sampler {name!r}; use biotune, tpe, random, cmaes or nsga2")


def make_sampler(config: SearchConfig, space: Mapping[str, Any]) -> optuna.samplers.BaseSampler:
    """The sampler named in the configuration, seeded."""
    if config.sampler == "biotune":
        return BioTuneSampler(config.population, config.elite,
                              exploration_rate=config.exploration_rate,
                              seed=config.seed, search_space=space, ideal_value=1.0,
                              rescore_elites=config.rescore_elites,
                              elite_pair_mean=config.elite_pair_mean,
                              multi_fidelity=config.multi_fidelity)
    return other_sampler(config.sampler, config.seed, config.population)


def make_pruner(config: SearchConfig) -> optuna.pruners.BasePruner:
    """The configuration's pruner; with multi-fidelity, a sampler that cannot choose
    fidelities itself gets Hyperband from the low fidelity up."""
    if config.multi_fidelity and config.sampler != "biotune":
        return rung_pruner(config.low_fidelity, config.full_fidelity)
    if config.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=3)
    if config.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner()
    return optuna.pruners.NopPruner()


def reports_epochs(config: SearchConfig) -> bool:
    """Whether trials report each epoch: only a pruner reads the reports."""
    return not isinstance(make_pruner(config), optuna.pruners.NopPruner)


def open_study(config: SearchConfig, block_names: list[str], storage=None) -> optuna.Study:
    """Create the study, or load it when it exists and its configuration matches."""
    storage = storage or open_storage(config.storage_url, config.heartbeat, config.grace)
    fingerprint = {**config.fingerprint(), "blocks": list(block_names)}
    space = genome.search_space(block_names)
    study = optuna.create_study(
        study_name=config.study_name, storage=storage, direction="maximize",
        sampler=make_sampler(config, space), pruner=make_pruner(config),
        load_if_exists=True)
    with study_lock(study._storage, study._study_id):  # workers starting together agree
        stored = study_config(study)
        if stored is None:
            if study.get_trials(deepcopy=False):
                raise ConfigError(f"study {config.study_name!r} exists but was not created by "
                                  "biotune-optuna; pick another --study-name")
            study.set_user_attr(keys.CONFIG, fingerprint)
            if config.enqueue_baselines:
                for name in genome.RECIPES:  # full fine-tuning, linear probing
                    study.enqueue_trial(genome.recipe(name, block_names))
    if stored is not None:
        changed = differences(stored, fingerprint)
        if changed:
            raise ConfigError(f"study {config.study_name!r} was created with other settings ("
                              f"{'; '.join(changed)}); use the same options or a new "
                              "--study-name")
    retry_interrupted(study)
    return study


def retry_interrupted(study: optuna.Study) -> int:
    """Re-enqueue trials that failed because their worker was interrupted (Ctrl-C), once,
    with their parameters and BioTune slot, so resuming loses nothing."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.system_attrs.get(RETRY_OF) for t in trials} | {
        n for t in trials for n in t.system_attrs.get("retry_history", [])}
    count = 0
    for t in trials:
        if t.state == TrialState.FAIL and t.user_attrs.get(INTERRUPTED) and \
                t.number not in retried:
            retry_callback()(study, t)
            count += 1
    if count:
        logger.info("re-enqueued %d interrupted trial(s)", count)
    return count


def config_of(study: optuna.Study, **runtime) -> SearchConfig:
    """The study's stored configuration with run-time options (device, data root)."""
    stored = dict(study.user_attrs.get(keys.CONFIG) or {})
    stored.pop("blocks", None)
    if not stored:
        raise ConfigError(f"study {study.study_name!r} was not created by biotune-optuna; "
                          "its configuration is unknown")
    return SearchConfig(study_name=study.study_name, **with_legacy_options(stored),
                        **{k: v for k, v in runtime.items() if v is not None})
