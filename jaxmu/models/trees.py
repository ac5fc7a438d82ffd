"""Parameter trees addressed by string paths, and the PyTorch axis rules (``docs/methods.md`` §2.7).

* Leaf maps: ``leaves_with_paths``, ``leaf_dict``, ``map_with_path``, ``map_with_index``,
  ``replace_leaves``, ``unflatten_like`` — paths are ``jaxmu.models.names.tree_paths`` tuples of
  strings, in flattening order.
* Leaf kinds: ``is_conv_kernel``, ``conv_kernel_indices``, ``is_weight_layer_leaf``, ``is_head``.
* PyTorch-layout axis rules, restated for jaxmu layouts: conv kernels HWIO ``[kh, kw, I/groups, O]``
  (PyTorch ``[O, I/groups, kh, kw]``), dense kernels ``[in, out]`` (PyTorch ``[out, in]``), every
  other leaf in the PyTorch layout (BatchNorm/LayerNorm vectors, biases, TinyViT
  ``attention_biases [heads, offsets]``): ``torch_out_axis`` (PyTorch dim 0), ``torch_in_axis``
  (PyTorch dim 1), ``pytorch_fan_in`` (PyTorch's fan-in of a weight).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxmu.models.names import Path, head_paths, tree_paths

# --------------------------------------------------------------------------- leaf maps


def leaves_with_paths(tree: Any) -> list[tuple[Path, Any]]:
    """``[(path, leaf)]`` in flattening order (paths as tuples of strings)."""
    return list(zip(tree_paths(tree), jax.tree_util.tree_leaves(tree)))


def leaf_dict(tree) -> dict[Path, jax.Array]:
    """``{path: leaf}`` in flattening order."""
    return dict(zip(tree_paths(tree), jax.tree_util.tree_leaves(tree)))


def map_with_path(fn: Callable[[Path, Any], Any], *trees: Any) -> Any:
    """``tree_map`` whose function also gets the leaf's string path (same structure for all)."""
    paths = tree_paths(trees[0])
    flat = [jax.tree_util.tree_leaves(t) for t in trees]
    treedef = jax.tree_util.tree_structure(trees[0])
    return jax.tree_util.tree_unflatten(treedef, [fn(p, *ls) for p, *ls in zip(paths, *flat)])


def map_with_index(fn: Callable[[int, Path, Any], Any], *trees: Any) -> Any:
    """Like :func:`map_with_path` with the leaf's flattening index first (for per-leaf keys)."""
    paths = tree_paths(trees[0])
    flat = [jax.tree_util.tree_leaves(t) for t in trees]
    treedef = jax.tree_util.tree_structure(trees[0])
    return jax.tree_util.tree_unflatten(
        treedef, [fn(i, p, *ls) for i, (p, *ls) in enumerate(zip(paths, *flat))])


def replace_leaves(tree, new: dict[Path, jax.Array]):
    """``tree`` with the leaves at the given paths replaced."""
    paths = tree_paths(tree)
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    out = [new.get(p, leaf) for p, leaf in zip(paths, leaves)]
    return jax.tree_util.tree_unflatten(treedef, out)


def unflatten_like(tree: Any, leaves: Sequence[Any]) -> Any:
    """A tree of ``tree``'s structure with ``leaves`` (flattening order)."""
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(tree), list(leaves))


# --------------------------------------------------------------------------- leaf kinds


def is_conv_kernel(path: Path, leaf: Any) -> bool:
    """A convolution kernel: a 4-D ``kernel`` leaf (depthwise TinyViT kernels included)."""
    return path[-1] == "kernel" and leaf.ndim == 4


def conv_kernel_indices(params: Any) -> list[int]:
    """Flattening indices of the convolution kernels."""
    return [i for i, (p, x) in enumerate(leaves_with_paths(params)) if is_conv_kernel(p, x)]


def is_weight_layer_leaf(path: Path, leaves: dict[Path, jax.Array]) -> str | None:
    """``"conv"``/``"linear"`` for a conv/dense kernel, ``"bias"`` for the bias of such a layer."""
    if path[-1] == "kernel":
        nd = jnp.ndim(leaves[path])
        return "conv" if nd == 4 else "linear" if nd == 2 else None
    if path[-1] == "bias" and path[:-1] + ("kernel",) in leaves:
        return "bias"
    return None


def is_head(arch: str, path: Path) -> bool:
    """Leaf belongs to the classifier (``fc`` for resnet18, ``head`` otherwise)."""
    return any(tuple(path[: len(q)]) == tuple(q) for q in head_paths(arch))


# --------------------------------------------------------------------------- PyTorch axis rules


def torch_out_axis(path: Path, ndim: int) -> int:
    """jaxmu axis of the PyTorch leading dimension (dim 0: output channels / features)."""
    if path[-1] == "kernel" and ndim == 4:
        return 3
    if path[-1] == "kernel" and ndim == 2:
        return 1
    return 0


def torch_in_axis(path: Path, ndim: int) -> int:
    """jaxmu axis of PyTorch dimension 1 (input channels of a conv, input features of a linear)."""
    if path[-1] == "kernel" and ndim == 4:
        return 2
    if path[-1] == "kernel" and ndim == 2:
        return 0
    return 1


def pytorch_fan_in(kernel_shape: Sequence[int]) -> int:
    """PyTorch fan-in of a jaxmu kernel: conv HWIO ``(I/groups)*kh*kw``; dense ``[in, out]`` -> in."""
    if len(kernel_shape) == 4:
        kh, kw, cin_g, _ = kernel_shape
        return int(kh * kw * cin_g)
    if len(kernel_shape) == 2:
        return int(kernel_shape[0])
    raise ValueError(f"not a conv/dense kernel shape: {tuple(kernel_shape)}")
