"""Creating, resuming and reading a search's study: its sampler and pruner by name, its
configuration checked on resume, interrupted trials retried."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from typing import Any

import optuna
from optuna.trial import TrialState

from biotune_optuna import contents
from biotune_optuna.app.config import (
    ACCURACY,
    SAMPLER_SETTINGS,
    SAMPLERS,
    ConfigError,
    SearchConfig,
    differences,
    flag,
    make_config,
    spec_of,
    with_legacy_options,
)
from biotune_optuna.app.fidelity import rung_pruner
from biotune_optuna.app.optuna_internals import lock_for
from biotune_optuna.app.runner import fail_dead_workers_trials
from biotune_optuna.app.storage import StorageError, open_storage, retry_callback
from biotune_optuna.app.storage_urls import ENV_VAR, from_environment, masked
from biotune_optuna.contents import study_config
from biotune_optuna.sampler import genome, records
from biotune_optuna.sampler.core import BioTuneSampler
from biotune_optuna.sampler.plan import RECIPES
from biotune_optuna.sampler.storage_io import study_seed as stored_seed

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
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    raise ConfigError(f"unknown sampler {name!r}; use one of {', '.join(SAMPLERS)}")


def make_sampler(config: SearchConfig, space: Mapping[str, Any],
                 known_values: Callable[[dict[str, Any]], list] | None = None,
                 ) -> optuna.samplers.BaseSampler:
    """The sampler named in the configuration, seeded; BioTune's pre-selection computes
    the ``known_values`` (a plan's costs) rather than predicting them."""
    if config.sampler == "biotune":
        return BioTuneSampler(seed=config.seed, search_space=space, known_values=known_values,
                              settings=config.sampler_settings())
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


def open_study(config: SearchConfig, block_names: list[str], storage=None,
               known_values: Callable[[dict[str, Any]], list] | None = None) -> optuna.Study:
    """Create the study, or load it when it exists and its configuration matches
    (``known_values``: see :func:`make_sampler`)."""
    storage = storage or open_storage(config.storage_url, config.heartbeat, config.grace)
    fingerprint = {**config.fingerprint(), "blocks": list(block_names)}
    space = genome.search_space(block_names, config.genome)
    study = optuna.create_study(
        study_name=config.study_name, storage=storage, directions=config.directions,
        sampler=make_sampler(config, space, known_values), pruner=make_pruner(config),
        load_if_exists=True)
    with lock_for(study):  # workers starting together agree
        stored = study_config(study)
        if stored is None:
            if study.get_trials(deepcopy=False):
                raise ConfigError(f"study {config.study_name!r} exists but was not created by "
                                  "biotune-optuna; pick another --study-name")
            study.set_user_attr(contents.CONFIG, fingerprint)
            if config.enqueue_baselines:
                for name in RECIPES:  # full fine-tuning, linear probing
                    study.enqueue_trial(genome.recipe(name, block_names))
    if stored is not None:
        changed = differences(stored, fingerprint)
        if changed:
            raise ConfigError(f"study {config.study_name!r} was created with other settings ("
                              f"{'; '.join(changed)}); use the same options or a new "
                              "--study-name")
    fail_dead_workers_trials(study)
    retry_interrupted(study)
    return study


def retry_interrupted(study: optuna.Study) -> int:
    """Re-enqueue, once, with their parameters and BioTune slot, the trials whose run was
    cut short rather than failed by their plan: interrupted (Ctrl-C), or failed with no
    recorded reason (the worker ended with an error: a database connection lost, a disk
    that filled, where even marking the trial could fail). A plan's own failure (a
    diverged loss) records its reason and is not retried. So resuming loses nothing."""
    trials = study.get_trials(deepcopy=False)
    retried = records.retried(trials)
    count = 0
    for t in trials:
        if (t.state == TrialState.FAIL and t.number not in retried and
                (contents.interrupted(t) or not contents.failed_reason(t))):
            retry_callback()(study, t)
            count += 1
    if count:
        logger.info("re-enqueued %d interrupted or cut-short trial(s)", count)
    return count


def storage_url(study_name: str | None, storage: str | None) -> str:
    """The storage given, else $BIOTUNE_OPTUNA_STORAGE, else the study's default SQLite
    file."""
    url = storage or from_environment()
    if url:
        return url
    if study_name:
        return SearchConfig(study_name=study_name).storage_url
    raise ConfigError(f"give --storage URL (or set {ENV_VAR}) and --study-name")


def existing_study(study_name: str, url: str) -> optuna.Study | None:
    """The study, when its storage exists and holds it (nothing is created)."""
    try:
        storage = open_storage(url, heartbeat=None, create=False)
    except StorageError:
        return None
    if study_name not in optuna.get_all_study_names(storage):
        return None
    return optuna.load_study(study_name=study_name, storage=storage)


def load_study(url: str, study_name: str | None) -> optuna.Study:
    """The named study, or the storage's only one; a one-line error naming the fix."""
    storage = open_storage(url, heartbeat=None, create=False)
    names = optuna.get_all_study_names(storage)
    name = study_name
    if name is None:
        if len(names) != 1:
            raise ConfigError(f"the storage holds {len(names)} studies; pick one with "
                              f"--study-name ({', '.join(names) or 'none'})")
        name = names[0]
    if name not in names:
        shown = masked(url)
        raise ConfigError(f"no study named {name!r} in {shown}; list them with "
                          f"biotune-optuna studies --storage {shown}")
    return optuna.load_study(study_name=name, storage=storage)


def load_searched_study(url: str, study_name: str | None, command: str) -> optuna.Study:
    """A study holding fine-tuning plans: one made by a search (or a study whose trials
    suggest ``gene:<block>`` parameters)."""
    study = load_study(url, study_name)
    if not contents.blocks(study) and not any(
            name.startswith(genome.GENE_PREFIX) for trial in study.get_trials(deepcopy=False)
            for name in trial.params):
        raise ConfigError(f"study {study.study_name!r} holds no fine-tuning plans (no "
                          f"{genome.GENE_PREFIX}<block> parameters); {command} reads studies "
                          "made by biotune-optuna search")
    return study


def stored_options(study: optuna.Study | None) -> dict:
    """A biotune-optuna study's stored configuration as options, with the budget it last
    asked for (a resume without options keeps them); empty for other studies."""
    stored = contents.stored_options(study) if study else {}
    if stored:
        trials, epochs = contents.stored_budget(study)
        stored |= {name: value for name, value in (("trials", trials),
                                                    ("compute_budget", epochs)) if value}
    return with_legacy_options(stored) if stored else {}


def config_of(study: optuna.Study, **runtime) -> SearchConfig:
    """The study's stored configuration with run-time options (device, data root)."""
    stored = contents.stored_options(study)
    if not stored:
        raise ConfigError(f"study {study.study_name!r} records no search configuration (it "
                          "was made with the bare sampler), so its model and data are unknown;"
                          " search with biotune-optuna search or FineTuneObjective, or train "
                          "the plan `best` prints in your own code")
    return SearchConfig(study_name=study.study_name, **with_legacy_options(stored),
                        **{k: v for k, v in runtime.items() if v is not None})


def refuse_other_tasks(studies: Sequence[optuna.Study]) -> None:
    """Studies compared as seeds of one task must share it (model, data, splits)."""
    first = stored_options(studies[0])
    for other in studies[1:]:
        theirs = stored_options(other)
        differ = [flag(f.name) for f in fields(SearchConfig) if spec_of(f).group == "task"
                  and f.name in first and f.name in theirs and first[f.name] != theirs[f.name]]
        if differ:
            raise ConfigError(f"study {other.study_name!r} has another {', '.join(differ)} "
                              f"than {studies[0].study_name!r}; --compare pools studies as "
                              "seeds of one task: compare studies of the same task")


def describe_study(study: optuna.Study, task, config: SearchConfig | None) -> None:
    """Write what the commands read from a study (its configuration, blocks and input
    format) unless it is there: a study made in Python (``build_task``, a sampler and
    :class:`~biotune_optuna.app.objective.FineTuneObjective`) then works with ``best``,
    ``export``, ``status``, ``plot`` and ``train-best`` like one made by ``search``."""
    contents.describe(study, None if config is None else
                      {**config.fingerprint(), "blocks": task.block_names},
                      _blocks_record(task.blocks), task.model.input.as_dict())


def _blocks_record(blocks) -> dict[str, dict]:
    return {b.name: {"modules": list(b.modules), "n_params": b.n_params,
                     **({"params": list(b.params)} if not b.modules else {})} for b in blocks}


def record_model(study: optuna.Study, model, base_lr: float, heads: Sequence[str] = ()) -> None:
    """For a study made with the bare sampler: record the model's blocks (their modules and
    sizes, partitioned as a search partitions them) and the base learning rate the plans'
    multipliers scale, so that ``export --format python`` writes a snippet that applies the
    plan and the plots weigh blocks by size. The blocks must be the study's genes."""
    from biotune_optuna.finetuning.blocks import partition

    if not base_lr > 0:
        raise ValueError(f"base_lr must be a positive learning rate, got {base_lr!r}")
    blocks = partition(model, heads=heads)
    names = [b.name for b in blocks]
    try:
        genes = contents.block_names(study)
    except ValueError:  # no trial yet: the model's blocks will be the genes
        genes = names
    if names != genes:
        raise ValueError(f"the model's blocks {names} are not the study's genes {genes}; "
                         "pass the model the study's search_space was made for")
    contents.describe(study, None, _blocks_record(blocks), None)
    contents.set_base_lr(study, base_lr)


SAMPLER_NAMES = {"TPESampler": "tpe", "RandomSampler": "random", "CmaEsSampler": "cmaes",
                 "NSGAIISampler": "nsga2", "GPSampler": "gp"}
PRUNER_NAMES = {"NopPruner": "none", "MedianPruner": "median",
                "HyperbandPruner": "hyperband"}


def config_of_objective(study: optuna.Study, objective) -> SearchConfig | None:
    """The configuration a study made in Python ran with, from its task, objective, sampler
    and pruner; None when the sampler or pruner is not one the command line knows (the
    blocks and input format are still recorded)."""
    sampler, pruner = study.sampler, type(study.pruner).__name__
    options = {k: list(v) if isinstance(v, tuple) else v
               for k, v in objective.task.options.items() if v is not None}
    if isinstance(sampler, BioTuneSampler):
        settings, seed = sampler.settings, stored_seed(study)
        options |= {name: getattr(settings, to) for name, to in SAMPLER_SETTINGS.items()}
        options |= dict(sampler="biotune", seed=(sampler.seed or 0) if seed is None else seed)
    elif type(sampler).__name__ in SAMPLER_NAMES:
        options["sampler"] = SAMPLER_NAMES[type(sampler).__name__]
    else:
        return None
    if pruner not in PRUNER_NAMES:
        return None
    train, low = objective.config, objective.low_fidelity
    options |= dict(lr=train.base_lr, optimizer=train.optimizer, weight_decay=train.weight_decay,
                    epochs=train.epochs, patience=train.patience, batch_size=train.batch_size,
                    metric=train.metric, augment=train.augment, cosine_t_max=train.cosine_t_max,
                    train_seeds=list(objective.seeds), folds=objective.n_folds,
                    train_head=objective.train_head, genome=objective.genome,
                    trainable_penalty=objective.trainable_penalty,
                    objectives=",".join([ACCURACY, *objective.costs]),
                    multi_fidelity=low is not None, pruner=PRUNER_NAMES[pruner],
                    **({"low_epochs": low.epochs} if low is not None else {}))
    try:
        return SearchConfig(study_name=contents.file_name(study.study_name), **options)
    except ConfigError as error:
        logger.debug("study %s keeps no configuration: %s", study.study_name, error)
        return None


def config_for_baseline(study: optuna.Study, flags: dict[str, Any],
                        config_file: str | None) -> SearchConfig:
    """The task, splits and training protocol of a study made by ``search`` (so its
    baselines compare like with like), with the run options among ``flags`` (each option as
    given, None when not); task or training options, or a TOML file, are refused."""
    stored = stored_options(study)
    if not stored:
        raise ConfigError(f"study {study.study_name!r} was not created by biotune-optuna; "
                          "leave out --study-name and give the task's options")
    given = [flag(f.name) for f in fields(SearchConfig) if spec_of(f).group in
             ("task", "training") and flags.get(f.name) is not None]
    if given or config_file:
        drop = ", ".join(given) or "--config"
        raise ConfigError(f"baseline trains on the task and protocol of study "
                          f"{study.study_name!r}; drop {drop} (or leave out --study-name to "
                          "give them)")
    runtime = {f.name: flags[f.name] for f in fields(SearchConfig)
               if spec_of(f).group == "run" and flags.get(f.name) is not None}
    return make_config(stored, {"study_name": study.study_name, **runtime})
