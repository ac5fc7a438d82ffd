"""IU — influence unlearning, WoodFisher-style (``docs/methods.md`` §4.9; reference
``munl/unlearning/iu.py``, adapted from OPTML-Group/Unlearn-Saliency
``Classification/unlearn/Wfisher.py``; Izzo et al. arXiv 2002.10077 / Singh & Alistarh
WoodFisher arXiv 2004.14340; Deep Unlearn, arXiv 2410.01276).

No training; eval mode throughout. Vectors flatten every parameter (``ravel_pytree``; the order
is irrelevant: only elementwise operations and dot products).

1. ``G_f = sum_b |b| * grad CE_mean(b)`` over D_f in stored order, batches of B (last partial),
   i.e. the sum of per-sample gradients; ``G_r`` likewise over D_r.
2. ``g_f = G_f / (n_f + n_r)``, ``g_r = G_r n_f / ((n_f + n_r) n_r)``, ``v = g_f - g_r``.
3. Recursion over single examples of D_r in stored order, ``h_j = grad CE(x_j, y_j)``::

       j = 0:  o = h_0, k = v
       j >= 1: tau = <o, h_j>;  k <- k - (<k, h_j> / (N + tau)) o;  o <- o - (tau / (N + tau)) o

   stopping after j = N + 1 (the reference returns once ``idx > N``): the first J = N + 2
   examples, or all n_r if fewer (the reference's loader ends). ``recursion`` is its pure form.
4. ``theta = theta0 + alpha * k``; BatchNorm statistics unchanged.

Static: ``batch_size`` (default 256; it changes only the floating-point summation order), ``N``
(default 1000, the reference's hard-coded constant; fixes the recursion length). Array: ``alpha``.
Dead: ``num_epochs`` (§5 #18). No quirk flags; reproduced as is: ``o`` stays a rescaled copy of
h_0 (a degenerate curvature estimate). TinyViT runs have no reference counterpart (§4.9, §4.8).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from jaxmu.engine.losses import cross_entropy, forward
from jaxmu.engine.passes import gather
from jaxmu.methods._base import BS, D_BATCH, U01, MethodSpec, StaticContext, at_least, nonneg
from jaxmu.methods.plan import Batch, Pass, Phase, Plan
from jaxmu.types import Array


def flat_grad(ctx: StaticContext, params, batch_stats, x, y):
    """Flattened gradient of the batch-mean CE (eval mode)."""

    def loss(p):
        return cross_entropy(forward(ctx, p, batch_stats, x, train=False)[0], y)

    return ravel_pytree(jax.grad(loss)(params))[0].astype(jnp.float32)


def influence_vector(G_f, G_r, n_f: int, n_r: int):
    """``v = G_f / (n_f + n_r) - G_r n_f / ((n_f + n_r) n_r)``."""
    return G_f / (n_f + n_r) - G_r * (n_f / ((n_f + n_r) * n_r))


def recursion_step(o, k, h, N):
    """One step j >= 1 of the recursion: returns the new ``(o, k)``."""
    tau = jnp.dot(o, h)
    denom = N + tau
    k = k - (jnp.dot(k, h) / denom) * o
    o = o - (tau / denom) * o
    return o, k


def woodfisher(v, h_fn, xs, N: int):
    """Run the recursion on ``h_fn(xs[j])``, j = 0..J-1 (J = len(xs), caller truncates)."""
    h0 = h_fn(jax.tree_util.tree_map(lambda a: a[0], xs))
    N = jnp.float32(N)

    def body(carry, x):
        o, k = carry
        return recursion_step(o, k, h_fn(x), N), None

    (_, k), _ = jax.lax.scan(body, (h0, v), jax.tree_util.tree_map(lambda a: a[1:], xs))
    return k


def recursion(v, H, N: int):
    """The pure recursion on given vectors ``H[j] = h_j``: uses the first min(len(H), N + 2) rows."""
    J = min(H.shape[0], N + 2)
    return woodfisher(v, lambda h: h, H[:J], N)


class State(NamedTuple):
    """The model (fixed: eval mode), the gradient sums G_f, G_r and the recursion's result k."""

    params: Any
    batch_stats: Any
    G_f: Array
    G_r: Array
    k: Array


def init(params, batch_stats, hp, key, ctx: StaticContext, data) -> State:
    zeros = jnp.zeros(ravel_pytree(params)[0].shape, jnp.float32)
    return State(params, batch_stats, zeros, zeros, zeros)


def update(state: State, batch: Batch, hp, key, ctx: StaticContext, *, phase: str):
    """``sum_forget`` / ``sum_retain``: add ``|b| * grad CE_mean(b)`` to G_f / G_r (step 1);
    ``woodfisher`` (one-shot): v (step 2) and the whole recursion (step 3) into k."""
    data = batch.data
    if phase == "woodfisher":
        N = ctx.static["N"]
        n_f, n_r = data.forget.shape[0], data.retain.shape[0]
        v = influence_vector(state.G_f, state.G_r, n_f, n_r)

        def h_fn(i):
            x, y = gather(ctx, data, i[None])
            return flat_grad(ctx, state.params, state.batch_stats, x, y)

        return state._replace(k=woodfisher(v, h_fn, data.retain[:min(n_r, N + 2)], N)), {}
    x, y = gather(ctx, data, batch.indices)
    g = batch.indices.shape[0] * flat_grad(ctx, state.params, state.batch_stats, x, y)
    if phase == "sum_forget":
        return state._replace(G_f=state.G_f + g), {}
    return state._replace(G_r=state.G_r + g), {}


def plan(ctx: StaticContext) -> Plan:
    """Passes over D_f then D_r in stored order (keys unused: deterministic), then the recursion as a
    one-shot step (its own ``lax.scan``, h_0 outside it; not a batch-1 pass)."""
    B = ctx.static["batch_size"]
    return (Phase("gradients", 1, passes=(Pass("sum_forget", "forget", B, shuffle=False),
                                          Pass("sum_retain", "retain", B, shuffle=False))),
            Phase("recursion", 0, once="woodfisher"))


def result(state: State, hp, key, ctx: StaticContext, data):
    """``theta0 + alpha k`` (step 4); BatchNorm statistics unchanged."""
    flat0, unravel = ravel_pytree(state.params)
    return unravel((flat0 + hp["alpha"] * state.k).astype(flat0.dtype)), state.batch_stats


SPEC = MethodSpec(
    name="influence", init=init, update=update, plan=plan, result=result,
    defaults={"batch_size": 256, "N": 1000, "alpha": 0.2},
    search_space={"batch_size": BS, "alpha": U01},
    static=frozenset({"batch_size", "N"}),
    dead=frozenset({"num_epochs"}),
    domains={"batch_size": D_BATCH, "N": at_least(1, "the number of recursion samples"),
             "alpha": nonneg("the step along the influence direction")},
    doc="influence (WoodFisher-style) update theta0 + alpha k (eval mode)",
)
