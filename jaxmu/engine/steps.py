"""Gradient steps on a ``TrainState`` (``docs/methods.md`` §2.3-2.4).

* ``loss_step``: one optimizer step on an arbitrary loss ``params -> (loss, new batch_stats)``;
  ``grad_scale`` / ``trainable`` as in ``TrainState.apply_gradients``.
* ``batch_loss`` / ``batch_step``: the loss ``loss(logits, y)`` of a batch as a function of the
  parameters / one step on it (CFW's class-weighted CE, FCS's uniform KL);
  ``ce_step``: one step on ``sign * CE(f_theta(x), y)`` (``sign=-1``: gradient ascent; MSG's
  ``grad_scale``).
* ``masked_ce_step``: CE (+ an L2 pull to an anchor) with frozen leaves (CF-k, EU-k, RNI).
* ``distill_step``: one teacher–student step: the frozen teacher's eval-mode logits ``t``, the
  student's train-mode logits ``s`` and the loss ``loss(t, s, y)`` (SCRUB, KDE, PRMQ).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import jax

from jaxmu.engine.losses import cross_entropy, forward, sq_distance, teacher_logits
from jaxmu.engine.passes import gather
from jaxmu.engine.state import TrainState

if TYPE_CHECKING:  # the methods package imports this module
    from jaxmu.methods._base import SplitData, StaticContext

LossFn = Callable[[Any], tuple[jax.Array, Any]]  # params -> (loss, new batch_stats)


def loss_step(state: TrainState, loss_fn: LossFn, *, grad_scale=None, trainable=None) -> TrainState:
    """One optimizer step (hyperparameters from the state) on ``loss_fn``; new BN statistics kept."""
    grads, bs = jax.grad(loss_fn, has_aux=True)(state.params)
    return state.apply_gradients(grads, grad_scale=grad_scale, trainable=trainable, batch_stats=bs)


def batch_loss(ctx: StaticContext, data: SplitData, batch_stats, idx, key,
               loss: Callable[[jax.Array, jax.Array], jax.Array], *, train: bool = True) -> LossFn:
    """``params -> (loss(logits, y), new batch_stats)`` on the unaugmented batch ``idx``."""
    x, y = gather(ctx, data, idx)

    def loss_fn(p):
        logits, bs = forward(ctx, p, batch_stats, x, train=train, key=key)
        return loss(logits, y), bs

    return loss_fn


def batch_step(ctx: StaticContext, data: SplitData, state: TrainState, idx, key,
               loss: Callable[[jax.Array, jax.Array], jax.Array], *, train: bool = True,
               grad_scale=None) -> TrainState:
    """One optimizer step on ``loss(logits, y)`` of the batch ``idx`` (``batch_loss``)."""
    return loss_step(state, batch_loss(ctx, data, state.batch_stats, idx, key, loss, train=train),
                     grad_scale=grad_scale)


def ce_step(ctx: StaticContext, data: SplitData, state: TrainState, idx, key, *,
            sign: float = 1.0, train: bool = True, grad_scale=None) -> TrainState:
    """One step on ``sign * CE`` of the batch ``idx`` (``sign=-1``: gradient ascent)."""
    return batch_step(ctx, data, state, idx, key, lambda z, y: sign * cross_entropy(z, y), train=train,
                      grad_scale=grad_scale)


def distill_step(ctx: StaticContext, data: SplitData, teacher, state: TrainState, idx, key,
                 loss: Callable[[jax.Array, jax.Array, jax.Array], jax.Array]) -> TrainState:
    """One step on ``loss(t, s, y)``: teacher ``(params, batch_stats)`` frozen in eval mode,
    student in train mode (dropout/step key ``key``) on the unaugmented batch ``idx``."""
    x, y = gather(ctx, data, idx)
    t = teacher_logits(ctx, *teacher, x)

    def loss_fn(p):
        s, bs = forward(ctx, p, state.batch_stats, x, train=True, key=key)
        return loss(t, s, y), bs

    return loss_step(state, loss_fn)


def masked_ce_step(ctx: StaticContext, data: SplitData, state: TrainState, idx, key, *, train: bool,
                   trainable, static_trainable: bool = False, anchor=None, l2_weight=None,
                   augment: str = "none") -> TrainState:
    """One optimizer step on CE (+ (l2_weight/2) * sum_trainable ||P - anchor||^2) of batch ``idx``.

    ``trainable`` freezes leaves completely (no gradient, decay or momentum). When it is a
    static tree of Python bools (``static_trainable``) frozen leaves are also wrapped in
    ``stop_gradient`` so XLA does not back-propagate into a frozen prefix, and the L2 term sums
    over the trainable leaves only. ``augment`` selects the input transform (EU-k: train).
    """
    if anchor is not None and not static_trainable:
        raise ValueError("the L2-to-anchor term needs a static trainable mask")
    k_aug, k_fwd = jax.random.fold_in(key, 0), jax.random.fold_in(key, 1)
    x, y = gather(ctx, data, idx, k_aug if augment != "none" else None, augment=augment)

    def loss_fn(p):
        if static_trainable:
            p = jax.tree_util.tree_map(lambda m, v: v if m else jax.lax.stop_gradient(v), trainable, p)
        logits, bs = forward(ctx, p, state.batch_stats, x, train=train, key=k_fwd)
        loss = cross_entropy(logits, y)
        if anchor is not None and any(jax.tree_util.tree_leaves(trainable)):
            loss = loss + 0.5 * l2_weight * sq_distance(p, anchor, trainable)
        return loss, bs

    return loss_step(state, loss_fn, trainable=trainable)
