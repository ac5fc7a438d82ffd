"""FF — Fisher forgetting (``docs/methods.md`` §4.8; reference ``munl/unlearning/fisher.py``:
``hessian``, ``get_mean_var``, ``fisher_new``, from OPTML-Group/Unlearn-Sparse; Golatkar et al.,
"Eternal Sunshine of the Spotless Net", arXiv 1911.04933; Deep Unlearn, arXiv 2410.01276).

No training; eval mode throughout (BatchNorm running statistics used and left unchanged).

1. Accumulation over D_r in stored order, batches of B (last one partial), K = ceil(n_r / B)::

       S = (1/K) sum_b sum_c pbar_{b,c} * (grad_theta L_{b,c})^2,
       L_{b,c} = mean_{i in b} CE(f(x_i), c),   pbar_{b,c} = mean_{i in b} softmax(f(x_i))_c

   (squared *batch-mean* gradients against every constant label c, not a per-sample Fisher;
   B changes the estimate): one forward + ``vjp`` per batch, the C cotangents
   ``(softmax(z) - e_c) / |b|`` pulled back under ``vmap`` in chunks of ``_CLASS_CHUNK`` classes.
2. Per leaf P of ``params`` (weights, biases, norm scales/shifts, TinyViT attention biases)::

       v = min(1 / (S + 1e-8), 1e3);  v = min(v, 1e2) if class-shaped;  v = alpha * v
       if P.ndim >= 2: v = mean of v over PyTorch dim 1 (``torch_in_axis``), broadcast back
       if class-shaped or P.ndim == 1: v = 10 v
       P = P0 + sqrt(v) * eps,  eps ~ N(0, I)  (key fold_in(key, leaf index))

   "Class-shaped": the classifier's weight and bias (``fc``/``head``); others refused (§4.8).

Static: ``batch_size``; array: ``alpha``. No epochs; no quirk flags (§5 #17). TinyViT runs (the
2-D attention-bias table is not class-shaped) have no reference counterpart (§4.8).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxmu.engine.losses import forward
from jaxmu.engine.passes import gather, pass_batches
from jaxmu.methods._base import BS, D_BATCH, U01, MethodSpec, StaticContext, nonneg
from jaxmu.methods.layouts import class_shaped_flags
from jaxmu.methods.plan import Batch, Pass, Phase, Plan
from jaxmu.models.trees import map_with_index, torch_in_axis

_CLASS_CHUNK = 10  # classes whose gradients are materialised at once


def batch_contribution(ctx: StaticContext, params, batch_stats, x):
    """``sum_c pbar_c * (grad L_c)^2`` for one batch (eval mode), a tree like ``params``."""
    C = ctx.num_classes

    def f(p):
        return forward(ctx, p, batch_stats, x, train=False)[0]

    logits, vjp = jax.vjp(f, params)
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    pbar = jnp.mean(probs, axis=0)
    n = x.shape[0]
    chunk = min(C, _CLASS_CHUNK)
    n_chunks = -(-C // chunk)
    classes = jnp.arange(n_chunks * chunk).reshape(n_chunks, chunk)

    def one_class(c):
        valid = c < C
        cc = jnp.minimum(c, C - 1)
        cot = (probs - jax.nn.one_hot(cc, C, dtype=probs.dtype)) / n  # dCE_mean(z, c)/dz
        (g,) = vjp(cot.astype(logits.dtype))
        w = jnp.where(valid, pbar[cc], 0.0)
        return jax.tree_util.tree_map(lambda t: w * jnp.square(t.astype(jnp.float32)), g)

    def body(acc, cs):
        contrib = jax.vmap(one_class)(cs)
        return jax.tree_util.tree_map(lambda a, t: a + jnp.sum(t, axis=0), acc, contrib), None

    zeros = jax.tree_util.tree_map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
    acc, _ = jax.lax.scan(body, zeros, classes)
    return acc


def noise_variance(arch: str, num_classes: int, params0, S, alpha):
    """Per-tensor noise variance v of step 2 (a tree like ``params0``)."""
    cls = class_shaped_flags(arch, params0, num_classes)

    def f(i, path, p, s):
        v = jnp.minimum(1.0 / (s + 1e-8), 1e3)
        if cls[i]:
            v = jnp.minimum(v, 1e2)
        v = alpha * v
        if p.ndim >= 2:
            v = jnp.broadcast_to(jnp.mean(v, axis=torch_in_axis(path, p.ndim), keepdims=True), p.shape)
        if cls[i] or p.ndim == 1:
            v = 10.0 * v
        return v

    return map_with_index(f, params0, S)


def perturb(arch: str, num_classes: int, params0, S, alpha, key):
    """``P0 + sqrt(v) * eps`` per tensor, ``eps = normal(fold_in(key, leaf index))``."""
    var = noise_variance(arch, num_classes, params0, S, alpha)

    def f(i, path, p, v):
        eps = jax.random.normal(jax.random.fold_in(key, i), p.shape, jnp.float32)
        return (p + jnp.sqrt(v) * eps).astype(p.dtype)

    return map_with_index(f, params0, var)


class State(NamedTuple):
    """The model (fixed: eval mode, no optimizer) and the running sum S of batch contributions."""

    params: Any
    batch_stats: Any
    S: Any


def init(params, batch_stats, hp, key, ctx: StaticContext, data) -> State:
    class_shaped_flags(ctx.arch, params, ctx.num_classes)  # fail before tracing the pass
    return State(params, batch_stats, jax.tree_util.tree_map(lambda p: jnp.zeros(p.shape, jnp.float32), params))


def update(state: State, batch: Batch, hp, key, ctx: StaticContext, *, phase: str):
    """``accumulate``: add this D_r batch's contribution to S (no optimizer step)."""
    x, _ = gather(ctx, batch.data, batch.indices)
    contrib = batch_contribution(ctx, state.params, state.batch_stats, x)
    return state._replace(S=jax.tree_util.tree_map(jnp.add, state.S, contrib)), {}


def plan(ctx: StaticContext) -> Plan:
    """One pass over D_r in stored order (the pass keys are unused: no randomness)."""
    return (Phase("fisher", 1, passes=(Pass("accumulate", "retain", ctx.static["batch_size"], shuffle=False),)),)


def result(state: State, hp, key, ctx: StaticContext, data):
    """S divided by the number of batches, then the perturbation with the method key."""
    k = pass_batches(data.retain.shape[0], ctx.static["batch_size"])
    S = jax.tree_util.tree_map(lambda s: s / k, state.S)
    return perturb(ctx.arch, ctx.num_classes, state.params, S, hp["alpha"], key), state.batch_stats


SPEC = MethodSpec(
    name="fisher", init=init, update=update, plan=plan, result=result,
    defaults={"batch_size": 64, "alpha": 0.2},
    search_space={"batch_size": BS, "alpha": U01},
    static=frozenset({"batch_size"}),
    domains={"batch_size": D_BATCH, "alpha": nonneg("the scale of the Fisher noise")},
    doc="Fisher forgetting: Gaussian noise scaled by squared class-gradients on D_r (eval mode)",
)
