"""Fine-tune one plan: frozen blocks, one optimizer param group per trained block at
``base_lr x multiplier``, cosine schedule, early stopping with best-epoch restore."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from biotune_optuna.finetuning.blocks import Block, block_of_module
from biotune_optuna.finetuning.cache import is_random, stages
from biotune_optuna.finetuning.device import Precision, precision, resolve_device
from biotune_optuna.finetuning.inputs import InputSpec
from biotune_optuna.finetuning.metrics import Metrics, metrics_from
from biotune_optuna.finetuning.names import METRICS, OPTIMIZERS
from biotune_optuna.finetuning.seeding import SeededDraws
from biotune_optuna.sampler.plan import FineTunePlan

StopCheck = Callable[[], bool]
EXPLOSION = 100.0  # a run whose loss exceeds this times chance's has diverged


def _stop_point(should_stop: StopCheck | None) -> None:
    """Training and evaluation end at the next batch once ``should_stop()`` is true (a
    search's Ctrl-C), so a stop never lands inside a storage write."""
    if should_stop is not None and should_stop():
        raise KeyboardInterrupt


@dataclass(frozen=True)
class TrainConfig:
    """How each plan is trained (the paper's protocol by default, docs/algorithm.md section 3,
    except the cosine period, which defaults to the epoch budget instead of 100)."""

    base_lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    momentum: float = 0.9  # SGD only
    epochs: int = 30
    patience: int = 3
    batch_size: int = 96
    eval_batch_size: int = 256
    cosine_t_max: int | None = None  # None: the epoch budget; 100 reproduces the paper
    metric: str = "balanced_accuracy"
    augment: bool = False
    aux_loss_weight: float = 0.4  # Inception's auxiliary classifier
    device: str = "auto"
    amp: bool | None = None  # None: on CUDA only (see device.precision)
    channels_last: bool | None = None  # None: on CUDA only
    amp_dtype: str | None = None  # None: float16 on CUDA, bfloat16 on the CPU

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; use {', '.join(OPTIMIZERS)}")
        if self.metric not in METRICS:
            raise ValueError(f"unknown metric {self.metric!r}; use {', '.join(METRICS)}")
        if not self.base_lr > 0:
            raise ValueError(f"base learning rate must be positive, got {self.base_lr}")
        if self.patience < 1:
            raise ValueError(f"patience must be at least 1, got {self.patience}")


def adapt(x: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """[0, 1] images of any channel count and size -> the model's channels, size, normalisation."""
    if x.shape[1] != spec.channels:
        x = x.mean(1, keepdim=True) if spec.channels == 1 else x.expand(-1, spec.channels, -1, -1)
    if x.shape[-2:] != (spec.size, spec.size):
        x = F.interpolate(x, size=(spec.size, spec.size), mode="bilinear", align_corners=False,
                          antialias=x.shape[-1] > spec.size)
    mean = torch.as_tensor(spec.mean, device=x.device).view(1, -1, 1, 1)
    std = torch.as_tensor(spec.std, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random affine per image (rotation 10 degrees, shift 8 %, scale 0.9-1.1), no flips,
    so it is safe for digits and text; runs on the batch's device."""
    n = x.shape[0]
    r = torch.rand(n, 4, generator=generator).to(x.device)
    angle = (r[:, 0] - 0.5) * (2 * math.pi / 18)
    scale = 0.9 + 0.2 * r[:, 1]
    shift = (r[:, 2:] - 0.5) * 0.16
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, padding_mode="zeros", align_corners=False)


@dataclass
class PlanSetup:
    param_groups: list[dict]
    frozen_norms: list[nn.Module]
    trainable_params: int
    total_params: int


def apply_plan(model: nn.Module, blocks: list[Block], plan: FineTunePlan,
               base_lr: float) -> PlanSetup:
    """Freeze the plan's frozen blocks (no gradient, BatchNorm statistics frozen) and build
    one optimizer param group per trained block at ``base_lr x multiplier``."""
    if tuple(b.name for b in blocks) != plan.block_names:
        raise ValueError(f"the plan's blocks {list(plan.block_names)} are not the model's "
                         f"{[b.name for b in blocks]}")
    params = dict(model.named_parameters())
    groups, trainable = [], 0
    for block, multiplier in zip(blocks, plan.multipliers):
        for name in block.params:
            params[name].requires_grad_(multiplier > 0)
        if multiplier > 0:
            group = [params[n] for n in block.params]
            groups.append({"params": group, "lr": base_lr * multiplier, "name": block.name})
            trainable += sum(p.numel() for p in group)
    frozen = {b.name for b, m in zip(blocks, plan.multipliers) if m == 0}
    norms = [m for name, m in model.named_modules() if isinstance(m, _BatchNorm)
             and (owner := block_of_module(blocks, name)) is not None and owner.name in frozen]
    return PlanSetup(groups, norms, trainable, sum(p.numel() for p in params.values()))


def make_optimizer(groups: list[dict], config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.base_lr, momentum=config.momentum,
                               weight_decay=config.weight_decay)
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return cls(groups, lr=config.base_lr, weight_decay=config.weight_decay)


def split_output(output) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Main logits and auxiliary logits (Inception v3 and GoogLeNet in training mode); for a
    model returning a tuple, its first item."""
    if isinstance(output, torch.Tensor):
        return output, []
    if hasattr(output, "_asdict"):
        fields = output._asdict()
        return fields["logits"], [v for k, v in fields.items()
                                  if k != "logits" and v is not None]
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0], []  # your own model's (logits, extras...): the logits come first
    raise TypeError(f"the model returned a {type(output).__name__}; return the logits (or a "
                    "tuple whose first item is the logits)")


def training_mode(model: nn.Module, frozen_norms: list[nn.Module]) -> None:
    """Training mode, but the frozen blocks' BatchNorm layers keep their statistics."""
    model.train()
    for norm in frozen_norms:
        norm.eval()


class Feed:
    """Where a run's batches come from and which part of the model they enter: the images
    through the whole model, or, for a plan whose leading blocks are frozen, the cached
    outputs of that frozen prefix through the remaining stages (:mod:`.cache`). The model's
    random draws (dropout, stochastic depth) come from ``draws``, the run's seed.

    ``frozen_norms`` are the BatchNorm layers training keeps in eval mode; without them the
    feed serves evaluation only. The stages are traced once as training runs the model and
    once as evaluation does: a trace fixes whatever the code decides by ``self.training``
    (functional dropout, stochastic depth, timm's normalisation layers), so a trace of the
    other mode would train or evaluate another network than the plain path."""

    def __init__(self, task, model: nn.Module, plan: FineTunePlan, config: TrainConfig,
                 precision: Precision, draws: SeededDraws,
                 frozen_norms: list[nn.Module] | None = None) -> None:
        self.task, self.model, self.precision, self.draws = task, model, precision, draws
        self.calls = 0
        self.device = precision.device
        self.depth, self._stages = 0, None
        self._forwards: dict[bool, Callable] = {True: model, False: model}  # by training
        cache = getattr(task, "activation_cache", None)
        first = next((i for i, m in enumerate(plan.multipliers) if m > 0), 0)
        if cache is None or config.augment or first == 0:
            return
        chains = {}
        if frozen_norms is not None:
            training_mode(model, frozen_norms)
            chains[True] = stages(model, task.blocks)
        model.eval()
        chains[False] = stages(model, task.blocks)
        if None in chains.values():
            return
        chain = chains.get(True, chains[False])  # random draws show in the training trace
        depth = next((k for k in range(first) if is_random(chain[k])), first)
        if depth:
            self.depth, self._stages = depth, chain
            self._forwards = {training: nn.Sequential(*c[depth:])
                              for training, c in chains.items()}

    def __call__(self, x: torch.Tensor):
        """The model's output for a batch of :meth:`batches`. A model whose first batch drew
        no random number runs outside ``draws`` after it: routing costs a few microseconds a
        torch call, 4-8 % of a small CNN's step on the CPU."""
        forward = self._forwards[self.model.training]
        self.calls += 1
        if self.calls > 1 and not self.draws.drawn:
            return forward(x)
        with self.draws:
            return forward(x)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] as the model's input, on its device."""
        x = adapt(x.to(self.device, non_blocking=True), self.task.model.input)
        return (x.contiguous(memory_format=torch.channels_last) if self.precision.channels_last
                else x)

    def batches(self, indices: np.ndarray, batch_size: int,
                augment_with: torch.Generator | None = None,
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(input of ``forward``, labels) per batch, in the order of ``indices``."""
        if not self.depth:
            for x, y in self.task.data.batches(indices, batch_size, self.device):
                if augment_with is not None:
                    x = augment(x.to(self.device, non_blocking=True), augment_with)
                yield self.inputs(x), y.to(self.device, non_blocking=True)
            return
        cache, labels = self.task.activation_cache, self.task.data.labels
        for start in range(0, len(indices), batch_size):
            part = np.asarray(indices[start:start + batch_size])
            rows = cache.rows(self.depth - 1, part, self._compute)
            # rows cached under autocast are half precision; the stages after them are not
            yield rows.float(), torch.as_tensor(labels[part]).to(self.device)

    @torch.no_grad()
    def _compute(self, indices: np.ndarray, start: int | None,
                 inputs: torch.Tensor | None) -> torch.Tensor:
        """Outputs of the frozen prefix for ``indices``: from the images, or from the outputs
        at cached boundary ``start``."""
        with self.precision.autocast():
            if start is not None:  # rows cached by a run of another precision: as float32
                return nn.Sequential(*self._stages[start + 1:self.depth])(inputs.float())
            prefix = nn.Sequential(*self._stages[:self.depth])
            return torch.cat([prefix(self.inputs(x)) for x, _ in
                              self.task.data.batches(indices, 256, self.device)])


@torch.no_grad()
def evaluate(feed: Feed, indices: np.ndarray, batch_size: int = 256,
             should_stop: StopCheck | None = None) -> Metrics:
    feed.model.eval()
    logits, labels = [], []
    for x, y in feed.batches(indices, batch_size):
        _stop_point(should_stop)
        with feed.precision.autocast():
            output = split_output(feed(x))[0]
        logits.append(output.float().cpu())
        labels.append(y.cpu())
    logits_all, labels_all = torch.cat(logits), torch.cat(labels)
    loss = F.cross_entropy(logits_all, labels_all).item()
    return metrics_from(logits_all, labels_all, loss)


@dataclass
class RunResult:
    """One fine-tuning run of one plan with one seed."""

    seed: int
    value: float  # the validation metric at the best epoch
    best_epoch: int
    epochs_run: int
    val: Metrics | None
    seconds: float
    trainable_params: int
    total_params: int
    history: list[float] = field(default_factory=list)
    test: Metrics | None = None
    diverged: str | None = None
    model: nn.Module | None = None
    frozen_prefix: int = 0  # leading blocks served from the activation cache


class Method:
    """A fine-tuning method's hooks into the training loop. This base class trains a plan;
    the baselines (:mod:`biotune_optuna.finetuning.baselines`) add penalties, per-step
    learning rates or adapters through the same hooks, so every method shares the loop,
    splits and seeds."""

    def prepare(self, model: nn.Module, task, plan: FineTunePlan,
                config: TrainConfig) -> PlanSetup:
        return apply_plan(model, task.blocks, plan, config.base_lr)

    def penalty(self, model: nn.Module) -> torch.Tensor | None:
        """A regulariser added to the loss."""
        return None

    def before_step(self, optimizer: torch.optim.Optimizer, schedule_factor: float) -> None:
        """Called after the backward pass; ``schedule_factor`` is the cosine factor."""

    def finish(self, model: nn.Module) -> nn.Module:
        """The model used for testing and kept (e.g. with adapters merged)."""
        return model


def fine_tune(task, plan: FineTunePlan, config: TrainConfig, seed: int,
              report: Callable[[float, int], None] | None = None,
              evaluate_test: bool = False, keep_model: bool = False,
              on_epoch: Callable[[int, float], None] | None = None,
              method: Method | None = None, should_stop: StopCheck | None = None) -> RunResult:
    """Train ``plan`` on ``task`` (a :class:`biotune_optuna.finetuning.task.Task`) with ``seed``.

    Early stopping keeps the epoch with the best validation metric (strictly better, the
    paper's patience rule); its weights are restored before testing. ``report(value, epoch)``
    is called every epoch (Optuna pruning raises from it). A loss that is NaN, infinite or
    exploded (above ``EXPLOSION`` times chance's) ends the run with ``diverged`` set instead
    of raising. ``method`` changes how the model is
    trained (default: the plan's frozen blocks and per-block learning rates). Once
    ``should_stop()`` is true, the next batch raises KeyboardInterrupt.
    """
    method = method or Method()
    if plan.is_empty:
        raise ValueError("the plan trains no block; nothing to fine-tune")
    start = time.perf_counter()
    run = precision(resolve_device(config.device), config.amp, config.channels_last,
                    config.amp_dtype)
    device = run.device
    generator = torch.Generator().manual_seed(seed)  # data order and augmentation
    # dropout, stochastic depth and a method's new layers draw from the seed alone, not
    # from the process-wide generator that data loading, earlier runs or threads move
    draws = SeededDraws(seed)
    model = task.model.fresh(seed).to(device)
    if run.channels_last:
        model = model.to(memory_format=torch.channels_last)
    with draws:
        setup = method.prepare(model, task, plan, config)
    optimizer = make_optimizer(setup.param_groups, config)
    period = config.cosine_t_max or config.epochs
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=period)
    scaler = run.scaler()  # float16 only; with frozen blocks it scales the trained ones alone
    splits = task.splits
    feed = Feed(task, model, plan, config, run, draws, setup.frozen_norms)
    best, best_epoch, best_state, history = -math.inf, 0, None, []
    # a loss far above chance's (ln of the class count) has exploded, finite or not
    exploded = EXPLOSION * math.log(max(task.data.num_classes, 2))
    result = RunResult(seed, math.nan, 0, 0, None, 0.0, setup.trainable_params,
                       setup.total_params, history, frozen_prefix=feed.depth)
    for epoch in range(config.epochs):
        training_mode(model, setup.frozen_norms)
        order = splits.train[torch.randperm(len(splits.train), generator=generator).numpy()]
        batches = feed.batches(order, config.batch_size, generator if config.augment else None)
        for step, (x, y) in enumerate(batches):
            _stop_point(should_stop)
            with run.autocast():
                logits, aux = split_output(feed(x))
                loss = F.cross_entropy(logits, y) + config.aux_loss_weight * sum(
                    (F.cross_entropy(a, y) for a in aux), torch.zeros((), device=device))
                extra = method.penalty(model)
                if extra is not None:
                    loss = loss + extra
            if not torch.isfinite(loss) or loss.item() > exploded:
                result.diverged = (f"training loss became {loss.item():.4g} at epoch "
                                   f"{epoch + 1}, batch {step + 1}; lower the base learning "
                                   f"rate ({config.base_lr:g}) or the largest multiplier")
                result.epochs_run, result.seconds = epoch + 1, time.perf_counter() - start
                return result
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            method.before_step(optimizer, 0.5 * (1 + math.cos(math.pi * epoch / period)))
            scaler.step(optimizer)
            scaler.update()
        schedule.step()
        val = evaluate(feed, splits.val, config.eval_batch_size, should_stop)
        value = val.get(config.metric)
        history.append(value)
        if on_epoch is not None:
            on_epoch(epoch, value)
        if value > best:
            best, best_epoch, result.val = value, epoch, val
            if evaluate_test or keep_model:
                best_state = copy.deepcopy(model.state_dict())
        if report is not None:
            report(value, epoch)
        if epoch - best_epoch >= config.patience:
            break
    result.value, result.best_epoch, result.epochs_run = best, best_epoch + 1, len(history)
    if best_state is not None:
        model.load_state_dict(best_state)
    model = method.finish(model)
    if evaluate_test:
        result.test = evaluate(Feed(task, model, plan, config, run, draws),
                               splits.test, config.eval_batch_size, should_stop)
    if keep_model:
        result.model = model.cpu()
    result.seconds = time.perf_counter() - start
    return result
