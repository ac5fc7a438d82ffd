"""SalUn — saliency-masked random relabelling (``docs/methods.md`` §4.5).

Reference: ``munl/unlearning/salun.py`` (adapted from OPTML-Group/Unlearn-Saliency
``Classification/generate_mask.py`` and ``unlearn/RL.py``; Fan et al., "SalUn: Empowering Machine
Unlearning via Gradient-based Weight Saliency", arXiv 2310.12508).

Phase 1 — saliency mask, on a copy of theta_0 in eval mode, over D_f (shuffled, batch B, n_b
batches, partial last batch kept). With g_b = grad[-CE] of batch b:

    "cumulative" (faithful):  A = sum_b G_b,  G_b = sum_{i<=b} g_i  = sum_i (n_b - i + 1) g_i
    "sum"        (clean):     A = sum_b g_b

(the reference zeroes the gradients of a *different* optimizer, so the copy's ``.grad`` is never
cleared and the running sum G_b is what gets accumulated). Then all N entries of |A| over every
trainable tensor are ranked in ONE global list by |A| descending, ties broken by flat index
(stable; jaxmu's flat order is the params tree-leaf order), and

    mask = 1 on the first floor(N * tau) entries, 0 elsewhere.

tau (``threshold``) is an array hyperparameter: the mask is ``rank < floor(N * tau)`` with ranks
from one stable argsort, so tau may differ per model under vmap. floor(N * tau) is computed in
float32 (tau is float32 in the stack); for N > 2^24 or N * tau within float32 rounding of an
integer it may differ by one entry from the reference's float64 ``int(N * tau)``.

Phase 2 — E epochs of exactly SRL (``random_relabel``, §4.3; same relabelling mechanism and keys,
train mode, CE) with the raw gradient multiplied by the mask before SGD(lr, mu, wd): coupled
weight decay and momentum act after masking, so masked-out weights still decay. No schedule.

Quirk flags and faithful defaults:
  ``mask_accumulation="cumulative"`` (faithful, §5 #10) / ``"sum"`` (clean).
  ``relabel="sequence"`` (faithful, §5 #9) / ``"independent"`` (clean), see ``relabel``.
  ``eval_attention_biases="frozen"`` (faithful, TinyViT only): the eval-mode mask pass gives
    attention biases zero saliency (the reference's cached eval bias table gets no gradient),
    so they enter the ranking at |A| = 0; ``"trainable"`` (clean) differentiates them.

Defaults: lr 0.01, mu 0, wd 0, E 10, B 256, tau 0.5. Tuned runs use mu 0.9 (``tune_overrides``):
the reference's SalUn search space includes the generic optimizer momentum, fixed at 0.9
(``munl/settings.py``), so every tuned trial and the final run of a sweep use SGD momentum 0.9
although the config default is 0; a sweep called with an explicit ``momentum`` keeps it. Search: G + threshold:
U01. Dead (accepted, ignored, never searched): the reference's ``mask_optimizer.{learning_rate,
momentum, weight_decay}``, here ``mask_learning_rate``, ``mask_momentum``, ``mask_weight_decay``.
Known discrepancy: the reference's tie order (unstable argsort, PyTorch parameter order) is not
reproduced. Randomness: mask-pass shuffle from fold_in(key, 2); relabelled epochs from
fold_in(key, 1) and the label sequence from ``key`` — identical to ``random_relabel``, so tau = 1
reproduces SRL exactly.

Structure: SRL's state (``jaxmu.methods.relabel.State``) with its ``mask`` filled by a one-shot
``mask`` step (a phase of 0 epochs on ``fold_in(key, 2)``; the saliency pass over D_f is the
engine's ``run_pass`` on that key), then SRL's relabelled phase with the mask as gradient scale.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxmu.engine.losses import cross_entropy, forward
from jaxmu.engine.passes import gather, run_pass
from jaxmu.methods import layouts, relabel
from jaxmu.methods._base import (U01, MethodError, MethodSpec, OneOf, SplitData, StaticContext,
    generic_domains, generic_space, unit)
from jaxmu.methods.plan import Batch, Phase, Plan
from jaxmu.methods.ranking import ranks, split_like

ACCUMULATION = ("cumulative", "sum")


def saliency(ctx: StaticContext, data: SplitData, params, batch_stats, batch_size: int, key, *,
             accumulation: str, grad_mask=None):
    """The accumulator A of phase 1 (a tree like ``params``), eval mode, D_f shuffled by ``key``.

    ``grad_mask``: tree of bools (False = leaf gets no gradient, e.g. TinyViT eval attention biases).
    """
    if accumulation not in ACCUMULATION:
        raise MethodError(f"salun.mask_accumulation must be one of {ACCUMULATION}, got {accumulation!r}")
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)

    def step(carry, idx, k):
        G, A = carry
        x, y = gather(ctx, data, idx)
        g = jax.grad(lambda p: -cross_entropy(forward(ctx, p, batch_stats, x, train=False)[0], y))(params)
        if grad_mask is not None:
            g = jax.tree_util.tree_map(lambda gi, m: gi if m else jnp.zeros_like(gi), g, grad_mask)
        G = jax.tree_util.tree_map(jnp.add, G, g)
        A = jax.tree_util.tree_map(jnp.add, A, G if accumulation == "cumulative" else g)
        return G, A

    _, A = run_pass((zeros, zeros), data.forget, batch_size, key, step)
    return A


def threshold_mask(A, tau):
    """0/1 float mask keeping the floor(N * tau) entries of largest |A| (ties: lower flat index first)."""
    leaves, treedef = jax.tree_util.tree_flatten(A)
    flat = jnp.concatenate([jnp.abs(a).ravel() for a in leaves]).astype(jnp.float32)
    rank = ranks(jnp.argsort(0.0 - flat, stable=True))  # 0 - x: no -0.0 keys, so exact ties stay ties
    k = jnp.floor(jnp.float32(flat.shape[0]) * jnp.asarray(tau, jnp.float32)).astype(jnp.int32)
    masks = split_like((rank < k).astype(jnp.float32), leaves)
    return jax.tree_util.tree_unflatten(treedef, [m.astype(a.dtype) for m, a in zip(masks, leaves)])


def make_mask(ctx, data, params, batch_stats, hp, key, *, static):
    grad_mask = layouts.eval_grad_tree(ctx, params, static["eval_attention_biases"])
    A = saliency(ctx, data, params, batch_stats, static["batch_size"], key,
                 accumulation=static["mask_accumulation"], grad_mask=grad_mask)
    return threshold_mask(A, hp["threshold"])


def init(params, batch_stats, hp, key, ctx: StaticContext, data: SplitData) -> relabel.State:
    """SRL's state with a mask slot (all zeros until the ``mask`` step fills it)."""
    return relabel.init(params, batch_stats, hp, key, ctx, data, mask=jax.tree_util.tree_map(jnp.zeros_like, params))


