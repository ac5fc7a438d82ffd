"""Finiteness of stacked models: which rows of a model stack diverged.

A model *diverged* when any of its parameters (or BatchNorm statistics, or per-example losses)
is NaN or ±inf. In a stack every leaf carries the models axis first (``[M, ...]``), so one
reduction per leaf answers the question for all M models at once:

    ok_m = AND over leaves l of  all_j isfinite(l[m, j])          (l reshaped to [M, -1])

``finite_rows`` runs that reduction as one jitted program on an accelerator and returns a host
``[M]`` bool array (M booleans cross to the host, not the tree). On the CPU backend, where a
JAX array already lives in host memory, it reduces with NumPy instead: no program to compile.
Measured on the 2-core CPU box (fresh compile cache): a 4-model ResNet-18 stack (44.8 M floats)
takes 8.0 s to compile plus 0.15 s per call jitted, against 0.04-0.06 s per call in NumPy; a
10-model digits CNN 1.7 s + 0.25 ms jitted against 0.2-0.6 ms in NumPy.
``finite_loss_rows`` is the NumPy version for per-example arrays already on the host. A diverged model costs only
itself: callers compute metrics on the finite rows, fill NaN for the others and say how many
(``DivergedError`` is what a training stage raises instead of checkpointing NaNs as finished).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["DivergedError", "diverged_names", "finite_loss_rows", "finite_rows"]


class DivergedError(ValueError):
    """A training stage produced models whose parameters are not finite (a user error: the
    learning rate or another hyperparameter is too large). The CLIs print it on one line and
    exit 2; checkpoints written before the divergence are kept."""


@jax.jit
def _finite_rows(tree: Any) -> jax.Array:
    leaves = jax.tree_util.tree_leaves(tree)
    m = leaves[0].shape[0]
    ok = jnp.ones((m,), bool)
    for leaf in leaves:
        if jnp.issubdtype(leaf.dtype, jnp.inexact):  # integer leaves are always finite
            ok = ok & jnp.all(jnp.isfinite(leaf).reshape(m, -1), axis=1)
    return ok


def finite_rows(tree: Any) -> np.ndarray:
    """``[M]`` bool: True where every floating leaf of model m in the stacked ``tree`` is finite.

    Every leaf must carry the models axis first (``[M, ...]``); ``None`` and empty subtrees are
    ignored. One jitted reduction over the whole tree (compiled once per tree structure).
    """
    leaves = jax.tree_util.tree_leaves(tree)
    if not leaves:
        raise ValueError("finite_rows needs a stacked tree with at least one array leaf")
    m = np.shape(leaves[0])[0]
    bad = [np.shape(x) for x in leaves if not np.ndim(x) or np.shape(x)[0] != m]
    if bad:
        raise ValueError(f"every leaf must carry the models axis [{m}, ...]; got leaves of shape {bad[:3]}")
    if all(_on_host(x) for x in leaves):
        return finite_loss_rows(*(x for x in leaves if np.issubdtype(np.asarray(x).dtype, np.inexact)),
                                num_models=m)
    from jaxmu.engine.sharding import to_host  # a multi-process stack: gather the M booleans

    return np.asarray(to_host(_finite_rows(tree)), bool)


def _on_host(x: Any) -> bool:
    """A NumPy array, or a JAX array wholly in this process's CPU memory (NumPy reads it in place)."""
    if not isinstance(x, jax.Array):
        return True
    return x.is_fully_addressable and all(d.platform == "cpu" for d in x.devices())


def finite_loss_rows(*arrays: Any, num_models: int | None = None) -> np.ndarray:
    """``[M]`` bool: True where row m of every ``[M, ...]`` host array is finite (NumPy).

    ``num_models`` gives M when ``arrays`` may be empty (then every row is finite).
    """
    if not arrays and num_models is None:
        raise ValueError("finite_loss_rows needs at least one [M, ...] array")
    rows = [np.asarray(a) for a in arrays]
    m = rows[0].shape[0] if rows else num_models
    if any(r.ndim == 0 or r.shape[0] != m for r in rows):
        raise ValueError(f"model axes differ: {[r.shape for r in rows]}; pass one row per model in each array")
    ok = np.ones(m, bool)
    for r in rows:
        ok &= np.isfinite(r.reshape(m, -1)).all(axis=1)
    return ok


def diverged_names(ok: np.ndarray, names: Sequence[Any] | None = None) -> str:
    """The diverged rows as a comma-separated list of their names (seeds), e.g. ``"1, 3"``."""
    idx = np.flatnonzero(~np.asarray(ok, bool))
    return ", ".join(str(names[i] if names is not None else i) for i in idx)
