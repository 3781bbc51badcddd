"""How the toolkit uses a GPU, measured in minutes: a table on stdout and a JSON file.

    .venv/bin/python -m benchmarks.device_check                 # on a CUDA machine, < 8 min
    .venv/bin/python -m benchmarks.device_check --smoke         # any machine, < 1 min (CI)

Needs no download: the offline ``digits`` images (resized) stand in for a dataset, and
torchvision models start from random weights (``--weights none``); speed does not depend on
the weights. Rows:

- ``demo --quick``: the quick demo's search and hand-over on the device, its seconds and the
  handed-over plan's test accuracy, beside the same on the CPU when ``--cpu-reference`` is
  given (the CPU run takes about as long as the whole check on a GPU);
- ``amp on / off``: one plan trained with and without mixed precision (seconds, accuracy);
- ``seconds per epoch``: ResNet-50 at 224 px on 1,000 training images: full fine-tuning, stem
  + layer1 + layer2 frozen with the activation cache on and off, and the head alone;
- ``trial / plain loop``: images per second of one trial against a plain torch training loop
  of the same model and batch, measured in the same run (the ratio to the limit);
- ``two workers / one``: two ``search`` processes on one device against one, same trials;
- ``vmap generation``: K plans of one architecture trained as one ``torch.func.vmap`` model
  against one after the other (measured here only, not built into the search).

``--smoke`` shrinks every row (a ResNet-18 at 32 px, 64 images, tiny searches) so that the
script itself is known to work; its figures say nothing about a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from biotune_optuna import encode
from biotune_optuna.app.config import SearchConfig
from biotune_optuna.finetuning.build import build_task
from biotune_optuna.finetuning.device import precision, resolve_device
from biotune_optuna.finetuning.train import TrainConfig, fine_tune
from biotune_optuna.sampler import genome

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Scale:
    """How big each row is: the real check, or the smoke test."""

    model: str
    image_size: int
    shots: int  # training images per class (10 classes)
    epochs: int
    batch_size: int
    demo: dict
    worker_trials: int
    vmap_k: tuple[int, ...]


FULL = Scale("resnet50", 224, 100, 2, 64, {}, 8, (1, 4, 13))
SMOKE = Scale("resnet18", 32, 6, 1, 32, dict(population=3, elite=1, generations=1,
                                             train_seeds=[0], epochs=1), 4, (1, 2))


@dataclass
class Row:
    measurement: str
    what: str
    device: str
    value: float | None
    unit: str
    note: str = ""


def timed(function):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = function()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


def demo_row(device: str, scale: Scale, out: Path) -> Row:
    from biotune_optuna.app.demo import QUICK
    from biotune_optuna.app.jobs import search, task_for, train_best

    config = SearchConfig(**{**QUICK, **scale.demo}, device=device,
                          storage=f"sqlite:///{out}/demo-{device.replace(':', '-')}.db")
    task = task_for(config)

    def run():
        study = search(config, quiet=True, task=task)
        return train_best(study, [100], compare=False, quiet=True, task=task)

    table, seconds = timed(run)
    accuracy = next((float(w) for line in table.splitlines() for w in line.split()
                     if w.startswith("0.")), None)
    return Row("demo --quick", f"{config.n_trials} trials + hand-over, test accuracy "
               f"{accuracy}", device, round(seconds, 1), "s",
               "smoke: 3+1 generation, 1 epoch" if scale.demo else "")


def task_of(scale: Scale):
    return build_task(scale.model, "digits", weights="none", shots=scale.shots,
                      image_size=scale.image_size)


def plan(task, trained: dict[str, float]):
    return genome.decode(encode(trained, task.block_names), task.block_names)


def epoch_rows(task, device: str, scale: Scale) -> list[Row]:
    config = TrainConfig(epochs=scale.epochs, patience=scale.epochs, device=device,
                         batch_size=scale.batch_size)
    names = task.block_names
    late = [n for n in names if n not in ("stem", "stage1", "stage2")]
    plans = {"full fine-tuning": plan(task, {n: 1.0 for n in names}),
             "stem + layer1 + layer2 frozen, cache on": plan(task, {n: 1.0 for n in late}),
             "stem + layer1 + layer2 frozen, cache off": plan(task, {n: 1.0 for n in late}),
             "head only": plan(task, {names[-1]: 1.0})}
    rows = []
    for label, p in plans.items():
        own = task if "cache off" not in label else replace(task, activation_cache=None)
        if own.activation_cache is not None:
            own.activation_cache.clear()
        run, seconds = timed(lambda own=own, p=p: fine_tune(own, p, config, 0))
        rows.append(Row("seconds per epoch", f"{scale.model} {scale.image_size} px, "
                        f"{len(task.splits.train)} images: {label}", device,
                        round(seconds / run.epochs_run, 3), "s/epoch"))
    amp = {}
    for on in (False, True):
        run, seconds = timed(lambda on=on: fine_tune(task, plans["full fine-tuning"],
                                                     replace(config, amp=on), 0))
        amp[on] = (seconds, run.value)
    rows.append(Row("amp on / off", f"full fine-tuning: {amp[True][0]:.2f} s vs "
                    f"{amp[False][0]:.2f} s, validation {amp[True][1]:.3f} vs "
                    f"{amp[False][1]:.3f}", device, round(amp[True][0] / amp[False][0], 3),
                    "ratio", "CPU mixed precision is bfloat16" if device == "cpu" else ""))
    return rows


def plain_loop_row(task, device: str, scale: Scale) -> Row:
    """A trial's images per second against a bare loop over the same model and batches."""
    dev = resolve_device(device)
    run_precision = precision(dev)
    config = TrainConfig(epochs=1, patience=1, device=device, batch_size=scale.batch_size)
    full = plan(task, {n: 1.0 for n in task.block_names})
    run, trial_seconds = timed(lambda: fine_tune(task, full, config, 0))
    images = len(task.splits.train)
    model = task.model.fresh(0).to(dev)
    if run_precision.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    scaler = run_precision.scaler()
    data_x, data_y = task.data.tensors(task.splits.train)
    from biotune_optuna.finetuning.train import adapt

    data_x = adapt(data_x.to(dev), task.model.input)
    data_y = data_y.to(dev)

    def loop():
        model.train()
        for start in range(0, images, scale.batch_size):
            x, y = data_x[start:start + scale.batch_size], data_y[start:start + scale.batch_size]
            with run_precision.autocast():
                loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

    _, loop_seconds = timed(loop)
    trial_rate = images * run.epochs_run / trial_seconds
    loop_rate = images / loop_seconds
    return Row("trial / plain loop", f"{trial_rate:.0f} vs {loop_rate:.0f} images/s "
               "(the trial includes its validation passes)", device,
               round(trial_rate / loop_rate, 3), "ratio")


