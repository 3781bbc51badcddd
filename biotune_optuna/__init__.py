"""biotune_optuna: which blocks of a pre-trained CNN to freeze, and the learning rate of each
trained block, found by BioTune's evolutionary search as an Optuna sampler."""

from biotune_optuna.genome import FineTunePlan, decode, encode, search_space, suggest_genome
from biotune_optuna.sampler import BioTuneSampler

__version__ = "0.1.0"

__all__ = [
    "BioTuneSampler",
    "FineTunePlan",
    "decode",
    "encode",
    "search_space",
    "suggest_genome",
]
