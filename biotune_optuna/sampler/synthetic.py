"""Synthetic objectives for comparing samplers in milliseconds instead of GPU hours.

``FineTuneTask`` mimics a fine-tuning search over the BioTune genome: each block has a
gain when trained (negative when training it overfits), an ideal learning-rate multiplier
and a size; accuracy adds up the gains, loses accuracy quadratically in the log-distance of
each multiplier to its ideal, and carries seeded evaluation noise. The three tasks follow the
transfer regimes of docs/data.md: near domain (freeze the early blocks), head only
(linear probing wins) and far domain (train all, higher rates deeper). ``sphere`` and
``rastrigin`` are standard functions on [0, 1]^d, without a threshold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import optuna

from . import genome
from .plan import FineTunePlan
from .records import LOW
from .storage_io import trial_context

CHANCE = 0.1


@dataclass(frozen=True)
class FineTuneTask:
    """Accuracy-like objective (maximised) of a decoded plan, with noise."""

    name: str
    blocks: tuple[str, ...]
    gains: tuple[float, ...]  # accuracy gained by training each block at its ideal rate
    ideal_multipliers: tuple[float, ...]
    base: float = 0.6  # accuracy of the pre-trained features with an untrained head
    lr_sensitivity: float = 0.03  # loss per squared decade away from the ideal rate
    noise: float = 0.01
    seed: int = 0
    low_fidelity_gap: float = 0.05  # a low-fidelity trial (fewer epochs) scores this much less
    # forward FLOPs of each block, relative: early blocks see the largest feature maps
    block_flops: tuple[float, ...] = (0.3, 0.25, 0.2, 0.13, 0.1, 0.02)

    direction = "maximize"

    @property
    def search_space(self) -> dict[str, optuna.distributions.FloatDistribution]:
        return genome.search_space(self.blocks)

    def accuracy(self, plan: genome.FineTunePlan) -> float:
        """Noise-free accuracy of a plan; chance when nothing is trained."""
        if plan.is_empty:
            return CHANCE
        acc = self.base
        for multiplier, gain, ideal in zip(plan.multipliers, self.gains, self.ideal_multipliers):
            if multiplier > 0:
                acc += gain - self.lr_sensitivity * math.log10(multiplier / ideal) ** 2
        return min(max(acc, 0.0), 1.0)

    def __call__(self, trial: optuna.Trial) -> float:
        plan = genome.decode(genome.suggest_genome(trial, self.blocks), self.blocks)
        rng = np.random.default_rng([self.seed, trial.number])
        gap = self.low_fidelity_gap if genome_fidelity(trial) == LOW else 0.0
        return float(np.clip(self.accuracy(plan) - gap + rng.normal(0.0, self.noise), 0.0, 1.0))


@dataclass(frozen=True)
class CostAwareTask:
    """Two objectives of a synthetic fine-tuning: the task's accuracy (maximised) and the
    plan's training FLOPs as a fraction of full fine-tuning's (minimised)."""

    task: FineTuneTask
    directions = ("maximize", "minimize")

    @property
    def search_space(self) -> dict[str, optuna.distributions.FloatDistribution]:
        return self.task.search_space

    def cost(self, plan: FineTunePlan) -> float:
        full = FineTunePlan(plan.block_names, (1.0,) * len(plan.block_names))
        return plan.training_flops(self.task.block_flops) / full.training_flops(
            self.task.block_flops)

    def __call__(self, trial: optuna.Trial) -> tuple[float, float]:
        accuracy = self.task(trial)
        return accuracy, self.cost(genome.decode(trial.params, self.task.blocks))

    def known_values(self, params: dict[str, float]) -> list[float | None]:
        """What a plan's genes fix before it runs: its cost (the accuracy needs the run), for
        ``BioTuneSampler(known_values=...)``."""
        return [None, self.cost(genome.decode(params, self.task.blocks))]


def genome_fidelity(trial: optuna.Trial) -> str:
    """The fidelity the sampler asked a running trial for."""
    return trial_context(trial).fidelity


BLOCKS = ("stem", "stage1", "stage2", "stage3", "stage4", "head")

TASKS = {
    "near-domain": FineTuneTask(
        "near-domain", BLOCKS, gains=(-0.03, -0.02, 0.02, 0.06, 0.08, 0.12),
        ideal_multipliers=(1.0, 1.0, 0.5, 1.0, 2.0, 5.0)),
    "head-only": FineTuneTask(
        "head-only", BLOCKS, gains=(-0.05, -0.05, -0.04, -0.04, -0.03, 0.25),
        ideal_multipliers=(1.0, 1.0, 1.0, 1.0, 1.0, 8.0)),
    "far-domain": FineTuneTask(
        "far-domain", BLOCKS, gains=(0.02, 0.03, 0.04, 0.05, 0.06, 0.1),
        ideal_multipliers=(0.3, 0.5, 1.0, 2.0, 3.0, 5.0)),
}


@dataclass(frozen=True)
class StandardFunction:
    """A minimised test function on [0, 1]^d, parameters ``x0..x{d-1}``."""

    name: str
    dims: int = 7
    direction = "minimize"

    @property
    def search_space(self) -> dict[str, optuna.distributions.FloatDistribution]:
        return {f"x{i}": optuna.distributions.FloatDistribution(0.0, 1.0)
                for i in range(self.dims)}

    def value(self, x: Sequence[float]) -> float:
        z = np.asarray(x)
        if self.name == "sphere":  # optimum 0 at 0.3 in every coordinate
            return float(np.sum((z - 0.3) ** 2))
        if self.name == "rastrigin":  # optimum 0 at 0.5 (the origin of [-5.12, 5.12])
            u = (z - 0.5) * 10.24
            return float(10 * len(u) + np.sum(u**2 - 10 * np.cos(2 * np.pi * u)))
        raise ValueError(f"unknown standard function {self.name!r}; use sphere or rastrigin")

    def __call__(self, trial: optuna.Trial) -> float:
        return self.value([trial.suggest_float(n, 0.0, 1.0) for n in self.search_space])


COST_AWARE = {name: CostAwareTask(task) for name, task in TASKS.items()}

FUNCTIONS = {name: StandardFunction(name) for name in ("sphere", "rastrigin")}
