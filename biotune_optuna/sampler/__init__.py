"""BioTuneSampler: BioTune's evolutionary selective fine-tuning as an Optuna sampler.

This package needs Optuna and NumPy only (never torch) and imports only its own modules,
relatively: the folder is an OptunaHub package (``optunahub.load_local_module`` loads it from
a registry tree). See README.md beside this file. Names are imported on first use, so the
training engine can import :mod:`.plan` alone, without Optuna.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "BioTuneSampler": "core",
    "SamplerSettings": "settings",
    "FRONT_SETTINGS": "settings",
    "FineTunePlan": "plan",
    "decode": "genome",
    "encode": "genome",
    "lr_multiplier": "genome",
    "search_space": "genome",
    "suggest_genome": "genome",
    "TrialContext": "records",
    "fidelity_of": "records",
    "rescore_round": "records",
    "trial_context": "storage_io",
    "synthetic": None,  # a module
}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    home = _HOMES[name]
    value = (importlib.import_module(f".{name}", __name__) if home is None else
             getattr(importlib.import_module(f".{home}", __name__), name))
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))