def update(state: relabel.State, batch: Batch, hp, key, ctx: StaticContext, *, phase: str):
    """``mask`` (one-shot, phase key ``fold_in(key, 2)``): phase 1 on theta_0; else SRL's steps."""
    if phase == "mask":
        t = state.train
        return state._replace(mask=make_mask(ctx, batch.data, t.params, t.batch_stats, hp, key, static=ctx.static)), {}
    return relabel.update(state, batch, hp, key, ctx, phase=phase)


def plan(ctx: StaticContext) -> Plan:
    """Phase 1: the mask (one-shot on ``fold_in(key, 2)``); phase 2: SRL's relabelled epochs."""
    return (Phase("mask", 0, once="mask", key=(2,)), relabel.relabel_phase(ctx))


SPEC = MethodSpec(
    name="salun", init=init, update=update, plan=plan,
    defaults={"epochs": 10, "batch_size": 256, "learning_rate": 0.01, "momentum": 0.0, "weight_decay": 0.0,
              "threshold": 0.5, "mask_accumulation": "cumulative", "relabel": "sequence",
              "eval_attention_biases": "frozen"},
    search_space={**generic_space(), "threshold": U01},
    static=frozenset({"epochs", "batch_size", "mask_accumulation", "relabel", "eval_attention_biases"}),
    ragged=frozenset({"epochs"}),
    dead=frozenset({"mask_learning_rate", "mask_momentum", "mask_weight_decay"}),
    domains={**generic_domains(), "threshold": unit("the fraction of parameters the saliency mask keeps"),
             "mask_accumulation": OneOf(ACCUMULATION, "how the saliency gradients are accumulated"),
             "relabel": OneOf(relabel.RELABEL_MODES, "how D_f is relabelled"),
             "eval_attention_biases": OneOf(layouts.ATTENTION_BIAS_MODES, "TinyViT attention biases in eval mode")},
    doc="saliency mask from D_f gradients, then masked random relabelling",
    tune_overrides={"momentum": 0.9},  # the reference's HPO fixes the generic momentum at 0.9
)
