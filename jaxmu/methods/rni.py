"""RNI — reset the head, train random parameter subsets with noise injection, then fine-tune all
(``docs/methods.md`` §4.18). Reference: ``munl/unlearning/kgltop7.py`` (a port of a NeurIPS 2023
Machine Unlearning Challenge Kaggle solution; no paper; the expansion of "RNI" is unconfirmed).
Keys: the ``params`` leaves under their reference names; bn keys per ``layouts.key_table``.

1. Reset the classifier (``fc``/``head``) as PyTorch's ``nn.Linear``: weight, bias U(+-1/sqrt(fan_in)).
2. With E = ``epochs``, F = ``fine_epochs``, R = ``reset_epochs``, P = max(0, E - F) partial
   epochs and ``seen`` (per non-bn key, initially False), for ep = 0..E-1, with a *new* SGD:
   * partial (ep < P): S = the first n_sel = min(9, #non-bn) non-bn keys of a random permutation;
     trainable = S + every bn key. If ep >= R, the first min(floor(noise_ratio * 9), n_sel) keys of
     that permutation are noise candidates; each **not in seen** gets
     ``theta += origin_noise * N(0, I)``. SGD(learning_rate, momentum, weight_decay).
   * fine (ep >= P): everything trainable; SGD(fine lr, fine_momentum, fine_weight_decay), fine lr
     = [2e-4, 2e-4, 2e-4, 1e-3, 1e-3, 1e-4][ep - (E - F)] (``"list"``) or ``fine_learning_rate``.
   * seen |= trainable (after the noise); one pass over D_r (shuffled, batch B, train mode: every
     BatchNorm's running statistics update), CE; frozen keys get no gradient, decay or momentum.

Static: E, F, R (ragged under tuning, §6.2: F and R are per-model values the update reads),
``batch_size``, the flags. Arrays: both SGDs' hyperparameters, ``noise_ratio`` (a float32 rank
threshold: may differ per model, §4.18), ``origin_noise``. Flags (faithful first):
``fine_lr_schedule`` "list" (ignores ``fine_learning_rate``, needs F <= 6) / "scalar" (every
tuning trial), ``name_filter`` "torchvision" / "module" (§5 #29), ``noise_only_unseen``
True / False (noise every candidate). Fewer than 9 non-bn keys (cnn, mlp): §4.18.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxmu.engine.state import TrainState
from jaxmu.engine.steps import masked_ce_step
from jaxmu.methods._base import (D_BOOL, D_LR, D_MOM, D_WD, EP, LR, U01, WD, MethodError, MethodSpec, OneOf,
    StaticContext, at_least, generic_domains, generic_space, nonneg, unit)
from jaxmu.methods.layouts import NAME_FILTERS, KeyTable, key_table
from jaxmu.methods.noise import add_noise
from jaxmu.methods.plan import Batch, Pass, Phase, Plan, epoch_count
from jaxmu.methods.ranking import ranks
from jaxmu.methods.reinit import reset_classifier
from jaxmu.models.names import tree_paths
from jaxmu.models.trees import unflatten_like

LAYER_SELECT = 9
FINE_LR_LIST = (2e-4, 2e-4, 2e-4, 1e-3, 1e-3, 1e-4)
FINE_LR_SCHEDULES = ("list", "scalar")
EPOCH_COUNTS = ("epochs", "fine_epochs", "reset_epochs")


def partial_masks(table: KeyTable, key, ep, seen, noise_ratio, reset_epochs: int, *, noise_only_unseen: bool = True):
    """One partial epoch's (trainable [leaves], noised [non-bn], new seen [non-bn]); ``seen`` and the
    permutation on ``fold_in(key, 0)`` are over the non-bn keys of ``table`` (step 2)."""
    n_nb = len(table.nonbn)
    n_sel = min(LAYER_SELECT, n_nb)
    rank = ranks(jax.random.permutation(jax.random.fold_in(key, 0), n_nb))
    selected = rank < n_sel
    count = jnp.minimum(jnp.floor(jnp.asarray(noise_ratio, jnp.float32) * LAYER_SELECT), n_sel)
    cand = (rank.astype(jnp.float32) < count) & (jnp.asarray(ep) >= reset_epochs)
    noised = cand & ~seen if noise_only_unseen else cand
    trainable = jnp.ones((len(table.names),), bool)
    if n_nb:
        trainable = trainable.at[jnp.asarray(table.nonbn)].set(selected)
    return trainable, noised, seen | selected


def fine_lr(hp, ep, E: int, F: int, schedule: str):
    if schedule == "scalar":
        return hp["fine_learning_rate"]
    idx = jnp.clip(ep - (E - F), 0, len(FINE_LR_LIST) - 1).astype(jnp.int32)  # clipped only in partial epochs
    return jnp.asarray(FINE_LR_LIST, jnp.float32)[idx]


def _check(static) -> None:
    E, F = static["epochs"], static["fine_epochs"]
    if static["fine_lr_schedule"] == "list" and min(E, F) > 0 and F > len(FINE_LR_LIST):
        raise MethodError(f"rni: fine_lr_schedule='list' has {len(FINE_LR_LIST)} entries but fine_epochs={F}; "
                          "use fine_lr_schedule='scalar'")


class State(NamedTuple):
    """The model being trained (its optimizer re-created every epoch), the non-bn keys selected
    so far (``seen`` [non-bn]) and this epoch's trainable leaves (``trainable`` [leaves])."""

    train: TrainState
    seen: jax.Array
    trainable: jax.Array


