"""Block structure, trainable sets and re-initialisation shared by CF-k, EU-k and RNI.

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

Re-initialisation (``munl/models/__init__.py: init_weights`` applied to the selected modules):
conv kernels kaiming-uniform, mode fan_out, ReLU gain (bound sqrt(6 / fan_out), fan_out =
O * kh * kw, PyTorch fan definition, also for depthwise kernels), conv biases 0; BatchNorm scale
1, shift 0 (running statistics untouched unless asked); linear kernels xavier-uniform (bound
sqrt(6 / (fan_in + fan_out))), biases 0; LayerNorm parameters and TinyViT attention biases
untouched.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxmu.engine.optim import torch_sgd
from jaxmu.methods._base import MethodError, SplitData, StaticContext
from jaxmu.methods._loops import cross_entropy, forward, gather, optimizer_step
from jaxmu.methods.finetune import TrainState
from jaxmu.models.names import head_paths, tree_paths

Path = tuple[str, ...]


class BlockLayout(NamedTuple):
    """Top-level parameter groups of an architecture (see the module docstring)."""

    stem: tuple[str, ...]
    blocks: tuple[tuple[str, ...], ...]
    classifier: str
    never: tuple[str, ...] = ()


LAYOUTS: dict[str, BlockLayout] = {
    "resnet18": BlockLayout(("conv1", "bn1"), (("layer1",), ("layer2",), ("layer3",), ("layer4",)), "fc"),
    "tinyvit_11m": BlockLayout(("patch_embed", "layers_0"), (("layers_1",), ("layers_2",), ("layers_3",)),
                               "head", ("norm_head",)),
    "cnn": BlockLayout(("conv1", "bn1"), (("conv2", "bn2"),), "head"),
    "mlp": BlockLayout(("fc1",), (("fc2",),), "head"),
}

ATTENTION_BIAS_MODES = ("frozen", "trainable")


def layout(arch: str) -> BlockLayout:
    if arch not in LAYOUTS:
        raise MethodError(f"no block layout for architecture {arch!r}: known are {', '.join(LAYOUTS)}")
    return LAYOUTS[arch]


def check_layout(arch: str, params) -> BlockLayout:
    """The layout of ``arch``, checked against the top-level keys of ``params``."""
    lay = layout(arch)
    groups = set(lay.stem) | {g for b in lay.blocks for g in b} | {lay.classifier} | set(lay.never)
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

    ``attention_biases="frozen"`` (faithful, ``methods.md`` §5 TinyViT note): TinyViT attention
    biases get no gradient in the reference's eval-mode forward, so they stay frozen in CF-k/EU-k.
    """
    if attention_biases not in ATTENTION_BIAS_MODES:
        raise MethodError(f"attention_biases must be one of {ATTENTION_BIAS_MODES}, got {attention_biases!r}")
    groups = set(selected_groups(arch, params, k))

    def leaf(path, _):
        p = tuple(_key(q) for q in path)
        if p[0] not in groups:
            return False
        return not (attention_biases == "frozen" and p[-1] == "attention_biases")

    return jax.tree_util.tree_map_with_path(leaf, params)


