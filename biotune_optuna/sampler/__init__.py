"""BioTuneSampler: BioTune's evolutionary selective fine-tuning as an Optuna sampler.

This package needs Optuna and NumPy only (never torch) and imports only its own modules,
relatively: the folder is an OptunaHub package (``optunahub.load_local_module`` loads it from
a registry tree). See README.md beside this file.
"""

from . import synthetic
from .core import BioTuneSampler
from .genome import (
    FineTunePlan,
    decode,
    encode,
    lr_multiplier,
    search_space,
    suggest_genome,
)
from .records import TrialContext, fidelity_of, rescore_round
from .settings import SamplerSettings
from .storage_io import trial_context

__all__ = [
    "BioTuneSampler",
    "FineTunePlan",
    "decode",
    "encode",
    "fidelity_of",
    "lr_multiplier",
    "rescore_round",
    "SamplerSettings",
    "search_space",
    "suggest_genome",
    "synthetic",
    "trial_context",
    "TrialContext",
]
