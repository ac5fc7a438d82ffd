"""Re-initialisation of parameters (``docs/methods.md`` §2.7), one function per reference init rule.

* ``reinit_groups`` — Re-initialisation (``munl/models/__init__.py: init_weights`` applied to the selected modules):
conv kernels kaiming-uniform, mode fan_out, ReLU gain (bound sqrt(6 / fan_out), fan_out =
O * kh * kw, PyTorch fan definition, also for depthwise kernels), conv biases 0; BatchNorm scale
1, shift 0 (running statistics untouched unless asked); linear kernels xavier-uniform (bound
sqrt(6 / (fan_in + fan_out))), biases 0; LayerNorm parameters and TinyViT attention biases
untouched.
  (CF-k/EU-k/RNI block layouts; leaf ``i`` draws from ``fold_in(key, i)``.)
* ``torch_default_reinit`` — PyTorch ``reset_parameters`` of every conv/dense layer under some
  module prefixes: kernel and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (KDE); leaf ``i`` draws from
  ``fold_in(key, i)``.
* ``reset_classifier`` — PyTorch ``nn.Linear.reset_parameters`` on the classifier (RNI): the same
  law as ``torch_default_reinit`` but the reference's key use (one split into weight and bias key).
* ``kaiming_normal_fan_out`` — ``kaiming_normal_(mode="fan_out", nonlinearity="relu")`` of an HWIO
  conv kernel: N(0, 2 / fan_out), fan_out = O kh kw (MSG's re-drawn entries, ``docs/methods.md`` §4.13).
* ``redraw_zeros`` — PRMQ's re-draw of pruned (zero) conv/dense kernel entries from
  U(+-sqrt(1/fan_in)) (``docs/methods.md`` §4.15); leaf ``i`` draws from ``fold_in(key, i)``. The bound is
  computed as ``sqrt(1/fan_in)`` there and ``1/sqrt(fan_in)`` in ``torch_default_reinit``, as before
  (the two may differ in the last bit, so they are not merged).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxmu.methods._base import MethodError
from jaxmu.methods.layouts import bn_modules
from jaxmu.models.names import Path, head_paths, key_str, tree_paths
from jaxmu.models.trees import is_weight_layer_leaf, leaf_dict, pytorch_fan_in, replace_leaves

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
            q = tuple(key_str(s) for s in path)
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


def torch_default_reinit(params, prefixes: Sequence[Path], key) -> Any:
    """Re-initialise every conv/dense layer under ``prefixes`` as PyTorch ``reset_parameters``.

    Kernel and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (kaiming_uniform(a=sqrt(5)) gives exactly
    this bound for the weight). Other leaves under the prefixes (BatchNorm) are left unchanged.
    Leaf ``i`` of the flattening draws from ``fold_in(key, i)``.
    """
    leaves = leaf_dict(params)
    new = {}
    for i, (path, leaf) in enumerate(leaves.items()):
        if not any(path[: len(q)] == tuple(q) for q in prefixes):
            continue
        kind = is_weight_layer_leaf(path, leaves)
        if kind is None:
            continue
        kshape = leaf.shape if kind != "bias" else leaves[path[:-1] + ("kernel",)].shape
        bound = 1.0 / float(pytorch_fan_in(kshape)) ** 0.5
        new[path] = jax.random.uniform(jax.random.fold_in(key, i), leaf.shape, leaf.dtype, -bound, bound)
    return replace_leaves(params, new)


def kaiming_normal_fan_out(key, shape):
    """N(0, 2 / fan_out) float32 for an HWIO conv kernel, fan_out = O kh kw (PyTorch's definition)."""
    fan_out = shape[3] * shape[0] * shape[1]
    return jax.random.normal(key, shape, jnp.float32) * jnp.sqrt(2.0 / fan_out)


def redraw_zeros(params, key):
    """Conv/dense kernel entries equal to 0 <- U(+-sqrt(1/fan_in)); biases untouched."""
    leaves = leaf_dict(params)
    new = {}
    for i, (p, w) in enumerate(leaves.items()):
        if is_weight_layer_leaf(p, leaves) not in ("conv", "linear"):
            continue
        bound = math.sqrt(1.0 / pytorch_fan_in(w.shape))
        draw = jax.random.uniform(jax.random.fold_in(key, i), w.shape, w.dtype, -bound, bound)
        new[p] = jnp.where(w == 0, draw, w)
    return replace_leaves(params, new)
