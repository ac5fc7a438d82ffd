"""MSG — Masked Small Gradients (``docs/methods.md`` §4.13; reference ``munl/unlearning/kgltop2.py``,
a port of a NeurIPS 2023 Machine Unlearning Challenge solution; Deep Unlearn, arXiv 2410.01276).

1. Gradient pass (``get_grads_for_snip``), no optimizer step: R' = a uniformly random subset of
   D_r of size n_f (``permutation(n_r)[:n_f]``; all of D_r if n_f > n_r), iterated shuffled in
   batches of 64 (fixed), then D_f shuffled in batches of B (partial last batches kept)::

       G = sum_{b in R'} grad CE(b) - sum_{b in D_f} grad CE(b)

   ``grad_pass_bn="train"`` (faithful): train mode, so these forwards UPDATE the BatchNorm running
   statistics batch after batch, and the fine-tune starts from them; ``"eval"``: untouched.
2. For every convolution kernel W (4-D ``kernel`` leaves: stem, 3x3, 1x1 downsample, TinyViT
   convs incl. depthwise): S = the ``n = round(rho numel(W))`` entries of smallest ``|G_W|``
   (``methods.ranking``: ties by flat index, n a traced threshold, so rho is an array);
   ``W = W_new ~ N(0, 2 / fan_out)`` on S (kaiming normal, fan_out mode, ReLU gain;
   fan_out = O kh kw), W0 elsewhere; multiplier ``M_W = 1.0 on S, 0.1 elsewhere``.
   ``mask_scope="per_layer"`` (faithful) or ``"global"`` (one ranking over all conv kernels).
   Normalisation, linear layers and biases: neither re-initialised nor masked (multiplier 1).
3. Fine-tune on D_r (shuffled, batch B), train mode, CE, E epochs, a fresh SGD(lr, mu, wd); the
   multiplier scales the raw gradient before decay and momentum. Per-epoch linear up/down lr
   (``LinearAnnealingLR``): a = floor((E+1)/2), T = E+1, s = e+1 (e 0-based)::

       lr_e = lr s / a  if s <= a  else  lr (T - s) / (T - a)      (E = 5: lr [1/3, 2/3, 1, 2/3, 1/3])

Static: ``epochs`` (ragged under tuning), ``batch_size``, the flags; arrays: ``init_rate`` (rho),
the SGD's (defaults: ``DefaultKGLTop2Config``). Needs convolutions: ``mlp`` raises
``MethodError``. Known discrepancies (rho's float32 product, tie order, random streams): §4.13.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxmu.engine.losses import cross_entropy
from jaxmu.engine.optim import linear_annealing_factor
from jaxmu.engine.state import TrainState
from jaxmu.engine.steps import batch_loss, ce_step
from jaxmu.methods._base import (U01, MethodError, MethodSpec, OneOf, SplitData, StaticContext,
    generic_domains, generic_space, unit)
from jaxmu.methods.layouts import require_convs
from jaxmu.methods.plan import Batch, Pass, Phase, Plan, epoch_count
from jaxmu.methods.ranking import smallest_mask, smallest_masks
from jaxmu.methods.reinit import kaiming_normal_fan_out
from jaxmu.models.trees import conv_kernel_indices, unflatten_like

R_BATCH = 64  # the reference's fixed batch size of the R' gradient pass
LOW_MULT = 0.1  # gradient multiplier of the kept (not re-initialised) conv entries

MASK_SCOPES = ("per_layer", "global")
BN_MODES = ("train", "eval")


def select(params, G, rho, scope: str):
    """Per-conv-kernel masks S (a list aligned with ``conv_kernel_indices``): the smallest |G|."""
    leaves_g = jax.tree_util.tree_leaves(G)
    absg = [jnp.abs(leaves_g[i]) for i in conv_kernel_indices(params)]
    if scope == "per_layer":
        return [smallest_mask(a, rho) for a in absg]
    if scope == "global":
        return smallest_masks(absg, rho)
    raise MethodError(f"msg: mask_scope must be one of {MASK_SCOPES}, got {scope!r}")


def reinit(params, masks, key):
    """``(params', multipliers)``: conv kernel j re-drawn on S (key ``fold_in(key, j)``); multiplier
    1 on S, 0.1 elsewhere (conv kernels), scalar 1 on every other leaf."""
    leaves = jax.tree_util.tree_leaves(params)
    new, mult = list(leaves), [jnp.float32(1.0)] * len(leaves)
    for j, (i, m) in enumerate(zip(conv_kernel_indices(params), masks)):
        w_new = kaiming_normal_fan_out(jax.random.fold_in(key, j), leaves[i].shape).astype(leaves[i].dtype)
        new[i] = jnp.where(m, w_new, leaves[i])
        mult[i] = jnp.where(m, 1.0, LOW_MULT).astype(jnp.float32)
    return unflatten_like(params, new), unflatten_like(params, mult)


class State(NamedTuple):
    """The model, the gradient sum G, the multipliers (after the re-initialisation) and R'."""

    train: TrainState
    G: Any
    mult: Any
    subset: jax.Array


def init(params, batch_stats, hp, key, ctx: StaticContext, data: SplitData) -> State:
    require_convs(ctx, params, "msg", "re-initialises and masks convolution kernels")
    n_sub = min(data.forget.shape[0], data.retain.shape[0])
    return State(TrainState.create(params, batch_stats, hp), jax.tree_util.tree_map(jnp.zeros_like, params),
                 None, data.retain[:n_sub])


def update(state: State, batch: Batch, hp, key, ctx: StaticContext, *, phase: str):
    """``draw_subset`` (hook, key k_0): R' from ``fold_in(k_0, 0)``; ``grad_retain`` / ``grad_forget``:
    add +/- grad CE (step 1); ``reinit`` (one-shot, key fold_in(key, 1)): step 2 and a fresh SGD;
    ``set_lr`` (hook): the linear up/down rate; ``step``: one masked SGD step (step 3)."""
    s, data = ctx.static, batch.data
    if phase == "draw_subset":
        perm = jax.random.permutation(jax.random.fold_in(key, 0), data.retain.shape[0])
        return state._replace(subset=data.retain[perm[:state.subset.shape[0]]]), {}
    if phase in ("grad_retain", "grad_forget"):
        sign = 1.0 if phase == "grad_retain" else -1.0
        loss = batch_loss(ctx, data, state.train.batch_stats, batch.indices, key,
                          lambda z, y: sign * cross_entropy(z, y), train=s["grad_pass_bn"] == "train")
        g, nbs = jax.grad(loss, has_aux=True)(state.train.params)
        return state._replace(G=jax.tree_util.tree_map(jnp.add, state.G, g),
                              train=state.train.replace(batch_stats=nbs)), {}
    if phase == "reinit":
        masks = select(state.train.params, state.G, hp["init_rate"], s["mask_scope"])
        params, mult = reinit(state.train.params, masks, key)
        return state._replace(train=TrainState.create(params, state.train.batch_stats, hp), mult=mult), {}
    if phase == "set_lr":
        factor = linear_annealing_factor(batch.epoch, epoch_count(hp, ctx))
        return state._replace(train=state.train.with_lr(hp["learning_rate"] * factor)), {}
    return state._replace(train=ce_step(ctx, data, state.train, batch.indices, key, grad_scale=state.mult)), {}


def plan(ctx: StaticContext) -> Plan:
    """Gradient epoch (the method key, so k_0 = fold_in(key, 0): R' pass fold_in(k_0, 1), D_f pass
    fold_in(k_0, 2)), re-initialisation on fold_in(key, 1), fine-tune epochs on fold_in(fold_in(key, 2), e)."""
    s = ctx.static
    return (Phase("gradients", 1, on_epoch="draw_subset",
                  passes=(Pass("grad_retain", "retain", R_BATCH, key=(1,), subset="subset"),
                          Pass("grad_forget", "forget", s["batch_size"], key=(2,)))),
            Phase("reinit", 0, once="reinit", key=(1,)),
            Phase("finetune", s["epochs"], on_epoch="set_lr", passes=(Pass("step", "retain", s["batch_size"]),),
                  key=(2,), count="epochs"))


SPEC = MethodSpec(
    name="msg", init=init, update=update, plan=plan,
    defaults={"epochs": 5, "batch_size": 64, "init_rate": 0.3, "learning_rate": 1e-3, "momentum": 0.9,
              "weight_decay": 5e-4, "mask_scope": "per_layer", "grad_pass_bn": "train"},
    search_space={**generic_space(), "init_rate": U01},
    static=frozenset({"epochs", "batch_size", "mask_scope", "grad_pass_bn"}),
    ragged=frozenset({"epochs"}),
    domains={**generic_domains(), "init_rate": unit("the fraction of conv weights re-initialised"),
             "mask_scope": OneOf(MASK_SCOPES, "where the smallest gradients are ranked"),
             "grad_pass_bn": OneOf(BN_MODES, "BatchNorm mode of the gradient pass")},
    doc="re-initialise the smallest-gradient conv weights, fine-tune with a 1/0.1 gradient multiplier",
    applies_to=("cnn", "resnet18", "tinyvit_11m"),
)
