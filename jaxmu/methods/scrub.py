"""SCRUB — teacher-student max/min distillation with checkpoint selection (``docs/methods.md`` §4.6).

Paper: Kurmanji et al., arXiv 2302.09880; benchmark: Deep Unlearn, arXiv 2410.01276. Reference:
``munl/unlearning/scrubv2.py`` with ``thirdparty/repdistiller/helper/{loops,util}.py`` and
``distiller_zoo/KD.py`` (xcadet/deepunlearn), ported from meghdadk/SCRUB ``MIA_experiments.ipynb``.

Teacher t = theta_0 (eval mode, frozen), student s = theta_0, ONE SGD(lr_0, mu, wd) whose momentum
is shared by both passes; D_T(s, t) = T^2 (1/B) sum_i sum_c q_ic (log q_ic - log p_ic),
q = softmax(t/T), p = softmax(s/T). For e = 1..E: lr = lr_0 0.1^m(e) (§2.5's 1-based step decay:
E = 1 runs at lr_0 1e-3); record err_r, err_f, err_v, err_fv (100 - top-1 %, eval mode); if
e <= msteps, a max pass over D_f in stored order (batch B_f, train mode) minimising -D_T; a min
pass over D_r (shuffled, B_r, train mode) minimising gamma CE(s, y) + alpha D_T; snapshot e. A last
record gives k = 0..E (after k epochs); k* = argmin_k |err_f[k] - err_fv[E]| (first on ties) gives
snapshot k*, or for k* = 0 the FINAL student (``k0_keeps_final``, faithful) or theta_0 (clean).
D_fv: the examples of D_v whose label occurs in D_f (err_fv = 100 if there are none).

Static: ``epochs``, ``msteps`` (both ragged under tuning, §6.2), the two batch sizes,
``select_checkpoint`` (True faithful; False returns the final student), ``k0_keeps_final``.
Arrays: the SGD's (sgda_*), ``gamma``, ``alpha``, ``temperature`` (T = 0: non-finite, §2.9).
Dead: ``beta``, ``smoothing``; decay rate 0.1 fixed. Memory: E + 1 snapshots per model (§4.6).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxmu.engine.losses import cross_entropy, kl_div
from jaxmu.engine.passes import forget_val_mask, split_errors
from jaxmu.engine.state import TrainState
from jaxmu.engine.steps import distill_step
from jaxmu.methods.plan import Batch, Pass, Phase, Plan, Schedule, epoch_count
from jaxmu.methods._base import (BS, D_BATCH, D_BOOL, D_TEMP, EP, LR, TEMP, U01, WD, MethodSpec,
    SplitData, StaticContext, at_least, generic_domains, nonneg)

LR_DECAY_RATE = 0.1


def select_index(err_f, err_fv_final, *, k0_keeps_final: bool = True, last=None) -> jax.Array:
    """k* = argmin_k |err_f[k] - err_fv_final| over k = 0..``last`` (first on ties; ``last`` = E, traced
    when ragged, default E_max); k* = 0 maps to E (the final student) when ``k0_keeps_final``."""
    err_f = jnp.asarray(err_f)
    last = err_f.shape[0] - 1 if last is None else last
    dist = jnp.where(jnp.arange(err_f.shape[0]) <= last, jnp.abs(err_f - err_fv_final), jnp.inf)
    k = jnp.argmin(dist).astype(jnp.int32)
    if k0_keeps_final:
        k = jnp.where(k == 0, last, k).astype(jnp.int32)
    return k


def max_update(ctx, data, teacher, state: TrainState, idx, key, temperature) -> TrainState:
    """Ascent on the distillation term over a forget batch (minimise -D_T)."""
    return distill_step(ctx, data, teacher, state, idx, key,
                        lambda t, s, y: -kl_div(t, s, temperature, "batchmean_t2"))


def min_update(ctx, data, teacher, state: TrainState, idx, key, hp) -> TrainState:
    """gamma CE + alpha D_T over a retain batch."""
    return distill_step(ctx, data, teacher, state, idx, key, lambda t, s, y: (
        hp["gamma"] * cross_entropy(s, y) + hp["alpha"] * kl_div(t, s, hp["temperature"], "batchmean_t2")))


class State(NamedTuple):
    """The student, the frozen teacher theta_0, the D_fv mask and, with selection on, the error log
    ``errs`` ``[E+1, 4]`` and the snapshots ``snaps`` ``[E+1, ...]`` (index k = after k epochs)."""

    train: TrainState
    teacher: tuple[Any, Any]
    fv_mask: jax.Array
    errs: jax.Array | None
    snaps: tuple[Any, Any] | None


def init(params, batch_stats, hp, key, ctx: StaticContext, data: SplitData) -> State:
    teacher = (params, batch_stats)
    errs = snaps = None
    if ctx.static["select_checkpoint"]:
        n = ctx.static["epochs"] + 1
        errs = jnp.zeros((n, 4), jnp.float32)
        snaps = jax.tree_util.tree_map(lambda x: jnp.zeros((n,) + x.shape, x.dtype), teacher)
    return State(TrainState.create(params, batch_stats, hp), teacher, forget_val_mask(data, ctx.num_classes),
                 errs, snaps)


def record(state: State, e, ctx: StaticContext, data: SplitData) -> State:
    """Row ``e`` of the error log and snapshot ``e``: the student now (after e epochs)."""
    st = state.train
    errs = state.errs.at[e].set(split_errors(ctx, data, st.params, st.batch_stats, state.fv_mask))
    snaps = jax.tree_util.tree_map(lambda a, x: a.at[e].set(x), state.snaps, (st.params, st.batch_stats))
    return state._replace(errs=errs, snaps=snaps)


def update(state: State, batch: Batch, hp, key, ctx: StaticContext, *, phase: str):
    """``record`` (epoch start e): log the errors and snapshot the student (= after e epochs);
    ``max`` / ``min``: one step of the max (D_f) / min (D_r) pass."""
    st, data = state.train, batch.data
    if phase == "record":
        return record(state, batch.epoch, ctx, data), {}
    if phase == "max":
        return state._replace(train=max_update(ctx, data, state.teacher, st, batch.indices, key,
                                               hp["temperature"])), {}
    return state._replace(train=min_update(ctx, data, state.teacher, st, batch.indices, key, hp)), {}


def plan(ctx: StaticContext) -> Plan:
    """E epochs (k_e = fold_in(key, e), e 0-based): step-decayed lr, the error log, the max pass over
    D_f in stored order in the first min(msteps, E) epochs (key fold_in(k_e, 0): drop-path only), the
    min pass over D_r (key fold_in(k_e, 1)). Ragged: E and msteps per model."""
    s = ctx.static
    E = s["epochs"]
    n_max = max(0, min(s["msteps"], E))
    return (Phase("unlearn", E, schedule=Schedule("step", decay=LR_DECAY_RATE, one_based=True),
                  on_epoch="record" if s["select_checkpoint"] else None, count="epochs",
                  passes=(Pass("max", "forget", s["forget_batch_size"], shuffle=False, key=(0,), epochs=(0, n_max),
                               count="msteps"),
                          Pass("min", "retain", s["retain_batch_size"], key=(1,)))),)


def result(state: State, hp, key, ctx: StaticContext, data: SplitData) -> tuple[Any, Any]:
    """The final errors complete the log (k = E); the snapshot k* is returned (see the docstring)."""
    if not ctx.static["select_checkpoint"] or ctx.static["epochs"] == 0:
        return state.train.params, state.train.batch_stats
    E = epoch_count(hp, ctx)  # the model's own E when ragged (a float32 count), else E_max
    E = E if isinstance(E, int) else E.astype(jnp.int32)
    log = record(state, E, ctx, data)
    k = select_index(log.errs[:, 1], log.errs[E, 3], k0_keeps_final=ctx.static["k0_keeps_final"], last=E)
    return jax.tree_util.tree_map(lambda a: a[k], log.snaps)


SPEC = MethodSpec(
    name="scrub", init=init, update=update, plan=plan, result=result,
    defaults={"epochs": 5, "msteps": 3, "retain_batch_size": 32, "forget_batch_size": 64,
              "learning_rate": 5e-4, "momentum": 0.9, "weight_decay": 5e-4, "gamma": 1.0, "alpha": 0.5,
              "temperature": 2.0, "select_checkpoint": True, "k0_keeps_final": True},
    search_space={"gamma": U01, "alpha": U01, "msteps": EP, "temperature": TEMP, "epochs": EP,
                  "learning_rate": LR, "weight_decay": WD, "retain_batch_size": BS, "forget_batch_size": BS},
    static=frozenset({"epochs", "msteps", "retain_batch_size", "forget_batch_size", "select_checkpoint",
                      "k0_keeps_final"}),
    ragged=frozenset({"epochs", "msteps"}),
    dead=frozenset({"beta", "smoothing"}),
    domains={**generic_domains(bs="retain_batch_size"), "forget_batch_size": D_BATCH,
             "msteps": at_least(0, "the number of max-steps epochs; 0 skips the forget phase"),
             "gamma": nonneg("the weight of the retain CE"), "alpha": nonneg("the weight of the retain KL"),
             "temperature": D_TEMP, "select_checkpoint": D_BOOL, "k0_keeps_final": D_BOOL},
    doc="teacher-student max (D_f) / min (D_r) distillation, step decay, checkpoint selection",
)
