"""SCRUB — teacher-student max/min distillation with checkpoint selection (``docs/methods.md`` §4.6).

Paper: Kurmanji et al., "Towards Unbounded Machine Unlearning" (SCRUB), arXiv 2302.09880; benchmark:
Deep Unlearn, arXiv 2410.01276. Reference: ``munl/unlearning/scrubv2.py`` with
``thirdparty/repdistiller/helper/{loops,util}.py`` and ``distiller_zoo/KD.py`` (xcadet/deepunlearn),
ported from meghdadk/SCRUB ``MIA_experiments.ipynb``.

Setup: teacher t = theta_0 (eval mode, frozen); student s = theta_0; ONE PyTorch SGD
(lr_0, mu, wd) whose momentum buffer is shared by the max and min passes.
DistillKL D_T(s, t) = T^2 (1/B) sum_i sum_c q_ic (log q_ic - log p_ic), q = softmax(t/T),
p = softmax(s/T) (``kl_div(..., "batchmean_t2")``).

For e = 1..E:
  1. lr = lr_0 * 0.1^m(e), m(e) = #{d in (floor(E/2), floor(.8E), floor(.9E)) : e > d}
     (1-based e; E = 1 runs at lr_0 * 1e-3).
  2. record err_r, err_f, err_v, err_fv (100 - top-1 % of the student in eval mode; pure reads).
  3. if e <= msteps: max pass over D_f in STORED order (batch B_f), student in train mode,
     minimising -D_T(s, t).
  4. min pass over D_r (shuffled, batch B_r), train mode, minimising gamma CE(s, y) + alpha D_T(s, t).
  5. snapshot (params, BatchNorm statistics) after epoch e.
Then record the errors once more (index k = state after k epochs, k = 0..E) and select
k* = argmin_k |err_f[k] - err_fv[E]| (first index on ties). k* >= 1 returns snapshot k*;
k* = 0 returns the FINAL student in the reference (``k0_keeps_final=True``, faithful) or theta_0
(clean). D_fv = the examples of D_v whose label occurs in D_f (a mask over D_v; all of D_v under
random forgetting; if empty, err_fv is taken as 100).

Static: ``epochs``, ``msteps`` (the first min(msteps, E) epochs run the max pass: ``Pass.epochs``),
both ragged under tuning (``Phase.count`` / ``Pass.count``: compiled for E_max, each model stops
at its own E and msteps; the log and snapshots are sized E_max + 1 and the selection looks at
k <= E only), the two batch sizes, ``select_checkpoint`` (True faithful; False returns the final student),
``k0_keeps_final``. Arrays: the SGD's (sgda_*), ``gamma``, ``alpha``, ``temperature`` (kd_T; T -> 0
gives non-finite losses, not guarded). Dead (§4.6): ``beta`` (the "kd" distiller adds 0) and
``smoothing`` (the SWA term is a zero distance whose JAX gradient would be NaN). Decay rate 0.1 fixed.

With selection on, the epoch-start hook ``record`` writes row e of the error log and snapshot e
(the student after e epochs; 0: theta_0) into arrays preallocated in the state, and ``result``
adds k = E and selects. Memory: E + 1 snapshots of (params, batch_stats) per model on the device
(~45 MB each for ResNet-18): for ResNet-18 stacks with large E, chunk the models axis.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxmu.engine.losses import cross_entropy, kl_div
from jaxmu.engine.passes import error_percent, predict_correct
from jaxmu.engine.state import TrainState
from jaxmu.engine.steps import distill_step
from jaxmu.methods.plan import Batch, Pass, Phase, Plan, Schedule, epoch_count
from jaxmu.methods._base import (BS, D_BATCH, D_BOOL, D_TEMP, EP, LR, TEMP, U01, WD, MethodSpec,
    SplitData, StaticContext, at_least, generic_domains, nonneg)

LR_DECAY_RATE = 0.1


def forget_val_mask(data: SplitData, num_classes: int) -> jax.Array:
    """D_fv as a boolean mask over D_v: labels of D_v that occur in D_f."""
    present = jnp.bincount(data.labels[data.forget], length=num_classes) > 0
    return present[data.labels[data.val]]


def record_errors(ctx: StaticContext, data: SplitData, params, batch_stats, fv_mask) -> jax.Array:
    """``[err_r, err_f, err_v, err_fv]`` of a model in eval mode (pure reads)."""
    c_r, c_f, c_v = (predict_correct(ctx, data, params, batch_stats, i) for i in (data.retain, data.forget, data.val))
    return jnp.stack([error_percent(c_r), error_percent(c_f), error_percent(c_v), error_percent(c_v, fv_mask)])


def select_index(err_f, err_fv_final, *, k0_keeps_final: bool = True, last=None) -> jax.Array:
    """k* = argmin_k |err_f[k] - err_fv_final| over k = 0..E (first on ties); k* = 0 maps to E (the
    final student) when ``k0_keeps_final``. ``err_f`` ``[E_max+1]``; ``last`` = E (traced when
    epochs are ragged; default E_max): the entries after it are not candidates."""
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
    del key
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
    errs = state.errs.at[e].set(record_errors(ctx, data, st.params, st.batch_stats, state.fv_mask))
    snaps = jax.tree_util.tree_map(lambda a, x: a.at[e].set(x), state.snaps, (st.params, st.batch_stats))
    return state._replace(errs=errs, snaps=snaps)


def update(state: State, batch: Batch, hp, key, ctx: StaticContext, *, phase: str):
    """``record`` (epoch start e): log the errors and snapshot the student (= after e epochs);
    ``max`` / ``min``: one step of the max (D_f) / min (D_r) pass."""
    st, data = state.train, batch.data
    if phase == "record":
        return record(state, batch.epoch, ctx, data), {}
    if phase == "max":
        st = max_update(ctx, data, state.teacher, st, batch.indices, key, hp["temperature"])
    else:
        st = min_update(ctx, data, state.teacher, st, batch.indices, key, hp)
    return state._replace(train=st), {}


def plan(ctx: StaticContext) -> Plan:
    """E epochs (k_e = fold_in(key, e), e 0-based): step-decayed lr, the error log, the max pass over
    D_f in stored order in the first min(msteps, E) epochs (key fold_in(k_e, 0): drop-path only), the
    min pass over D_r (key fold_in(k_e, 1)). Ragged under tuning: E and msteps per model."""
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
    name="scrub",
    init=init,
    update=update,
    plan=plan,
    result=result,
    defaults={"epochs": 5, "msteps": 3, "retain_batch_size": 32, "forget_batch_size": 64,
              "learning_rate": 5e-4, "momentum": 0.9, "weight_decay": 5e-4,
              "gamma": 1.0, "alpha": 0.5, "temperature": 2.0,
              "select_checkpoint": True, "k0_keeps_final": True},
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