def workers_row(device: str, scale: Scale, out: Path) -> Row:
    """Two search processes on one storage and device against one, the same trials."""
    def command(name: str, trials: int) -> list[str]:
        return [sys.executable, "-m", "biotune_optuna.cli", "search", "--study-name", name,
                "--storage", f"sqlite:///{out}/workers.db", "--model", "tiny",
                "--population", "3", "--elite", "1", "--epochs", "1", "--trials",
                str(trials), "--device", device, "-q"]

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    _, one = timed(lambda: subprocess.run(command("one", scale.worker_trials), check=True,
                                          capture_output=True, env=env))

    def two():
        procs = [subprocess.Popen(command("two", scale.worker_trials), env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for _ in range(2)]
        return [p.wait() for p in procs]

    codes, both = timed(two)
    assert codes == [0, 0], codes
    return Row("two workers / one", f"{scale.worker_trials} trials: {both:.1f} s with two "
               f"processes vs {one:.1f} s with one (process start-up included)", device,
               round(both / one, 3), "ratio")


def vmap_rows(task, device: str, scale: Scale) -> list[Row]:
    """K copies of the model trained one step per batch as one vmapped model, against K
    models one after the other (same batch, plain SGD)."""
    from biotune_optuna.finetuning.train import adapt

    dev = resolve_device(device)
    x, y = task.data.tensors(task.splits.train[:scale.batch_size])
    x, y = adapt(x.to(dev), task.model.input), y.to(dev)
    rows = []
    for k in scale.vmap_k:
        fused_seconds, sequential_seconds = vmap_seconds(task, dev, x, y, k)
        rows.append(Row("vmap generation", f"K={k}: {fused_seconds:.3f} s fused vs "
                        f"{sequential_seconds:.3f} s one after the other", device,
                        round(fused_seconds / sequential_seconds, 3), "ratio"))
    return rows


def vmap_seconds(task, dev: torch.device, x: torch.Tensor, y: torch.Tensor,
                 k: int) -> tuple[float, float]:
    """Seconds of 3 SGD steps of K models: fused by vmap, and one after the other."""
    from torch.func import functional_call, grad, stack_module_state, vmap

    models = [task.model.fresh(i).to(dev).eval() for i in range(k)]  # eval: no BN stats
    params, buffers = stack_module_state(models)
    base = models[0]

    def loss_of(p, b):
        return F.cross_entropy(functional_call(base, (p, b), (x,)), y)

    fused_step = vmap(grad(loss_of))

    def fused():
        grads = fused_step(params, buffers)
        for name in params:
            params[name].data -= 1e-3 * grads[name]

    def sequential():
        for m in models:
            gradients = torch.autograd.grad(F.cross_entropy(m(x), y), list(m.parameters()))
            with torch.no_grad():
                for p, g in zip(m.parameters(), gradients):
                    p -= 1e-3 * g

    fused()
    sequential()  # warm-up
    _, fused_seconds = timed(lambda: [fused() for _ in range(3)])
    _, sequential_seconds = timed(lambda: [sequential() for _ in range(3)])
    return fused_seconds, sequential_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, any device")
    parser.add_argument("--device", default=None, help="default: cuda if present, else cpu")
    parser.add_argument("--cpu-reference", action="store_true",
                        help="also run the quick demo on the CPU, for its accuracy")
    parser.add_argument("--json", default="device_check.json", help="where to write rows")
    args = parser.parse_args()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu" and not args.smoke:
        print("device_check: no CUDA device here; measuring the CPU (use --smoke for the "
              "reduced run)", file=sys.stderr)
    scale = SMOKE if args.smoke else FULL
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        rows = [demo_row(device, scale, out)]
        if args.cpu_reference and device != "cpu":
            rows.append(demo_row("cpu", scale, out))
        task = task_of(scale)
        rows += epoch_rows(task, device, scale)
        rows.append(plain_loop_row(task, device, scale))
        rows.append(workers_row(device, scale, out))
        rows += vmap_rows(task, device, scale)
    header = f"{'measurement':<20} {'device':<7} {'value':>9} {'unit':<8} what"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r.measurement:<20} {r.device:<7} {r.value!s:>9} {r.unit:<8} {r.what}"
              + (f" ({r.note})" if r.note else ""))
    gpu = torch.cuda.get_device_name(0) if device.startswith("cuda") else "none"
    print(f"\n{time.perf_counter() - start:.0f} s in all; GPU: {gpu}; torch "
          f"{torch.__version__}")
    Path(args.json).write_text(json.dumps([vars(r) for r in rows], indent=2))


if __name__ == "__main__":
    main()
