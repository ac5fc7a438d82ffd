"""IU — influence unlearning, WoodFisher-style (``methods.md`` §4.9; reference
``munl/unlearning/iu.py``, adapted from OPTML-Group/Unlearn-Saliency
``Classification/unlearn/Wfisher.py``; Izzo et al. arXiv 2002.10077 / Singh & Alistarh
WoodFisher arXiv 2004.14340; Deep Unlearn, arXiv 2410.01276).

No training; eval mode throughout. Vectors are flattened over every parameter
(``jax.flatten_util.ravel_pytree``; the order is irrelevant, all operations are elementwise or
dot products).

1. ``G_f = sum_b |b| * grad CE_mean(b)`` over D_f in stored order, batches of B (last partial),
   i.e. the sum of per-sample gradients; ``G_r`` likewise over D_r.
2. ``g_f = G_f / (n_f + n_r)``, ``g_r = G_r n_f / ((n_f + n_r) n_r)``, ``v = g_f - g_r``.
3. Recursion over single examples of D_r in stored order, ``h_j = grad CE(x_j, y_j)``::

       j = 0:  o = h_0, k = v
       j >= 1: tau = <o, h_j>;  k <- k - (<k, h_j> / (N + tau)) o;  o <- o - (tau / (N + tau)) o

   stopping after j = N + 1 (the reference returns once ``idx > N``): the first J = N + 2 = 1002
   examples for N = 1000. If n_r < N + 2 the recursion uses all n_r examples (the reference's
   loader simply ends). ``recursion`` is the pure form of this loop.
4. ``theta = theta0 + alpha * k``; BatchNorm statistics unchanged.

Hyperparameters: ``batch_size`` (static, default 256; no mathematical effect in eval mode, only
floating-point summation order), ``N`` (static, default 1000, the reference's hard-coded
constant; also fixes the recursion length N + 2), ``alpha`` (array, default 0.2).
``num_epochs`` is dead (accepted, ignored, never searched; §5 #18).
Search: batch_size BS, alpha U01.

Observations reproduced as is: ``o`` stays a rescaled copy of h_0, so the curvature estimate
is degenerate compared with a textbook WoodFisher recursion.

Architectures: all four. TinyViT: the reference cannot run IU (eval-mode attention biases get
no gradient, the vectors' lengths then mismatch); jaxmu differentiates through the bias table,
so such runs have no reference counterpart. No quirk flags.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from jaxmu.engine.losses import cross_entropy, forward
from jaxmu.engine.passes import gather, run_pass
from jaxmu.methods._base import (
    BS,
    D_BATCH,
    U01,
    MethodSpec,
    SplitData,
    StaticContext,
    at_least,
    nonneg,
)


def flat_grad(ctx: StaticContext, params, batch_stats, x, y):
    """Flattened gradient of the batch-mean CE (eval mode)."""

    def loss(p):
        return cross_entropy(forward(ctx, p, batch_stats, x, train=False)[0], y)

    return ravel_pytree(jax.grad(loss)(params))[0].astype(jnp.float32)


def grad_sum(ctx: StaticContext, data: SplitData, params, batch_stats, idx, batch_size: int):
    """Sum of per-sample gradients over ``idx`` as ``sum_b |b| * mean-batch gradient`` (stored order)."""

    def step(acc, bidx, _key):
        x, y = gather(ctx, data, bidx)
        return acc + bidx.shape[0] * flat_grad(ctx, params, batch_stats, x, y)

    zeros = jnp.zeros(ravel_pytree(params)[0].shape, jnp.float32)
    return run_pass(zeros, idx, batch_size, jax.random.PRNGKey(0), step, shuffle=False)


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


def run(ctx: StaticContext, data: SplitData, params, batch_stats, hp, key, *, static):
    del key  # deterministic
    B, N = static["batch_size"], static["N"]
    n_f, n_r = data.forget.shape[0], data.retain.shape[0]
    G_f = grad_sum(ctx, data, params, batch_stats, data.forget, B)
    G_r = grad_sum(ctx, data, params, batch_stats, data.retain, B)
    v = influence_vector(G_f, G_r, n_f, n_r)
    J = min(n_r, N + 2)

    def h_fn(i):
        x, y = gather(ctx, data, i[None])
        return flat_grad(ctx, params, batch_stats, x, y)

    k = woodfisher(v, h_fn, data.retain[:J], N)
    flat0, unravel = ravel_pytree(params)
    return unravel((flat0 + hp["alpha"] * k).astype(flat0.dtype)), batch_stats


SPEC = MethodSpec(
    name="influence",
    run=run,
    defaults={"batch_size": 256, "N": 1000, "alpha": 0.2},
    search_space={"batch_size": BS, "alpha": U01},
    static=frozenset({"batch_size", "N"}),
    dead=frozenset({"num_epochs"}),
    domains={"batch_size": D_BATCH, "N": at_least(1, "the number of recursion samples"),
             "alpha": nonneg("the step along the influence direction")},
    doc="influence (WoodFisher-style) update theta0 + alpha k (eval mode)",
)
