"""NG+ — negative gradient plus retain descent (``docs/methods.md`` §4.4).

Reference: ``munl/unlearning/neggradplus.py`` (adapted from the meghdadk/SCRUB notebooks;
Kurmanji et al., "Towards Unbounded Machine Unlearning", arXiv 2302.09880).

Update rule. One epoch = one pass over D_r (shuffled, batch B). The epoch's shuffle of D_f is cut
into n_f' = ceil(n_f / B) batches (last one possibly partial) and retain step t = 0, 1, ... is
paired with forget batch t mod n_f' (``zip(retain_loader, cycle(forget_loader))``: cycle caches
the first pass, so the same batches recur in the same order). Per step

    L(theta) = alpha * [CE(f(x_r), y_r) + (lambda / 2) * ||theta - theta_0||^2]
               - (1 - alpha) * CE(f(x_f), y_f)
    theta <- SGD(lr, mu, wd).step(theta, grad L)          (no schedule)

with theta_0 the original parameters. CE means are over the examples actually present (the
recurring partial forget batch is evaluated at its own static shape, selected with ``lax.switch``
in ``engine.passes.batch_at``, which is exact in both BatchNorm modes).

Quirk flags and faithful defaults (``docs/methods.md`` §5 #7, #8):
  ``bn_mode="eval"`` (faithful): the reference calls ``model.eval()`` for the whole run, so
    BatchNorm uses theta_0's running statistics and never updates them, and TinyViT drop-path is
    off. ``"train"`` (clean): batch statistics, running stats updated by the retain forward then
    the forget forward (the reference's forward order).
  ``l2_to_init`` (lambda, array hyperparameter, default 0.0, never searched): the reference's
    config attribute is an un-annotated dataclass constant 0.0, so the term vanishes.
  ``eval_attention_biases="frozen"`` (faithful, TinyViT only, eval mode only): the reference's
    eval-mode forward uses a cached bias table, so the loss does not depend on the attention
    biases — but its ``l2_penalty(model, model_init, 0.0)`` term touches every parameter that
    requires grad, so they get a *zero* gradient, not ``None``, and SGD still applies coupled
    weight decay and momentum to them. jaxmu scales their gradient by 0 before the optimizer
    (``grad_scale``). ``docs/methods.md`` §5 said they were frozen entirely (no update, no decay,
    no momentum); that was wrong and is not followed here (issue 13). ``"trainable"`` (clean)
    differentiates them.

Defaults: lr 0.01, mu 0.9, wd 0, E 10, B 256, alpha 0.95. Search: G + alpha: U01. Every
architecture. Randomness: epoch key k = fold_in(key, e); retain pass fold_in(k, 0), forget
shuffle fold_in(k, 1); per step retain/forget forward keys fold_in(step_key, 0/1) (train mode).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax

from jaxmu.engine.losses import cross_entropy, forward, sq_distance
from jaxmu.engine.passes import batch_at, gather, order, pass_batches
from jaxmu.engine.state import TrainState
from jaxmu.engine.steps import loss_step
from jaxmu.methods import layouts
from jaxmu.methods.plan import Batch, Pass, Phase, Plan
from jaxmu.methods._base import (U01, MethodSpec, OneOf, SplitData, StaticContext, generic_domains,
    generic_space, nonneg, unit)

BN_MODES = ("eval", "train")


def ng_step(ctx: StaticContext, data: SplitData, state: TrainState, idx_r, forget_order, j, theta0,
            hp, key, *, train: bool, grad_scale=None) -> TrainState:
    """One NG+ step: retain batch ``idx_r`` paired with batch ``j`` of ``forget_order`` (cut in batches
    of B, the partial last one at its own shape: ``engine.passes.batch_at``); ``grad_scale`` (a tree
    of 0/1) zeroes the gradient of leaves the reference's loss does not reach."""
    alpha, lam, B = hp["alpha"], hp["l2_to_init"], ctx.static["batch_size"]
    x_r, y_r = gather(ctx, data, idx_r)

    def forget_ce(operands, idx_f):
        x_f, y_f = gather(ctx, data, idx_f)
        logits, bs = forward(ctx, *operands, x_f, train=train, key=jax.random.fold_in(key, 1))
        return cross_entropy(logits, y_f), bs

    def loss_fn(p):
        logits, bs = forward(ctx, p, state.batch_stats, x_r, train=train, key=jax.random.fold_in(key, 0))
        ce_f, bs = batch_at(forget_order, j, B, forget_ce, (p, bs))
        ce_r = cross_entropy(logits, y_r)
        return alpha * (ce_r + 0.5 * lam * sq_distance(p, theta0)) - (1.0 - alpha) * ce_f, bs

    return loss_step(state, loss_fn, grad_scale=grad_scale)


class State(NamedTuple):
    """The model being trained, the anchor theta_0 and this epoch's shuffle of D_f."""

    train: TrainState
    theta0: Any
    forget_order: jax.Array


def init(params, batch_stats, hp, key, ctx: StaticContext, data: SplitData) -> State:
    del key, ctx
    return State(TrainState.create(params, batch_stats, hp), params, data.forget)


def update(state: State, batch: Batch, hp, key, ctx: StaticContext, *, phase: str):
    """``draw_forget`` (epoch start): shuffle D_f with ``fold_in(k_e, 1)``; ``step``: one NG+ step."""
    if phase == "draw_forget":
        return state._replace(forget_order=order(batch.data.forget, jax.random.fold_in(key, 1), True)), {}
    train = ctx.static["bn_mode"] == "train"
    reached = None if train else layouts.eval_grad_tree(ctx, state.theta0, ctx.static["eval_attention_biases"])
    scale = None if reached is None else jax.tree_util.tree_map(lambda r: 1.0 if r else 0.0, reached)
    j = batch.step % pass_batches(state.forget_order.shape[0], ctx.static["batch_size"])  # cycle(forget_loader)
    new = ng_step(ctx, batch.data, state.train, batch.indices, state.forget_order, j, state.theta0, hp, key,
                  train=train, grad_scale=scale)
    return state._replace(train=new), {}


def plan(ctx: StaticContext) -> Plan:
    """E epochs: draw this epoch's forget batches, then one pass over D_r (pass key fold_in(k_e, 0))."""
    s = ctx.static
    return (Phase("unlearn", s["epochs"], on_epoch="draw_forget",
                  passes=(Pass("step", "retain", s["batch_size"], key=(0,)),), count="epochs"),)


SPEC = MethodSpec(
    name="ng_plus", init=init, update=update, plan=plan,
    defaults={"epochs": 10, "batch_size": 256, "learning_rate": 0.01, "momentum": 0.9, "weight_decay": 0.0,
              "alpha": 0.95, "l2_to_init": 0.0, "bn_mode": "eval", "eval_attention_biases": "frozen"},
    search_space={**generic_space(), "alpha": U01},
    static=frozenset({"epochs", "batch_size", "bn_mode", "eval_attention_biases"}),
    ragged=frozenset({"epochs"}),
    domains={**generic_domains(), "alpha": unit("a weight between the two losses"),
             "l2_to_init": nonneg("the weight of the L2 pull towards the original model"),
             "bn_mode": OneOf(BN_MODES, "BatchNorm mode of the training passes"),
             "eval_attention_biases": OneOf(layouts.ATTENTION_BIAS_MODES, "TinyViT attention biases in eval mode")},
    doc="alpha * CE(D_r) - (1 - alpha) * CE(D_f), cyclic forget batches, eval-mode BatchNorm",
)