def _key(k: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


# --------------------------------------------------------------------------- re-initialisation


def bn_modules(batch_stats) -> set[Path]:
    """Module paths of the BatchNorm layers (those with running statistics)."""
    return {p[:-1] for p in tree_paths(batch_stats or {})}


def reinit_groups(params, batch_stats, groups: Sequence[str], key, *, reset_bn_stats: bool = False):
    """``init_weights`` applied to the top-level ``groups`` (module docstring); returns (params, bs).

    Leaf ``i`` of the flattened tree draws from ``fold_in(key, i)``.
    """
    groups = set(groups)
    bns = bn_modules(batch_stats)
    paths = tree_paths(params)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    kernel_ndim = {p[:-1]: leaf.ndim for p, leaf in zip(paths, leaves) if p[-1] == "kernel"}
    out = []
    for i, (p, x) in enumerate(zip(paths, leaves)):
        if p[0] not in groups:
            out.append(x)
            continue
        mod, name = p[:-1], p[-1]
        k = jax.random.fold_in(key, i)
        if name == "kernel" and x.ndim == 4:  # HWIO; fan_out = O * kh * kw
            bound = math.sqrt(6.0 / (x.shape[0] * x.shape[1] * x.shape[3]))
            out.append(jax.random.uniform(k, x.shape, x.dtype, -bound, bound))
        elif name == "kernel" and x.ndim == 2:  # [in, out]
            bound = math.sqrt(6.0 / (x.shape[0] + x.shape[1]))
            out.append(jax.random.uniform(k, x.shape, x.dtype, -bound, bound))
        elif name == "bias" and (mod in kernel_ndim or mod in bns):
            out.append(jnp.zeros_like(x))
        elif name == "scale" and mod in bns:
            out.append(jnp.ones_like(x))
        elif name in ("scale", "bias", "attention_biases"):  # LayerNorm, attention biases
            out.append(x)
        else:
            raise MethodError(f"re-initialisation: no rule for parameter {'/'.join(p)} of shape {x.shape}")
    new_params = jax.tree_util.tree_unflatten(treedef, out)
    if reset_bn_stats and batch_stats:
        def reset(path, v):
            q = tuple(_key(s) for s in path)
            if q[0] not in groups:
                return v
            return jnp.zeros_like(v) if q[-1] == "mean" else jnp.ones_like(v)

        batch_stats = jax.tree_util.tree_map_with_path(reset, batch_stats)
    return new_params, batch_stats


def reset_classifier(arch: str, params, key):
    """PyTorch ``nn.Linear.reset_parameters`` on the classifier: weight and bias U(+-1/sqrt(fan_in))."""
    (head,) = head_paths(arch)
    sub = params[head[0]]
    fan_in = sub["kernel"].shape[0]
    bound = 1.0 / math.sqrt(fan_in)
    kw, kb = jax.random.split(key)
    new = dict(sub)
    new["kernel"] = jax.random.uniform(kw, sub["kernel"].shape, sub["kernel"].dtype, -bound, bound)
    new["bias"] = jax.random.uniform(kb, sub["bias"].shape, sub["bias"].dtype, -bound, bound)
    out = dict(params)
    out[head[0]] = type(sub)(new) if not isinstance(sub, dict) else new
    return out


# --------------------------------------------------------------------------- one training step


def masked_ce_update(ctx: StaticContext, data: SplitData, state: TrainState, idx, key, *, train: bool,
                     trainable, static_trainable: bool = False, anchor=None, l2_weight=None,
                     augment: str = "none") -> TrainState:
    """One optimizer step on CE (+ (l2_weight/2) * sum_trainable ||P - anchor||^2) of batch ``idx``.

    ``trainable`` freezes leaves completely (no gradient, decay or momentum). When it is a
    static tree of Python bools (``static_trainable``) frozen leaves are also wrapped in
    ``stop_gradient`` so XLA does not back-propagate into a frozen prefix, and the L2 term sums
    over the trainable leaves only. ``augment`` selects the input transform (EU-k: train).
    """
    if anchor is not None and not static_trainable:
        raise ValueError("the L2-to-anchor term needs a static trainable mask")
    k_aug, k_fwd = jax.random.fold_in(key, 0), jax.random.fold_in(key, 1)
    x, y = gather(ctx, data, idx, k_aug if augment != "none" else None, augment=augment)

    def loss_fn(p):
        if static_trainable:
            p = jax.tree_util.tree_map(lambda m, v: v if m else jax.lax.stop_gradient(v), trainable, p)
        logits, bs = forward(ctx, p, state.batch_stats, x, train=train, key=k_fwd)
        loss = cross_entropy(logits, y)
        if anchor is not None:
            sq = [jnp.sum(jnp.square(a - b)) for m, a, b in zip(jax.tree_util.tree_leaves(trainable),
                                                                 jax.tree_util.tree_leaves(p),
                                                                 jax.tree_util.tree_leaves(anchor)) if m]
            if sq:
                loss = loss + 0.5 * l2_weight * sum(sq)
        return loss, bs

    grads, bs = jax.grad(loss_fn, has_aux=True)(state.params)
    params, opt = optimizer_step(torch_sgd(), state.params, state.opt_state, grads, trainable=trainable)
    return TrainState(params, bs, opt)