def init(params, batch_stats, hp, key, ctx: StaticContext, data) -> State:
    """Step 1: the head reset on ``fold_in(key, 0)``; nothing selected yet."""
    table = key_table(ctx.arch, params, batch_stats, ctx.static["name_filter"])
    train = TrainState.create(reset_classifier(ctx.arch, params, jax.random.fold_in(key, 0)), batch_stats, hp)
    return State(train, jnp.zeros((len(table.nonbn),), bool), jnp.ones((len(table.names),), bool))


def update(state: State, batch: Batch, hp, key, ctx: StaticContext, *, phase: str):
    """``select`` (epoch start, key k): this epoch's subset (``fold_in(k, 0)``), noise (``fold_in(k, 1)``,
    leaf i: ``fold_in(., i)``) and new SGD; ``step``: masked CE."""
    if phase == "step":
        mask = unflatten_like(state.train.params, [state.trainable[i] for i in range(state.trainable.shape[0])])
        return state._replace(train=masked_ce_step(ctx, batch.data, state.train, batch.indices, key, train=True,
                                                   trainable=mask)), {}
    E, F, R = (epoch_count(hp, ctx, k) for k in EPOCH_COUNTS)  # per model when ragged (float32)
    table = key_table(ctx.arch, state.train.params, state.train.batch_stats, ctx.static["name_filter"])
    # One body for both phases (one compiled program): the fine phase is the partial phase
    # with every leaf trainable, no noise and the fine optimizer's hyperparameters.
    ep = batch.epoch
    fine = ep >= jnp.maximum(0, E - F)
    trainable, noised, seen = partial_masks(table, key, ep, state.seen, hp["noise_ratio"], R,
                                            noise_only_unseen=ctx.static["noise_only_unseen"])
    trainable = trainable | fine
    paths, noised, k_noise = tree_paths(state.train.params), noised & ~fine, jax.random.fold_in(key, 1)
    p = add_noise(state.train.params, {paths[i]: (jnp.where(noised[j], hp["origin_noise"], 0.0),
                                                  jax.random.fold_in(k_noise, i)) for j, i in enumerate(table.nonbn)})
    opt = {n: jnp.where(fine, hp["fine_" + n], hp[n]) for n in ("momentum", "weight_decay")}
    opt["learning_rate"] = jnp.where(fine, fine_lr(hp, ep, E, F, ctx.static["fine_lr_schedule"]), hp["learning_rate"])
    return State(TrainState.create(p, state.train.batch_stats, opt), seen, trainable), {}


def plan(ctx: StaticContext) -> Plan:
    """E epochs on ``fold_in(key, 1)``: ``select`` with k_e, then one pass over D_r on ``fold_in(k_e, 2)``."""
    _check(ctx.static)
    return (Phase("rni", ctx.static["epochs"], on_epoch="select", count="epochs",
                  passes=(Pass("step", "retain", ctx.static["batch_size"], key=(2,)),), key=(1,)),)


SPEC = MethodSpec(
    name="rni", init=init, update=update, plan=plan,
    defaults={"epochs": 9, "fine_epochs": 4, "reset_epochs": 1, "batch_size": 64, "learning_rate": 2e-4,
              "momentum": 0.9, "weight_decay": 5e-4, "fine_learning_rate": 2e-4, "fine_momentum": 0.9,
              "fine_weight_decay": 5e-4, "noise_ratio": 0.7, "origin_noise": 0.04, "fine_lr_schedule": "list",
              "name_filter": "torchvision", "noise_only_unseen": True},
    search_space={"fine_epochs": EP, "fine_learning_rate": LR, "fine_weight_decay": WD, "reset_epochs": EP,
                  "noise_ratio": U01, "origin_noise": U01, **generic_space()},
    static=frozenset({"epochs", "fine_epochs", "reset_epochs", "batch_size", "fine_lr_schedule", "name_filter",
                      "noise_only_unseen"}),
    ragged=frozenset(EPOCH_COUNTS),
    domains={**generic_domains(ep=None), **{k: at_least(0, "a number of epochs") for k in EPOCH_COUNTS},
             "fine_learning_rate": D_LR, "fine_momentum": D_MOM, "fine_weight_decay": D_WD,
             "noise_ratio": unit("the fraction of selected layers noised"),
             "origin_noise": nonneg("a noise standard deviation"), "noise_only_unseen": D_BOOL,
             "fine_lr_schedule": OneOf(FINE_LR_SCHEDULES, "the reference's fixed list or a searched scalar"),
             "name_filter": OneOf(NAME_FILTERS, "how BatchNorm parameters are recognised")},
    doc="reset head, train random parameter subsets with noise injection, then fine-tune all",
    tune_overrides={"fine_lr_schedule": "scalar"},  # HPO searches a scalar fine lr (§4.18)
)
