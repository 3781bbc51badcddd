"""Partition a network into blocks by module names (never by parameter indices).

Each block is a set of whole modules (plus, for a generic root, the root's own parameters);
every parameter of the model belongs to exactly one block. Tables cover the torchvision
families; any other ``nn.Module`` gets the generic rule: its children with parameters, the
largest containers split into their children until the target block count is reached.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import nn

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Block:
    """A named group of modules and the parameters they hold."""

    name: str
    modules: tuple[str, ...]
    params: tuple[str, ...]
    n_params: int

    def owns_module(self, module_name: str) -> bool:
        return any(module_name == m or module_name.startswith(m + ".") for m in self.modules)


def _from_modules(model: nn.Module, named_groups: Sequence[tuple[str, Sequence[str]]],
                  ) -> list[Block]:
    """Blocks from (block name, module names); modules missing from the model are skipped
    (e.g. Inception's AuxLogits when built without it)."""
    present = dict(model.named_modules())
    params = dict(model.named_parameters())
    blocks = []
    for name, modules in named_groups:
        modules = tuple(m for m in modules if m in present)
        owned = tuple(p for p in params if any(p.startswith(m + ".") for m in modules))
        if owned:
            blocks.append(Block(name, modules, owned, sum(params[p].numel() for p in owned)))
    return blocks


def _children_with_params(module: nn.Module, prefix: str) -> list[tuple[str, nn.Module]]:
    return [(f"{prefix}{name}", child) for name, child in module.named_children()
            if any(True for _ in child.parameters())]


# -- torchvision families ------------------------------------------------------------------

def _resnet(model: nn.Module) -> list[tuple[str, list[str]]]:
    return [("stem", ["conv1", "bn1"]), ("layer1", ["layer1"]), ("layer2", ["layer2"]),
            ("layer3", ["layer3"]), ("layer4", ["layer4"]), ("fc", ["fc"])]


def _regnet(model: nn.Module) -> list[tuple[str, list[str]]]:
    stages = [n for n, _ in _children_with_params(model.trunk_output, "trunk_output.")]
    return [("stem", ["stem"]), *((s.split(".")[-1], [s]) for s in stages), ("fc", ["fc"])]


def _densenet(model: nn.Module) -> list[tuple[str, list[str]]]:
    groups = [("stem", ["features.conv0", "features.norm0"])]
    for name, _ in model.features.named_children():
        if name.startswith(("denseblock", "transition")):
            groups.append((name, [f"features.{name}"]))
    groups.append(("head", ["features.norm5", "classifier"]))
    return groups


def _vgg(model: nn.Module) -> list[tuple[str, list[str]]]:
    """One block per convolution stage (the layers between max-pools), then the classifier."""
    groups, stage = [], []
    for name, layer in model.features.named_children():
        if isinstance(layer, nn.MaxPool2d):
            if stage:
                groups.append((f"conv{len(groups) + 1}", stage))
            stage = []
        elif any(True for _ in layer.parameters()):
            stage.append(f"features.{name}")
    if stage:
        groups.append((f"conv{len(groups) + 1}", stage))
    return groups + [("classifier", ["classifier"])]


def _inception(model: nn.Module) -> list[tuple[str, list[str]]]:
    stem = ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3"]
    mixed = ["Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
             "Mixed_6e", "AuxLogits", "Mixed_7a", "Mixed_7b", "Mixed_7c", "fc"]
    return [("stem", stem), *((m, [m]) for m in mixed)]


def _features_by_stage(model: nn.Module) -> list[tuple[str, list[str]]]:
    """MobileNet v2/v3: the first and last feature layers alone; the inverted residuals in
    between grouped into stages of equal output width; then the classifier."""
    layers = list(model.features.named_children())
    groups = [("stem", [f"features.{layers[0][0]}"])]
    width = None
    for name, layer in layers[1:-1]:
        out = getattr(layer, "out_channels", None)
        if out != width or len(groups) == 1:
            groups.append((f"stage{len(groups)}", []))
            width = out
        groups[-1][1].append(f"features.{name}")
    groups.append(("last_conv", [f"features.{layers[-1][0]}"]))
    return groups + [("classifier", ["classifier"])]


def _efficientnet(model: nn.Module) -> list[tuple[str, list[str]]]:
    """EfficientNet v1/v2: stem, each stage of ``features``, the last convolution, classifier."""
    layers = [f"features.{n}" for n, _ in model.features.named_children()]
    stages = [(f"stage{i}", [m]) for i, m in enumerate(layers[1:-1], start=1)]
    return [("stem", [layers[0]]), *stages, ("last_conv", [layers[-1]]),
            ("classifier", ["classifier"])]


def _convnext(model: nn.Module) -> list[tuple[str, list[str]]]:
    """ConvNeXt: stem, then stages alternating with their downsampling layers, classifier."""
    layers = [f"features.{n}" for n, _ in model.features.named_children()]
    groups = [("stem", [layers[0]])]
    for i, module in enumerate(layers[1:]):
        groups.append((f"stage{i // 2 + 1}" if i % 2 == 0 else f"down{i // 2 + 1}", [module]))
    return groups + [("classifier", ["classifier"])]


FAMILIES: dict[str, Callable[[nn.Module], list[tuple[str, list[str]]]]] = {
    "ResNet": _resnet,
    "RegNet": _regnet,
    "DenseNet": _densenet,
    "VGG": _vgg,
    "Inception3": _inception,
    "MobileNetV2": _features_by_stage,
    "MobileNetV3": _features_by_stage,
    "EfficientNet": _efficientnet,
    "ConvNeXt": _convnext,
}


# -- any module ----------------------------------------------------------------------------

def generic_partition(model: nn.Module, target_blocks: int = 8) -> list[Block]:
    """Children with parameters; while fewer than ``target_blocks``, the block holding the
    most parameters is replaced by its children (when it has several). Parameters a split
    module holds directly (a ViT encoder's position embedding, the root's class token) form
    a block of their own, named after the module."""
    params = dict(model.named_parameters())

    def own_block(name: str, module: nn.Module) -> list[Block]:
        prefix = f"{name}." if name else ""
        own = tuple(f"{prefix}{n}" for n, _ in module.named_parameters(recurse=False))
        count = sum(params[p].numel() for p in own)
        return [Block(f"{name or 'root'}_own", (), own, count)] if own else []

    def whole_block(name: str) -> Block:
        return _from_modules(model, [(name.replace(".", "_"), [name])])[0]

    blocks = own_block("", model) + [whole_block(n) for n, _ in _children_with_params(model, "")]
    modules = dict(model.named_modules())
    while len(blocks) < target_blocks:
        splittable = [(b.n_params, i) for i, b in enumerate(blocks) if len(b.modules) == 1
                      and len(_children_with_params(modules[b.modules[0]], "")) > 1]
        if not splittable:
            break
        _, index = max(splittable)
        name = blocks[index].modules[0]
        children = _children_with_params(modules[name], f"{name}.")
        blocks[index:index + 1] = (own_block(name, modules[name]) +
                                   [whole_block(n) for n, _ in children])
    return _merge_light(blocks, params)


def _merge_light(blocks: list[Block], params: dict) -> list[Block]:
    """Blocks without a weight matrix (norms, PReLU, biases) join the block before them, the
    stage of the weight layer they follow, rather than taking a gene each."""
    def light(block: Block) -> bool:  # layers only: a module's own parameters stay apart
        return bool(block.modules) and all(params[p].dim() <= 1 for p in block.params)

    merged: list[Block] = []
    for block in blocks:
        if light(block) and merged and merged[-1].modules:
            last = merged.pop()
            block = Block(last.name, last.modules + block.modules, last.params + block.params,
                          last.n_params + block.n_params)
        elif merged and light(merged[-1]):
            first = merged.pop()  # a light block that came first joins the next one
            block = Block(block.name, first.modules + block.modules,
                          first.params + block.params, first.n_params + block.n_params)
        merged.append(block)
    return merged


def partition(model: nn.Module, target_blocks: int = 8,
              heads: Sequence[str] = ()) -> list[Block]:
    """The blocks of ``model``, in network order with the head's block last: a model's own
    ``biotune_blocks()`` (a list of (block name, module names)) when it defines one, the
    torchvision family table when it matches, timm's own stage grouping for timm models,
    else :func:`generic_partition`. A table that does not fit the model (another library's
    class of the same name) falls back to the generic rule. ``heads`` are the new
    classifier's modules (the main one last)."""
    blocks = None
    try:
        own = getattr(model, "biotune_blocks", None)
        if callable(own):
            blocks = _from_modules(model, own())
        elif type(model).__name__ in FAMILIES and not _is_timm(model):
            blocks = _from_modules(model, FAMILIES[type(model).__name__](model))
        elif _is_timm(model):
            blocks = _timm_blocks(model)
    except Exception as error:  # a table written for another class of the same name
        logger.debug("no block table fits %s (%r); using the generic partition",
                     type(model).__name__, error)
    problem = coverage_problem(model, blocks) if blocks else "no table"
    if blocks and problem:
        logger.warning("%s partition of %s; using the generic partition instead", problem,
                       type(model).__name__)
    if problem:
        blocks = generic_partition(model, target_blocks)
    return _head_last(model, blocks, heads)


def _is_timm(model: nn.Module) -> bool:
    return type(model).__module__.startswith("timm.") and hasattr(model, "group_matcher")


def _timm_blocks(model: nn.Module) -> list[Block]:
    """timm's coarse parameter groups (stem, each stage, the head): a block each, made of
    the leaf modules whose parameters the group holds."""
    from timm.models import group_parameters

    groups = group_parameters(model, model.group_matcher(coarse=True))
    owner = {}
    for name, module in model.named_modules():
        own = [f"{name}.{p}" if name else p for p, _ in module.named_parameters(recurse=False)]
        if own:
            owner[name] = own[0]
    of_param = {p: g for g, params in groups.items() for p in params}
    ordered = sorted(groups)
    named = []
    for position, group in enumerate(ordered):
        modules = [m for m, p in owner.items() if of_param.get(p) == group]
        label = ("stem" if position == 0 else "head" if position == len(ordered) - 1 else
            f"stage{position}")
        named.append((label, modules))
    # timm's last group holds the layers after the stages too (conv_head, norms): the head
    # is the classifier alone, so that linear probing trains the classifier only
    classifier = model.pretrained_cfg.get("classifier")
    classifier = classifier[0] if isinstance(classifier, (list, tuple)) else classifier
    label, modules = named[-1]
    others = [m for m in modules if m != classifier and not m.startswith(f"{classifier}.")]
    if classifier and others and len(others) < len(modules):
        named[-1:] = [("neck", others), (label, [m for m in modules if m not in others])]
    return _from_modules(model, named)


def _head_last(model: nn.Module, blocks: list[Block], heads: Sequence[str]) -> list[Block]:
    """Blocks with the main head's block last (``train_head``, linear probing and the genome
    rely on it): a block holding only head modules moves to the end; a head that shares a
    block with other layers gets a block of its own."""
    if not heads or blocks[-1].owns_module(heads[-1]):
        return blocks
    head = heads[-1]
    holder = next(b for b in blocks if b.owns_module(head) or any(
        p.startswith(head + ".") for p in b.params))
    rest = [b for b in blocks if b is not holder]
    head_params = tuple(p for p in holder.params if p.startswith(head + "."))
    if len(head_params) == len(holder.params):
        return rest + [holder]
    params = dict(model.named_parameters())
    kept = tuple(p for p in holder.params if p not in head_params)
    modules = tuple(m for m in holder.modules if m != head)
    index = blocks.index(holder)
    rest.insert(index, Block(holder.name, modules, kept, sum(params[p].numel() for p in kept)))
    name = head.replace(".", "_")
    return rest + [Block(name if name not in {b.name for b in rest} else f"{name}_head",
                         (head,), head_params, sum(params[p].numel() for p in head_params))]


def coverage_problem(model: nn.Module, blocks: Sequence[Block]) -> str | None:
    """None when every parameter belongs to exactly one block, else what is wrong."""
    seen: dict[str, str] = {}
    for block in blocks:
        for p in block.params:
            if p in seen:
                return f"parameter {p} in both {seen[p]} and {block.name}"
            seen[p] = block.name
    missing = [p for p, _ in model.named_parameters() if p not in seen]
    if missing:
        return f"{len(missing)} parameters in no block (first: {missing[0]})"
    if len({b.name for b in blocks}) != len(blocks):
        return "duplicate block names"
    return None


def block_of_module(blocks: Sequence[Block], module_name: str) -> Block | None:
    for block in blocks:
        if block.owns_module(module_name):
            return block
    return None
