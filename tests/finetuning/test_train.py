"""Fine-tuning one plan: freezing, per-block learning rates, early stopping, divergence,
pruning, the Inception auxiliary head, and the objective's user attrs."""

import math

import numpy as np
import optuna
import pytest
import torch
import torchvision
from optuna.trial import TrialState

from biotune_optuna import encode
from biotune_optuna.app.objective import FineTuneObjective
from biotune_optuna.finetuning import train as ft
from biotune_optuna.finetuning.blocks import partition
from biotune_optuna.finetuning.build import build_task
from biotune_optuna.finetuning.data import ImageData
from biotune_optuna.finetuning.models import load_model
from biotune_optuna.finetuning.splits import make_splits
from biotune_optuna.finetuning.task import Task
from biotune_optuna.finetuning.train import TrainConfig, apply_plan, fine_tune
from biotune_optuna.sampler import genome
from biotune_optuna.sampler.records import generation_of

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def task():
    return build_task("tiny", "digits", shots=10, split_seed=0)


def plan_of(task, multipliers):
    names = task.block_names
    return genome.decode(encode(multipliers, names), names)


def snapshot(model, block):
    module_names = set(block.modules)
    state = {}
    for name, tensor in model.state_dict().items():
        if any(name.startswith(m + ".") for m in module_names):
            state[name] = tensor.clone()
    return state


def test_frozen_blocks_and_their_batchnorm_statistics_stay_unchanged(task):
    plan = plan_of(task, {"stage2": 2.0, "head": 5.0})
    before = task.model.fresh(seed=7)
    run = fine_tune(task, plan, TrainConfig(epochs=3, patience=3), seed=7, keep_model=True)
    after = run.model
    for block in task.blocks:
        old, new = snapshot(before, block), snapshot(after, block)
        changed = [k for k in old if not torch.equal(old[k], new[k])]
        if block.name in ("stem", "stage1"):
            assert changed == [], f"frozen block {block.name} changed: {changed}"
            assert any("running_mean" in k for k in old)  # the BN buffers were compared
        else:
            weights = [k for k in changed if k.endswith("weight")]
            assert weights, f"trained block {block.name} did not change"
    assert run.trainable_params == sum(b.n_params for b in task.blocks
                                       if b.name in ("stage2", "head"))


