"""biotune_optuna: which blocks of a pre-trained CNN to freeze, and the learning rate of each
trained block, found by BioTune's evolutionary search as an Optuna sampler.

Layers, each importing only those before it: :mod:`biotune_optuna.sampler` (Optuna and NumPy
only), :mod:`biotune_optuna.finetuning` (torch), :mod:`biotune_optuna.app` and the
``biotune-optuna`` command; :mod:`biotune_optuna.analysis` reads studies from storage.
"""

import importlib

__version__ = "0.2.0"

# the public API, imported on first use: `import biotune_optuna` (and the command line's
# --help) loads no torch, and the training engine's import of a plan loads no Optuna
_LAZY = {
    **{name: "biotune_optuna.sampler" for name in (
        "BioTuneSampler", "SamplerSettings", "FineTunePlan", "decode", "encode",
        "search_space", "suggest_genome")},
    "build_task": "biotune_optuna.finetuning.build",
    "TrainConfig": "biotune_optuna.finetuning.train",
    "fine_tune": "biotune_optuna.finetuning.train",
    "FineTuneObjective": "biotune_optuna.app.objective",
    "SearchConfig": "biotune_optuna.app.config",
    "search": "biotune_optuna.app.jobs",
    "train_best": "biotune_optuna.app.jobs",
    "ranked_plans": "biotune_optuna.contents",
    "record_model": "biotune_optuna.app.studies",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'biotune_optuna' has no attribute {name!r}")
