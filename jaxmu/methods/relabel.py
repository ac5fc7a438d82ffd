"""The combined D_f ∪ D_r stream and its random relabelling (SRL, SalUn, BT; ``docs/methods.md`` §4.3).

Combined stream (SRL, SalUn ``RandomRelabel``; BT ``DiscernibleCombinedDataset``): the
concatenation ``concat(forget, retain)`` addressed by *positions* ``0 .. n_f + n_r - 1``; a position
``p < n_f`` is a forget example. One epoch draws a permutation of the positions from
``fold_in(epoch_key, 0)`` and walks it in batches of B (partial last batch kept, its own static
shape): the driver's shuffled pass over the ``combined`` stream (``jaxmu.methods.plan``).

Random relabelling (``docs/methods.md`` §4.3, reference ``munl/datasets/common.py: RandomRelabelDataset``):

* ``relabel="sequence"`` (faithful): the reference re-creates its generator with seed 123 at the
  start of every epoch and consumes it in access order. jaxmu draws ONE label sequence
  ``s ~ U{0..C-1}^{n_f}`` from ``fold_in(key, LABEL_PHASE)`` and, in every epoch, gives ``s[k]``
  to the k-th forget example reached by that epoch's permutation. The multiset of labels is the
  same each epoch; which example gets which label follows the shuffle. SRL and SalUn derive the
  sequence identically from the unlearning key, so they see the same sequence (as in the
  reference, where both re-seed with 123).
* ``relabel="independent"`` (clean): a fresh draw per (epoch, forget example) from
  ``fold_in(fold_in(key, LABEL_PHASE), epoch)``.

In both modes a drawn label may equal the true label (probability 1/C), as in the reference.

SRL / SalUn phase 2 as contract pieces (``jaxmu.methods.plan``): ``State``, ``init``, ``update``
and ``relabel_phase`` — an epoch-start hook ``draw_labels`` recomputes the epoch's permutation from
the epoch key (the same one the driver's pass draws) and stores the forget positions' labels in the
state; each step of the pass relabels its positions from them.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxmu.engine.losses import cross_entropy, forward
from jaxmu.engine.passes import gather
from jaxmu.engine.state import TrainState
from jaxmu.engine.steps import loss_step
from jaxmu.methods._base import MethodError, SplitData, StaticContext
from jaxmu.methods.plan import Batch, Pass, Phase

LABEL_PHASE = 0x5EED  # fold-in constant of the relabelling randomness (shared by SRL and SalUn)
RELABEL_MODES = ("sequence", "independent")


# --------------------------------------------------------------------------- combined stream


def combined(data: SplitData) -> tuple[jax.Array, jax.Array]:
    """``(examples, is_forget)`` over positions of ``concat(forget, retain)``."""
    n_f, n_r = data.forget.shape[0], data.retain.shape[0]
    examples = jnp.concatenate([data.forget, data.retain])
    is_forget = jnp.arange(n_f + n_r) < n_f
    return examples, is_forget


def epoch_order(n: int, key) -> jax.Array:
    """This epoch's permutation of positions ``0..n-1`` (from ``fold_in(key, 0)``, as ``run_pass``)."""
    return jax.random.permutation(jax.random.fold_in(key, 0), n)


# --------------------------------------------------------------------------- relabelling


def check_relabel(mode: str) -> None:
    if mode not in RELABEL_MODES:
        raise MethodError(f"relabel must be one of {RELABEL_MODES}, got {mode!r}")


def label_sequence(key, n_f: int, num_classes: int) -> jax.Array:
    """The faithful sequence ``s`` (``[n_f]`` int32, uniform over classes)."""
    return jax.random.randint(jax.random.fold_in(key, LABEL_PHASE), (n_f,), 0, num_classes, jnp.int32)


