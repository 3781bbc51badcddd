"""biotune_optuna: which blocks of a pre-trained CNN to freeze, and the learning rate of each
trained block, found by BioTune's evolutionary search as an Optuna sampler.

Layers, each importing only those before it: :mod:`biotune_optuna.sampler` (Optuna and NumPy
only), :mod:`biotune_optuna.finetuning` (torch), :mod:`biotune_optuna.app` and the
``biotune-optuna`` command; :mod:`biotune_optuna.analysis` reads studies from storage.
"""

from biotune_optuna.sampler import (
    BioTuneSampler,
    FineTunePlan,
    decode,
    encode,
    search_space,
    suggest_genome,
)

__version__ = "0.2.0"

__all__ = [
    "BioTuneSampler",
    "FineTunePlan",
    "decode",
    "encode",
    "search_space",
    "suggest_genome",
]
