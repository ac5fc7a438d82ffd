"""Which parameters a method may select or train, per architecture (``docs/methods.md`` §2.7, §4, §5).

* Block layouts (CF-k, EU-k, RNI) and trainable masks: ``LAYOUTS``, ``layout``, ``check_layout``,
  ``selected_groups``, ``trainable_mask``.
* BatchNorm modules of a tree (``bn_modules``); RNI's bn / non-bn keys (``key_table``:
  ``docs/methods.md`` §4.18, §5 #29).
* Class-shaped parameters (Fisher, ``docs/methods.md`` §4.8 step 4): ``class_shaped_flags``; models
  without convolutions (``require_convs``: CT, MSG).
* The TinyViT eval-mode attention-bias quirk (``docs/methods.md`` §5, last trap): the reference's
  eval-mode forward uses a cached bias table, so ``attention_biases`` get no gradient in eval-mode
  phases: they are frozen (no update, no decay) in CF-k/EU-k, get zero saliency in SalUn's mask
  pass, and get a zero gradient in NG+ (whose L2-to-init term reaches them, so decay and momentum
  still act; ``ng_plus``). ``"frozen"`` (faithful) reproduces it, ``"trainable"`` (clean)
  differentiates through them (``eval_grad_tree``, ``trainable_mask(attention_biases=...)``).

Blocks (reference ``munl/models/__init__.py: get_model_blocks``), per architecture, as top-level
parameter groups of the jaxmu tree:

=============  =========================  ==========================================  ============
arch           stem (never trainable)      ordered blocks                              classifier
=============  =========================  ==========================================  ============
resnet18       conv1, bn1                  layer1, layer2, layer3, layer4              fc
tinyvit_11m    patch_embed, layers_0       layers_1, layers_2, layers_3 (BasicLayer)   head
cnn            conv1, bn1                  (conv2 + bn2)                               head
mlp            fc1                         fc2                                         head
=============  =========================  ==========================================  ============

TinyViT's ``norm_head`` (LayerNorm before the head) belongs to no block and is never trainable in
CF-k/EU-k (the reference unfreezes ``model.head`` only). ``cnn`` and ``mlp`` are jaxmu-only
models (the reference asserts ResNet-18 or TinyViT); their mapping above is jaxmu's choice: the
first layer is the stem, the single hidden layer after it is the one block.

"Last k blocks" follows Python's ``blocks[-k:]``: k larger than the number of blocks selects all
blocks (the stem stays frozen). k < 1 is rejected (NL ranges over 1..10).

"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

import jax

from jaxmu.methods._base import MethodError, StaticContext
from jaxmu.models import block_layout
from jaxmu.models.blocks import BUILTIN_LAYOUTS, BlockLayout
from jaxmu.models.names import Path, key_str, reference_name, tree_paths
from jaxmu.models.trees import conv_kernel_indices, is_head, leaves_with_paths, torch_out_axis

LAYOUTS: Mapping[str, BlockLayout] = MappingProxyType(BUILTIN_LAYOUTS)
"""The built-in architectures' layouts (read-only); registered models carry their own."""

ATTENTION_BIAS_MODES = ("frozen", "trainable")
ATTN_BIAS_MODES = ATTENTION_BIAS_MODES


def layout(arch: str) -> BlockLayout:
    """The block layout of ``arch`` (built-in, or given to ``jaxmu.models.register``)."""
    lay = block_layout(arch)
    if lay is None:
        raise MethodError(f"model {arch!r} has no block layout, which block-wise methods (cf_k, eu_k) need: "
                          f"register it with jaxmu.models.register({arch!r}, build, layout=jaxmu.models.BlockLayout("
                          "stem=..., blocks=..., classifier=...))")
    return lay


def check_layout(arch: str, params) -> BlockLayout:
    """The layout of ``arch``, checked against the top-level keys of ``params``."""
    lay = layout(arch)
    groups = lay.groups()
    keys = set(params)
    if keys != groups:
        raise MethodError(f"{arch}: parameter groups {sorted(keys)} do not match the block layout {sorted(groups)}")
    return lay


