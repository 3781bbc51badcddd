"""Search configuration: defaults, a TOML file in studies/, command-line flags on top.

Everything that changes what a study measures is part of its *fingerprint*, saved in the
study at creation; resuming with a different fingerprint is refused with the differences.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from biotune_optuna.app.storage_urls import masked
from biotune_optuna.finetuning.train import METRICS, OPTIMIZERS, TrainConfig
from biotune_optuna.sampler.core import validate_settings

SAMPLERS = ("biotune", "tpe", "random", "cmaes", "nsga2")
PRUNERS = ("none", "median", "hyperband")
STUDIES_DIR = Path("studies")
# the base learning rates that `baseline --tune-lr` tries
LR_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)


class ConfigError(ValueError):
    """A setting the user gave cannot be used (one-line message naming the fix)."""


@dataclass
class SearchConfig:
    """Every option of ``biotune-optuna search`` (flags have the same names with dashes)."""

    study_name: str = "biotune"
    storage: str | None = None  # default sqlite:///studies/<study_name>.db
    # what is fine-tuned
    model: str = "small"
    weights: str | None = None
    dataset: str = "digits"
    data_root: str | None = None
    download: bool = False
    shots: int | None = 10
    val_shots: int | None = None
    split_seed: int = 0
    image_size: int | None = None
    max_test: int | None = None
    # how each plan is trained
    epochs: int = 30
    patience: int = 3
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    batch_size: int = 96
    metric: str = "balanced_accuracy"
    augment: bool = False
    cosine_t_max: int | None = None
    train_seeds: list[int] = field(default_factory=lambda: [0])
    folds: int = 1
    # the search
    sampler: str = "biotune"
    population: int = 10
    elite: int = 3
    exploration_rate: float = 0.25
    generations: int = 10
    trials: int | None = None  # default: the BioTune budget of `generations`
    seed: int = 0
    pruner: str = "none"
    enqueue_baselines: bool = False
    train_head: bool = True  # the new head is always trained (False: the paper's genome)
    trainable_penalty: float = 0.0  # value = validation - this x trainable fraction
    # running it (not part of the fingerprint)
    device: str = "auto"
    workers: int = 0
    heartbeat: int = 60
    grace: int = 180
    timeout: float | None = None

    RUNTIME = ("study_name", "storage", "trials", "generations", "device", "workers",
               "heartbeat", "grace", "timeout", "data_root", "download", "max_test")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(message)

        need(self.sampler in SAMPLERS, f"unknown sampler {self.sampler!r}; use one of "
             f"{', '.join(SAMPLERS)}")
        try:
            validate_settings(self.population, self.elite, self.exploration_rate)
        except ValueError as error:
            raise ConfigError(str(error).replace("population size", "--population")
                              .replace("elite size", "--elite")) from None
        need(self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}")
        need(self.patience >= 1, f"--patience must be at least 1, got {self.patience}")
        need(0 < self.lr < math.inf, f"--lr must be a positive number, got {self.lr}")
        need(0 <= self.weight_decay < math.inf,
             f"--weight-decay must be a non-negative number, got {self.weight_decay}")
        need(self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}")
        need(self.optimizer in OPTIMIZERS, f"unknown optimizer {self.optimizer!r}; use "
             f"{', '.join(OPTIMIZERS)}")
        need(self.metric in METRICS, f"unknown metric {self.metric!r}; use {', '.join(METRICS)}")
        need(self.pruner in PRUNERS, f"unknown pruner {self.pruner!r}; use {', '.join(PRUNERS)}")
        need(self.shots is None or self.shots >= 1, f"--shots must be at least 1, got {self.shots}")
        need(len(self.train_seeds) >= 1, "--train-seeds needs at least one seed")
        need(self.folds >= 1, f"--folds must be at least 1, got {self.folds}")
        need(self.generations >= 0, f"--generations must be >= 0, got {self.generations}")
        need(self.trials is None or self.trials >= 1, f"--trials must be >= 1, got {self.trials}")
        need(self.seed >= 0, f"--seed must be >= 0, got {self.seed}")
        need(bool(self.study_name.strip()), "--study-name must not be empty")
        for name in ("cosine_t_max", "image_size", "max_test", "val_shots"):
            value = getattr(self, name)
            need(value is None or value >= 1, f"--{name.replace('_', '-')} must be at least 1, "
                 f"got {value}")
        need(self.heartbeat >= 1 and self.grace > self.heartbeat,
             f"--heartbeat must be at least 1 and --grace larger, got {self.heartbeat} and "
             f"{self.grace}")
        need(0 <= self.trainable_penalty < math.inf, "--trainable-penalty must be a "
             f"non-negative number, got {self.trainable_penalty}")
        need(self.timeout is None or self.timeout > 0, f"--timeout must be positive, got "
             f"{self.timeout}")

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{STUDIES_DIR / self.study_name}.db"

    @property
    def storage_label(self) -> str:
        """The storage URL as it may be shown: secrets masked."""
        return masked(self.storage_url)

    @property
    def n_trials(self) -> int:
        if self.trials is not None:
            return self.trials
        return self.population + self.generations * (self.population + self.elite)

    def train_config(self) -> TrainConfig:
        return TrainConfig(base_lr=self.lr, optimizer=self.optimizer,
                           weight_decay=self.weight_decay, epochs=self.epochs,
                           patience=self.patience, batch_size=self.batch_size,
                           cosine_t_max=self.cosine_t_max, metric=self.metric,
                           augment=self.augment, device=self.device)

    def fingerprint(self) -> dict[str, Any]:
        """What a resumed study must share with the one it continues."""
        values = dataclasses.asdict(self)
        return {k: v for k, v in values.items() if k not in self.RUNTIME}

    def replace(self, **changes: Any) -> SearchConfig:
        return dataclasses.replace(self, **changes)


def option_names() -> list[str]:
    return [f.name for f in fields(SearchConfig)]


def load_toml(path: str | Path) -> dict[str, Any]:
    """Options from a TOML file (top-level keys or a [search] table; dashes allowed)."""
    path = Path(path)
    if not path.is_file() and not path.is_absolute() and (STUDIES_DIR / path).is_file():
        path = STUDIES_DIR / path
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {path} is not valid TOML: {error}") from None
    raw = raw.get("search", raw)
    return {k.replace("-", "_"): v for k, v in raw.items()}


def make_config(file_options: Mapping[str, Any] | None = None,
                flag_options: Mapping[str, Any] | None = None) -> SearchConfig:
    """Defaults, then the TOML options, then the flags (flags that were not given are None
    and do not override)."""
    merged: dict[str, Any] = {}
    for source in (file_options or {}), (flag_options or {}):
        merged.update({k: v for k, v in source.items() if v is not None})
    unknown = sorted(set(merged) - set(option_names()))
    if unknown:
        raise ConfigError(f"unknown option {unknown[0]!r}; known options: "
                          f"{', '.join(option_names())}")
    types = {f.name: f.type for f in fields(SearchConfig)}
    for name, value in merged.items():
        merged[name] = _coerce(name, value, types[name])
    return SearchConfig(**merged)


def _coerce(name: str, value: Any, annotation: str) -> Any:
    """Check a TOML or flag value against the option's type, converting where lossless."""
    flag = "--" + name.replace("_", "-")
    if "list[int]" in annotation:
        if isinstance(value, str):
            value = [v for v in value.replace(",", " ").split() if v]
        try:
            return [int(v) for v in value]
        except (TypeError, ValueError):
            raise ConfigError(f"{flag} takes integers such as 0,1,2, got {value!r}") from None
    for kind, convert in (("bool", _to_bool), ("int", int), ("float", float), ("str", str)):
        if annotation.startswith(kind):
            try:
                if kind == "int" and isinstance(value, float) and not value.is_integer():
                    raise ValueError
                if kind in ("int", "float") and isinstance(value, bool):
                    raise ValueError
                return convert(value)
            except (TypeError, ValueError):
                raise ConfigError(f"{flag} takes a {kind}, got {value!r}") from None
    return value


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
        return value.lower() in ("true", "yes", "1")
    raise ValueError(value)


# Options added after a study was created: the value that reproduces what it ran with.
LEGACY = {"train_head": False, "trainable_penalty": 0.0}


def with_legacy_options(stored: Mapping[str, Any]) -> dict[str, Any]:
    """A stored fingerprint completed with what an older study ran with."""
    return {**LEGACY, **stored}


def differences(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Human-readable differences between two fingerprints."""
    stored = with_legacy_options(stored)
    keys = sorted(set(stored) | set(current))
    return [f"{k}: study has {stored.get(k)!r}, now {current.get(k)!r}" for k in keys
            if stored.get(k) != current.get(k)]
