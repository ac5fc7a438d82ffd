"""The models axis across devices: a ``models`` mesh and shard_map over stacks (issue: scale out).

With several devices (GPUs, TPU cores, or CPU host devices forced with
``--xla_force_host_platform_device_count``), every stacked argument is split along its leading
models axis over a 1-D mesh ``("models",)``; shared arguments (the dataset, a batch shared in
faithful mode) are replicated. Each device runs its share of the models with the chosen
per-device execution (vmap / loop / chunks) inside one ``jax.shard_map``. A model count that the
device count does not divide is padded (the last model repeated) and the padding dropped, so
any M works. Models never interact, so results equal the single-device run (tests check it).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec as P

AXIS = "models"


def default_mesh() -> Mesh | None:
    """A 1-D ``models`` mesh over this process's devices, or None for one device.

    Local devices only: in a multi-process run each process holds whole (host-local) stacks;
    splitting one stack across processes needs global arrays and Orbax multi-host writes, which
    jaxmu does not do yet.
    """
    devices = jax.local_devices()
    if len(devices) < 2:
        return None
    return Mesh(devices, (AXIS,))


def _pad(x: jax.Array, to: int) -> jax.Array:
    m = x.shape[0]
    if m == to:
        return x
    return jnp.concatenate([x, jnp.repeat(x[-1:], to - m, axis=0)], axis=0)


def shard_models(fn: Callable[..., Any], in_axes: Sequence[int | None], mesh: Mesh) -> Callable[..., Any]:
    """Run ``fn`` (already mapped over the models axis) with that axis split across ``mesh``.

    ``in_axes[i]`` is 0 for stacked arguments (split) and None for shared ones (replicated).
    Traceable: use it inside ``jax.jit``.
    """
    n_dev = mesh.devices.size

    def sharded(*args):
        stacked = [a for a, ax in zip(args, in_axes) if ax == 0]
        m = jax.tree_util.tree_leaves(stacked)[0].shape[0]
        padded_m = -(-m // n_dev) * n_dev
        args = [jax.tree_util.tree_map(lambda x: _pad(x, padded_m), a) if ax == 0 else a
                for a, ax in zip(args, in_axes)]
        specs = tuple(P(AXIS) if ax == 0 else P() for ax in in_axes)
        out = jax.shard_map(fn, mesh=mesh, in_specs=specs, out_specs=P(AXIS), check_vma=False)(*args)
        return jax.tree_util.tree_map(lambda x: x[:m], out)

    return sharded
