"""Reference (torchvision / TinyViT) names of jaxmu parameters (``docs/methods.md`` §2.7).

Several methods select parameters by their names in the PyTorch reference (RNI's ``"bn"``
substring filter, CFW's top-level ``conv*`` children, KDE's ``conv1``/``fc``/``head``, CF-k's
``layer1..layer4``). This module maps every leaf path of a jaxmu ``params`` or ``batch_stats``
tree to the reference ``state_dict`` key, per architecture, and converts tensors between the two
layouts.

Leaf names: ``kernel`` -> ``weight`` (conv HWIO ``[kh, kw, I/groups, O]`` <-> PyTorch
``[O, I/groups, kh, kw]``; dense ``[in, out]`` <-> ``[out, in]``), BatchNorm/LayerNorm ``scale`` ->
``weight``, ``bias`` -> ``bias``, BatchNorm ``mean``/``var`` -> ``running_mean``/``running_var``,
TinyViT ``attention_biases`` unchanged (same ``[heads, offsets]`` layout).

Module names:

* ``resnet18`` (torchvision): identical paths joined with ``.`` except the downsample branch,
  ``downsample_conv`` -> ``downsample.0`` and ``downsample_bn`` -> ``downsample.1``; e.g.
  ``("layer2", "0", "downsample_conv", "kernel")`` -> ``"layer2.0.downsample.0.weight"``.
* ``tinyvit_11m`` (Microsoft ``tiny_vit.py``): a key ``<name>_<index>`` is the list element
  ``<name>.<index>`` (``layers_1`` -> ``layers.1``, ``blocks_0`` -> ``blocks.0``, ``seq_2`` ->
  ``seq.2``); e.g. ``("layers_1", "blocks_0", "attn", "qkv", "kernel")`` ->
  ``"layers.1.blocks.0.attn.qkv.weight"``.
* ``mlp`` / ``cnn`` (jaxmu-only models, ``jaxmu.models.small``): paths joined with ``.``
  (``fc1.weight``, ``bn1.running_mean``, ``head.bias``).

The reference buffers ``num_batches_tracked`` (BatchNorm) and ``attention_bias_idxs`` (TinyViT,
non-persistent) have no jaxmu counterpart.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import jax
import numpy as np

from jaxmu.models import ModelError, block_layout

Path = tuple[str, ...]

ARCHS: tuple[str, ...] = ("mlp", "cnn", "resnet18", "tinyvit_11m")

LEAF_NAMES: Mapping[str, str] = MappingProxyType({
    "kernel": "weight",
    "scale": "weight",
    "bias": "bias",
    "mean": "running_mean",
    "var": "running_var",
    "attention_biases": "attention_biases",
})
"""jaxmu leaf name -> PyTorch attribute name (read-only)."""

IGNORED_REFERENCE_SUFFIXES: tuple[str, ...] = ("num_batches_tracked", "attention_bias_idxs")
"""Reference ``state_dict`` entries without a jaxmu counterpart (skipped on import)."""

_LIST_ELEMENT = re.compile(r"^(.+)_(\d+)$")
_RESNET_MODULES: Mapping[str, str] = MappingProxyType(
    {"downsample_conv": "downsample.0", "downsample_bn": "downsample.1"}
)


def _check_arch(arch: str) -> None:
    """Raise ``ModelError`` (a ``ValueError``: one ``error:`` line at the command line) for an
    architecture without reference names: a registered model's parameters have no PyTorch
    counterpart to be named after."""
    if arch not in ARCHS:
        raise ModelError(f"architecture {arch!r} has no reference parameter names (known for {', '.join(ARCHS)}): "
                         "methods that select parameters by their PyTorch names (e.g. rni) cannot apply to it")


def key_str(k: Any) -> str:
    """A path entry of ``jax.tree_util`` (``DictKey``, ``GetAttrKey``, ...) or a plain string."""
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


_key_str = key_str


def tree_paths(tree: Any) -> list[Path]:
    """Leaf paths of a (nested-dict) pytree as tuples of strings, in flattening order."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return [tuple(_key_str(k) for k in path) for path, _ in leaves]


def reference_name(arch: str, path: Sequence[Any]) -> str:
    """Reference ``state_dict`` key of the jaxmu leaf at ``path`` (``params`` or ``batch_stats``).

    Args:
      arch: one of ``ARCHS``.
      path: the leaf's key path, e.g. ``("layer1", "0", "conv1", "kernel")``.
    Raises:
      ValueError: unknown architecture; KeyError: unknown leaf name.
    """
    _check_arch(arch)
    keys = tuple(_key_str(k) for k in path)
    if not keys:
        raise KeyError("empty path")
    *mods, leaf = keys
    if leaf not in LEAF_NAMES:
        raise KeyError(f"{arch}: no reference name for leaf {leaf!r} in {keys}")
    if arch == "resnet18":
        mods = [_RESNET_MODULES.get(m, m) for m in mods]
    elif arch == "tinyvit_11m":
        mods = [_LIST_ELEMENT.sub(r"\1.\2", m) for m in mods]
    return ".".join([*mods, LEAF_NAMES[leaf]])


def reference_names(arch: str, tree: Any) -> dict[Path, str]:
    """``{path: reference name}`` for every leaf of ``tree``; raises if two leaves collide."""
    table: dict[Path, str] = {}
    seen: dict[str, Path] = {}
    for path in tree_paths(tree):
        name = reference_name(arch, path)
        if name in seen:
            raise ValueError(f"{arch}: {path} and {seen[name]} both map to {name!r}")
        seen[name] = path
        table[path] = name
    return table


