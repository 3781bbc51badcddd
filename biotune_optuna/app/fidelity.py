"""How much a trial trains, decided in one place: the full protocol (every training seed, up
to ``--epochs`` each), the low fidelity of a multi-fidelity search (the first training seed,
at most ``--low-epochs`` epochs: the first epochs of a full run, on the same schedule), and
the pruning rungs that give other samplers the same fidelities."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import optuna

from biotune_optuna.sampler.records import FULL, LOW

if TYPE_CHECKING:  # torch stays out of the commands that only read studies
    from biotune_optuna.finetuning.train import TrainConfig

REDUCTION_FACTOR = 3  # successive halving keeps a third of the trials at each rung


@dataclass(frozen=True)
class Fidelity:
    """At most ``epochs`` epochs per seed run, ``seeds`` seed runs."""

    epochs: int
    seeds: int


def training_at(fidelity: str, config: TrainConfig, seeds: Sequence[int],
                low: Fidelity | None) -> tuple[TrainConfig, list[int]]:
    """The training settings and seeds of a trial at ``fidelity`` (LOW or FULL). A low
    fidelity keeps the full protocol's cosine period, so its epochs are exactly the first
    epochs of a full run with the same seed."""
    if fidelity != LOW or low is None:
        return config, list(seeds)
    period = config.cosine_t_max or config.epochs
    return (replace(config, epochs=min(low.epochs, config.epochs), cosine_t_max=period),
        list(seeds[:low.seeds]))


def rung_pruner(low: Fidelity, full: Fidelity) -> optuna.pruners.BasePruner:
    """Hyperband whose first rung is the low fidelity (``low.epochs`` epochs trained), then
    every ``REDUCTION_FACTOR`` times more, up to the full protocol: the same fidelities a
    multi-fidelity BioTune search uses, for samplers that cannot choose them (TPE, CMA-ES,
    random). Steps count the epochs a trial has trained, all its seed runs together."""
    return optuna.pruners.HyperbandPruner(min_resource=low.epochs,
                                          max_resource=full.epochs * full.seeds,
                                          reduction_factor=REDUCTION_FACTOR)


__all__ = ["FULL", "LOW", "Fidelity", "REDUCTION_FACTOR", "rung_pruner", "training_at"]
