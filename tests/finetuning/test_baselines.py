"""Baselines: the L2-SP/L1-SP penalties, AutoRGN's per-tensor rates, LoRA adapters merged for
inference, and the baseline and compare commands."""

import json
from dataclasses import replace

import numpy as np
import optuna
import pytest
import torch
from torch import nn

from biotune_optuna import contents
from biotune_optuna.app.studies import config_of, make_pruner
from biotune_optuna.finetuning import baselines
from biotune_optuna.finetuning.baselines import (
    AutoRGN,
    LoRA,
    StartingPointPenalty,
    add_lora,
    merge_lora,
)
from biotune_optuna.finetuning.build import build_task
from biotune_optuna.finetuning.evaluation import evaluate_plan, tune_base_lr
from biotune_optuna.finetuning.names import BASELINES
from biotune_optuna.finetuning.train import TrainConfig, fine_tune


@pytest.fixture(scope="module")
def task():
    return build_task("tiny", "digits", shots=10, split_seed=0)


@pytest.mark.parametrize("p", [1, 2])
def test_starting_point_penalty_formula(task, p):
    model = task.model.fresh(0)
    plan, _ = baselines.baseline("full", task.block_names)
    method = StartingPointPenalty(p, alpha=0.3, beta=0.2)
    method.prepare(model, task, plan, TrainConfig())
    assert float(method.penalty(model).detach()) == pytest.approx(
        0.1 * float((model.head.weight.detach() ** 2).sum()))
    with torch.no_grad():
        model.stem[0][0].weight.add_(0.5)
    drift = model.stem[0][0].weight.numel() * (0.5 ** 2 / 2 if p == 2 else 0.5)
    assert float(method.penalty(model).detach()) == pytest.approx(
        0.3 * drift + 0.1 * float((model.head.weight.detach() ** 2).sum()), rel=1e-5)


def test_autorgn_sets_each_tensor_rate_from_its_relative_gradient_norm(task):
    model = task.model.fresh(0)
    plan, _ = baselines.baseline("full", task.block_names)
    method = AutoRGN()
    setup = method.prepare(model, task, plan, TrainConfig(base_lr=1e-2))
    optimizer = torch.optim.Adam(setup.param_groups)
    x, y = task.data.tensors(task.splits.train[:16])
    nn.functional.cross_entropy(model(x), y).backward()
    method.before_step(optimizer, schedule_factor=0.5)
    rgn = [float(g["params"][0].grad.norm() / g["params"][0].detach().norm())
           for g in optimizer.param_groups]
    rates = [g["lr"] for g in optimizer.param_groups]
    assert len(rates) == len(list(model.parameters()))
    assert max(rates) == pytest.approx(1e-2 * 0.5)
    top = max(rgn)
    for r, lr in zip(rgn, rates):
        assert lr == pytest.approx(1e-2 * 0.5 * r / top, rel=1e-5)


def test_lora_merges_into_the_original_architecture_with_the_same_outputs(task):
    model = task.model.fresh(0)
    x, _ = task.data.tensors(task.splits.val[:8])
    add_lora(model, rank=2, alpha=4.0, skip=["head"])
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".up." in name:
                p.normal_(0, 0.1)  # a trained adapter, not the zero start
    model.eval()
    before = model(x)
    merged = merge_lora(model)
    assert not any(isinstance(m, (baselines.LoRAConv2d, baselines.LoRALinear))
                   for m in merged.modules())
    assert torch.allclose(merged(x), before, atol=1e-5)


def test_lora_wraps_a_convolution_that_pads_in_its_own_forward():
    """timm's TF "same" convolutions pad the input by its size before convolving."""
    pytest.importorskip("timm", reason="timm is not installed (pip install .[lite])")
    from timm.layers import Conv2dSame

    model = nn.Sequential(Conv2dSame(3, 4, 3, stride=2))
    x = torch.rand(2, 3, 7, 7)
    plain = model(x)
    add_lora(model, rank=2, alpha=4.0, skip=[])
    assert torch.equal(model(x), plain)  # the update starts at zero
    with torch.no_grad():
        model[0].up.weight.normal_(0, 0.1)
    trained = model(x)
    assert trained.shape == plain.shape and not torch.allclose(trained, plain)
    assert torch.allclose(merge_lora(model)(x), trained, atol=1e-5)


def test_lora_trains_adapters_and_head_only(task):
    plan, method = baselines.baseline("lora", task.block_names, rank=2)
    run = fine_tune(task, plan, TrainConfig(epochs=2), seed=0, method=method,
                    evaluate_test=True, keep_model=True)
    assert isinstance(method, LoRA)
    assert 0 < run.trainable_params < run.total_params
    assert type(run.model.stem[0][0]) is nn.Conv2d  # merged back
    assert run.test is not None


@pytest.mark.slow
def test_baseline_command_runs_every_method(cli, tmp_path):
    result = cli("baseline", "--model", "tiny", "--dataset", "digits", "--epochs", "1",
                 "--method", "full,linear,l2sp,l1sp,autorgn,lora", "--seeds", "0,1",
                 "--out", tmp_path / "b.json", "-q", check=True)
    for name in BASELINES:
        assert f"\n{name} " in "\n" + result.stdout
    saved = json.loads((tmp_path / "b.json").read_text())
    assert [e["seeds"] for e in saved] == [[0, 1]] * 6
    linear = next(e for e in saved if e["name"] == "linear")
    assert linear["trainable_fraction"] < 0.1


