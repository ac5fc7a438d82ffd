"""PRMQ — Prune, Retrain, Mask, Quantize (``docs/methods.md`` §4.15).

Reference: ``munl/unlearning/kgltop4.py`` (xcadet/deepunlearn), a port of a NeurIPS 2023
Machine Unlearning Challenge solution (Kaggle); paper: Deep Unlearn, arXiv 2410.01276.
Teacher t = theta_0 frozen in eval mode; the student trains in train mode.

1. Prune: P = all conv and dense kernels and the conv/dense biases (no BatchNorm/LayerNorm
   parameters, no TinyViT attention biases); the ``round(pi * |P|)`` entries of smallest |value|
   across P are set to 0 (exactly that many; ties by a stable sort in flattening order).
2. Re-draw: every kernel entry equal to 0 <- U(-sqrt(k), sqrt(k)), k = 1/fan_in (HWIO conv: the
   product of the first three axes; dense: in). Biases are NOT re-drawn (restart from 0).
3. Train on D_r with SGD(lr, mu, wd) (momentum from 0), no schedule, batch B, for exactly
   S = floor(L * E) + 1 steps, L = ceil(n_r / B) (the reference stops when
   ``num_iters > int(L * E)``); steps cross pass boundaries (``plan``). With w_c = n_c^(-0.1)
   over D_r labels:

       loss = sum_i w_{y_i} CE_i / sum_i w_{y_i} + mean_i (H(softmax s(x_i)) - H(softmax t(x_i)))^2

4. Quantise: every parameter and BatchNorm statistic cast to float16 and back (§4.15).

Static: ``epochs`` (a float, search EPF; S is computed in Python; ragged under tuning as a step
budget, ``steps_for_epochs``, §6.2; the final runs' ``int()`` truncation belongs to the replay
layer, §5 #26), ``batch_size``, the flags. Arrays: the SGD's, ``prune_amount`` pi (one sort, the
count a dynamic index). Flags (faithful True): ``fp16_roundtrip`` (False skips step 4),
``prune_biases`` (False prunes kernels only). Keys: re-draw ``fold_in(key, 0)`` (leaf i:
``fold_in(., i)``), training pass p ``fold_in(fold_in(key, 1), p)``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxmu.engine.losses import cross_entropy_per_example, entropy
from jaxmu.engine.passes import class_counts, pass_batches
from jaxmu.engine.state import TrainState
from jaxmu.engine.steps import distill_step
from jaxmu.methods._base import (D_BOOL, EPF, U01, MethodError, MethodSpec, SplitData,
    StaticContext, generic_domains, generic_space, nonneg, unit)
from jaxmu.methods.plan import Batch, Pass, Phase, Plan
from jaxmu.methods.ranking import smallest_masks
from jaxmu.methods.reinit import redraw_zeros
from jaxmu.models.trees import is_weight_layer_leaf, leaf_dict, replace_leaves


def train_steps(n_retain: int, batch_size: int, epochs: float) -> int:
    """S = int(L * E) + 1 with L = ceil(n_r / B) (Python arithmetic, as the reference)."""
    return int(pass_batches(n_retain, batch_size) * epochs) + 1


def prune_paths(params, prune_biases: bool = True) -> list[tuple[str, ...]]:
    """Leaves of the prune set P, in flattening order."""
    leaves = leaf_dict(params)
    kinds = ("conv", "linear", "bias") if prune_biases else ("conv", "linear")
    return [p for p in leaves if is_weight_layer_leaf(p, leaves) in kinds]


def global_l1_prune(params, paths, amount):
    """Zero the ``round(amount * |P|)`` smallest-|value| entries over the leaves ``paths``."""
    leaves = leaf_dict(params)
    masks = smallest_masks([jnp.abs(leaves[p]) for p in paths], amount)
    return replace_leaves(params, {p: jnp.where(m, jnp.zeros_like(leaves[p]), leaves[p]) for p, m in zip(paths, masks)})


def fp16_roundtrip(tree):
    return jax.tree_util.tree_map(
        lambda x: x.astype(jnp.float16).astype(x.dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def prmq_loss(s_logits, t_logits, y, weights) -> jax.Array:
    """Weighted CE (PyTorch ``weight=``: sum w CE / sum w) + MSE between student/teacher entropies."""
    ce = cross_entropy_per_example(s_logits, y)
    w = weights[y]
    return jnp.sum(w * ce) / jnp.sum(w) + jnp.mean(jnp.square(entropy(s_logits) - entropy(t_logits)))


class State(NamedTuple):
    """The student, the frozen teacher ``(params, batch_stats)`` = theta_0, the class weights w_c."""

    train: TrainState
    teacher: tuple[Any, Any]
    weights: jax.Array


def init(params, batch_stats, hp, key, ctx: StaticContext, data: SplitData) -> State:
    """Teacher = theta_0; student pruned and re-drawn (``fold_in(key, 0)``); fresh SGD."""
    paths = prune_paths(params, ctx.static["prune_biases"])
    if not paths:
        raise MethodError(f"prmq: architecture {ctx.arch!r} has no conv/linear weights to prune")
    student = redraw_zeros(global_l1_prune(params, paths, hp["prune_amount"]), jax.random.fold_in(key, 0))
    # The reference builds the SGD before pruning; its state is only momentum (zeros), same thing.
    weights = class_counts(data, ctx.num_classes) ** -0.1
    return State(TrainState.create(student, batch_stats, hp), (params, batch_stats), weights)


def update(state: State, batch: Batch, hp, key, ctx: StaticContext, *, phase: str):
    """``step``: one entropy-matched weighted-CE distillation step on a retain batch."""
    del hp, phase
    st = distill_step(ctx, batch.data, state.teacher, state.train, batch.indices, key,
                      lambda t, s, y: prmq_loss(s, t, y, state.weights))
    return state._replace(train=st), {}


def plan(ctx: StaticContext) -> Plan:
    """S steps over D_r (phase key fold_in(key, 1); a ``Phase.steps`` budget): floor(S / L) full
    passes, then the first S mod L full batches of a fresh shuffle. Under HPO ``num_epochs`` is
    ragged: compiled for the search's E_max, each model stops at its own S (``driver.step_budget``)."""
    B = ctx.static["batch_size"]
    S = train_steps(ctx.size("retain"), B, ctx.static["epochs"])
    L = pass_batches(ctx.size("retain"), B)
    return (Phase("train", -(-S // L), passes=(Pass("step", "retain", B),), key=(1,), steps=S, count="epochs"),)


def steps_for_epochs(name: str, epochs: float, static, size) -> int:
    """``ragged_value``: the per-model array of a ragged ``num_epochs`` is its step budget S."""
    del name
    return train_steps(size("retain"), static["batch_size"], epochs)


def result(state: State, hp, key, ctx: StaticContext, data) -> tuple[Any, Any]:
    """Step 4: the fp16 round trip of every parameter and statistic (if ``fp16_roundtrip``)."""
    params, bs = state.train.params, state.train.batch_stats
    if ctx.static["fp16_roundtrip"]:
        params, bs = fp16_roundtrip(params), fp16_roundtrip(bs)
    return params, bs


SPEC = MethodSpec(
    name="prmq", init=init, update=update, plan=plan, result=result,
    defaults={"epochs": 3.2, "batch_size": 64, "learning_rate": 5e-4, "momentum": 0.9, "weight_decay": 5e-4,
              "prune_amount": 0.99, "fp16_roundtrip": True, "prune_biases": True},
    search_space={**generic_space(ep=None), "epochs": EPF, "prune_amount": U01},
    static=frozenset({"epochs", "batch_size", "fp16_roundtrip", "prune_biases"}),
    ragged=frozenset({"epochs"}),
    ragged_value=steps_for_epochs,
    domains={**generic_domains(ep=None), "epochs": nonneg("a (fractional) number of epochs; 0 is one step"),
             "prune_amount": unit("the fraction of weights pruned"),
             "fp16_roundtrip": D_BOOL, "prune_biases": D_BOOL},
    doc="99% global L1 pruning + re-draw, entropy-matched weighted-CE retraining, fp16 round trip",
)
