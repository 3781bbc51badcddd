"""What a pass over a split measures: loss, accuracy and balanced accuracy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Metrics:
    accuracy: float
    balanced_accuracy: float
    loss: float

    def get(self, metric: str) -> float:
        return getattr(self, metric)


def metrics_from(logits: torch.Tensor, labels: torch.Tensor, loss: float) -> Metrics:
    """Top-1 accuracy and balanced accuracy (mean recall over the classes present)."""
    predicted = logits.argmax(1)
    correct = predicted == labels
    recalls = [correct[labels == c].float().mean().item() for c in labels.unique()]
    return Metrics(correct.float().mean().item(), float(np.mean(recalls)), loss)
