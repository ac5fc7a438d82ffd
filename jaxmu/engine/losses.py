"""Losses and model calls shared by the trainer and the methods (``docs/methods.md`` §2.3, §2.6).

* ``cross_entropy_per_example``: softmax cross-entropy ``[batch]`` (logits cast to float32);
  ``cross_entropy``: its mean over the batch (PyTorch ``CrossEntropyLoss``, reduction mean).
* ``kl_div``: ``KL(softmax(t/T) || softmax(s/T))`` with the reductions the reference uses.
* ``forward``: the model in train mode (batch statistics + their update) or eval mode;
  ``teacher_logits``: a frozen teacher in eval mode (stop-gradient), the teacher half of every
  distillation step (SCRUB, KDE, PRMQ, BT).
"""

from __future__ import annotations

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


def forward(ctx: StaticContext, params, batch_stats, x: Array, *, train: bool,
            key: PRNGKey | None = None) -> tuple[Array, Any]:
    """Logits and running statistics; ``train`` = BatchNorm batch statistics + updates."""
    return ctx.model.apply(params, batch_stats, x, train=train, key=key)


def teacher_logits(ctx: StaticContext, params, batch_stats, x) -> Array:
    """Frozen teacher in eval mode (running statistics untouched, no gradient)."""
    logits, _ = forward(ctx, params, batch_stats, x, train=False)
    return jax.lax.stop_gradient(logits)
