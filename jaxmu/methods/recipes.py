"""Training recipes shared by several methods: their init / update / plan pieces.

* ``sgd_init`` / ``ce_update`` / ``cosine_finetune_plan`` — FT (``docs/methods.md`` §4.1), reused by
  CT (§4.16) after its kernel transpose and, ascending, by GA (§4.2): E epochs over D_r
  (shuffled, unaugmented, train mode) of ``theta <- SGD(lr_e, mu, wd).step(theta, grad CE)``,
  ``lr_e = lr (1 + cos(pi e / E)) / 2``.
* ``fk_init`` / ``fk_update`` / ``fk_plan`` — the CF-k / EU-k loop (reference ``fk_finetune``,
  §4.10-4.11): plain SGD on the trainable leaves (static mask from ``ctx.static``) of
  CE + (lambda/2) sum_T ||P - anchor||^2, anchor = the starting parameters (state data), 0-based
  step decay of the learning rate per epoch; ``FK_*``: their shared hyperparameters.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from jaxmu.engine.state import TrainState
from jaxmu.engine.steps import ce_step, masked_ce_step
from jaxmu.methods._base import (BS, D_BATCH, D_EPOCHS, D_LR, EP, LR, NL, U01, WD, MethodSpec, OneOf, SplitData,
    StaticContext, at_least, generic_domains, generic_space, nonneg, unit)
from jaxmu.methods.layouts import ATTENTION_BIAS_MODES, trainable_mask
from jaxmu.methods.plan import Batch, Pass, Phase, Plan, Schedule

BN_MODES = ("eval", "train")


def sgd_init(params, batch_stats, hp, key, ctx, data) -> TrainState:
    """A fresh PyTorch SGD(lr, mu, wd) state (momentum 0) on the model as it arrives."""
    del key, ctx, data
    return TrainState.create(params, batch_stats, hp)


def ce_update(state: TrainState, batch: Batch, hp, key, ctx: StaticContext, *, phase: str):
    """One SGD step on CE of the batch (train mode; ``phase="ascend"``: on -CE, gradient ascent)."""
    del hp
    sign = -1.0 if phase == "ascend" else 1.0
    return ce_step(ctx, batch.data, state, batch.indices, key, sign=sign), {}


def sgd_spec(name: str, plan, defaults: dict[str, Any], doc: str, *, init=sgd_init, update=ce_update,
             searched: bool = True) -> MethodSpec:
    """A method over the generic SGD hyperparameters only (epochs, B, lr, momentum, wd; epochs
    ragged): FT and GA, and the trainer's recipe (``jaxmu.training``; ``searched=False``: no
    search space)."""
    return MethodSpec(name=name, init=init, update=update, plan=plan, defaults=defaults,
                      search_space=generic_space() if searched else {}, static=frozenset({"epochs", "batch_size"}),
                      ragged=frozenset({"epochs"}), domains=generic_domains(), doc=doc)


def cosine_finetune_plan(ctx: StaticContext) -> Plan:
    """FT's plan: E epochs of SGD on CE over D_r (shuffled), cosine learning rate per epoch."""
    s = ctx.static
    return (Phase("finetune", s["epochs"], passes=(Pass("descend", "retain", s["batch_size"]),),
                  schedule=Schedule("cosine"), count="epochs"),)


class Anchored(NamedTuple):
    """CF-k / EU-k state: the model being trained and the L2 anchor P_init (its starting parameters)."""

    train: TrainState
    anchor: Any


def fk_init(params, batch_stats, hp, key=None, ctx=None, data=None) -> Anchored:
    """Plain PyTorch SGD (momentum 0, weight decay 0) at the base learning rate; anchor = ``params``."""
    del key, ctx, data
    train = TrainState.create(params, batch_stats,
                              {"learning_rate": hp["learning_rate"], "momentum": 0.0, "weight_decay": 0.0})
    return Anchored(train, params)


def fk_step(ctx: StaticContext, data: SplitData, state: TrainState, idx, key, *, mask, anchor, hp,
            bn_mode: str = "eval", augment: str = "none") -> TrainState:
    """One step: CE + (lambda/2) sum_T ||P - anchor||^2, SGD on the trainable leaves only."""
    return masked_ce_step(ctx, data, state, idx, key, train=bn_mode == "train", trainable=mask,
                          static_trainable=True, anchor=anchor, l2_weight=hp["sgda_weight_decay"],
                          augment=augment)


def fk_update(state: Anchored, batch: Batch, hp, key, ctx: StaticContext, *, phase: str):
    """``fk_step`` on the static mask of the last ``num_blocks`` blocks + classifier;
    ``phase="augmented"`` draws the batch through the train transform (EU-k), ``"step"`` does not."""
    s = ctx.static
    mask = trainable_mask(ctx.arch, state.anchor, s["num_blocks"], attention_biases=s["attention_biases"])
    augment = ctx.train_augment if phase == "augmented" else "none"
    new = fk_step(ctx, batch.data, state.train, batch.indices, key, mask=mask, anchor=state.anchor, hp=hp,
                  bn_mode=s["bn_mode"], augment=augment)
    return state._replace(train=new), {}


def fk_plan(ctx: StaticContext, *, augmented: bool = False) -> Plan:
    """E epochs of one pass over D_r (shuffled, batch B) on ``fold_in(key, 1)``; 0-based step decay
    ``lr_e = learning_rate * sgda_decay_rate ** m(e)`` set at every epoch start (docs/methods.md §2.5)."""
    s = ctx.static
    return (Phase("finetune", s["epochs"], passes=(Pass("augmented" if augmented else "step", "retain",
                                                        s["batch_size"]),),
                  schedule=Schedule("step", decay="sgda_decay_rate"), key=(1,), count="epochs"),)


# The CF-k hyperparameters, shared by EU-k.
FK_DEFAULTS = {
    "epochs": 10, "batch_size": 256, "num_blocks": 1,
    "learning_rate": 0.01, "sgda_decay_rate": 0.1, "sgda_weight_decay": 0.1,
    "bn_mode": "eval", "attention_biases": "frozen",
}
FK_SEARCH = {
    "epochs": EP, "batch_size": BS, "sgda_decay_rate": U01, "sgda_weight_decay": WD,
    "learning_rate": LR, "num_blocks": NL,
}
FK_STATIC = frozenset({"epochs", "batch_size", "num_blocks", "bn_mode", "attention_biases"})
FK_DOMAINS = {
    "epochs": D_EPOCHS, "batch_size": D_BATCH, "num_blocks": at_least(1, "the number of trailing blocks trained"),
    "learning_rate": D_LR, "sgda_decay_rate": unit("the step-decay factor of the learning rate"),
    "sgda_weight_decay": nonneg("the weight of the L2 pull towards the start"),
    "bn_mode": OneOf(BN_MODES, "BatchNorm mode of the training passes"),
    "attention_biases": OneOf(ATTENTION_BIAS_MODES, "TinyViT attention biases in CF-k/EU-k"),
}
