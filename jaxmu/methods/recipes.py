"""Training recipes shared by several methods: their init / update / plan pieces.

* ``sgd_init`` / ``ce_update`` / ``cosine_finetune_plan`` — FT (``methods.md`` §4.1), reused by
  CT (§4.16) after its kernel transpose and, ascending, by GA (§4.2): E epochs over D_r
  (shuffled, unaugmented, train mode) of ``theta <- SGD(lr_e, mu, wd).step(theta, grad CE)``,
  ``lr_e = lr (1 + cos(pi e / E)) / 2``.
* ``fk_finetune`` — the CF-k / EU-k loop (reference ``fk_finetune``, §4.4-4.5): plain SGD on the
  trainable leaves of CE + (lambda/2) sum_T ||P - anchor||^2, anchor = the starting parameters,
  0-based step decay of the learning rate per epoch.
"""

from __future__ import annotations

from jaxmu.engine.optim import step_decay_factor
from jaxmu.engine.passes import run_epochs, run_pass
from jaxmu.engine.state import TrainState
from jaxmu.engine.steps import ce_step, masked_ce_step
from jaxmu.methods._base import SplitData, StaticContext
from jaxmu.methods.plan import Batch, Pass, Phase, Plan, Schedule

BN_MODES = ("eval", "train")


def sgd_init(params, batch_stats, hp, key, ctx, data) -> TrainState:
    """A fresh PyTorch SGD(lr, mu, wd) state (momentum 0) on the model as it arrives."""
    del key, ctx, data
    return TrainState.create(params, batch_stats, hp)


def ce_update(state: TrainState, batch: Batch, hp, key, ctx: StaticContext, *, phase: str):
    """One SGD step on CE of the batch (train mode; ``phase="ascend"``: on -CE, gradient ascent)."""
    del hp
    sign = -1.0 if phase == "ascend" else 1.0
    return ce_step(ctx, batch.data, state, batch.indices, key, sign=sign), {}


def cosine_finetune_plan(ctx: StaticContext) -> Plan:
    """FT's plan: E epochs of SGD on CE over D_r (shuffled), cosine learning rate per epoch."""
    s = ctx.static
    return (Phase("finetune", s["epochs"], passes=(Pass("descend", "retain", s["batch_size"]),),
                  schedule=Schedule("cosine")),)


def fk_init(params, batch_stats, hp) -> TrainState:
    """Plain PyTorch SGD (momentum 0, weight decay 0) at the base learning rate."""
    return TrainState.create(params, batch_stats,
                             {"learning_rate": hp["learning_rate"], "momentum": 0.0, "weight_decay": 0.0})


def fk_epoch_lr(hp, e, E):
    """lr_e = learning_rate * sgda_decay_rate ** m(e), 0-based step decay (methods.md §2.5)."""
    return hp["learning_rate"] * step_decay_factor(e, E, hp["sgda_decay_rate"], one_based=False)


def fk_update(ctx: StaticContext, data: SplitData, state: TrainState, idx, key, *, mask, anchor, hp,
              bn_mode: str = "eval", augment: str = "none") -> TrainState:
    """One step: CE + (lambda/2) sum_T ||P - anchor||^2, SGD on the trainable leaves only."""
    return masked_ce_step(ctx, data, state, idx, key, train=bn_mode == "train", trainable=mask,
                          static_trainable=True, anchor=anchor, l2_weight=hp["sgda_weight_decay"],
                          augment=augment)


def fk_finetune(ctx: StaticContext, data: SplitData, params, batch_stats, hp, key, *, static, mask,
                augment: str = "none"):
    """The shared CF-k / EU-k loop (reference ``fk_finetune``); the anchor is ``params``."""
    E, B = static["epochs"], static["batch_size"]
    bn_mode = static["bn_mode"]
    anchor = params
    state = fk_init(params, batch_stats, hp)

    def step(s, idx, k):
        return fk_update(ctx, data, s, idx, k, mask=mask, anchor=anchor, hp=hp, bn_mode=bn_mode, augment=augment)

    def epoch(st, e, k):
        st = st.with_lr(fk_epoch_lr(hp, e, E))
        return run_pass(st, data.retain, B, k, step)

    state = run_epochs(state, E, key, epoch)
    return state.params, state.batch_stats
