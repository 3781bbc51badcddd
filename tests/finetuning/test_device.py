"""The device code paths, run on the CPU: mixed precision (bfloat16, and float16 with CUDA's
gradient scaler), channels-last, the activation cache with mixed dtypes, frozen blocks under
a scaler, and data kept on the device once (a ``meta`` device stands in for a GPU)."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from biotune_optuna import encode
from biotune_optuna.finetuning.build import build_task
from biotune_optuna.finetuning.device import precision
from biotune_optuna.finetuning.names import DeviceError
from biotune_optuna.finetuning.train import TrainConfig, adapt, fine_tune
from biotune_optuna.sampler import genome
from tests.conftest import REPO

CPU = torch.device("cpu")
# a plan trained in bfloat16 and in float32 ends within this of the same balanced accuracy
# (measured here: within 0.005 on these seeds; the bound leaves room for other CPUs' kernels)
AMP_TOLERANCE = 0.05


@pytest.fixture(scope="module")
def task():
    return build_task("small", "digits", shots=10, split_seed=0)


def plan(task, multipliers):
    return genome.decode(encode(multipliers, task.block_names), task.block_names)


def test_precision_defaults_follow_the_device():
    cpu, cuda = precision(CPU), precision(torch.device("cuda"))
    assert (cpu.amp_dtype, cpu.channels_last) == (None, False)
    assert (cuda.amp_dtype, cuda.channels_last) == (torch.float16, True)
    assert precision(CPU, amp=True).amp_dtype == torch.bfloat16
    assert precision(CPU, amp=True, amp_dtype="float16").scaler().is_enabled()
    assert not precision(CPU, amp=True).scaler().is_enabled()  # bfloat16 needs no scaling
    assert precision(torch.device("cuda"), amp=False, channels_last=False).describe() == \
        "cuda, float32"
    with pytest.raises(DeviceError, match="--no-amp"):
        precision(torch.device("mps"), amp=True)
    with pytest.raises(DeviceError, match="float16 or bfloat16"):
        precision(CPU, amp=True, amp_dtype="int8")


@pytest.mark.parametrize("options", [dict(amp=True), dict(channels_last=True),
                                     dict(amp=True, channels_last=True)])
def test_mixed_precision_and_channels_last_train_the_plan_float32_trains(task, options):
    full = plan(task, {b: 1.0 for b in task.block_names})
    config = TrainConfig(epochs=3, patience=3, device="cpu")
    base = [fine_tune(task, full, config, seed).value for seed in (0, 1)]
    other = [fine_tune(task, full, TrainConfig(epochs=3, patience=3, device="cpu",
                                               **options), seed).value for seed in (0, 1)]
    assert abs(np.mean(base) - np.mean(other)) <= AMP_TOLERANCE, (base, other)


def test_channels_last_computes_what_contiguous_computes(task):
    """A memory layout, the same arithmetic up to rounding: one step's logits and gradients
    agree. (Trained values may part: each layout's kernels round their own way, and a few
    epochs amplify that; this CPU's did by 0.02 in balanced accuracy after 3.)"""
    images, labels = task.data.tensors(task.splits.train[:32])
    steps = []
    for layout in (torch.contiguous_format, torch.channels_last):
        model = task.model.fresh(0).to(memory_format=layout).train()
        logits = model(adapt(images, task.model.input).contiguous(memory_format=layout))
        torch.nn.functional.cross_entropy(logits, labels).backward()
        steps.append((logits.detach(), [p.grad for p in model.parameters()]))
    (logits, grads), (logits_cl, grads_cl) = steps
    assert torch.allclose(logits, logits_cl, rtol=1e-3, atol=1e-3)  # measured: 8e-5 apart
    # each gradient points the same way; elementwise bounds depend on the thread count (one
    # thread's kernels part by 1% of a tensor's largest entry, cosine still 0.99998)
    cosine = torch.nn.functional.cosine_similarity
    assert all(cosine(g.flatten(), g_cl.flatten(), dim=0) >= 0.999
               for g, g_cl in zip(grads, grads_cl))


@pytest.mark.slow
def test_frozen_blocks_under_a_gradient_scaler_stay_frozen_and_the_rest_learns(task):
    """float16 autocast with CUDA's scaler path (GradScaler on the CPU stands in): the
    scaler must unscale and step only the trained blocks."""
    frozen_stem = plan(task, {"stage3": 1.0, "head": 3.0})
    config = TrainConfig(epochs=2, patience=2, device="cpu", amp=True, amp_dtype="float16")
    before = task.model.fresh(0).state_dict()
    run = fine_tune(task, frozen_stem, config, 0, keep_model=True)
    assert run.diverged is None and run.value > 0.3
    after = run.model.state_dict()
    trained = {m for b in task.blocks if b.name in frozen_stem.trained_blocks for m in b.modules}
    for name, tensor in before.items():
        moved = not torch.equal(tensor, after[name])
        if any(name.startswith(m + ".") for m in trained) and name.endswith("weight"):
            assert moved, name
        elif not any(name.startswith(m + ".") for m in trained):
            assert not moved, name


def test_the_activation_cache_serves_runs_of_either_precision(task):
    """Rows cached under bfloat16 autocast feed a float32 run of the same plan (and the
    reverse) without a dtype error, and the cached run matches the uncached one."""
    frozen = plan(task, {"stage2": 1.0, "stage3": 1.0, "head": 2.0})
    cache = task.activation_cache
    cache.clear()
    amp = TrainConfig(epochs=2, patience=2, device="cpu", amp=True)
    fp32 = TrainConfig(epochs=2, patience=2, device="cpu")
    first = fine_tune(task, frozen, amp, 0)
    assert first.frozen_prefix > 0 and cache.nbytes > 0
    cached = fine_tune(task, frozen, fp32, 0, evaluate_test=True)
    cache.clear()
    fresh = fine_tune(task, frozen, fp32, 0, evaluate_test=True)
    assert abs(cached.value - fresh.value) <= AMP_TOLERANCE
    assert fine_tune(task, frozen, amp, 0).diverged is None  # float32 rows, bfloat16 run


def test_images_go_to_the_device_once_and_are_batched_there(task):
    data = task.data
    meta = torch.device("meta")  # a device other than the host, with no memory behind it
    images, labels = data.resident(meta)
    assert images.device == meta and labels.device == meta
    assert data.resident(meta)[0] is images  # copied once, not per call
    x, y = next(data.batches(np.arange(8), 4, meta))
    assert x.device == meta and y.device == meta and x.shape[0] == 4
    assert data.resident(CPU)[0] is data.images  # the host needs no copy


@pytest.mark.slow
def test_the_device_check_runs_in_its_reduced_mode(tmp_path):
    out = tmp_path / "device.json"
    result = subprocess.run([sys.executable, "-m", "benchmarks.device_check", "--smoke",
                             "--json", str(out)], cwd=REPO, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    import json

    rows = json.loads(out.read_text())
    assert {r["measurement"] for r in rows} >= {
        "demo --quick", "amp on / off", "seconds per epoch", "trial / plain loop",
        "two workers / one", "vmap generation"}
    assert all(r["value"] is not None for r in rows if r["device"] == "cpu")
    assert "measurement" in result.stdout  # the table
