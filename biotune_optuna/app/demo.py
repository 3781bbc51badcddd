"""The offline demo: a small CNN pretrained on MNIST-5k, a BioTune search for digits with
10 labels per class, then its plan against full fine-tuning and linear probing."""

from __future__ import annotations

import time

from biotune_optuna import contents
from biotune_optuna.app.config import SearchConfig
from biotune_optuna.app.jobs import search, task_for, train_best

# The paper's BioTune and budget (no elite re-scoring, every trial at the full protocol,
# 140 trials), as studies/demo.toml.
DEMO = dict(study_name="demo", model="small", weights="mnist5k", dataset="digits", shots=10,
            population=10, elite=3, generations=10, train_seeds=[0, 1, 2], epochs=30,
            patience=3, seed=0, rescore_elites=False, multi_fidelity=False)


QUICK = dict(DEMO, study_name="demo-quick", population=6, elite=2, generations=4,
             train_seeds=[0, 1], epochs=20)


FINAL_SEEDS = {"demo": [100, 101, 102, 103, 104], "demo-quick": [100, 101, 102]}


def demo(quick: bool = False, storage: str | None = None, quiet: bool = False,
         verbose: bool = False) -> str:
    """The offline demo: search, then the best plan against full fine-tuning and linear
    probing on the test split, same seeds. Running it again resumes the same study."""
    options = dict(QUICK if quick else DEMO)
    config = SearchConfig(**options, storage=storage)
    start = time.perf_counter()
    task = task_for(config)  # pretrains the small CNN on MNIST-5k once (cached)
    study = search(config, quiet=quiet, verbose=verbose, task=task)
    seeds = FINAL_SEEDS[config.study_name]
    table = train_best(study, seeds, compare=True, quiet=quiet, task=task)
    elapsed = time.perf_counter() - start
    summary = {"trials": len(study.trials), "seconds": round(elapsed, 1)}
    study.set_user_attr(contents.DEMO, summary)
    return (f"\n{config.model} pretrained on MNIST-5k -> digits, {config.shots} labels per "
            f"class; BioTune search of {config.n_trials} trials in {config.storage_label}\n\n"
            f"{table}\n\ntotal time {elapsed:.0f} s; `biotune-optuna status --storage "
            f"{config.storage_label}` and `biotune-optuna dashboard --storage "
            f"{config.storage_label}` inspect it")
