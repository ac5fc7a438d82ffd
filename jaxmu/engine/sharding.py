"""The models axis across devices and hosts: a ``models`` mesh and shard_map over stacks.

With several devices (GPUs, TPU cores, CPU host devices forced with
``--xla_force_host_platform_device_count``, or the devices of every process after
``jax.distributed.initialize``), every stacked argument is split along its leading models axis
over a 1-D mesh ``("models",)``; shared arguments (the dataset, a batch shared in faithful mode)
are replicated. Each device runs its share of the models with the chosen per-device execution
(vmap / loop / chunks) inside one ``jax.shard_map``. A model count that the device count does
not divide is padded (the last model repeated) and the padding dropped, so any M works. Models
never interact, so results equal the single-device run (tests check it).

Layout rule (``stack_spec``): a stacked leaf whose model count the device count divides lives
split along the models axis (``P("models")``: each device, and so each process, holds only its
models); any other leaf is replicated (``P()``). Program outputs are constrained to the rule and
``place`` puts host or restored trees into it, so an ahead-of-time compiled program is always
called with the layout it produces, and Orbax writes (multi-host: each process its own shards)
and restores the same layout.

Host copies: in a multi-process run a split array is not addressable from one process;
``to_host`` gathers it (``process_allgather``) where a host value is needed (metrics, logits).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "models"


def default_mesh() -> Mesh | None:
    """A 1-D ``models`` mesh over every device of every process, or None for one device."""
    devices = jax.devices()
    if len(devices) < 2:
        return None
    return Mesh(np.asarray(devices), (AXIS,))


def stack_spec(shape: Sequence[int], num_devices: int) -> P:
    """``P("models")`` for a leaf whose leading axis the device count divides, else ``P()``."""
    return P(AXIS) if len(shape) >= 1 and shape[0] > 0 and shape[0] % num_devices == 0 else P()


def stack_sharding(shape: Sequence[int], mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, stack_spec(shape, mesh.devices.size))


def place(tree: Any, mesh: Mesh | None | str = "auto") -> Any:
    """Put every leaf of ``tree`` in the layout of ``stack_spec`` on ``mesh`` (identity without one).

    Host values (numpy, or arrays on one device) must be equal on every process, which holds
    for everything jaxmu builds from a config and seeds.
    """
    mesh = default_mesh() if mesh == "auto" else mesh
    if mesh is None:
        return tree

    multi = is_multiprocess()

    def put(x):
        if not isinstance(x, jax.Array) or (multi and x.is_fully_addressable):
            x = np.asarray(x)  # a process-local value becomes the global one (same on every process)
        return jax.device_put(x, stack_sharding(x.shape, mesh))

    return jax.tree_util.tree_map(put, tree)


def is_multiprocess() -> bool:
    return jax.process_count() > 1


def to_host(x: Any) -> np.ndarray:
    """A numpy copy of ``x`` on this process, gathering the shards other processes hold."""
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
        return np.asarray(x)
    if x.is_fully_replicated:
        return np.asarray(x.addressable_data(0))
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def addressable(x: jax.Array) -> jax.Array:
    """``x`` itself when this process can read all of it, else a local copy (multi-process)."""
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
        return x
    return jnp.asarray(to_host(x))


def barrier(name: str) -> None:
    """Wait for every process (no-op in a single process)."""
    if is_multiprocess():
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _pad(x: jax.Array, to: int) -> jax.Array:
    m = x.shape[0]
    if m == to:
        return x
    return jnp.concatenate([x, jnp.repeat(x[-1:], to - m, axis=0)], axis=0)


def shard_models(fn: Callable[..., Any], in_axes: Sequence[int | None], mesh: Mesh) -> Callable[..., Any]:
    """Run ``fn`` (already mapped over the models axis) with that axis split across ``mesh``.

    ``in_axes[i]`` is 0 for stacked arguments (split) and None for shared ones (replicated).
    Outputs follow ``stack_spec``. Traceable: use it inside ``jax.jit``.
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
        return jax.tree_util.tree_map(
            lambda x: jax.lax.with_sharding_constraint(x[:m], stack_sharding((m, *x.shape[1:]), mesh)), out)

    return sharded
