"""The same seed gives the same run, and what that costs: on networks with and without
dropout, each in a fresh process (where the first run used to differ), a plan trained three
times with one seed, with and without the activation cache, and the seconds per run with
torch's random functions routed to the run's generators against without routing.

    .venv/bin/python -m benchmarks.same_seed             # rewrites its RESULTS.md section
    .venv/bin/python -m benchmarks.same_seed --no-write
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import results

# label -> (model, weights, image size, what in it draws random numbers)
MODELS = {
    "small": ("small", "mnist5k", 28, "nothing"),
    "resnet18": ("resnet18", "none", 32, "nothing"),
    "mobilenet_v2": ("mobilenet_v2", "none", 32, "dropout"),
    "efficientnet_b0": ("efficientnet_b0", "none", 32, "dropout, stochastic depth"),
}
SHOTS, EPOCHS, TIMED_RUNS = 10, 3, 7


def digits_folder(root: Path) -> Path:
    """scikit-learn's digits as a folder of PNGs (files: read through a DataLoader)."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i, (image, label) in enumerate(zip(digits.images[:400], digits.target)):
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image * 15).astype(np.uint8)).save(folder / f"{i}.png")
    return root


def measure(label: str, folder: str) -> dict:
    """One network in this (fresh) process: three runs of the full plan with seed 0, a plan
    with its first half frozen with and without the activation cache, and timings."""
    import torch

    from biotune_optuna.finetuning import train
    from biotune_optuna.finetuning.build import build_task
    from biotune_optuna.finetuning.seeding import SeededDraws
    from biotune_optuna.sampler.plan import FineTunePlan

    torch.set_num_threads(1)
    model, weights, size, _ = MODELS[label]
    config = train.TrainConfig(epochs=EPOCHS, patience=EPOCHS, batch_size=16)

    def task(cache_mb):
        return build_task(model, folder, weights=weights, shots=SHOTS, image_size=size,
                          activation_cache_mb=cache_mb)

    plain, cached = task(None), task(64)
    names = plain.block_names
    full = FineTunePlan(tuple(names), (1.0,) * len(names))
    half = len(names) // 2
    frozen = FineTunePlan(tuple(names), (0.0,) * half + (1.0,) * (len(names) - half))

    def run(on, plan, seed=0):
        result = train.fine_tune(on, plan, config, seed)
        return [result.value, result.val.loss, result.frozen_prefix]

    repeats = [run(plain, full) for _ in range(3)]
    cache_pair = [run(plain, frozen), run(cached, frozen)]

    class Unrouted(contextlib.nullcontext):  # the old way: torch's global generator
        drawn = 0

        def __init__(self, seed):
            super().__init__()

    class AlwaysRouted(SeededDraws):  # routing kept on after a first batch that drew nothing
        @property
        def drawn(self):
            return 1

        @drawn.setter
        def drawn(self, value):
            pass

    seconds = {"unrouted": [], "rule": [], "always": []}
    for _ in range(TIMED_RUNS):
        for variant, draws in (("unrouted", Unrouted), ("rule", SeededDraws),
                               ("always", AlwaysRouted)):
            train.SeededDraws = draws
            start = time.perf_counter()
            train.fine_tune(plain, full, config, 1)
            seconds[variant].append(time.perf_counter() - start)
    train.SeededDraws = SeededDraws
    return {"repeats": repeats, "cache_pair": cache_pair,
            "seconds": {k: statistics.median(v) for k, v in seconds.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated: "
                        + ", ".join(MODELS))
    parser.add_argument("--no-write", action="store_true", help="print, do not edit RESULTS.md")
    parser.add_argument("--measure", nargs=2, metavar=("MODEL", "FOLDER"),
                        help=argparse.SUPPRESS)  # one network, in the process this starts
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = digits_folder(Path(tmp) / "digits")
        for label in args.models.split(","):
            done = subprocess.run([sys.executable, "-m", "benchmarks.same_seed", "--measure",
                                   label, str(folder)], capture_output=True, text=True,
                                  check=True)
            found = json.loads(done.stdout.splitlines()[-1])
            values = [f"{v:.4f} / {loss:.6f}" for v, loss, _ in found["repeats"]]
            (v0, loss0, _), (v1, loss1, prefix) = found["cache_pair"]
            s = found["seconds"]
            rows.append([label, MODELS[label][3], "; ".join(values),
                         "yes" if all(r == found["repeats"][0] for r in found["repeats"])
                         else "**no**",
                         f"{prefix} blocks; " + ("same" if (v0, loss0) == (v1, loss1)
                                                 else f"**{loss0:.6f} vs {loss1:.6f}**"),
                         f"{s['unrouted']:.2f}", f"{s['rule'] / s['unrouted']:.3f}",
                         f"{s['always'] / s['unrouted']:.3f}"])
    body = (f"Command: `.venv/bin/python -m benchmarks.same_seed` ({results.machine()}, one "
            "torch thread).\n\nEach network in a fresh process, on 400 of scikit-learn's "
            f"digits as PNG files ({SHOTS} labels per class), {EPOCHS} epochs, batch 16. "
            "Three runs of the full plan with seed 0 (validation balanced accuracy / loss), "
            "the plan with the first half of the blocks frozen without and with the "
            "activation cache (how many blocks the cache served, and whether the values "
            "agree), and the median seconds of "
            f"{TIMED_RUNS} runs of the full plan without routing torch's random functions to "
            "the run's generators (the old way: the global generator), then as ratios to it "
            "with routing as the toolkit does it (off after a first batch that drew nothing)"
            " and with routing always on:\n\n"
            + results.table(["network", "draws", "3 runs with seed 0", "identical",
                             "cache: prefix served, values", "s / run unrouted",
                             "routed (rule) / unrouted", "always routed / unrouted"], rows)
            + "\n")
    results.publish("same_seed", "The same seed gives the same run", body,
                    write=not args.no_write)


if __name__ == "__main__":
    main()