def conv_kernel_paths(params: Any, *, stacked: bool = False) -> list[Path]:
    """Paths of all convolution kernels (4-D ``kernel`` leaves; 5-D for a stack of models).

    Includes depthwise kernels (TinyViT, ``[kh, kw, 1, C]``); dense kernels are 2-D.
    """
    ndim = 4 + int(stacked)
    out = []
    for (path, leaf) in zip(tree_paths(params), jax.tree_util.tree_leaves(params)):
        if path[-1] == "kernel" and np.ndim(leaf) == ndim:
            out.append(path)
    return out


def stem_paths(arch: str) -> tuple[Path, ...]:
    """Path prefixes of the stem: the network's first convolution (+ its BatchNorm).

    resnet18 ``conv1``, ``bn1``; tinyvit_11m the first Conv2d_BN unit ``patch_embed/seq_0``
    (conv ``c`` + ``bn``); cnn ``conv1``, ``bn1``; mlp (no conv) its first layer ``fc1``.
    """
    _check_arch(arch)
    return {
        "resnet18": (("conv1",), ("bn1",)),
        "tinyvit_11m": (("patch_embed", "seq_0"),),
        "cnn": (("conv1",), ("bn1",)),
        "mlp": (("fc1",),),
    }[arch]


def head_paths(arch: str, *, with_norm: bool = False) -> tuple[Path, ...]:
    """Path prefixes of the classifier (the reference's ``fc`` or ``head`` linear layer; for a
    registered model, the ``classifier`` of its block layout).

    ``with_norm=True`` adds TinyViT's ``norm_head`` LayerNorm in front of ``head`` (no effect on
    the other architectures).
    """
    if arch not in ARCHS and (lay := block_layout(arch)) is not None:
        return ((lay.classifier,),)  # a registered model: the classifier its block layout names
    _check_arch(arch)
    if arch == "resnet18":
        return (("fc",),)
    if arch == "tinyvit_11m" and with_norm:
        return (("norm_head",), ("head",))
    return (("head",),)


def paths_under(tree: Any, prefixes: Sequence[Path]) -> list[Path]:
    """Leaf paths of ``tree`` that start with one of ``prefixes``."""
    pre = [tuple(p) for p in prefixes]
    return [p for p in tree_paths(tree) if any(p[: len(q)] == q for q in pre)]


# --------------------------------------------------------------------------- layout conversion


def to_reference_layout(path: Path, value: Any) -> np.ndarray:
    """jaxmu leaf -> PyTorch layout (conv HWIO -> OIHW, dense ``[in, out]`` -> ``[out, in]``)."""
    a = np.asarray(value)
    if path[-1] == "kernel":
        if a.ndim == 4:
            return a.transpose(3, 2, 0, 1)
        if a.ndim == 2:
            return a.T
    return a


def from_reference_layout(path: Path, value: Any) -> np.ndarray:
    """PyTorch layout -> jaxmu leaf layout (inverse of :func:`to_reference_layout`)."""
    a = np.asarray(value)
    if path[-1] == "kernel":
        if a.ndim == 4:
            return a.transpose(2, 3, 1, 0)
        if a.ndim == 2:
            return a.T
    return a


def export_reference_state(
    arch: str, params: Any, batch_stats: Any = None
) -> dict[str, np.ndarray]:
    """One model's ``params`` (+ ``batch_stats``) as a reference-named, PyTorch-layout dict."""
    out: dict[str, np.ndarray] = {}
    for tree in (params, batch_stats or {}):
        for path, leaf in zip(tree_paths(tree), jax.tree_util.tree_leaves(tree)):
            out[reference_name(arch, path)] = np.ascontiguousarray(to_reference_layout(path, leaf))
    return out


def import_reference_state(
    arch: str, params: Any, batch_stats: Any, state: Mapping[str, Any]
) -> tuple[Any, Any]:
    """Fill ``params``/``batch_stats`` (templates, e.g. from ``Model.init``) from a reference
    ``state_dict`` (values as numpy arrays, PyTorch layout).

    Every template leaf must be found with the converted shape; every entry of ``state`` must be
    used except the ``IGNORED_REFERENCE_SUFFIXES`` buffers.
    Returns ``(params, batch_stats)`` as float32 numpy leaves.
    Raises:
      KeyError: a leaf has no entry; ValueError: shape mismatch or unused entries.
    """
    used: set[str] = set()

    def fill(tree: Any) -> Any:
        paths = tree_paths(tree)
        leaves, treedef = jax.tree_util.tree_flatten(tree)
        new = []
        for path, leaf in zip(paths, leaves):
            name = reference_name(arch, path)
            if name not in state:
                raise KeyError(f"{arch}: reference state has no {name!r} (for {path})")
            value = from_reference_layout(path, state[name]).astype(np.float32)
            if value.shape != np.shape(leaf):
                raise ValueError(f"{name}: shape {value.shape} != expected {np.shape(leaf)}")
            used.add(name)
            new.append(value)
        return jax.tree_util.tree_unflatten(treedef, new)

    new_params = fill(params)
    new_stats = fill(batch_stats) if batch_stats else batch_stats
    unused = [
        k for k in state
        if k not in used and not k.endswith(IGNORED_REFERENCE_SUFFIXES)
    ]
    if unused:
        raise ValueError(f"{arch}: unused reference entries {sorted(unused)[:8]} ...")
    return new_params, new_stats


__all__ = [
    "ARCHS", "IGNORED_REFERENCE_SUFFIXES", "LEAF_NAMES", "Path", "conv_kernel_paths",
    "export_reference_state", "from_reference_layout", "head_paths", "import_reference_state",
    "paths_under", "reference_name", "reference_names", "stem_paths", "to_reference_layout",
    "tree_paths",
]