def assigned_labels(mode: str, key, epoch, perm: jax.Array, n_f: int, num_classes: int) -> jax.Array:
    """Label per forget *position* (``[n_f]``) for the epoch whose position order is ``perm``.

    ``"sequence"``: the k-th forget position reached in ``perm`` gets ``s[k]``.
    ``"independent"``: an independent uniform draw per (epoch, position).
    """
    check_relabel(mode)
    if mode == "independent":
        k = jax.random.fold_in(jax.random.fold_in(key, LABEL_PHASE), epoch)
        return jax.random.randint(k, (n_f,), 0, num_classes, jnp.int32)
    s = label_sequence(key, n_f, num_classes)
    is_f = perm < n_f
    rank = jnp.cumsum(is_f.astype(jnp.int32)) - 1  # k for the k-th forget position reached
    lab_in_order = s[jnp.clip(rank, 0, n_f - 1)]
    # scatter: position perm[i] (a forget one) gets lab_in_order[i]; retain positions dropped
    target = jnp.where(is_f, perm, n_f)  # out-of-range index -> dropped
    return jnp.zeros((n_f,), jnp.int32).at[target].set(lab_in_order, mode="drop")


def relabelled_batch(ctx: StaticContext, data: SplitData, examples, pos, labels_f):
    """Normalised inputs and (relabelled) targets of the combined-stream positions ``pos``."""
    n_f = labels_f.shape[0]
    x, y = gather(ctx, data, examples[pos])
    y = jnp.where(pos < n_f, labels_f[jnp.clip(pos, 0, n_f - 1)], y)
    return x, y


# --------------------------------------------------------------------------- SRL / SalUn phase 2


class State(NamedTuple):
    """The relabelled-training state of SRL and SalUn.

    Attributes:
      train: the model being trained (PyTorch SGD(lr, mu, wd), no schedule).
      label_key: the unlearning key, from which the label sequence (or per-epoch draws) derive.
      labels: this epoch's label per forget *position* (``[n_f]`` int32), set by ``draw_labels``.
      mask: SalUn's 0/1 gradient scale (a tree like the parameters); ``None`` for SRL.
    """

    train: TrainState
    label_key: jax.Array
    labels: jax.Array
    mask: Any = None


def init(params, batch_stats, hp, key, ctx: StaticContext, data: SplitData, mask=None) -> State:
    check_relabel(ctx.static["relabel"])
    labels = jnp.zeros((data.forget.shape[0],), jnp.int32)
    return State(TrainState.create(params, batch_stats, hp), key, labels, mask)


def draw_labels(state: State, batch: Batch, key, ctx: StaticContext) -> State:
    """Epoch-start hook: the labels of this epoch, whose order is the pass's ``epoch_order(n, key)``."""
    data = batch.data
    n_f = data.forget.shape[0]
    perm = epoch_order(n_f + data.retain.shape[0], key)
    labels = assigned_labels(ctx.static["relabel"], state.label_key, batch.epoch, perm, n_f, ctx.num_classes)
    return state._replace(labels=labels)


def relabel_step(state: State, batch: Batch, key, ctx: StaticContext) -> State:
    """One train-mode SGD step on CE over the relabelled combined-stream positions ``batch.indices``.

    ``state.mask`` (SalUn) multiplies the raw gradient before coupled decay/momentum.
    """
    examples, _ = combined(batch.data)
    st = state.train
    x, y = relabelled_batch(ctx, batch.data, examples, batch.indices, state.labels)

    def loss_fn(p):
        logits, bs = forward(ctx, p, st.batch_stats, x, train=True, key=key)
        return cross_entropy(logits, y), bs

    return state._replace(train=loss_step(st, loss_fn, grad_scale=state.mask))


def update(state: State, batch: Batch, hp, key, ctx: StaticContext, *, phase: str):
    """``draw_labels`` (epoch start) or ``relabel`` (one step)."""
    del hp
    if phase == "draw_labels":
        return draw_labels(state, batch, key, ctx), {}
    return relabel_step(state, batch, key, ctx), {}


def relabel_phase(ctx: StaticContext) -> Phase:
    """E epochs (phase key ``fold_in(key, 1)``): draw the labels, then one shuffled pass over the
    combined stream (permutation ``fold_in(k_e, 0)``, the order ``draw_labels`` relabels)."""
    s = ctx.static
    return Phase("relabel", s["epochs"], on_epoch="draw_labels",
                 passes=(Pass("relabel", "combined", s["batch_size"]),), key=(1,), count="epochs")
