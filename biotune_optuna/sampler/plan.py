"""A fine-tuning plan: which blocks are trained, and at what multiple of the base learning
rate. The genome decodes to one (:mod:`.genome`); the training engine takes one. This module
imports nothing, so the engine can use it without loading the sampler or Optuna.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

TRAINED_BLOCKS, FROZEN_BLOCKS, LR_MULTIPLIERS = "trained_blocks", "frozen_blocks", "lr_multipliers"
RECIPES = ("full", "linear")


@dataclass(frozen=True)
class FineTunePlan:
    """Which blocks are trained and the learning-rate multiplier of each trained block.

    ``multipliers[i]`` is 0.0 for a frozen block.
    """

    block_names: tuple[str, ...]
    multipliers: tuple[float, ...]

    @property
    def trained(self) -> tuple[bool, ...]:
        return tuple(m > 0.0 for m in self.multipliers)

    @property
    def trained_blocks(self) -> list[str]:
        return [b for b, m in zip(self.block_names, self.multipliers) if m > 0.0]

    @property
    def frozen_blocks(self) -> list[str]:
        return [b for b, m in zip(self.block_names, self.multipliers) if m == 0.0]

    @property
    def is_empty(self) -> bool:
        """True when no block is trained (the paper scores this as chance without training)."""
        return not any(self.trained)

    def learning_rates(self, base_lr: float) -> dict[str, float]:
        """Learning rate of each trained block: ``base_lr * multiplier``."""
        return {b: base_lr * m for b, m in zip(self.block_names, self.multipliers) if m > 0.0}

    def training_flops(self, block_flops: Sequence[float], cached_prefix: bool = True) -> float:
        """FLOPs to train on one image, given each block's forward FLOPs: the forward pass
        from the first trained block on, input gradients through every block above it and
        weight gradients of the trained blocks (each about one forward pass). The frozen
        prefix costs its forward pass too, unless ``cached_prefix``: an activation cache
        computes it once, not every epoch. 0 for a plan that trains nothing."""
        trained = self.trained
        if not any(trained):
            return 0.0
        first = trained.index(True)
        return float(sum(block_flops[first:]) + sum(block_flops[first + 1:])
                     + sum(f for f, t in zip(block_flops, trained) if t)
                     + (0.0 if cached_prefix else sum(block_flops[:first])))

    def as_dict(self) -> dict[str, object]:
        return {
            TRAINED_BLOCKS: self.trained_blocks,
            FROZEN_BLOCKS: self.frozen_blocks,
            LR_MULTIPLIERS: {b: round(m, 6) for b, m in zip(self.block_names, self.multipliers)
                               if m > 0.0},
        }


def recipe_plan(name: str, block_names: Sequence[str]) -> FineTunePlan:
    """A hand-made recipe: ``full`` fine-tuning (every block at 1x) or ``linear`` probing
    (the new head, the last block, at 1x)."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; use one of {', '.join(RECIPES)}")
    last = len(block_names) - 1
    return FineTunePlan(tuple(block_names), tuple(
        1.0 if name == "full" or i == last else 0.0 for i in range(len(block_names))))
