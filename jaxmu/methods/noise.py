"""Gaussian noise added to parameters: ``theta_p += s_p * N(0, I)`` on chosen leaves.

The caller names each leaf's scale and key (the key conventions differ per reference port):
RNI's noise on the selected non-bn leaves (leaf ``i`` on ``fold_in(key, i)``, ``docs/methods.md``
§4.18), CFW's confuser on conv kernels (kernel ``j`` of its list on ``fold_in(key, j)``, §4.14).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from jaxmu.models.names import Path
from jaxmu.models.trees import leaf_dict, replace_leaves


def add_noise(params, noise: Mapping[Path, tuple[Any, jax.Array]]):
    """``params`` with ``theta_p + scale * z`` at every path ``p`` of ``noise`` = ``{p: (scale, key)}``;
    ``z ~ N(0, I)`` drawn from ``key`` in the leaf's dtype, ``scale`` cast to that dtype."""
    leaves = leaf_dict(params)
    return replace_leaves(params, {
        p: leaves[p] + jnp.asarray(scale).astype(leaves[p].dtype) * jax.random.normal(k, leaves[p].shape,
                                                                                       leaves[p].dtype)
        for p, (scale, k) in noise.items()})
