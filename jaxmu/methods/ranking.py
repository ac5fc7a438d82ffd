"""Selections by rank: the k smallest entries of an array, or of several arrays ranked together.

* ``ranks``: the rank of every position under an order (the inverse permutation of ``order``):
  RNI's random subsets (the first n entries of a permutation, ``docs/methods.md`` §4.18), SalUn's
  saliency mask (the largest entries, §4.5).
* ``smallest_mask``: the ``round(fraction * size)`` smallest entries of one array, by one stable
  sort (ties by flat index) and a traced threshold on the ranks, so ``fraction`` may be an array
  hyperparameter (MSG's per-kernel smallest |G|, §4.13).
* ``smallest_masks``: the same ranking across several arrays together, returned as one mask per
  array (MSG's ``mask_scope="global"``, PRMQ's global L1 pruning, §4.15); ``split_like`` cuts a
  flat vector back into the arrays' shapes (also SalUn's).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp


def ranks(order: jax.Array) -> jax.Array:
    """``rank[order[i]] = i`` (int32): the position of every entry in ``order``."""
    n = order.shape[0]
    return jnp.zeros((n,), jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32))


def smallest_mask(values: jax.Array, fraction) -> jax.Array:
    """Boolean mask of the ``round(fraction * size)`` smallest entries of ``values`` (any shape;
    ``jnp.round``: half to even)."""
    flat = values.reshape(-1)
    rank = ranks(jnp.argsort(flat, stable=True))
    n = jnp.round(jnp.asarray(fraction, jnp.float32) * jnp.float32(flat.size)).astype(jnp.int32)
    return (rank < n).reshape(values.shape)


def split_like(flat: jax.Array, arrays: Sequence[jax.Array]) -> list[jax.Array]:
    """``flat`` cut into consecutive pieces of the shapes of ``arrays``."""
    out, off = [], 0
    for a in arrays:
        out.append(flat[off:off + a.size].reshape(a.shape))
        off += a.size
    return out


def smallest_masks(arrays: Sequence[jax.Array], fraction) -> list[jax.Array]:
    """``smallest_mask`` over all entries of ``arrays`` ranked together, one mask per array."""
    return split_like(smallest_mask(jnp.concatenate([a.reshape(-1) for a in arrays]), fraction), arrays)
