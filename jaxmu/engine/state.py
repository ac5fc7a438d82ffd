"""The one ``TrainState`` of jaxmu: a model being trained, used by the trainer and every method.

A pytree (``jax.tree_util.register_dataclass``) with data fields ``params``, ``batch_stats``,
``opt_state`` (in that flattening order: the trainer's checkpoints store the flat list of leaves)
and two static fields:

* ``optimizer``: ``"sgd"`` (``engine.optim.torch_sgd``, PyTorch SGD with coupled weight decay) or
  ``"adam"`` (``engine.optim.torch_adam``, PyTorch Adam with L2-coupled decay);
* ``flat``: the optimizer state is over the flat parameter vector (``ravel_pytree``; the
  trainer's fused-update layout on XLA:CPU) instead of the parameter tree.

The optimizer's hyperparameters live in ``opt_state.hyperparams`` as arrays
(``optax.inject_hyperparams``, ``docs/methods.md`` §2.4-2.5), so one compiled program serves a grid of
learning rates and schedules just set ``hyperparams["learning_rate"]`` (``with_lr``). The
optimizer transformation is rebuilt from those hyperparameters (``tx``) — inject_hyperparams reads
them from the state in ``update`` anyway, so this is the same computation.

``apply_gradients`` has the semantics of ``docs/methods.md`` §2.4:

* ``grad_scale`` (a tree like params) multiplies the raw gradient *before* the optimizer
  (SalUn's 0/1 mask, MSG's 1/0.1 multiplier): coupled decay and momentum act afterwards;
* ``trainable`` (a tree of booleans, scalar per leaf or elementwise) freezes parameters
  completely: no gradient, no decay, no momentum (the freeze wraps the whole chain).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from jaxmu.engine.optim import apply_updates, set_hyperparam, torch_adam, torch_sgd

OPTIMIZERS = ("sgd", "adam")


@functools.partial(jax.tree_util.register_dataclass, data_fields=["params", "batch_stats", "opt_state"],
                   meta_fields=["optimizer", "flat"])
@dataclasses.dataclass(frozen=True)
class TrainState:
    """Parameters, BatchNorm running statistics and optimizer state of one model (or a stack)."""

    params: Any
    batch_stats: Any
    opt_state: Any
    optimizer: str = "sgd"
    flat: bool = False

    # ------------------------------------------------------------------ construction

    @classmethod
    def create(cls, params, batch_stats, hp, optimizer: str = "sgd", prefix: str = "", *,
               flat: bool = False) -> "TrainState":
        """A fresh optimizer state (momentum / moments 0) with ``hp[prefix + name]`` injected.

        SGD reads ``learning_rate``, ``momentum``, ``weight_decay``; Adam ``learning_rate`` and
        ``weight_decay``. ``flat`` initialises the state over ``ravel_pytree(params)``.
        """
        if optimizer == "sgd":
            tx = torch_sgd(hp[prefix + "learning_rate"], hp[prefix + "momentum"], hp[prefix + "weight_decay"])
        elif optimizer == "adam":
            tx = torch_adam(hp[prefix + "learning_rate"], hp[prefix + "weight_decay"])
        else:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
        opt_state = tx.init(ravel_pytree(params)[0] if flat else params)
        return cls(params, batch_stats, opt_state, optimizer, flat)

    def replace(self, **changes) -> "TrainState":
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ optimizer

    @property
    def hyperparams(self) -> dict[str, Any]:
        return self.opt_state.hyperparams

    def tx(self) -> optax.GradientTransformation:
        """The optimizer, built from the hyperparameters held in ``opt_state``."""
        if self.optimizer == "sgd":
            return torch_sgd(**self.opt_state.hyperparams)
        if self.optimizer == "adam":
            return torch_adam(**self.opt_state.hyperparams)
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")

    def with_lr(self, lr) -> "TrainState":
        """This state with ``hyperparams["learning_rate"] = lr`` (schedules, per-epoch rates)."""
        return self.replace(opt_state=set_hyperparam(self.opt_state, "learning_rate", lr))

    def apply_gradients(self, grads, *, grad_scale=None, trainable=None, **changes) -> "TrainState":
        """One optimizer step (module docstring); ``changes`` replaces other fields (``batch_stats``)."""
        tx = self.tx()
        if self.flat:
            if grad_scale is not None or trainable is not None:
                raise ValueError("grad_scale / trainable need the tree layout (flat=False)")
            flat, unravel = ravel_pytree(self.params)
            updates, opt_state = tx.update(ravel_pytree(grads)[0], self.opt_state, flat)
            return self.replace(params=unravel(flat + updates), opt_state=opt_state, **changes)
        if grad_scale is not None:
            grads = jax.tree_util.tree_map(lambda g, s: g * s, grads, grad_scale)
        updates, opt_state = tx.update(grads, self.opt_state, self.params)
        params = apply_updates(self.params, updates)
        if trainable is not None:
            params = tree_where(trainable, params, self.params)
            opt_state = _freeze_state(opt_state, self.opt_state, trainable)
        return self.replace(params=params, opt_state=opt_state, **changes)


def tree_where(mask_tree, a, b):
    """Leafwise ``where(mask, a, b)`` for a tree of boolean masks (scalars or arrays)."""
    return jax.tree_util.tree_map(lambda m, x, y: jnp.where(m, x, y), mask_tree, a, b)


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


class TrainProgress(NamedTuple):
    """A model in training by ``jaxmu.training.Trainer`` (stacked: every leaf gets a models axis).

    Attributes:
      state: the ``TrainState`` (params, batch_stats, ``torch_sgd`` state; hyperparameters inside).
      base_lr: the epoch-0 learning rate the cosine schedule scales.
      epoch: number of finished epochs (int32).

    Its leaves flatten in the order ``params, batch_stats, opt_state, base_lr, epoch`` (the
    training stages' checkpoint layout).
    """

    state: TrainState
    base_lr: jax.Array
    epoch: jax.Array

    @property
    def params(self):
        return self.state.params

    @property
    def batch_stats(self):
        return self.state.batch_stats
