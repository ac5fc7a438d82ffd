"""Type aliases shared across jaxmu.

Every *stacked* pytree carries a leading ``models`` axis of size M; a single-model pytree
has none. Shapes in docstrings name the axes, e.g. ``[models, batch, classes]``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax

PRNGKey = jax.Array
Array = jax.Array
Params = Any  # a pytree of arrays (flax ``params`` collection)
BatchStats = Any  # a pytree of arrays (flax ``batch_stats`` collection)
PyTree = Any


class DeviceData(NamedTuple):
    """The whole dataset resident on device: uint8 images ``[N, H, W, C]``, int32 labels ``[N]``."""

    images: Array
    labels: Array
