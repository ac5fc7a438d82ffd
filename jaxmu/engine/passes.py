"""Data passes of the methods (``docs/methods.md`` §2.2) and their key convention.

No augmentation (test transform) unless asked, a fresh shuffle per pass from the pass key,
partial last batches kept — the full batches run in one ``lax.scan`` and the remainder batch in a
second step of its own static shape, so BatchNorm batch statistics and loss means are over the
examples actually present.

Key convention: a pass with key ``k`` permutes with ``fold_in(k, 0)`` and gives batch ``b``
``fold_in(k, b + 1)``; epoch ``e`` of ``run_epochs`` gets ``fold_in(key, e)``. One convention for
every method and for the trainer of original/retrained stacks (``jaxmu.training``).

Also the eval-mode error rates of a model on the splits (``split_errors``: SCRUB's error log).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import jax
import jax.numpy as jnp

from jaxmu.data.augment import preprocess
from jaxmu.engine.losses import forward
from jaxmu.types import Array, PRNGKey

if TYPE_CHECKING:  # the methods package imports this module
    from jaxmu.methods._base import SplitData, StaticContext

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


def partial_pass(carry, idx, batch_size: int, key, step, num_steps: int, *, shuffle: bool = True):
    """The first ``num_steps`` (static) full batches of a pass over ``idx`` (a step budget).

    Same conventions as ``run_pass``: permutation from ``fold_in(key, 0)``, batch ``b`` gets
    ``fold_in(key, b + 1)`` (PRMQ's step budget crossing pass boundaries).
    """
    if num_steps <= 0:
        return carry
    n = idx.shape[0]
    if num_steps * batch_size > n:
        raise ValueError(f"partial_pass: {num_steps} full batches of {batch_size} exceed {n} examples")
    seq = order(idx, jax.random.fold_in(key, 0), shuffle)
    batches = seq[: num_steps * batch_size].reshape(num_steps, batch_size)
    keys = jax.vmap(lambda b: jax.random.fold_in(key, b + 1))(jnp.arange(num_steps))
    carry, _ = jax.lax.scan(lambda c, xs: (step(c, xs[0], xs[1]), None), carry, (batches, keys))
    return carry


def batch_at(seq: Array, j, batch_size: int, fn: Callable[[Any, Array], Any], operand: Any, *,
             batches: int | None = None) -> Any:
    """``fn(operand, batch j of seq)`` for a traced batch number ``j`` (another loader's step).

    ``seq`` is cut as ``run_pass`` cuts it: full batches of ``batch_size`` (rows of the reshaped
    prefix, indexed with ``j``), then the partial rest at its own static shape; past its end
    ``operand`` is returned unchanged (the ``zip`` of two loaders). ``batches`` (static): ``j <
    batches`` always (default: the batches of ``seq``). Only the kinds of batch ``j`` can be are
    traced; the choice between them is a ``lax.switch`` (NG+'s cycled forget batches, FCS's paired
    retain batches).
    """
    n_full, rem = divmod(seq.shape[0], batch_size)
    batches = n_full + (rem > 0) if batches is None else batches
    kinds = []  # (when, branch)
    if batches > n_full + (rem > 0):  # past the end of seq: zip stops
        kinds.append((None, lambda o: o))
    if n_full:
        full = seq[: n_full * batch_size].reshape(n_full, batch_size)
        kinds.append((j < n_full, lambda o: fn(o, full[jnp.minimum(j, n_full - 1)])))
    if rem and batches > n_full:
        kinds.append((j == n_full, lambda o: fn(o, seq[n_full * batch_size:])))
    if len(kinds) <= 1:
        return kinds[0][1](operand) if kinds else operand
    i = 0
    for k, (when, _) in enumerate(kinds[1:], 1):
        i = jnp.where(when, k, i)
    return jax.lax.switch(i, [branch for _, branch in kinds], operand)


def pass_batches(n: int, batch_size: int) -> int:
    """Number of batches of a pass over n examples (partial last batch kept): ceil(n / B)."""
    return -(-n // batch_size)


def run_epochs(carry: Any, stop: int, key: PRNGKey, epoch_fn: Callable[[Any, Array, PRNGKey], Any], *,
               start: int = 0) -> Any:
    """Epochs ``start .. stop - 1`` (static) as one ``lax.scan``: ``epoch_fn(carry, e, fold_in(key, e))``."""
    if stop <= start:
        return carry

    def body(c, e):
        return epoch_fn(c, e, jax.random.fold_in(key, e)), None

    carry, _ = jax.lax.scan(body, carry, jnp.arange(start, stop))
    return carry


def predict_correct(ctx: StaticContext, data: SplitData, params, batch_stats, idx,
                    batch_size: int = 256) -> jax.Array:
    """Eval-mode top-1 correctness ``[n]`` (bool) of the examples ``idx`` (stored order)."""
    n = idx.shape[0]
    b = max(1, min(batch_size, n))
    n_full, rem = divmod(n, b)

    def one(ix):
        x, y = gather(ctx, data, ix)
        logits, _ = forward(ctx, params, batch_stats, x, train=False)
        return jnp.argmax(logits, axis=-1) == y

    parts = []
    if n_full:
        parts.append(jax.lax.map(one, idx[: n_full * b].reshape(n_full, b)).reshape(-1))
    if rem:
        parts.append(one(idx[n_full * b:]))
    return jnp.concatenate(parts) if len(parts) > 1 else parts[0]


def error_percent(correct: Array, mask: Array | None = None) -> Array:
    """100 - top-1 accuracy in percent of ``correct`` (over ``mask``'s entries): ``100 - (100 * #correct) / n``
    in float32, ``n`` at least 1."""
    if mask is None:
        mask = jnp.ones_like(correct)
    n = jnp.maximum(jnp.sum(mask).astype(jnp.float32), 1.0)
    return 100.0 - (100.0 * jnp.sum(correct & mask).astype(jnp.float32)) / n


def forget_val_mask(data: SplitData, num_classes: int) -> jax.Array:
    """D_fv as a boolean mask over D_v: the examples whose label occurs in D_f."""
    present = jnp.bincount(data.labels[data.forget], length=num_classes) > 0
    return present[data.labels[data.val]]


def split_errors(ctx: StaticContext, data: SplitData, params, batch_stats, fv_mask) -> jax.Array:
    """``[err_r, err_f, err_v, err_fv]`` (``error_percent``) of a model in eval mode (pure reads)."""
    c_r, c_f, c_v = (predict_correct(ctx, data, params, batch_stats, i) for i in (data.retain, data.forget, data.val))
    return jnp.stack([error_percent(c_r), error_percent(c_f), error_percent(c_v), error_percent(c_v, fv_mask)])


def class_counts(data: SplitData, num_classes: int) -> jax.Array:
    """n_c over the labels of D_r, float32 ``[C]`` (0 for absent classes)."""
    return jnp.bincount(data.labels[data.retain], length=num_classes).astype(jnp.float32)