def test_tune_base_lr_keeps_the_rate_with_the_best_validation(task):
    plan, method = baselines.baseline("full", task.block_names)
    config = TrainConfig(epochs=2, optimizer="sgd")
    lr, scores = tune_base_lr(task, plan, config, [1e30, 1e-7, 1e-2], [100, 101], method)
    assert list(scores) == [1e30, 1e-7, 1e-2]
    assert scores[1e30] == -np.inf  # diverged: ranked last, the search goes on
    assert lr != 1e30 and scores[lr] == max(scores.values())
    again = evaluate_plan(task, plan, replace(config, base_lr=1e-2), [100, 101], "again",
                          method=method)
    assert scores[1e-2] == pytest.approx(np.mean([r.value for r in again.runs]))


@pytest.mark.slow
def test_baseline_command_tunes_the_learning_rate_on_other_seeds(cli, tmp_path):
    result = cli("baseline", "--model", "tiny", "--epochs", "1", "--method", "full",
                 "--seeds", "0", "--tune-lr", "1e-7,1e-2", "--out", tmp_path / "b.json",
                 check=True)
    assert "full: validation by base lr 1e-07 " in result.stdout
    [saved] = json.loads((tmp_path / "b.json").read_text())
    assert saved["name"] in ("full (lr 1e-07)", "full (lr 0.01)")
    clash = cli("baseline", "--model", "tiny", "--tune-lr", "--seeds", "0,100")
    assert clash.returncode == 2 and "test with other --seeds" in clash.stderr
    bad = cli("baseline", "--model", "tiny", "--tune-lr", "fast")
    assert bad.returncode == 2 and "expected positive learning rates" in bad.stderr


@pytest.mark.slow
def test_unknown_baseline_is_a_one_line_error(cli):
    result = cli("baseline", "--model", "tiny", "--method", "dropout")
    assert result.returncode == 2 and "--method has unknown name 'dropout'" in result.stderr
    assert "Traceback" not in result.stderr


def spent(study, last=None):
    return contents.compute_spent(study.get_trials(deepcopy=False)[:last]).epochs


@pytest.mark.slow
def test_compare_command_runs_every_sampler_and_seed_at_equal_compute(cli, tmp_path):
    result = cli("compare", "--study-name", "c", "--model", "tiny", "--epochs", "2",
                 "--samplers", "biotune,tpe,random", "--seeds", "0,1", "--trials", "7",
                 "--population", "3", "--elite", "1", "--out", "plots", "-q", check=True)
    storage = f"sqlite:///{tmp_path}/studies/c.db"
    names = sorted(optuna.get_all_study_names(storage))
    assert names == sorted(f"c-{s}-s{i}" for s in ("biotune", "tpe", "random") for i in (0, 1))
    for seed in (0, 1):
        first = optuna.load_study(study_name=f"c-biotune-s{seed}", storage=storage)
        assert len(first.trials) == 7
        for other in ("tpe", "random"):  # the first sampler's compute on the same seed
            study = optuna.load_study(study_name=f"c-{other}-s{seed}", storage=storage)
            assert spent(study, -1) < spent(first) <= spent(study)
    for sampler in ("biotune", "tpe", "random"):
        assert f"\n{sampler} " in "\n" + result.stdout
    assert "epochs to reach" in result.stdout
    assert (tmp_path / "plots" / "c_convergence.png").is_file()
    # a budget in generations counts BioTune's re-scoring runs
    cli("compare", "--study-name", "g", "--model", "tiny", "--epochs", "1", "--samplers",
        "biotune,tpe", "--seeds", "0", "--generations", "1", "--population", "3",
        "--elite", "1", "--out", "plots", "-q", check=True)
    study = optuna.load_study(study_name="g-biotune-s0", storage=f"sqlite:///{tmp_path}/studies/g.db")
    assert len(study.trials) == 3 + 5


@pytest.mark.slow
def test_compare_under_multi_fidelity_prunes_the_others_from_the_same_first_rung(cli, tmp_path):
    cli("compare", "--study-name", "m", "--model", "tiny", "--epochs", "3", "--low-epochs",
        "1", "--multi-fidelity", "--samplers", "biotune,tpe", "--seeds", "0",
        "--compute-budget", "40", "--population", "3", "--elite", "1", "--out", "plots", "-q",
        check=True)
    storage = f"sqlite:///{tmp_path}/studies/m.db"
    biotune, tpe = (optuna.load_study(study_name=f"m-{s}-s0", storage=storage)
                    for s in ("biotune", "tpe"))
    pruner = make_pruner(config_of(tpe))  # what the search used (storage keeps no pruner)
    assert isinstance(pruner, optuna.pruners.HyperbandPruner) and pruner._min_resource == 1
    assert all(t.intermediate_values for t in tpe.trials if t.user_attrs.get(contents.EPOCHS))
    fidelities = {t.user_attrs.get(contents.FIDELITY) for t in biotune.trials} - {None}
    assert fidelities == {"low", "full"}
    for study in (biotune, tpe):
        assert spent(study, -1) < 40 <= spent(study)
