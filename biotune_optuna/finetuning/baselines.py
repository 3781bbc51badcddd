"""Fine-tuning baselines on the same training loop, splits and seeds as the search.

- ``full``: every block trained at the base learning rate.
- ``linear``: linear probing, the new head only.
- ``l2sp`` / ``l1sp``: all trained with a penalty toward the pre-trained weights on the
  backbone, ``alpha/2 ||w - w0||^2`` (or ``alpha ||w - w0||_1``), plus ``beta/2 ||head||^2``
  (Li, Grandvalet and Davis, ICML 2018).
- ``autorgn``: all trained; before every step each parameter tensor's learning rate is set
  to the base rate times its relative gradient norm ``||g|| / ||w||`` divided by the largest
  one (Lee et al., ICLR 2023), i.e. with the feedback the authors' code leaves out.
- ``lora``: the backbone frozen; low-rank adapters on every convolution (groups 1) and
  linear layer except the head, which is trained fully; merged into the weights for testing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from biotune_optuna.finetuning.models import replace_module
from biotune_optuna.finetuning.names import BASELINES
from biotune_optuna.finetuning.train import Method, PlanSetup, apply_plan
from biotune_optuna.sampler.plan import RECIPES, FineTunePlan, recipe_plan


def _head_params(model: nn.Module, heads: Sequence[str]) -> set[str]:
    return {f"{h}.{n}" for h in heads for n, _ in model.get_submodule(h).named_parameters()}


class StartingPointPenalty(Method):
    """L2-SP (``p=2``) or L1-SP (``p=1``)."""

    def __init__(self, p: int, alpha: float = 0.01, beta: float = 0.01) -> None:
        self.p, self.alpha, self.beta = p, alpha, beta

    def prepare(self, model, task, plan, config) -> PlanSetup:
        heads = _head_params(model, task.model.heads)
        named = dict(model.named_parameters())
        self.backbone = [(named[n], named[n].detach().clone()) for n in named if n not in heads]
        self.head = [named[n] for n in heads if n.endswith("weight")]
        return apply_plan(model, task.blocks, plan, config.base_lr)

    def penalty(self, model) -> torch.Tensor:
        if self.p == 2:
            drift = sum(((w - w0) ** 2).sum() for w, w0 in self.backbone) * self.alpha / 2
        else:
            drift = sum((w - w0).abs().sum() for w, w0 in self.backbone) * self.alpha
        return drift + sum((w ** 2).sum() for w in self.head) * self.beta / 2


class AutoRGN(Method):
    """One param group per parameter tensor; learning rate = base x RGN / max RGN, set
    before every optimizer step (and scaled by the cosine schedule)."""

    def prepare(self, model, task, plan, config) -> PlanSetup:
        setup = apply_plan(model, task.blocks, plan, config.base_lr)
        setup.param_groups = [{"params": [p], "lr": config.base_lr, "name": name}
                              for name, p in model.named_parameters() if p.requires_grad]
        self.base_lr = config.base_lr
        return setup

    @torch.no_grad()
    def before_step(self, optimizer, schedule_factor) -> None:
        ratios = []
        for group in optimizer.param_groups:
            p = group["params"][0]
            grad = p.grad.norm() if p.grad is not None else torch.zeros((), device=p.device)
            ratios.append(grad / p.norm().clamp_min(1e-12))
        ratios = torch.stack(ratios)
        scale = ratios / ratios.max().clamp_min(1e-12)
        for group, s in zip(optimizer.param_groups, scale.tolist()):
            group["lr"] = self.base_lr * schedule_factor * s


class LoRAConv2d(nn.Module):
    """A frozen convolution plus a trainable low-rank update ``B A`` (B starts at zero)."""

    def __init__(self, base: nn.Conv2d, rank: int, alpha: float) -> None:
        super().__init__()
        self.base, self.scale = base, alpha / rank
        self.down = nn.Conv2d(base.in_channels, rank, base.kernel_size, base.stride,
                              base.padding, base.dilation, bias=False)
        self.up = nn.Conv2d(rank, base.out_channels, 1, bias=False)
        nn.init.kaiming_uniform_(self.down.weight, a=5 ** 0.5)
        nn.init.zeros_(self.up.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if type(self.base).forward is nn.Conv2d.forward:
            return self.base(x) + self.scale * self.up(self.down(x))
        # a convolution with its own forward (timm's TF "same" padding pads the input
        # first) runs with the update folded into its weight, so it pads what it convolves
        weight = self.base.weight + self.scale * self.delta()
        return torch.func.functional_call(self.base, {"weight": weight}, (x,))

    def delta(self) -> torch.Tensor:
        """The update as a convolution weight: B A, shaped as the base's."""
        return torch.einsum("or,rihw->oihw", self.up.weight[:, :, 0, 0], self.down.weight)

    def merged(self) -> nn.Conv2d:
        self.base.weight.data += self.scale * self.delta()
        return self.base


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.base, self.scale = base, alpha / rank
        self.down = nn.Linear(base.in_features, rank, bias=False)
        self.up = nn.Linear(rank, base.out_features, bias=False)
        nn.init.kaiming_uniform_(self.down.weight, a=5 ** 0.5)
        nn.init.zeros_(self.up.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.scale * F.linear(F.linear(x, self.down.weight),
                                                    self.up.weight)

    def merged(self) -> nn.Linear:
        self.base.weight.data += self.scale * self.up.weight @ self.down.weight
        return self.base


def add_lora(model: nn.Module, rank: int, alpha: float, skip: Sequence[str]) -> list[str]:
    """Wrap every plain convolution and linear layer not in ``skip`` with an adapter."""
    wrapped = []
    for name, module in list(model.named_modules()):
        if name in skip or any(name.startswith(s + ".") for s in skip):
            continue
        if isinstance(module, nn.Conv2d) and module.groups == 1:
            replace_module(model, name, LoRAConv2d(module, rank, alpha))
        elif isinstance(module, nn.Linear):
            replace_module(model, name, LoRALinear(module, rank, alpha))
        else:
            continue
        wrapped.append(name)
    return wrapped


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its layer: the original architecture, same outputs."""
    for name, module in list(model.named_modules()):
        if isinstance(module, (LoRAConv2d, LoRALinear)):
            replace_module(model, name, module.merged())
    return model


class LoRA(Method):
    def __init__(self, rank: int = 4, alpha: float | None = None) -> None:
        self.rank, self.alpha = rank, float(alpha if alpha is not None else rank)

    def prepare(self, model, task, plan, config) -> PlanSetup:
        total = sum(p.numel() for p in model.parameters())
        for p in model.parameters():
            p.requires_grad_(False)
        add_lora(model, self.rank, self.alpha, skip=task.model.heads)
        adapters = [p for n, p in model.named_parameters() if ".down." in n or ".up." in n]
        heads = [p for h in task.model.heads for p in model.get_submodule(h).parameters()]
        for p in adapters + heads:
            p.requires_grad_(True)
        norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        trainable = sum(p.numel() for p in adapters + heads)
        return PlanSetup([{"params": adapters, "lr": config.base_lr, "name": "lora"},
                          {"params": heads, "lr": config.base_lr, "name": "head"}],
                         norms, trainable, total)

    def finish(self, model) -> nn.Module:
        return merge_lora(model)


def baseline(method: str, block_names: Sequence[str], alpha: float = 0.01, beta: float = 0.01,
             rank: int = 4) -> tuple[FineTunePlan, Method]:
    """The plan and the training hooks of a baseline method."""
    if method in RECIPES:
        return recipe_plan(method, block_names), Method()
    everything = recipe_plan("full", block_names)
    if method in ("l2sp", "l1sp"):
        return everything, StartingPointPenalty(2 if method == "l2sp" else 1, alpha, beta)
    if method == "autorgn":
        return everything, AutoRGN()
    if method == "lora":
        return everything, LoRA(rank)
    raise ValueError(f"unknown method {method!r}; use one of {', '.join(BASELINES)}")