def test_each_param_group_learning_rate_is_base_times_multiplier(task, monkeypatch):
    plan = plan_of(task, {"stem": 0.5, "stage2": 3.0, "head": 8.0})
    model = task.model.fresh(0)
    setup = apply_plan(model, task.blocks, plan, base_lr=2e-3)
    assert {g["name"]: g["lr"] for g in setup.param_groups} == pytest.approx(
        {"stem": 1e-3, "stage2": 6e-3, "head": 1.6e-2})
    grouped = {id(p) for g in setup.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        assert p.requires_grad == (id(p) in grouped), name

    seen = []
    real = ft.make_optimizer

    def spy(groups, config):
        optimizer = real(groups, config)
        seen.append({g["name"]: g["lr"] for g in optimizer.param_groups})
        return optimizer

    monkeypatch.setattr(ft, "make_optimizer", spy)
    fine_tune(task, plan, TrainConfig(base_lr=2e-3, epochs=1), seed=0)
    assert seen == [pytest.approx({"stem": 1e-3, "stage2": 6e-3, "head": 1.6e-2})]


def test_early_stopping_restores_the_best_epoch(task):
    config = TrainConfig(epochs=25, patience=2)
    run = fine_tune(task, plan_of(task, {"stage1": 1, "stage2": 1, "head": 5}), config, 1,
                    evaluate_test=True)
    assert run.history[run.best_epoch - 1] == max(run.history) == run.value
    assert run.epochs_run <= run.best_epoch + config.patience
    assert run.test is not None and 0.0 <= run.test.balanced_accuracy <= 1.0


def test_divergence_ends_the_trial_with_a_reason_and_the_study_goes_on(task):
    config = TrainConfig(base_lr=1e12, epochs=2, optimizer="sgd")
    objective = FineTuneObjective(task, config)
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial(encode(task.block_names, task.block_names))
    study.optimize(objective, n_trials=2)
    first = study.trials[0]
    assert first.state == TrialState.FAIL
    assert "training loss became" in first.user_attrs["failed_reason"]
    assert "lower the base learning rate" in first.user_attrs["failed_reason"]
    assert len(study.trials) == 2


def test_objective_records_the_plan_and_averages_seeds(task):
    objective = FineTuneObjective(task, TrainConfig(epochs=2), seeds=(0, 1))
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial(encode({"stage2": 1.0, "head": 10.0}, task.block_names))
    study.enqueue_trial(encode([], task.block_names) | {"threshold": 1.0})
    study.optimize(objective, n_trials=2)
    trained, empty = study.trials
    assert trained.user_attrs["trained_blocks"] == ["stage2", "head"]
    assert trained.user_attrs["lr_multipliers"]["head"] == pytest.approx(10.0)
    assert 0 < trained.user_attrs["trainable_fraction"] < 1
    assert len(trained.user_attrs["epochs"]) == 2
    runs = [fine_tune(task, genome.decode(trained.params, task.block_names),
                      TrainConfig(epochs=2), seed) for seed in (0, 1)]
    assert trained.value == pytest.approx(np.mean([r.value for r in runs]))
    assert empty.value == 0.0 and empty.user_attrs["empty_plan"]


def test_objective_trains_the_head_even_below_the_threshold_when_asked(task):
    params = encode({"stage2": 1.0}, task.block_names)  # head gene 0.0, frozen by the paper
    study = optuna.create_study(direction="maximize")
    for train_head in (False, True):
        study.enqueue_trial(params)
        study.optimize(FineTuneObjective(task, TrainConfig(epochs=1), train_head=train_head),
                       n_trials=1)
    paper, forced = study.trials
    assert paper.user_attrs["trained_blocks"] == ["stage2"]
    assert forced.user_attrs["trained_blocks"] == ["stage2", "head"]
    assert forced.user_attrs["lr_multipliers"]["head"] == pytest.approx(0.1)


def test_trainable_penalty_lowers_value_and_reports_by_the_trained_fraction(task):
    params = encode({"stage2": 1.0, "head": 1.0}, task.block_names)
    study = optuna.create_study(direction="maximize")
    for penalty in (0.0, 0.5):
        study.enqueue_trial(params)
        study.optimize(FineTuneObjective(task, TrainConfig(epochs=2), trainable_penalty=penalty),
                       n_trials=1)
    plain, penalised = study.trials
    fraction = penalised.user_attrs["trainable_fraction"]
    assert 0 < fraction < 1
    assert penalised.value == pytest.approx(plain.value - 0.5 * fraction)
    for epoch, value in plain.intermediate_values.items():
        assert penalised.intermediate_values[epoch] == pytest.approx(value - 0.5 * fraction)


def test_objective_reports_every_epoch_so_pruners_work(task):
    objective = FineTuneObjective(task, TrainConfig(epochs=4, patience=4))
    study = optuna.create_study(direction="maximize",
                                pruner=optuna.pruners.ThresholdPruner(lower=0.99))
    study.enqueue_trial(encode(task.block_names, task.block_names))
    study.optimize(objective, n_trials=1)
    trial = study.trials[0]
    assert trial.state == TrialState.PRUNED
    assert list(trial.intermediate_values) == [1]  # step: epochs trained so far


def test_folds_rotate_with_the_generation(task):
    from biotune_optuna import BioTuneSampler

    sampler = BioTuneSampler(3, 1, seed=0, search_space=genome.search_space(task.block_names))
    objective = FineTuneObjective(task, TrainConfig(epochs=1), n_folds=2)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(objective, n_trials=sampler.n_trials(2))
    folds = {}
    for t in study.trials:
        if "fold" in t.user_attrs:
            folds.setdefault(generation_of(t), set()).add(t.user_attrs["fold"])
    assert folds.get(0, {0}) == {0} and folds.get(1, {0}) == {0} and folds.get(2) == {1}


@pytest.mark.slow
def test_inception_auxiliary_head_is_trained_and_eval_returns_logits():
    model = load_model("inception_v3", num_classes=3, weights="none")
    blocks = partition(model.model)
    rng = np.random.default_rng(0)
    images = torch.as_tensor(rng.random((12, 3, 299, 299)), dtype=torch.float32)
    data = ImageData("noise", ["a", "b", "c"], np.repeat([0, 1, 2], 4), images=images)
    assert model.input.size == 299
    task = Task(model, blocks, data, make_splits(data, shots=2, val_shots=1))
    plan = genome.decode(encode({"AuxLogits": 1.0, "fc": 1.0}, task.block_names),
                         task.block_names)
    before = task.model.fresh(0).AuxLogits.fc.weight.clone()
    run = fine_tune(task, plan, TrainConfig(epochs=1, batch_size=6), 0, keep_model=True,
                    evaluate_test=True)
    assert not torch.equal(before, run.model.AuxLogits.fc.weight)
    assert run.test is not None and math.isfinite(run.test.loss)


def test_torchvision_weights_by_enum_name_load_from_the_local_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    enum = torchvision.models.get_model_weights("resnet18")["DEFAULT"]
    reference = torchvision.models.resnet18(weights=None)
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(reference.state_dict(), checkpoints / enum.url.rsplit("/", 1)[-1])
    loaded = load_model("resnet18", num_classes=5, weights="DEFAULT")
    assert torch.equal(loaded.model.layer1[0].conv1.weight, reference.layer1[0].conv1.weight)
    assert loaded.model.fc.out_features == 5
    assert loaded.input.size == 224 and loaded.input.mean == (0.485, 0.456, 0.406)


def test_local_checkpoint_loads_all_but_the_head(tmp_path):
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pt"
    torch.save({"state_dict": reference.state_dict()}, path)
    loaded = load_model("resnet18", num_classes=4, weights=str(path))
    assert torch.equal(loaded.model.conv1.weight, reference.conv1.weight)
    assert loaded.model.fc.weight.shape == (4, 512)


@pytest.mark.parametrize("name, weights, message", [
    ("resnet9000", None, "unknown model 'resnet9000'"),
    ("resnet18", "IMAGENET9K", "unknown weights 'IMAGENET9K' for resnet18"),
    ("resnet18", "/nonexistent/w.pt", "does not exist"),
    ("tiny", "cifar", "built-in models pretrain on"),
])
def test_model_errors_name_the_fix(name, weights, message):
    from biotune_optuna.finetuning.build import resolve_weights
    from biotune_optuna.finetuning.names import ModelError

    with pytest.raises(ModelError, match=message):
        load_model(name, num_classes=3, weights=resolve_weights(name, weights))


def test_a_file_that_is_not_a_checkpoint_is_a_clear_error(tmp_path):
    from biotune_optuna.finetuning.names import ModelError

    path = tmp_path / "notes.pt"
    path.write_text("hello")
    with pytest.raises(ModelError, match="cannot read checkpoint"):
        load_model("resnet18", num_classes=3, weights=str(path))


@pytest.mark.slow
def test_pretraining_is_cached_and_depends_on_the_seed_alone(tmp_path, monkeypatch):
    from biotune_optuna.finetuning.pretrain import pretrained_checkpoint

    def backbone():
        return torch.load(pretrained_checkpoint("tiny", "digits", seed=5),
                          weights_only=True)["state_dict"]

    monkeypatch.setenv("BIOTUNE_OPTUNA_CACHE", str(tmp_path))
    torch.manual_seed(123)  # global state must not leak into the pretrained weights
    first = backbone()
    cached = list(tmp_path.rglob("*.pt"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    torch.rand(10)
    again = backbone()
    assert cached[0].stat().st_mtime_ns == stamp  # loaded, not retrained
    for a, b in zip(first.values(), again.values()):
        assert torch.equal(a, b)
    cached[0].unlink()
    torch.manual_seed(999)
    retrained = backbone()
    for a, b in zip(first.values(), retrained.values()):
        assert torch.equal(a, b)
    assert not any(k.startswith("head.") for k in first)  # each task gets its own head