def selected_groups(arch: str, params, k: int) -> tuple[str, ...]:
    """Top-level groups of the last ``k`` blocks plus the classifier (``blocks[-k:] + [head]``)."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise MethodError(f"num_blocks must be an integer >= 1, got {k!r}")
    lay = check_layout(arch, params)
    chosen = lay.blocks[-k:]
    return tuple(g for b in chosen for g in b) + (lay.classifier,)


def trainable_mask(arch: str, params, k: int, *, attention_biases: str = "frozen"):
    """Static tree of Python bools: True on the leaves of the last ``k`` blocks + classifier.

    ``attention_biases="frozen"`` (faithful, ``docs/methods.md`` §5 TinyViT note): TinyViT attention
    biases get no gradient in the reference's eval-mode forward, so they stay frozen in CF-k/EU-k.
    """
    if attention_biases not in ATTENTION_BIAS_MODES:
        raise MethodError(f"attention_biases must be one of {ATTENTION_BIAS_MODES}, got {attention_biases!r}")
    groups = set(selected_groups(arch, params, k))

    def leaf(path, _):
        p = tuple(key_str(q) for q in path)
        if p[0] not in groups:
            return False
        return not (attention_biases == "frozen" and p[-1] == "attention_biases")

    return jax.tree_util.tree_map_with_path(leaf, params)


def bn_modules(batch_stats) -> set[Path]:
    """Module paths of the BatchNorm layers (those with running statistics)."""
    return {p[:-1] for p in tree_paths(batch_stats or {})}


NAME_FILTERS = ("torchvision", "module")


class KeyTable(NamedTuple):
    """Static facts about the parameter leaves (flattening order)."""

    names: tuple[str, ...]
    is_bn: tuple[bool, ...]
    nonbn: tuple[int, ...]  # leaf indices of the non-bn keys


def key_table(arch: str, params, batch_stats, name_filter: str = "torchvision") -> KeyTable:
    """Reference names and bn flags of the leaves: ``"torchvision"``, names containing ``"bn"``;
    ``"module"``, every BatchNorm scale / shift (ResNet-18's downsample BatchNorms too)."""
    if name_filter not in NAME_FILTERS:
        raise MethodError(f"name_filter must be one of {NAME_FILTERS}, got {name_filter!r}")
    paths = tree_paths(params)
    names = tuple(reference_name(arch, p) for p in paths)
    if name_filter == "torchvision":
        is_bn = tuple("bn" in n for n in names)
    else:
        bns = bn_modules(batch_stats)
        is_bn = tuple(p[:-1] in bns and p[-1] in ("scale", "bias") for p in paths)
    return KeyTable(names, is_bn, tuple(i for i, b in enumerate(is_bn) if not b))


def require_convs(ctx: StaticContext, params: Any, method: str, why: str) -> None:
    """Raise ``MethodError`` when the model has no convolution kernel (``mlp``)."""
    if not conv_kernel_indices(params):
        raise MethodError(f"{method} cannot apply to architecture {ctx.arch!r}: it has no convolution "
                          f"kernels and {method} {why}")


def class_shaped_flags(arch: str, params: Any, num_classes: int) -> list[bool]:
    """Per leaf: is it "class-shaped" (``docs/methods.md`` §4.8 step 4)?

    Implemented as "classifier parameters"; raises ``MethodError`` if another tensor's PyTorch
    leading dimension also equals C (the reference's shape rule would then select it too) or if
    a classifier tensor does not have C outputs.
    """
    flags = []
    for path, leaf in leaves_with_paths(params):
        lead = leaf.shape[torch_out_axis(path, leaf.ndim)] if leaf.ndim else None
        head = is_head(arch, path)
        if head and lead != num_classes:
            raise MethodError(f"{arch}: classifier tensor {'/'.join(path)} has leading dim {lead} != C={num_classes}")
        if not head and lead == num_classes:
            raise MethodError(
                f"{arch}: {'/'.join(path)} has PyTorch leading dimension {lead} == C; the reference would treat it "
                "as class-shaped but jaxmu's rule selects only the classifier (docs/methods.md §4.8 step 4)")
        flags.append(head)
    return flags


# --------------------------------------------------------------------------- TinyViT eval-mode biases


def check_attn_bias(mode: str) -> None:
    if mode not in ATTN_BIAS_MODES:
        raise MethodError(f"eval_attention_biases must be one of {ATTN_BIAS_MODES}, got {mode!r}")


def eval_grad_tree(ctx: StaticContext, params, mode: str):
    """Tree of Python bools: False for leaves that get no gradient in an eval-mode pass.

    Only TinyViT's ``attention_biases`` under ``mode="frozen"``; ``None`` when nothing is frozen.
    """
    check_attn_bias(mode)
    if ctx.arch != "tinyvit_11m" or mode == "trainable":
        return None
    paths = tree_paths(params)
    flags = [p[-1] != "attention_biases" for p in paths]
    if all(flags):
        return None
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(params), flags)
