"""FCS — uniform-KL on D_f, then contrastive forget rounds + retain rounds (``docs/methods.md`` §4.12).

Reference: ``munl/unlearning/kgltop1.py`` (xcadet/deepunlearn), a port of a NeurIPS 2023
Machine Unlearning Challenge solution (Kaggle); paper: Deep Unlearn, arXiv 2410.01276.

Train mode throughout. Three independent PyTorch-SGD optimizers over the same parameters,
each with its own momentum buffer: O1 (``learning_rate``, ``momentum``, ``weight_decay`` — the
reference's ``optimizer.*``), O2 (``forget_*`` — ``forget_optimizer.*``), O3 (``retain_*`` —
``retain_optimizer.*``).

1. Stage 1: one pass over D_f (shuffled, batch B) with O1 minimising
   KL(U || softmax f(x)) = (1/B) sum_i sum_c (1/C)(log(1/C) - log p_ic)   (batchmean).
2. Stage 2, for ep = 1..E:
   (a) forget round: the batches of a fresh shuffle of D_f are zipped with the batches of a
       fresh shuffle of D_r (min(ceil(n_f/B), ceil(n_r/B)) steps). Z_f = f(x_f) then
       Z_r = stop_gradient(f(x_r)), both forwards in train mode with the running statistics
       updated in that order (forget, then retain); S = Z_f Z_r^T / T;
       loss = -mean_{i,j} log_softmax(S, axis=retain)_{ij}. O2 with a PER-STEP cosine:
       lr_t = eta_min + (lr_f - eta_min)(1 + cos(pi t / T_tot))/2, t = O2 steps taken so far,
       T_tot = int(ceil(n_f/B) * E) (eta_min may exceed lr_f: the schedule then rises).
   (b) retain round: one pass over a fresh shuffle of D_r, CE, O3 with the constant lr
       ``retain_learning_rate * B / 64``.

All of these reproduce the reference (§5 row 21). Defaults: E 8, B 256, T 1.15, eta_min 1e-6;
O1 5e-3/0.9/0; O2 3e-4/0.9/0; O3 1e-3 (x B/64)/0.9/1e-2. Search: retain_* and forget_*
(lr: LR, wd: WD; momentum fixed), temperature: TEMP, eta_min: ETA, plus G (O1, B, E).

Structure (``jaxmu.methods.plan``): the state holds the model with O1's state (``train``), the
states of O2 and O3, the O2 step count and this epoch's shuffle of D_r. Phase ``stage1`` (phase
key ``()``, one epoch: epoch key ``fold_in(key, 0)``) is a pass over D_f; phase ``stage2`` (key
``(1,)``, E epochs) draws the paired D_r order at each epoch start, then a pass over D_f (key
``(0,)``) whose step b takes retain batch b of that order, then a pass over D_r (key ``(2,)``).
If D_r is shorter than the forget round (n_r < ceil(n_f/B) B, never in the benchmark splits), a
``lax.switch`` in the forget step (``engine.passes.batch_at``) picks the partial retain batch or
skips the steps past D_r's end (zip semantics kept; results then agree with the pre-plan loop to
~1e-8, not bit for bit).

Randomness: stage 1 pass key ``fold_in(key, 0)``; stage-2 epoch key ``k_e = fold_in(fold_in(key, 1), e)``;
forget round: D_f order ``fold_in(fold_in(k_e, 0), 0)``, paired D_r order ``fold_in(fold_in(k_e, 1), 0)``,
step b key ``fold_in(fold_in(k_e, 0), b + 1)``; retain round pass key ``fold_in(k_e, 2)``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxmu.engine.losses import contrastive_loss, forward, kl_to_uniform
from jaxmu.engine.optim import cosine_lr, set_hyperparam
from jaxmu.engine.passes import batch_at, gather, order, pass_batches
from jaxmu.engine.state import TrainState
from jaxmu.engine.steps import batch_step, ce_step, loss_step
from jaxmu.methods._base import (D_LR, D_MOM, D_TEMP, D_WD, ETA, LR, TEMP, WD, MethodSpec,
    SplitData, StaticContext, generic_domains, generic_space, nonneg)
from jaxmu.methods.plan import Batch, Pass, Phase, Plan, epoch_count


class State(NamedTuple):
    """The model (params, running stats, O1's state), O2 and O3's states, O2 steps, this epoch's D_r order."""

    train: TrainState
    opt2: Any
    opt3: Any
    step2: jax.Array  # number of O2 steps taken (drives the per-step cosine)
    retain_order: jax.Array


def init(params, batch_stats, hp, key, ctx: StaticContext, data: SplitData) -> State:
    """Three fresh SGD states (``""``, ``forget_``, ``retain_`` hyperparameters; O3's lr x B/64)."""
    del key

    def opt(prefix):
        return TrainState.create(params, batch_stats, hp, prefix=prefix).opt_state

    lr3 = hp["retain_learning_rate"] * (ctx.static["batch_size"] / 64.0)
    opt3 = set_hyperparam(opt("retain_"), "learning_rate", lr3)
    return State(TrainState(params, batch_stats, opt("")), opt("forget_"), opt3, jnp.zeros((), jnp.int32), data.retain)


def forget_update(ctx, data, st: State, idx_f, idx_r, key, hp, total_steps) -> State:
    """One O2 step of the forget round on (forget batch, retain batch)."""
    x_f, _ = gather(ctx, data, idx_f)
    x_r, _ = gather(ctx, data, idx_r)
    k_f, k_r = jax.random.split(key)
    lr = cosine_lr(st.step2, total_steps, hp["forget_learning_rate"], hp["eta_min"])
    opt2 = set_hyperparam(st.opt2, "learning_rate", lr)
    params, batch_stats = st.train.params, st.train.batch_stats

    def loss_fn(p):
        z_f, bs = forward(ctx, p, batch_stats, x_f, train=True, key=k_f)
        z_r, bs = forward(ctx, p, bs, x_r, train=True, key=k_r)
        return contrastive_loss(z_f, jax.lax.stop_gradient(z_r), hp["temperature"]), bs

    t = loss_step(TrainState(params, batch_stats, opt2), loss_fn)
    return st._replace(train=st.train.replace(params=t.params, batch_stats=t.batch_stats), opt2=t.opt_state,
                       step2=st.step2 + 1)


def update(state: State, batch: Batch, hp, key, ctx: StaticContext, *, phase: str):
    """``stage1``: O1 on KL to uniform; ``draw_retain`` (epoch start): D_r order ``fold_in(fold_in(k_e, 1),
    0)``; ``forget``: O2 contrastive step; ``retain``: O3 CE step."""
    B, data = ctx.static["batch_size"], batch.data
    if phase == "stage1":
        return state._replace(train=batch_step(ctx, data, state.train, batch.indices, key,
                                               lambda z, y: kl_to_uniform(z))), {}
    if phase == "draw_retain":
        return state._replace(retain_order=order(data.retain, jax.random.fold_in(jax.random.fold_in(key, 1), 0),
                                                 True)), {}
    if phase == "forget":  # zip(forget loader, retain loader): forget step b takes retain batch b, if any
        n_f = pass_batches(data.forget.shape[0], B)
        total_steps = jnp.maximum(n_f * epoch_count(hp, ctx), 1)

        def paired(st, idx_r):
            return forget_update(ctx, data, st, batch.indices, idx_r, key, hp, total_steps)

        return batch_at(state.retain_order, batch.step, B, paired, state, batches=n_f), {}
    t = ce_step(ctx, data, TrainState(state.train.params, state.train.batch_stats, state.opt3), batch.indices, key)
    return state._replace(train=state.train.replace(params=t.params, batch_stats=t.batch_stats), opt3=t.opt_state), {}


def plan(ctx: StaticContext) -> Plan:
    """Stage 1: one pass over D_f; stage 2: E epochs of (draw D_r order, forget round, retain round)."""
    s = ctx.static
    B = s["batch_size"]
    return (Phase("stage1", 1, passes=(Pass("stage1", "forget", B),)),
            Phase("stage2", s["epochs"], key=(1,), on_epoch="draw_retain", count="epochs",
                  passes=(Pass("forget", "forget", B, key=(0,)), Pass("retain", "retain", B, key=(2,)))))


SPEC = MethodSpec(
    name="fcs", init=init, update=update, plan=plan,
    defaults={"epochs": 8, "batch_size": 256, "temperature": 1.15, "eta_min": 1e-6,
              "learning_rate": 5e-3, "momentum": 0.9, "weight_decay": 0.0,
              "forget_learning_rate": 3e-4, "forget_momentum": 0.9, "forget_weight_decay": 0.0,
              "retain_learning_rate": 1e-3, "retain_momentum": 0.9, "retain_weight_decay": 1e-2},
    search_space={**generic_space(), "retain_learning_rate": LR, "retain_weight_decay": WD,
                  "forget_learning_rate": LR, "forget_weight_decay": WD, "temperature": TEMP, "eta_min": ETA},
    static=frozenset({"epochs", "batch_size"}),
    ragged=frozenset({"epochs"}),
    domains={**generic_domains(), "temperature": D_TEMP, "eta_min": nonneg("the cosine schedule's final learning rate"),
             "forget_learning_rate": D_LR, "forget_momentum": D_MOM, "forget_weight_decay": D_WD,
             "retain_learning_rate": D_LR, "retain_momentum": D_MOM, "retain_weight_decay": D_WD},
    doc="uniform-KL on D_f, then contrastive forget rounds (per-step cosine) + retain rounds (lr x B/64)",
)
