"""A fine-tuning task: a pre-trained model, its blocks, a dataset and its splits."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from biotune_optuna.finetuning.blocks import Block
from biotune_optuna.finetuning.cache import ActivationCache
from biotune_optuna.finetuning.data import ImageData
from biotune_optuna.finetuning.models import LoadedModel
from biotune_optuna.finetuning.splits import Splits


@dataclass(frozen=True)
class Task:
    """What a plan is trained on. ``activation_cache`` (shared by the task's folds) keeps
    the outputs of frozen prefixes between runs; None trains every run from the images."""

    model: LoadedModel
    blocks: list[Block]
    data: ImageData
    splits: Splits
    activation_cache: ActivationCache | None = None
    options: dict = field(default_factory=dict)  # how build_task made it, by option name

    @property
    def block_names(self) -> list[str]:
        return [b.name for b in self.blocks]

    def for_fold(self, k: int, n_folds: int) -> Task:
        """The same task trained and validated on fold ``k`` of ``n_folds``."""
        return replace(self, splits=self.splits.fold(self.data.labels, k, n_folds))
