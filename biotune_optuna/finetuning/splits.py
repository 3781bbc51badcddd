"""Stratified, seeded splits: ``shots`` labelled training images per class (label-scarce
transfer), ``val_shots`` for validation, and the official test split when the dataset has
one, else the rest. ``Splits.fold`` gives the paper's k-fold rotation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from biotune_optuna.finetuning.data import ImageData
from biotune_optuna.finetuning.names import DataError


@dataclass(frozen=True)
class Splits:
    """Indices into an :class:`ImageData` for training, validation and testing."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def fold(self, labels: np.ndarray, k: int, n_folds: int) -> Splits:
        """Fold ``k`` of ``n_folds``: a disjoint, stratified share of the training and of the
        validation indices (consecutive per class, as in the authors' data code)."""
        if n_folds <= 1:
            return self

        def part(indices: np.ndarray) -> np.ndarray:
            chosen = [np.array_split(indices[labels[indices] == c], n_folds)[k % n_folds]
                      for c in np.unique(labels[indices])]
            return np.sort(np.concatenate(chosen))

        return Splits(part(self.train), part(self.val), self.test)

    def summary(self) -> str:
        return f"{len(self.train)} train / {len(self.val)} val / {len(self.test)} test"


def make_splits(data: ImageData, shots: int | None = None, val_shots: int | None = None,
                seed: int = 0, val_fraction: float = 0.2, test_fraction: float = 0.2,
                max_test: int | None = None) -> Splits:
    """Stratified, seeded splits.

    With ``shots``: ``shots`` training and ``val_shots`` (default ``shots``) validation
    images per class; testing on the official test split if any, else on all the rest.
    Without: the official test split (else ``test_fraction`` of each class), then
    ``val_fraction`` of the remainder for validation. ``max_test`` caps the test set
    (stratified) for quick runs.
    """
    rng = np.random.default_rng(seed)
    labels = data.labels
    pool = (np.setdiff1d(np.arange(len(labels)), data.test_pool)
        if data.test_pool is not None else np.arange(len(labels)))
    train, val, rest = [], [], []
    for c in range(data.num_classes):
        members = rng.permutation(pool[labels[pool] == c])
        if shots is not None:
            need = shots + (shots if val_shots is None else val_shots)
            if len(members) < need + (data.test_pool is None):
                left = "none to test" if len(members) >= need else "too few to train and validate"
                raise DataError(f"class {data.classes[c]!r} of {data.name} has {len(members)} "
                                f"image(s): {shots} to train and {need - shots} to validate "
                                f"leave {left}; lower --shots or --val-shots, use --shots all "
                                "(a share of each class), or check that class's label")
            train.append(members[:shots])
            val.append(members[shots:need])
            rest.append(members[need:])
        else:
            if not len(members):
                raise DataError(f"class {data.classes[c]!r} of {data.name} has no image to "
                                "train on; add images of it or remove the class")
            n_test = 0 if data.test_pool is not None else int(round(test_fraction * len(members)))
            n_val = int(round(val_fraction * (len(members) - n_test)))
            rest.append(members[:n_test])
            val.append(members[n_test:n_test + n_val])
            train.append(members[n_test + n_val:])
    test = data.test_pool if data.test_pool is not None else np.concatenate(rest)
    if not len(test) and test_fraction > 0:
        raise DataError(f"{data.name} has too few images per class to keep any for testing; "
                        "add images")
    if max_test is not None and len(test) > max_test:
        test = _stratified_subset(test, labels, max_test, rng)
    return Splits(*(np.sort(np.concatenate(a)) for a in (train, val)), np.sort(test))


def _stratified_subset(indices: np.ndarray, labels: np.ndarray, size: int,
                       rng: np.random.Generator) -> np.ndarray:
    share = size / len(indices)
    return np.concatenate([
        rng.permutation(members)[:max(1, int(round(share * len(members))))]
        for members in (indices[labels[indices] == c] for c in np.unique(labels[indices]))])
