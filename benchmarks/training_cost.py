"""Does the training-cost model rank plans as this CPU's clock does? Random plans of two
networks, each trained for a few epochs with the activation cache: the model's training
GFLOPs per image, and the trainable fraction for comparison, against the measured seconds
per epoch (epochs after the first, when the cache serves the frozen prefix).

    .venv/bin/python -m benchmarks.training_cost              # ~10 min alone; RESULTS.md
    .venv/bin/python -m benchmarks.training_cost --plans 8 --no-write

Run it alone: two torch processes on two cores make every timing meaningless.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.stats import spearmanr

from benchmarks import results
from benchmarks.common import prepare
from biotune_optuna.app.config import SearchConfig
from biotune_optuna.app.jobs import task_for
from biotune_optuna.finetuning.cost import profile
from biotune_optuna.finetuning.names import WHEEL_WEIGHTS
from biotune_optuna.finetuning.train import TrainConfig, fine_tune
from biotune_optuna.sampler import genome
from biotune_optuna.sampler.operators import random_genome
from biotune_optuna.sampler.plan import recipe_plan

# timing needs no pretrained weights, and 30 images per class make an epoch long enough
NETWORKS = {
    "lite0": SearchConfig(model="timm:tf_efficientnet_lite0", weights=WHEEL_WEIGHTS,
                          dataset="emoji", download=True, shots=30),
    "resnet18": SearchConfig(model="resnet18", weights="none", dataset="emoji",
                             download=True, shots=30, image_size=64),
}
EPOCHS = 4  # the first fills the activation cache; the others are timed


def random_plans(block_names: list[str], count: int, seed: int) -> list[genome.FineTunePlan]:
    """Plans decoded from random genomes (each trains some block), full fine-tuning first."""
    rng = np.random.default_rng(seed)
    names = list(genome.search_space(block_names))
    threshold = names.index(genome.THRESHOLD)
    plans = [recipe_plan("full", block_names)]
    while len(plans) < count:
        genes = random_genome(rng, len(names), threshold)
        plans.append(genome.decode(dict(zip(names, map(float, genes))), block_names))
    return plans


def seconds_per_epoch(task, plan, config: TrainConfig) -> float:
    stamps: list[float] = []
    fine_tune(task, plan, config, seed=0, on_epoch=lambda *_: stamps.append(time.perf_counter()))
    return float(np.mean(np.diff(stamps)))


def network_rows(name: str, plans: int) -> tuple[list[str], list[list[str]]]:
    config = NETWORKS[name]
    task = task_for(config)
    model = task.model
    costs = profile(model.model, task.blocks, (model.input.channels, model.input.size,
                                               model.input.size))
    train = config.replace(epochs=EPOCHS, patience=EPOCHS).train_config()
    measured, modelled, trainable, memory = [], [], [], []
    for plan in random_plans(task.block_names, plans, seed=0):
        measured.append(seconds_per_epoch(task, plan, train))
        modelled.append(costs.training_gflops(plan))
        trainable.append(sum(p for p, t in zip(costs.params, plan.trained) if t))
        memory.append(costs.memory_mb(plan, train.batch_size, train.optimizer))
        print(f"{name}: {modelled[-1]:.4f} GFLOPs, {measured[-1]:.3f} s/epoch", flush=True)
    row = [f"{name} ({model.input.size} px, {task.splits.summary()})", str(plans),
           f"{costs.full_gflops():.4f}",
           f"{min(measured):.2f} - {max(measured):.2f}",
           f"{spearmanr(modelled, measured).statistic:.3f}",
           f"{spearmanr(trainable, measured).statistic:.3f}",
           f"{spearmanr(memory, measured).statistic:.3f}"]
    return row, [[f"{m:.4f}", f"{s:.3f}"] for m, s in zip(modelled, measured)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", default=",".join(NETWORKS),
                        help=f"comma-separated, of {', '.join(NETWORKS)}")
    parser.add_argument("--plans", type=int, default=30, help="random plans per network")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    parser.add_argument("--no-write", action="store_true", help="print, do not edit RESULTS.md")
    args = parser.parse_args()
    prepare(args.threads)
    rows = [network_rows(name, args.plans)[0] for name in args.networks.split(",")]
    body = (f"Command: `.venv/bin/python -m benchmarks.training_cost --plans {args.plans}` "
            f"({results.machine()}, {args.threads} torch thread, run alone).\n\n"
            "Random plans (random genomes, full fine-tuning among them) on the emoji "
            f"categories (30 images per class), trained for {EPOCHS} epochs with the "
            "activation cache and the search's protocol (batch 96, Adam); measured: the "
            "mean seconds of epochs 2 to 4 (training and validation, "
            "the frozen prefix served by the cache). Spearman rank correlations with the "
            "measured seconds of: the cost model's training GFLOPs per image "
            "(`finetuning/cost.py`), the trainable parameter count (what `trainable "
            "fraction` ranks by) and the modelled training memory. Memory itself is not "
            "measured here (the CPU allocator gives no per-step peak).\n\n"
            + results.table(["network (target)", "plans", "full fine-tuning GFLOPs/image",
                             "seconds per epoch", "rho: cost model", "rho: trainable params",
                             "rho: modelled memory"], rows) + "\n")
    results.publish("training_cost", "Does the training-cost model rank plans like the clock?",
                    body, write=not args.no_write)


if __name__ == "__main__":
    main()
