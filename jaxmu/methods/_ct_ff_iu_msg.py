"""Private helpers shared by ``ct``, ``fisher``, ``influence`` and ``msg``.

Path-aware tree maps and the PyTorch-layout axis rules of ``methods.md`` §2.7, restated for
jaxmu layouts: conv kernels HWIO ``[kh, kw, I/groups, O]`` (PyTorch ``[O, I/groups, kh, kw]``),
dense kernels ``[in, out]`` (PyTorch ``[out, in]``), every other leaf in the PyTorch layout
(BatchNorm/LayerNorm vectors, biases, TinyViT ``attention_biases [heads, offsets]``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax

from jaxmu.methods._base import MethodError, StaticContext
from jaxmu.models.names import Path, head_paths, tree_paths


def leaves_with_paths(tree: Any) -> list[tuple[Path, Any]]:
    """``[(path, leaf)]`` in flattening order (paths as tuples of strings)."""
    return list(zip(tree_paths(tree), jax.tree_util.tree_leaves(tree)))


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


def is_conv_kernel(path: Path, leaf: Any) -> bool:
    """A convolution kernel: a 4-D ``kernel`` leaf (depthwise TinyViT kernels included)."""
    return path[-1] == "kernel" and leaf.ndim == 4


def conv_kernel_indices(params: Any) -> list[int]:
    return [i for i, (p, x) in enumerate(leaves_with_paths(params)) if is_conv_kernel(p, x)]


def require_convs(ctx: StaticContext, params: Any, method: str, why: str) -> None:
    """Raise ``MethodError`` when the model has no convolution kernel (``mlp``)."""
    if not conv_kernel_indices(params):
        raise MethodError(f"{method} cannot apply to architecture {ctx.arch!r}: it has no convolution "
                          f"kernels and {method} {why}")


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


def is_head(arch: str, path: Path) -> bool:
    """Leaf belongs to the classifier (``fc`` for resnet18, ``head`` otherwise)."""
    return any(tuple(path[: len(q)]) == tuple(q) for q in head_paths(arch))


def class_shaped_flags(arch: str, params: Any, num_classes: int) -> list[bool]:
    """Per leaf: is it "class-shaped" (``methods.md`` §4.8 step 4)?

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
                "as class-shaped but jaxmu's rule selects only the classifier (methods.md §4.8 step 4)")
        flags.append(head)
    return flags


def unflatten_like(tree: Any, leaves: Sequence[Any]) -> Any:
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(tree), list(leaves))
