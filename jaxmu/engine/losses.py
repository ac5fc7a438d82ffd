"""Losses and model calls shared by the trainer and the methods (``docs/methods.md`` §2.3, §2.6).

* ``cross_entropy_per_example``: softmax cross-entropy ``[batch]`` (logits cast to float32);
  ``cross_entropy``: its mean over the batch (PyTorch ``CrossEntropyLoss``, reduction mean).
* ``kl_div``: ``KL(softmax(t/T) || softmax(s/T))`` with the reductions the reference uses;
  ``kl_to_uniform``: ``KL(U || softmax(z))`` (FCS stage 1).
* ``contrastive_loss``: FCS's forget-round loss over a forget and a retain batch's logits.
* ``entropy``: the Shannon entropy of ``softmax(z)`` per example (PRMQ's entropy matching).
* ``sq_distance``: ``sum ||P - Q||^2`` over (selected) leaves, the L2 pull to an anchor (NG+, CF-k).
* ``forward``: the model in train mode (batch statistics + their update) or eval mode;
  ``teacher_logits``: a frozen teacher in eval mode (stop-gradient), the teacher half of every
  distillation step (SCRUB, KDE, PRMQ, BT).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import optax

from jaxmu.types import Array, PRNGKey

if TYPE_CHECKING:  # the methods package imports this module
    from jaxmu.methods._base import StaticContext


def cross_entropy_per_example(logits: Array, labels: Array) -> Array:
    """Per-example softmax cross-entropy ``[batch]``: ``logsumexp(z) - z_y`` in float32."""
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


def cross_entropy(logits: Array, labels: Array) -> Array:
    """Mean softmax cross-entropy over the batch."""
    return jnp.mean(cross_entropy_per_example(logits, labels))


def kl_div(teacher_logits: Array, student_logits: Array, temperature, reduction: str) -> Array:
    """KL(softmax(t/T) || softmax(s/T)) with an explicit reduction.

    ``"batchmean"``: sum over classes, mean over the batch; ``"batchmean_t2"``: that times
    T^2 (DistillKL); ``"mean"``: mean over all B x C elements (PyTorch ``kl_div`` default).
    """
    t = jnp.asarray(temperature, jnp.float32)
    logq = jax.nn.log_softmax(teacher_logits / t, axis=-1)
    logp = jax.nn.log_softmax(student_logits / t, axis=-1)
    elem = jnp.exp(logq) * (logq - logp)
    if reduction == "mean":
        return jnp.mean(elem)
    per = jnp.sum(elem, axis=-1)
    if reduction == "batchmean":
        return jnp.mean(per)
    if reduction == "batchmean_t2":
        return jnp.mean(per) * t * t
    raise ValueError(f"unknown KL reduction {reduction!r}")


def kl_to_uniform(logits: Array) -> Array:
    """KLDivLoss(batchmean)(log_softmax(z), 1/C) = mean_i sum_c (1/C)(log(1/C) - log p_ic)."""
    c = logits.shape[-1]
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return jnp.mean(jnp.sum((1.0 / c) * (math.log(1.0 / c) - logp), axis=-1))


def contrastive_loss(z_f: Array, z_r: Array, temperature) -> Array:
    """-mean over all B_f x B_r entries of log_softmax(Z_f Z_r^T / T) along the retain axis."""
    s = (z_f @ z_r.T) / temperature
    return -jnp.mean(jax.nn.log_softmax(s, axis=-1))


def entropy(logits: Array) -> Array:
    """H(softmax(z)) per example ``[batch]`` (in the logits' dtype)."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


def sq_distance(p, q, mask=None) -> Array:
    """``sum ||P - Q||^2`` over the leaves (those whose static ``mask`` entry is True, if given)."""
    pairs = zip(jax.tree_util.tree_leaves(p), jax.tree_util.tree_leaves(q))
    keep = jax.tree_util.tree_leaves(mask) if mask is not None else None
    return sum(jnp.sum(jnp.square(a - b)) for i, (a, b) in enumerate(pairs) if keep is None or keep[i])


def forward(ctx: StaticContext, params, batch_stats, x: Array, *, train: bool,
            key: PRNGKey | None = None) -> tuple[Array, Any]:
    """Logits and running statistics; ``train`` = BatchNorm batch statistics + updates."""
    return ctx.model.apply(params, batch_stats, x, train=train, key=key)


def teacher_logits(ctx: StaticContext, params, batch_stats, x) -> Array:
    """Frozen teacher in eval mode (running statistics untouched, no gradient)."""
    logits, _ = forward(ctx, params, batch_stats, x, train=False)
    return jax.lax.stop_gradient(logits)
