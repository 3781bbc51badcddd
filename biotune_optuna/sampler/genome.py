"""The BioTune genome: one gene per block plus a freezing threshold, and its decoding.

Pure Python (no torch): the sampler, the objective and the analysis share this module.

A genome ``[nu_0, ..., nu_B, eps]`` decodes to a fine-tuning plan (docs/algorithm.md, 1.2):
block ``b`` is trained when ``nu_b > eps`` (strict), with learning-rate multiplier
``10 ** (2 * (nu_b - 0.5))`` (0.1x at 0, 1x at 0.5, 10x at 1); other blocks are frozen.

The paper's ablations are two more variants of the genome (docs/algorithm.md, section 9):
``freeze-only`` decodes the same genes with every trained block at 1x (only the freezing
evolves) and ``lr-only`` has no threshold and trains every block (only the multipliers
evolve).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from optuna.distributions import FloatDistribution

from .plan import FineTunePlan, recipe_plan

GENE_PREFIX = "gene:"
THRESHOLD = "threshold"
FULL, FREEZE_ONLY, LR_ONLY = "full", "freeze-only", "lr-only"
VARIANTS = (FULL, FREEZE_ONLY, LR_ONLY)


def gene_name(block: str) -> str:
    """Parameter name of a block's gene, readable in optuna-dashboard."""
    return f"{GENE_PREFIX}{block}"


def search_space(block_names: Sequence[str], variant: str = FULL,
                 ) -> dict[str, FloatDistribution]:
    """The genome's Optuna search space: ``gene:<block>`` per block, then ``threshold``
    (none for ``lr-only``, which trains every block)."""
    _check_variant(variant)
    if not block_names:
        raise ValueError("a genome needs at least one block")
    if len(set(block_names)) != len(block_names):
        raise ValueError(f"block names must be unique, got {list(block_names)}")
    space = {gene_name(b): FloatDistribution(0.0, 1.0) for b in block_names}
    if variant != LR_ONLY:
        space[THRESHOLD] = FloatDistribution(0.0, 1.0)
    return space


def suggest_genome(trial, block_names: Sequence[str], variant: str = FULL) -> dict[str, float]:
    """Suggest every gene of the genome on an Optuna trial and return the parameters."""
    return {
        name: trial.suggest_float(name, dist.low, dist.high)
        for name, dist in search_space(block_names, variant).items()
    }


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"unknown genome variant {variant!r}; use {', '.join(VARIANTS)}")


def lr_multiplier(gene: float) -> float:
    """The paper's ``adaptive_block_normexp`` weight: 10^(2 (gene - 0.5)), in [0.1, 10]."""
    return 10.0 ** (2.0 * (gene - 0.5))


def decode(params: Mapping[str, float], block_names: Sequence[str],
           train_head: bool = False, variant: str = FULL) -> FineTunePlan:
    """Decode trial parameters into a plan. Missing genes raise a KeyError naming them.

    With ``train_head`` the last block (the new, randomly initialised head) is trained even
    when its gene is below the threshold, at its gene's multiplier: a frozen random head is a
    fragile plan. False is the paper's decoding. ``variant`` ``freeze-only`` trains at 1x
    whatever it trains; ``lr-only`` trains every block (it has no threshold).
    """
    _check_variant(variant)
    missing = [n for n in search_space(block_names, variant) if n not in params]
    if missing:
        raise KeyError(f"genome parameters missing: {missing}")
    threshold = -math.inf if variant == LR_ONLY else params[THRESHOLD]
    multipliers = []
    for i, block in enumerate(block_names):
        gene = params[gene_name(block)]
        forced = train_head and i == len(block_names) - 1
        rate = 1.0 if variant == FREEZE_ONLY else lr_multiplier(gene)
        multipliers.append(rate if gene > threshold or forced else 0.0)
    return FineTunePlan(tuple(block_names), tuple(multipliers))


def encode(trained: Mapping[str, float] | Sequence[str], block_names: Sequence[str],
           ) -> dict[str, float]:
    """A genome that decodes to the given plan: blocks to multipliers (or a list, all 1x).

    Useful to enqueue known recipes (full fine-tuning, linear probing) into a search.
    Multipliers must lie in (0.1, 10]; a threshold just below the smallest trained gene
    freezes every other block.
    """
    if not isinstance(trained, Mapping):
        trained = {b: 1.0 for b in trained}
    unknown = sorted(set(trained) - set(block_names))
    if unknown:
        raise ValueError(f"unknown blocks {unknown}; the model's blocks are {list(block_names)}")
    genes = {}
    for block, multiplier in trained.items():
        if not 0.1 < multiplier <= 10.0:
            raise ValueError(f"multiplier of {block} must be in (0.1, 10], got {multiplier}")
        genes[block] = 0.5 + math.log10(multiplier) / 2.0
    threshold = min(genes.values(), default=1.0) / 2.0
    params = {gene_name(b): genes.get(b, 0.0) for b in block_names}
    params[THRESHOLD] = threshold
    return params


def recipe(name: str, block_names: Sequence[str]) -> dict[str, float]:
    """The genome of a hand-made recipe (:func:`.plan.recipe_plan`), to enqueue."""
    plan = recipe_plan(name, block_names)
    return encode(dict(zip(plan.trained_blocks, (m for m in plan.multipliers if m > 0.0))),
                  block_names)
