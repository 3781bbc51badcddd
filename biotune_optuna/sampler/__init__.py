"""BioTuneSampler: BioTune's evolutionary selective fine-tuning as an Optuna sampler.

This package needs Optuna and NumPy only (never torch): it can be used, and published as an
OptunaHub sampler, on its own. See README.md beside this file.
"""

from biotune_optuna.sampler.core import BioTuneSampler
from biotune_optuna.sampler.genome import (
    FineTunePlan,
    decode,
    encode,
    lr_multiplier,
    search_space,
    suggest_genome,
)
from biotune_optuna.sampler.population import fidelity_of, rescore_round

__all__ = [
    "BioTuneSampler",
    "FineTunePlan",
    "decode",
    "encode",
    "fidelity_of",
    "lr_multiplier",
    "rescore_round",
    "search_space",
    "suggest_genome",
]
