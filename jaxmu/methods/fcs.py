"""FCS — uniform-KL on D_f, then contrastive forget rounds + retain rounds (``methods.md`` §4.12).

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

Randomness: stage 1 pass key ``fold_in(key, 0)``; stage-2 epoch key ``k_e = fold_in(fold_in(key, 1), e)``;
forget round: D_f order ``fold_in(fold_in(k_e, 0), 0)``, paired D_r order ``fold_in(fold_in(k_e, 1), 0)``,
step b key ``fold_in(fold_in(k_e, 0), b + 1)``; retain round pass key ``fold_in(k_e, 2)``.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxmu.engine.losses import forward
from jaxmu.engine.optim import set_hyperparam
from jaxmu.engine.passes import gather, order, pass_batches, run_epochs, run_pass
from jaxmu.engine.state import TrainState
from jaxmu.engine.steps import ce_step, loss_step
from jaxmu.methods._base import (
    D_LR,
    D_MOM,
    D_TEMP,
    D_WD,
    ETA,
    LR,
    TEMP,
    WD,
    MethodSpec,
    SplitData,
    StaticContext,
    generic_domains,
    generic_space,
    nonneg,
)


class FCSState(NamedTuple):
    params: Any
    batch_stats: Any
    opt1: Any
    opt2: Any
    opt3: Any
    step2: jax.Array  # number of O2 steps taken (drives the per-step cosine)


def init(params, batch_stats, hp, batch_size: int) -> FCSState:
    def opt(prefix):
        return TrainState.create(params, batch_stats, hp, prefix=prefix).opt_state

    opt3 = set_hyperparam(opt("retain_"), "learning_rate", hp["retain_learning_rate"] * (batch_size / 64.0))
    return FCSState(params, batch_stats, opt(""), opt("forget_"), opt3, jnp.zeros((), jnp.int32))


def kl_to_uniform(logits) -> jax.Array:
    """KLDivLoss(batchmean)(log_softmax(z), 1/C) = mean_i sum_c (1/C)(log(1/C) - log p_ic)."""
    c = logits.shape[-1]
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return jnp.mean(jnp.sum((1.0 / c) * (math.log(1.0 / c) - logp), axis=-1))


def contrastive_loss(z_f, z_r, temperature) -> jax.Array:
    """-mean over all B_f x B_r entries of log_softmax(Z_f Z_r^T / T) along the retain axis."""
    s = (z_f @ z_r.T) / temperature
    return -jnp.mean(jax.nn.log_softmax(s, axis=-1))


def cosine_lr(t, total, lr, eta_min):
    """Per-step CosineAnnealingLR: eta_min + (lr - eta_min)(1 + cos(pi t / T)) / 2."""
    return eta_min + (lr - eta_min) * 0.5 * (1.0 + jnp.cos(math.pi * t.astype(jnp.float32) / total))


def stage1_update(ctx, data, st: FCSState, idx, key) -> FCSState:
    x, _ = gather(ctx, data, idx)

    def loss_fn(p):
        z, bs = forward(ctx, p, st.batch_stats, x, train=True, key=key)
        return kl_to_uniform(z), bs

    t = loss_step(TrainState(st.params, st.batch_stats, st.opt1), loss_fn)
    return st._replace(params=t.params, batch_stats=t.batch_stats, opt1=t.opt_state)


def forget_update(ctx, data, st: FCSState, idx_f, idx_r, key, hp, total_steps: int) -> FCSState:
    """One O2 step of the forget round on (forget batch, retain batch)."""
    x_f, _ = gather(ctx, data, idx_f)
    x_r, _ = gather(ctx, data, idx_r)
    k_f, k_r = jax.random.split(key)
    lr = cosine_lr(st.step2, total_steps, hp["forget_learning_rate"], hp["eta_min"])
    opt2 = set_hyperparam(st.opt2, "learning_rate", lr)

    def loss_fn(p):
        z_f, bs = forward(ctx, p, st.batch_stats, x_f, train=True, key=k_f)
        z_r, bs = forward(ctx, p, bs, x_r, train=True, key=k_r)
        return contrastive_loss(z_f, jax.lax.stop_gradient(z_r), hp["temperature"]), bs

    t = loss_step(TrainState(st.params, st.batch_stats, opt2), loss_fn)
    return st._replace(params=t.params, batch_stats=t.batch_stats, opt2=t.opt_state, step2=st.step2 + 1)


def forget_round(ctx, data, st: FCSState, B: int, key, hp, total_steps: int) -> FCSState:
    """zip(shuffled D_f batches, shuffled D_r batches): full/full pairs in a scan, then the tail step."""
    n_f, n_r = data.forget.shape[0], data.retain.shape[0]
    kf, kr = jax.random.fold_in(key, 0), jax.random.fold_in(key, 1)
    seq_f = order(data.forget, jax.random.fold_in(kf, 0), True)
    seq_r = order(data.retain, jax.random.fold_in(kr, 0), True)
    steps = min(pass_batches(n_f, B), pass_batches(n_r, B))
    both_full = min(n_f // B, n_r // B, steps)
    step_key = lambda b: jax.random.fold_in(kf, b + 1)  # noqa: E731
    if both_full:
        bf = seq_f[: both_full * B].reshape(both_full, B)
        br = seq_r[: both_full * B].reshape(both_full, B)
        keys = jax.vmap(step_key)(jnp.arange(both_full))
        st, _ = jax.lax.scan(
            lambda c, xs: (forget_update(ctx, data, c, xs[0], xs[1], xs[2], hp, total_steps), None),
            st, (bf, br, keys))
    for b in range(both_full, steps):  # at most one step with a partial batch
        st = forget_update(ctx, data, st, seq_f[b * B: (b + 1) * B], seq_r[b * B: (b + 1) * B], step_key(b), hp,
                           total_steps)
    return st


def run(ctx: StaticContext, data: SplitData, params, batch_stats, hp, key, *, static):
    E, B = static["epochs"], static["batch_size"]
    total_steps = max(int(pass_batches(data.forget.shape[0], B) * E), 1)
    st = init(params, batch_stats, hp, B)
    st = run_pass(st, data.forget, B, jax.random.fold_in(key, 0), lambda s, idx, k: stage1_update(ctx, data, s, idx, k))

    def retain_step(s: FCSState, idx, k) -> FCSState:
        t = ce_step(ctx, data, TrainState(s.params, s.batch_stats, s.opt3), idx, k)
        return s._replace(params=t.params, batch_stats=t.batch_stats, opt3=t.opt_state)

    def epoch(s, e, k):
        s = forget_round(ctx, data, s, B, k, hp, total_steps)
        return run_pass(s, data.retain, B, jax.random.fold_in(k, 2), retain_step)

    st = run_epochs(st, E, jax.random.fold_in(key, 1), epoch)
    return st.params, st.batch_stats


SPEC = MethodSpec(
    name="fcs",
    run=run,
    defaults={"epochs": 8, "batch_size": 256, "temperature": 1.15, "eta_min": 1e-6,
              "learning_rate": 5e-3, "momentum": 0.9, "weight_decay": 0.0,
              "forget_learning_rate": 3e-4, "forget_momentum": 0.9, "forget_weight_decay": 0.0,
              "retain_learning_rate": 1e-3, "retain_momentum": 0.9, "retain_weight_decay": 1e-2},
    search_space={**generic_space(), "retain_learning_rate": LR, "retain_weight_decay": WD,
                  "forget_learning_rate": LR, "forget_weight_decay": WD, "temperature": TEMP, "eta_min": ETA},
    static=frozenset({"epochs", "batch_size"}),
    domains={**generic_domains(), "temperature": D_TEMP, "eta_min": nonneg("the cosine schedule's final learning rate"),
             "forget_learning_rate": D_LR, "forget_momentum": D_MOM, "forget_weight_decay": D_WD,
             "retain_learning_rate": D_LR, "retain_momentum": D_MOM, "retain_weight_decay": D_WD},
    doc="uniform-KL on D_f, then contrastive forget rounds (per-step cosine) + retain rounds (lr x B/64)",
)
