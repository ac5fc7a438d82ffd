"""How the model axis of a stack executes: ``vmap``, a loop, or vmapped chunks.

The model axis is a concept; its execution is a performance choice (docs/performance.md §3):

* ``vmap``: all models at once. Best on GPUs/TPUs (one small model leaves the chip idle) and
  for overhead-bound CPU work (small MLPs, many tiny steps).
* ``loop``: one model at a time inside the *same* compiled program (``lax.map``). On 2 CPU
  cores convolutional nets are compute-bound, so vmapping buys nothing there and batched
  small matrix products are slower than one model's larger ones (docs/performance.md §3).
* ``chunked``: ``lax.map`` over vmapped chunks of ``chunk_size`` models: bounds memory when
  M models do not fit at once, still one program.

All three give the same results (float tolerance); tests check it.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax

MODEL_AXIS_MODES = ("auto", "vmap", "loop", "chunked")


def choose_model_axis(mode: str, *, backend: str, model_name: str) -> str:
    """Resolve ``auto``: vmap on accelerators, a loop over models on CPU.

    The CPU rule follows ``bench/train_throughput.py`` (bench/README.md): on 2 cores one model
    at a time beat the vmapped stack for the CNN (26.4-27.0 vs 17.4-22.6 model-epochs/s, models
    axis split over two host devices); for the MLP the two are within run-to-run noise
    (569 vs 472, then 674 vs 736 after the flat optimizer update).
    """
    if mode not in MODEL_AXIS_MODES:
        raise ValueError(f"unknown model_axis {mode!r}: choose one of {', '.join(MODEL_AXIS_MODES)}")
    if mode != "auto":
        return mode
    del model_name  # kept for per-architecture rules; none is needed by the measurements so far
    return "vmap" if backend != "cpu" else "loop"


def memory_budget(fraction: float = 0.6) -> int:
    """Bytes a stack may use: ``fraction`` of the accelerator's memory, or of available RAM."""
    dev = jax.local_devices()[0]
    stats = None
    try:
        stats = dev.memory_stats()
    except Exception:  # noqa: BLE001 - backends without memory stats
        stats = None
    if stats and stats.get("bytes_limit"):
        return int(fraction * (stats["bytes_limit"] - stats.get("bytes_in_use", 0)))
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(fraction * int(line.split()[1]) * 1024)
    except OSError:
        pass
    return int(fraction * (8 << 30))


def auto_chunk(mode: str, num_models: int, bytes_per_model: int, budget: int) -> tuple[str, int]:
    """``(mode, chunk_size)``: switch a ``vmap`` that would not fit ``budget`` to chunks.

    A vmapped stack holds every model's live state at once; when ``num_models x
    bytes_per_model`` exceeds the budget, ``chunked`` runs vmapped chunks of the largest size
    that fits (at least 1), inside the same program, with identical results.
    """
    if mode != "vmap" or bytes_per_model <= 0 or num_models * bytes_per_model <= budget:
        return mode, max(1, num_models)
    return "chunked", max(1, min(num_models, budget // bytes_per_model))


def leaf_axes(in_axes: Sequence[Any], args: Sequence[Any]) -> tuple[int | None, ...]:
    """One models-axis entry (0 or None) per leaf of ``args``.

    ``in_axes[i]`` is a prefix of ``args[i]``, as for ``jax.vmap``: an int / None for the whole
    argument, or a pytree of them (``SplitData(None, None, 0, 0, 0)``: shared images and labels,
    per-model index arrays).
    """
    tm, leaves = jax.tree_util.tree_map, jax.tree_util.tree_leaves
    out: list[int | None] = []
    for spec, arg in zip(in_axes, args, strict=True):
        per_sub = tm(lambda ax, sub: [ax] * len(leaves(sub)), spec, arg, is_leaf=lambda x: x is None)
        for axes in leaves(per_sub, is_leaf=lambda x: isinstance(x, list)):
            out += axes
    return tuple(out)


def map_models(
    fn: Callable[..., Any],
    in_axes: Sequence[Any],
    *,
    mode: str,
    chunk_size: int = 8,
    mesh: Any = "auto",
) -> Callable[..., Any]:
    """Map ``fn`` (one model's computation) over the leading models axis of some arguments.

    ``in_axes[i]`` is 0 for an argument stacked along the models axis and None for one shared
    by every model (e.g. the data arrays, or a batch shared in faithful mode), or a pytree prefix
    of the argument mixing both (``leaf_axes``). Outputs are stacked along axis 0 in every mode.

    ``mesh``: ``"auto"`` splits the models axis across all devices when there are several
    (``jaxmu.engine.sharding``), None keeps it on one device, or an explicit ``Mesh``.
    """
    in_axes = tuple(in_axes)

    def mapped(*args):
        leaves, treedef = jax.tree_util.tree_flatten(args)
        flat = _map_leaves(lambda *ls: fn(*jax.tree_util.tree_unflatten(treedef, ls)), leaf_axes(in_axes, args),
                           mode=mode, chunk_size=chunk_size, mesh=mesh)
        return flat(*leaves)

    return mapped


def _map_leaves(fn: Callable[..., Any], in_axes: tuple[int | None, ...], *, mode: str, chunk_size: int,
                mesh: Any) -> Callable[..., Any]:
    """``map_models`` over flat array arguments, one axis entry each."""
    if mesh == "auto":
        from jaxmu.engine.sharding import default_mesh

        mesh = default_mesh()
    if mesh is not None and mesh.devices.size > 1:
        from jaxmu.engine.sharding import shard_models

        return shard_models(_map_leaves(fn, in_axes, mode=mode, chunk_size=chunk_size, mesh=None), in_axes, mesh)
    if mode == "vmap":
        return jax.vmap(fn, in_axes=in_axes)
    if mode not in ("loop", "chunked"):
        raise ValueError(f"map_models: mode must be vmap, loop or chunked, got {mode!r}")
    batch_size = chunk_size if mode == "chunked" else None

    def mapped(*args):
        stacked = tuple(a for a, ax in zip(args, in_axes) if ax == 0)

        def one(xs):
            it = iter(xs)
            full = [next(it) if ax == 0 else a for a, ax in zip(args, in_axes)]
            return fn(*full)

        return jax.lax.map(one, stacked, batch_size=batch_size)

    return mapped
