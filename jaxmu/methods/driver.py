"""The one driver: runs any method's plan for one model (``run_method``).

Every method is ``init`` / ``update`` / ``plan`` / ``result`` (``jaxmu.methods.plan``); this
module owns what they leave out — the epoch and step loops (``lax.scan`` over epochs, a scan over
the full batches of a pass plus one step at the partial batch's own static shape), the key
convention, learning-rate schedules and the order of hooks — so no method writes a loop.

Per phase: the one-shot step (if any) runs on the phase key; then the epochs, split into
segments in which the same passes are active (``Pass.epochs``), each segment one ``lax.scan``;
each epoch sets the schedule's learning rate, calls the ``on_epoch`` hook, then runs its passes
in order. The models axis (vmap / loop / chunks / devices) is applied around ``run_method`` by
``jaxmu.methods.stack``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping

import jax
import jax.numpy as jnp

from jaxmu.engine import passes
from jaxmu.engine.optim import cosine_factor, step_decay_factor
from jaxmu.engine.state import TrainState
from jaxmu.methods.plan import Batch, Pass, Phase, Schedule
from jaxmu.types import Array, PRNGKey


def fold(key: PRNGKey, path: tuple[int, ...]) -> PRNGKey:
    """``fold_in`` along ``path`` (the empty path is ``key`` itself)."""
    for i in path:
        key = jax.random.fold_in(key, i)
    return key


def trained(state: Any) -> TrainState:
    """The model being trained: the state itself or its ``train`` field."""
    return state if isinstance(state, TrainState) else state.train


def with_trained(state: Any, train: TrainState) -> Any:
    return train if isinstance(state, TrainState) else state._replace(train=train)


def default_result(state, hp, key, ctx, data) -> tuple[Any, Any]:
    del hp, key, ctx, data
    t = trained(state)
    return t.params, t.batch_stats


def stream_indices(data, stream: str) -> Array:
    """The examples a stream draws from (positions of ``concat(D_f, D_r)`` for ``combined``)."""
    if stream == "combined":
        return jnp.arange(data.forget.shape[0] + data.retain.shape[0], dtype=jnp.int32)
    if stream not in ("retain", "forget", "val"):
        raise ValueError(f"unknown stream {stream!r}")
    return getattr(data, stream)


def schedule_factor(s: Schedule, epoch, epochs, hp: Mapping[str, Array]):
    if s.kind == "cosine":
        return cosine_factor(epoch, epochs)
    if s.kind == "step":
        e = epoch + 1 if s.one_based else epoch
        rate = hp[s.decay] if isinstance(s.decay, str) else s.decay
        return step_decay_factor(e, epochs, rate, one_based=s.one_based)
    if s.kind == "constant":
        return 1.0
    raise ValueError(f"unknown schedule {s.kind!r}")


def _step(spec, state, batch: Batch, hp, key, ctx, phase: str):
    state, aux = spec.update(state, batch, hp, key, ctx, phase=phase)
    return state


def run_pass(spec, p: Pass, state, *, hp, epoch_key, ctx, data, epoch, gate=None):
    """One pass of ``p`` with ``engine.passes``' loop and key convention (permutation from
    ``fold_in(k, 0)``, step ``b`` on ``fold_in(k, b + 1)``); the step index rides in the carry.
    ``gate(epoch, b)`` (traced bool): the steps where it is false leave the state unchanged."""
    key = fold(epoch_key, p.key)
    idx = stream_indices(data, p.stream) if p.subset is None else getattr(state, p.subset)

    def step(carry, bidx, bkey):
        st, b = carry
        run = lambda s: _step(spec, s, Batch(bidx, epoch, b, data), hp, bkey, ctx, p.phase)  # noqa: E731
        return (run(st) if gate is None else jax.lax.cond(gate(epoch, b), run, lambda s: s, st)), b + 1

    carry = (state, jnp.int32(0))
    if p.steps is None:
        carry = passes.run_pass(carry, idx, p.batch_size, key, step, shuffle=p.shuffle)
    else:
        carry = passes.partial_pass(carry, idx, p.batch_size, key, step, p.steps, shuffle=p.shuffle)
    return carry[0]


def _segments(phase: Phase) -> list[tuple[int, int, tuple[Pass, ...]]]:
    """Epoch ranges [lo, hi) with a constant set of active passes (static)."""
    cuts = {0, phase.epochs}
    for p in phase.passes:
        if p.epochs is not None:
            cuts.update(min(max(c, 0), phase.epochs) for c in p.epochs)
    bounds = sorted(cuts)
    out = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        active = tuple(p for p in phase.passes if p.epochs is None or p.epochs[0] <= lo < p.epochs[1])
        out.append((lo, hi, active))
    return out


def phase_length(phase: Phase, hp: Mapping[str, Array]):
    """The epochs the phase runs: ``hp[phase.count]`` (ragged, traced) or the static ``epochs``."""
    if phase.count is not None and phase.count in hp:
        return hp[phase.count]
    return phase.epochs


def step_budget(phase: Phase, hp: Mapping[str, Array], ctx):
    """``phase`` with its step budget (``Phase.steps``) made explicit, and the step gate.

    Static budget S: the passes become epochs ``[0, S // L)`` of whole passes and, in epoch
    ``S // L``, the first ``S mod L`` full batches of its shuffle (no gate). Ragged
    (``hp[phase.count]``, each model's own S): every epoch runs its whole pass and step ``b`` of
    epoch ``e`` runs while ``e * L + b < S``.
    """
    if phase.steps is None:
        return phase, None
    p = phase.passes[0] if len(phase.passes) == 1 else None
    if p is None or p.epochs is not None or p.steps is not None or p.subset is not None or phase.schedule:
        raise ValueError(f"phase {phase.name!r}: a step budget needs exactly one whole-stream pass and no schedule")
    L = passes.pass_batches(ctx.size(p.stream), p.batch_size)
    if phase.epochs != -(-phase.steps // L):
        raise ValueError(f"phase {phase.name!r}: {phase.steps} steps of {L} per epoch need "
                         f"{-(-phase.steps // L)} epochs, not {phase.epochs}")
    if phase.count is not None and phase.count in hp:
        budget = hp[phase.count]
        return phase, lambda e, b: e * L + b < budget
    full, rest = divmod(phase.steps, L)
    split = (dataclasses.replace(p, epochs=(0, full)),) + \
        ((dataclasses.replace(p, epochs=(full, full + 1), steps=rest),) if rest else ())
    return dataclasses.replace(phase, passes=split, steps=None, count=None), None


def run_phase(spec, phase: Phase, state, hp, key, ctx, data, window=None):
    """The one-shot step, then the epochs of ``phase`` (``Phase.count``: each model stops at its
    own epoch count, later epochs skipped by ``lax.cond``: a real branch in a loop over models, a
    select under ``vmap``; with a step budget ``Phase.steps``, at its own step count instead).

    ``window``: ``(start, stop)`` traced int32 scalars shared by every model: only the epochs
    ``start <= e < stop`` run (the others are skipped by a ``lax.cond`` whose predicate carries no
    models axis, so it stays a branch under ``vmap``); one compiled program then runs any chunk of
    epochs — the resumable trainer (``jaxmu.training``). The one-shot step runs only in the
    chunk that starts at epoch 0.
    """
    pkey = fold(key, phase.key)
    zero = jnp.int32(0)
    phase, gate = step_budget(phase, hp, ctx)
    length = phase.epochs if gate is not None else phase_length(phase, hp)
    ragged = not isinstance(length, int)
    if phase.once is not None:
        once = lambda s: _step(spec, s, Batch(None, zero, zero, data), hp, pkey, ctx, phase.once)  # noqa: E731
        state = once(state) if window is None else jax.lax.cond(window[0] == 0, once, lambda s: s, state)
    for lo, hi, active in _segments(phase):

        def epoch(st, e, k, active=active):
            if phase.schedule is not None:
                s = phase.schedule
                lr = hp[s.rate] * schedule_factor(s, e, length, hp)
                st = with_trained(st, trained(st).with_lr(lr))
            if phase.on_epoch is not None:
                st = _step(spec, st, Batch(None, e, zero, data), hp, k, ctx, phase.on_epoch)
            for p in active:
                run = functools.partial(run_pass, spec, p, hp=hp, epoch_key=k, ctx=ctx, data=data, epoch=e, gate=gate)
                st = run(st) if p.count is None or p.count not in hp else \
                    jax.lax.cond(e < hp[p.count], run, lambda s: s, st)
            return st

        if ragged:
            epoch = functools.partial(_gated, epoch, length)
        if window is not None:
            epoch = functools.partial(_windowed, epoch, window)
        state = passes.run_epochs(state, hi, pkey, epoch, start=lo)
    return state


def _gated(epoch, length, st, e, k):
    """``epoch(st, e, k)`` for the epochs ``e < length``; the state unchanged after them."""
    return jax.lax.cond(e < length, lambda s: epoch(s, e, k), lambda s: s, st)


def _windowed(epoch, window, st, e, k):
    """``epoch(st, e, k)`` for ``window[0] <= e < window[1]``; the state unchanged otherwise."""
    return jax.lax.cond((window[0] <= e) & (e < window[1]), lambda s: epoch(s, e, k), lambda s: s, st)


def with_stream_sizes(ctx, data):
    """``ctx`` with ``stream_sizes`` bound: each stream's number of examples (static shapes)."""
    n_f, n_r = data.forget.shape[-1], data.retain.shape[-1]
    sizes = (("retain", n_r), ("forget", n_f), ("val", data.val.shape[-1]), ("combined", n_f + n_r))
    return dataclasses.replace(ctx, stream_sizes=sizes)


def run_method(spec, ctx, data, params, batch_stats, hp: Mapping[str, Array], key: PRNGKey):
    """Unlearn ONE model: ``init``, every phase of ``plan(ctx)``, ``result`` -> (params, batch_stats).

    ``ctx.size(stream)`` is bound first (``with_stream_sizes``), for plans that count steps.
    """
    ctx = with_stream_sizes(ctx, data)
    state = spec.init(params, batch_stats, hp, key, ctx, data)
    for phase in spec.plan(ctx):
        state = run_phase(spec, phase, state, hp, key, ctx, data)
    return (spec.result or default_result)(state, hp, key, ctx, data)
