"""FT — fine-tune on the retain set (``methods.md`` §4.1, reference ``munl/unlearning/finetune.py``).

Update rule, for E epochs over D_r (shuffled, unaugmented, train mode):

    theta <- SGD(lr_e, mu, wd).step(theta, grad CE(f_theta(x_r), y_r)),
    lr_e = lr * (1 + cos(pi e / E)) / 2   (cosine stepped per epoch, eta_min 0)

Defaults (reference ``DefaultUnlearnerConfig``): E 5, B 256, lr 0.1, mu 0.9, wd 5e-4.
Search space: the generic set G.

This module is also the template of the method contract: ``init`` builds the method state from
the original model, ``update`` is one step on a batch, ``run`` is the driver.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax

from jaxmu.engine.optim import cosine_factor, set_hyperparam, torch_sgd
from jaxmu.methods._base import MethodSpec, SplitData, StaticContext, generic_domains, generic_space
from jaxmu.methods._loops import cross_entropy, forward, gather, optimizer_step, run_epochs, run_pass


class TrainState(NamedTuple):
    """A model being trained: parameters, BatchNorm statistics, optimizer state."""

    params: Any
    batch_stats: Any
    opt_state: Any


def init(params, batch_stats, hp) -> TrainState:
    """Method state from the original model: a fresh PyTorch-SGD state (momentum 0)."""
    tx = torch_sgd(hp["learning_rate"], hp["momentum"], hp["weight_decay"])
    return TrainState(params, batch_stats, tx.init(params))


def ce_update(ctx: StaticContext, data: SplitData, state: TrainState, idx, key, *,
              sign: float = 1.0, train: bool = True) -> TrainState:
    """One SGD step on ``sign * CE`` of the batch ``idx`` (``sign=-1``: gradient ascent)."""
    x, y = gather(ctx, data, idx)

    def loss_fn(p):
        logits, bs = forward(ctx, p, state.batch_stats, x, train=train, key=key)
        return sign * cross_entropy(logits, y), bs

    grads, bs = jax.grad(loss_fn, has_aux=True)(state.params)
    params, opt = optimizer_step(torch_sgd(), state.params, state.opt_state, grads)
    return TrainState(params, bs, opt)


def with_lr(state: TrainState, lr) -> TrainState:
    return state._replace(opt_state=set_hyperparam(state.opt_state, "learning_rate", lr))


def run(ctx: StaticContext, data: SplitData, params, batch_stats, hp, key, *, static):
    E, B = static["epochs"], static["batch_size"]
    state = init(params, batch_stats, hp)

    def epoch(st, e, k):
        st = with_lr(st, hp["learning_rate"] * cosine_factor(e, E))
        return run_pass(st, data.retain, B, k, lambda s, idx, kk: ce_update(ctx, data, s, idx, kk))

    state = run_epochs(state, E, key, epoch)
    return state.params, state.batch_stats


SPEC = MethodSpec(
    name="finetune",
    run=run,
    defaults={"epochs": 5, "batch_size": 256, "learning_rate": 0.1, "momentum": 0.9, "weight_decay": 5e-4},
    search_space=generic_space(),
    static=frozenset({"epochs", "batch_size"}),
    domains=generic_domains(),
    doc="fine-tune on D_r (cosine per epoch)",
)
