"""Building blocks shared by the methods: data passes, model calls, losses, optimizer steps.

Data passes follow ``methods.md`` §2.2: no augmentation (test transform) unless asked, a
fresh shuffle per pass from the pass key, partial last batches kept — the full batches run in
one ``lax.scan`` and the remainder batch in a second step of its own static shape, so
BatchNorm batch statistics and loss means are over the examples actually present.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from jaxmu.data.augment import preprocess
from jaxmu.engine.optim import apply_updates
from jaxmu.methods._base import SplitData, StaticContext
from jaxmu.types import Array, PRNGKey

StepFn = Callable[[Any, Array, PRNGKey], Any]  # (carry, batch indices, step key) -> carry


def gather(ctx: StaticContext, data: SplitData, idx: Array, key: PRNGKey | None = None,
           augment: str = "none") -> tuple[Array, Array]:
    """Normalised inputs and labels of ``data.images[idx]`` (augmented if ``augment``)."""
    x = preprocess(data.images[idx], key if key is not None else jax.random.PRNGKey(0),
                   kind=augment, mean=ctx.mean, std=ctx.std, train=augment != "none")
    return x, data.labels[idx]


def order(idx: Array, key: PRNGKey, shuffle: bool) -> Array:
    """The pass order of ``idx``: a permutation drawn from ``key`` or the stored order."""
    return idx[jax.random.permutation(key, idx.shape[0])] if shuffle else idx


def run_pass(carry: Any, idx: Array, batch_size: int, key: PRNGKey, step: StepFn, *,
             shuffle: bool = True) -> Any:
    """One epoch over ``idx`` in batches of ``batch_size``; ``step(carry, batch_idx, key)``.

    Step ``b`` gets ``fold_in(key, b + 1)``; the permutation uses ``fold_in(key, 0)``.
    """
    n = idx.shape[0]
    n_full, rem = divmod(n, batch_size)
    seq = order(idx, jax.random.fold_in(key, 0), shuffle)
    keys = jax.vmap(lambda b: jax.random.fold_in(key, b + 1))(jnp.arange(n_full + (rem > 0)))
    if n_full:
        batches = seq[: n_full * batch_size].reshape(n_full, batch_size)
        carry, _ = jax.lax.scan(lambda c, xs: (step(c, xs[0], xs[1]), None), carry, (batches, keys[:n_full]))
    if rem:
        carry = step(carry, seq[n_full * batch_size:], keys[n_full])
    return carry


def pass_batches(n: int, batch_size: int) -> int:
    """Number of batches of a pass over n examples (partial last batch kept): ceil(n / B)."""
    return -(-n // batch_size)


def run_epochs(carry: Any, num_epochs: int, key: PRNGKey, epoch_fn: Callable[[Any, Array, PRNGKey], Any]) -> Any:
    """``num_epochs`` (static) calls of ``epoch_fn(carry, epoch, fold_in(key, epoch))`` in a scan."""
    if num_epochs <= 0:
        return carry

    def body(c, e):
        return epoch_fn(c, e, jax.random.fold_in(key, e)), None

    carry, _ = jax.lax.scan(body, carry, jnp.arange(num_epochs))
    return carry


# --------------------------------------------------------------------------- model calls


def forward(ctx: StaticContext, params, batch_stats, x: Array, *, train: bool,
            key: PRNGKey | None = None) -> tuple[Array, Any]:
    """Logits and running statistics; ``train`` = BatchNorm batch statistics + updates."""
    return ctx.model.apply(params, batch_stats, x, train=train, key=key)


# --------------------------------------------------------------------------- losses


def cross_entropy(logits: Array, labels: Array) -> Array:
    """Mean softmax cross-entropy over the batch."""
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels))


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


# --------------------------------------------------------------------------- optimizer steps


def tree_where(mask_tree, a, b):
    """Leafwise ``where(mask, a, b)`` for a tree of boolean masks (scalars or arrays)."""
    return jax.tree_util.tree_map(lambda m, x, y: jnp.where(m, x, y), mask_tree, a, b)


def optimizer_step(tx: optax.GradientTransformation, params, opt_state, grads, *,
                   grad_scale=None, trainable=None):
    """One optimizer step with ``methods.md`` §2.4 semantics.

    ``grad_scale`` (a tree like params) multiplies the raw gradient *before* the optimizer
    (SalUn's 0/1 mask, MSG's 1/0.1 multiplier): coupled decay and momentum act afterwards.
    ``trainable`` (a tree of booleans, scalar per leaf or elementwise) freezes parameters
    completely: no gradient, no decay, no momentum (the freeze wraps the whole chain).
    """
    if grad_scale is not None:
        grads = jax.tree_util.tree_map(lambda g, s: g * s, grads, grad_scale)
    updates, new_state = tx.update(grads, opt_state, params)
    new_params = apply_updates(params, updates)
    if trainable is not None:
        new_params = tree_where(trainable, new_params, params)
        new_state = _freeze_state(new_state, opt_state, trainable)
    return new_params, new_state


def _freeze_state(new_state, old_state, trainable):
    """Keep the old optimizer buffers of frozen leaves (trees shaped like params inside)."""
    params_def = jax.tree_util.tree_structure(trainable)

    def fix(node_new, node_old):
        if jax.tree_util.tree_structure(node_new) == params_def:
            return tree_where(trainable, node_new, node_old)
        return node_new

    return jax.tree_util.tree_map(
        fix, new_state, old_state,
        is_leaf=lambda n: jax.tree_util.tree_structure(n) == params_def if not isinstance(n, jax.Array) else True,
    )
