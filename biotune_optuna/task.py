"""A fine-tuning task: a pre-trained model, its blocks, a dataset and its splits."""

from __future__ import annotations

from dataclasses import dataclass, replace

from biotune_optuna.blocks import Block, partition
from biotune_optuna.data import ImageData, Splits, load_dataset, make_splits
from biotune_optuna.models import LoadedModel, input_spec, load_model


@dataclass(frozen=True)
class Task:
    model: LoadedModel
    blocks: list[Block]
    data: ImageData
    splits: Splits

    @property
    def block_names(self) -> list[str]:
        return [b.name for b in self.blocks]

    def for_fold(self, k: int, n_folds: int) -> Task:
        """The same task trained and validated on fold ``k`` of ``n_folds``."""
        return replace(self, splits=self.splits.fold(self.data.labels, k, n_folds))


def build_task(model: str, dataset: str, weights: str | None = None, shots: int | None = None,
               val_shots: int | None = None, split_seed: int = 0, data_root: str | None = None,
               download: bool = False, image_size: int | None = None, max_test: int | None = None,
               pretrain_seed: int = 0, workers: int = 0, target_blocks: int = 8) -> Task:
    """Load the model (its input size decides how file images are read), then the data."""
    spec = input_spec(model, weights)  # file datasets are decoded at the model's size
    size = image_size or spec.size
    resize = None if image_size else spec.resize
    data = load_dataset(dataset, root=data_root, download=download, image_size=size,
                        resize=resize, workers=workers)
    loaded = load_model(model, data.num_classes, weights, pretrain_seed)
    if image_size:
        loaded = replace(loaded, input=replace(loaded.input, size=image_size, resize=None))
    splits = make_splits(data, shots, val_shots, split_seed, max_test=max_test)
    return Task(loaded, partition(loaded.model, target_blocks), data, splits)
