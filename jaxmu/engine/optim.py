"""PyTorch-semantics optimizers with hyperparameters as state arrays (``docs/methods.md`` §2.4-2.5).

* ``torch_sgd``: PyTorch SGD (dampening 0, no Nesterov) with *coupled* weight decay:
  ``d = g + wd * theta; m <- mu * m + d`` (m starts at 0, so the first step uses ``m = d``);
  ``theta <- theta - lr * m``. optax: add_decayed_weights -> trace -> scale(-lr).
* ``torch_adam``: PyTorch Adam with L2-coupled weight decay (not AdamW):
  ``d = g + wd * theta``, betas (0.9, 0.999), eps 1e-8 added to sqrt(v_hat).

Both are wrapped in ``optax.inject_hyperparams`` (docs/methods.md §2.4) so learning rate, momentum
and weight decay live in ``opt_state.hyperparams`` as arrays: under ``vmap`` each model of a
stack carries its own values and one compiled program serves a whole hyperparameter grid.
Schedules set ``hyperparams["learning_rate"]`` at epoch boundaries (``set_hyperparam``): as
factors of the base rate, ``cosine_factor`` (CosineAnnealingLR per epoch), ``step_decay_factor``
(§2.5), ``linear_annealing_factor`` (MSG's LinearAnnealingLR per epoch); as a rate,
``cosine_lr`` (CosineAnnealingLR per step with an absolute eta_min, FCS).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax


def _sgd_chain(learning_rate, momentum, weight_decay) -> optax.GradientTransformation:
    return optax.chain(
        optax.add_decayed_weights(weight_decay),
        optax.trace(decay=momentum, nesterov=False),
        optax.scale_by_learning_rate(learning_rate),
    )


def _adam_chain(learning_rate, weight_decay, b1=0.9, b2=0.999, eps=1e-8) -> optax.GradientTransformation:
    return optax.chain(
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_adam(b1=b1, b2=b2, eps=eps),
        optax.scale_by_learning_rate(learning_rate),
    )


def torch_sgd(learning_rate=0.1, momentum=0.9, weight_decay=0.0) -> optax.GradientTransformation:
    """PyTorch SGD with injected (array-valued) ``learning_rate``, ``momentum``, ``weight_decay``."""
    return optax.inject_hyperparams(_sgd_chain)(
        learning_rate=learning_rate, momentum=momentum, weight_decay=weight_decay
    )


def torch_adam(learning_rate=1e-3, weight_decay=0.0, b1=0.9, b2=0.999, eps=1e-8) -> optax.GradientTransformation:
    """PyTorch Adam (coupled L2) with injected ``learning_rate``, ``weight_decay`` (and betas, eps)."""
    return optax.inject_hyperparams(_adam_chain)(learning_rate=learning_rate, weight_decay=weight_decay,
                                                 b1=b1, b2=b2, eps=eps)


def set_hyperparam(opt_state, name: str, value) -> optax.OptState:
    """Return ``opt_state`` with ``hyperparams[name]`` replaced (an ``InjectHyperparamsState``)."""
    hp = dict(opt_state.hyperparams)
    if name not in hp:
        raise KeyError(f"optimizer has no hyperparameter {name!r}; it has {sorted(hp)}")
    hp[name] = jnp.asarray(value, dtype=jnp.asarray(hp[name]).dtype)
    return opt_state._replace(hyperparams=hp)


def cosine_factor(epoch, total_epochs, eta_min_ratio=0.0):
    """PyTorch CosineAnnealingLR stepped per epoch, as a factor of the base rate.

    ``lr_e = eta_min + (lr0 - eta_min) (1 + cos(pi e / T)) / 2`` with ``T = total_epochs``;
    returned as ``lr_e / lr0`` for ``eta_min = eta_min_ratio * lr0``. Works on traced arrays.
    """
    e = jnp.asarray(epoch, jnp.float32)
    t = jnp.maximum(jnp.asarray(total_epochs, jnp.float32), 1.0)
    return eta_min_ratio + (1.0 - eta_min_ratio) * 0.5 * (1.0 + jnp.cos(math.pi * e / t))


def cosine_lr(t, total, lr, eta_min):
    """Per-step CosineAnnealingLR: ``eta_min + (lr - eta_min)(1 + cos(pi t / T)) / 2`` (t an int array)."""
    return eta_min + (lr - eta_min) * 0.5 * (1.0 + jnp.cos(math.pi * t.astype(jnp.float32) / total))


def linear_annealing_factor(epoch, total_epochs):
    """LinearAnnealingLR per epoch (up, then down): ``s / a`` if ``s <= a`` else ``(T - s) / (T - a)``,
    with ``a = (E+1)//2``, ``T = E+1``, ``s = e+1`` (E = 5: [1/3, 2/3, 1, 2/3, 1/3])."""
    a, T = (total_epochs + 1) // 2, total_epochs + 1
    s = jnp.asarray(epoch, jnp.float32) + 1.0
    return jnp.where(s <= a, s / a, (T - s) / jnp.maximum(T - a, 1))


def step_decay_factor(epoch, total_epochs, rate, *, one_based: bool):
    """Step decay of ``docs/methods.md`` §2.5: ``rate ** #{d in (floor(.5E), floor(.8E), floor(.9E)) : e > d}``.

    ``one_based`` selects SCRUB's epoch count (e = 1..E) versus CF-k/EU-k's (e = 0..E-1);
    pass the epoch in that convention.
    """
    e = jnp.asarray(epoch, jnp.int32)
    E = jnp.asarray(total_epochs, jnp.int32)
    del one_based  # the caller chooses the convention of ``epoch``; documented for clarity
    milestones = jnp.stack([E // 2, (8 * E) // 10, (9 * E) // 10])
    m = jnp.sum(e > milestones)
    return jnp.asarray(rate, jnp.float32) ** m.astype(jnp.float32)


def apply_updates(params, updates):
    return jax.tree_util.tree_map(lambda p, u: (p + u).astype(p.dtype), params, updates)
