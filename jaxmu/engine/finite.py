"""Finiteness of stacked models: which rows of a model stack diverged.

A model *diverged* when any of its parameters (or BatchNorm statistics, or per-example losses)
is NaN or ±inf. In a stack every leaf carries the models axis first (``[M, ...]``), so one
reduction per leaf answers the question for all M models at once:

    ok_m = AND over leaves l of  all_j isfinite(l[m, j])          (l reshaped to [M, -1])

``finite_rows`` runs that reduction as one jitted program on the device and returns a host
``[M]`` bool array (M booleans cross to the host, not the tree). ``finite_loss_rows`` is the
host-side NumPy twin for per-example arrays already on the host. A diverged model costs only
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
    from jaxmu.engine.sharding import to_host  # a multi-process stack: gather the M booleans

    return np.asarray(to_host(_finite_rows(tree)), bool)


def finite_loss_rows(*arrays: Any) -> np.ndarray:
    """``[M]`` bool: True where row m of every ``[M, ...]`` host array is finite (NumPy)."""
    if not arrays:
        raise ValueError("finite_loss_rows needs at least one [M, ...] array")
    rows = [np.asarray(a) for a in arrays]
    m = rows[0].shape[0]
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
