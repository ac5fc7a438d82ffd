"""Unlearning a stack of models: the one function every caller uses (pipeline, tuning, U-LiRA).

``unlearn_stack`` compiles a method with its static settings over a stack (once per signature:
pass a ``programs`` cache to reuse executables across calls, as tuning does) and runs it; it is
the only place that times unlearning, compile time and run time apart (``docs/methods.md`` §2.8).
The unlearning key follows the setting's convention (``unlearning_key``), so tuning and the
final run agree.

``Unlearner`` vmaps (or loops, per ``model_axis``) a method's per-model ``unlearn_one`` over the models
axis: parameters, BatchNorm statistics and array hyperparameters carry the axis (``in_axes=0``);
the dataset is shared; split indices are shared (main benchmark) or per model (U-LiRA); the
unlearning key is shared in faithful mode (``docs/methods.md`` §2.3: the reference reseeds with 123
before every run, so all seeds see the same unlearning randomness) or per model.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import time
from typing import Any, Mapping, MutableMapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxmu.engine.execution import map_models
from jaxmu.methods._base import MethodSpec, SplitData, StaticContext

UNLEARN_SEED = 123


def unlearning_key(seeds=None, *, per_model: bool = False) -> jax.Array:
    """The faithful shared key ``PRNGKey(123)``, or one key per model seed (``per_model``)."""
    base = jax.random.PRNGKey(UNLEARN_SEED)
    if not per_model:
        return base
    return jnp.stack([jax.random.fold_in(base, int(s)) for s in seeds])


class ProgramCache(collections.OrderedDict):
    """Compiled executables by signature, at most ``capacity`` of them (least recently used dropped).

    Every compiled XLA:CPU program keeps its JIT code mapped until it is dropped, and the code
    pages count against the kernel's ``vm.max_map_count`` (65,530 by default). Before PRMQ's
    epochs were ragged, its tuning compiled one program per trial; kept in an unbounded cache,
    ~300 of them exhausted the maps and LLVM failed ("Cannot allocate memory", then SIGSEGV)
    in ``sweep --method all``. The bound keeps any method whose static signature varies per
    trial within the limit; a dropped program is compiled again (from the persistent compile
    cache) if it is needed again. ``compiled``: how many programs were ever stored. Measured in
    ``sweep --method all`` on the digits MLP: ~250 maps per PRMQ program, ~600 per RNI program
    (RNI's tuning filled a 64-program cache: ~37,000 maps); 32 keeps even larger programs well inside
    the limit, and covers CF-k's 30 signatures per sweep.
    """

    def __init__(self, capacity: int = 32):
        super().__init__()
        if capacity < 1:
            raise ValueError(f"ProgramCache capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.compiled = 0

    def __getitem__(self, sig):
        self.move_to_end(sig)
        return super().__getitem__(sig)

    def __setitem__(self, sig, exe) -> None:
        super().__setitem__(sig, exe)
        self.move_to_end(sig)
        self.compiled += 1
        while len(self) > self.capacity:
            self.popitem(last=False)


@dataclasses.dataclass(frozen=True)
class Unlearner:
    """A compiled-once unlearning program for one method and one set of static settings.

    Attributes:
      spec: the method.
      static_items: the static hyperparameters as sorted ``(name, value)`` pairs.
      ctx: static model/data facts.
      per_model_splits: split index arrays carry a models axis (U-LiRA).
      per_model_keys: the key carries a models axis (clean ``per_model_unlearning_keys``).
      model_axis, chunk_size: execution of the models axis.
    """

    spec: MethodSpec
    static_items: tuple[tuple[str, Any], ...]
    ctx: StaticContext
    per_model_splits: bool = False
    per_model_keys: bool = False
    model_axis: str = "vmap"
    chunk_size: int = 8

    @functools.cached_property
    def fn(self):
        static = dict(self.static_items)
        run = self.spec.unlearn_one

        def one(data, params, batch_stats, hp, key):
            return run(self.ctx, data, params, batch_stats, hp, key, static=static)

        s = 0 if self.per_model_splits else None
        data_axes = SplitData(images=None, labels=None, retain=s, forget=s, val=s)
        mapped = map_models(one, (data_axes, 0, 0, 0, 0 if self.per_model_keys else None),
                            mode=self.model_axis, chunk_size=self.chunk_size)
        return jax.jit(mapped)

    @staticmethod
    def _args(data: SplitData, params, batch_stats, hp: Mapping[str, Any], key):
        hp = {k: jnp.asarray(v, jnp.float32) for k, v in hp.items()}
        data = SplitData(*(jnp.asarray(x) for x in data))
        return data, params, batch_stats, hp, key

    def compile(self, data: SplitData, params, batch_stats, hp, key) -> tuple[Any, float]:
        t0 = time.perf_counter()
        exe = self.fn.lower(*self._args(data, params, batch_stats, hp, key)).compile()
        return exe, time.perf_counter() - t0

    def __call__(self, data: SplitData, params, batch_stats, hp, key):
        return self.fn(*self._args(data, params, batch_stats, hp, key))


@dataclasses.dataclass
class UnlearnResult:
    params: Any
    batch_stats: Any
    compile_s: float
    run_s: float


def stack_hparams(arrays: Mapping[str, float] | Mapping[str, np.ndarray], num_models: int) -> dict[str, jax.Array]:
    """Broadcast scalar array-hyperparameters to ``[models]`` (per-model values pass through)."""
    out = {}
    for k, v in arrays.items():
        a = jnp.asarray(v, jnp.float32)
        if a.ndim == 0:
            a = jnp.broadcast_to(a, (num_models,))
        if a.shape != (num_models,):
            raise ValueError(f"hyperparameter {k!r} has shape {a.shape}, expected ({num_models},)")
        out[k] = a
    return out


def _signature(args) -> tuple:
    leaves, treedef = jax.tree_util.tree_flatten(args)
    return (str(treedef),) + tuple((tuple(np.shape(x)), str(jnp.asarray(x).dtype)) for x in leaves)


def unlearn_stack(spec: MethodSpec, static: Mapping[str, Any], arrays: Mapping[str, Any], ctx: StaticContext,
                  data: SplitData, params, batch_stats, key, *, per_model_splits: bool = False,
                  model_axis: str = "vmap", chunk_size: int = 8,
                  programs: MutableMapping[tuple, Any] | None = None) -> UnlearnResult:
    """Unlearn every model of a stack; compile time and run time measured apart.

    ``arrays`` are scalars (every model) or ``[M]`` per-model values; ``key`` is one key (shared,
    faithful) or ``[M, 2]`` (per model), as ``unlearning_key`` makes it. ``programs``: a cache of
    compiled executables keyed by method, static settings and argument shapes (a dict, or a
    bounded ``ProgramCache``); a hit costs no compilation (``compile_s`` 0).
    """
    m = jax.tree_util.tree_leaves(params)[0].shape[0]
    hp = stack_hparams(arrays, m)
    un = Unlearner(spec, tuple(sorted(static.items())), ctx, per_model_splits, key.ndim == 2,
                   model_axis, chunk_size)
    args = un._args(data, params, batch_stats, hp, key)
    sig = (spec.name, un.static_items, id(ctx), per_model_splits, model_axis, chunk_size, _signature(args))
    compile_s = 0.0
    if programs is not None and sig in programs:
        exe = programs[sig]
    else:
        exe, compile_s = un.compile(data, params, batch_stats, hp, key)
        if programs is not None:
            programs[sig] = exe
    t0 = time.perf_counter()
    out = exe(*args)
    jax.block_until_ready(out)
    return UnlearnResult(out[0], out[1], compile_s, time.perf_counter() - t0)
