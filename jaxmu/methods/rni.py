"""RNI — reset the head, train random parameter subsets with noise injection, then fine-tune all
(``docs/methods.md`` §4.18).

Reference: ``munl/unlearning/kgltop7.py`` (a port of a NeurIPS 2023 Machine Unlearning Challenge
Kaggle solution; no paper; the expansion of "RNI" is unconfirmed).

Parameters are addressed by their reference names (``jaxmu.models.names.reference_name``; only
``params`` leaves, as ``named_parameters``). "bn keys" are the names containing ``"bn"``; all
others are non-bn keys (ResNet-18: 34 / 28, downsample BatchNorms are non-bn; TinyViT: 54 / 161).

1. Reset the classifier (``fc``/``head``) with PyTorch's ``nn.Linear`` default: weight and bias
   U(+-1/sqrt(fan_in)).
2. With E = ``epochs``, F = ``fine_epochs``, R = ``reset_epochs``, P = max(0, E - F) partial
   epochs, and ``seen`` (per non-bn leaf, initially all False), for ep = 0..E-1:

   * partial phase (ep < P): S = n_sel = min(9, #non-bn) distinct non-bn keys drawn uniformly
     (the first n_sel entries of a random permutation); trainable = S + every bn key. Noise
     (only if ep >= R): the first c = min(floor(noise_ratio * 9), n_sel) keys of that same
     permutation (a uniform c-subset of S) are candidates; each candidate **not in seen** gets
     ``theta += origin_noise * N(0, I)``. Then a *new* SGD(learning_rate, momentum, weight_decay).
   * fine phase (ep >= P): everything trainable; a *new* SGD(fine lr, fine_momentum,
     fine_weight_decay), fine lr = [2e-4, 2e-4, 2e-4, 1e-3, 1e-3, 1e-4][ep - (E - F)]
     (``fine_lr_schedule="list"``, the reference default) or ``fine_learning_rate``
     (``"scalar"``, what every HPO trial uses).
   * seen |= trainable (after the noise step); one pass over D_r (shuffled, batch B, unaugmented,
     **train mode**: BatchNorm running statistics of every layer update, frozen or not; TinyViT
     drop-path active), CE; frozen keys get no gradient, decay or momentum. No schedule. The
     reference's per-epoch validation accuracy is logging only and skipped.

   theta_{t+1} = theta_t - lr * m_t on the trainable leaves, m_t = mu m_{t-1} + g_t + wd theta_t,
   m reset to 0 at every epoch start.

Static: ``epochs`` (E), ``fine_epochs`` (F), ``reset_epochs`` (R), ``batch_size`` (B) and the
flags below. Arrays: ``learning_rate``, ``momentum``, ``weight_decay``, ``fine_learning_rate``,
``fine_momentum``, ``fine_weight_decay``, ``noise_ratio``, ``origin_noise``. The noise count
floor(noise_ratio * 9) is dynamic (computed with ``jnp.floor`` in float32 and applied as a rank
threshold), so ``noise_ratio`` may differ per model; the reference truncates a float64 product
(identical except within float32 rounding of multiples of 1/9).

Flags (faithful defaults):

* ``fine_lr_schedule="list"``: the reference's default fine lr list (needs F <= 6, as the
  reference would raise an IndexError otherwise); ``fine_learning_rate`` is then **ignored**.
  HPO runs (fine lr sampled as a scalar) must set ``"scalar"``.
* ``name_filter="torchvision"`` (§5 #29): bn keys by the ``"bn"`` name substring;
  ``"module"``: every BatchNorm scale/shift (adds ResNet-18's downsample BatchNorms).
* ``noise_only_unseen=True``: candidates already selected in an earlier epoch are not noised;
  ``False`` noises every candidate.

Architectures with fewer than 9 non-bn keys (jaxmu's ``cnn``: 4, ``mlp``: 6) select all of them
every partial epoch and cap the noise count at that number (the reference would raise in
``np.random.choice`` there; it only supports ResNet-18 and TinyViT).

Structure: ``State`` (the ``TrainState``, ``seen``, this epoch's trainable leaves); ``init`` is step
1; the plan is one phase of E epochs whose ``on_epoch`` hook ``select`` draws the subset, adds
the noise and re-creates the SGD state (the state holds data only), then a ``step`` pass over D_r.

Randomness: head reset ``fold_in(key, 0)``; epoch ep uses ``k = fold_in(fold_in(key, 1), ep)``
with ``fold_in(k, 0)`` for the key selection, ``fold_in(k, 1)`` for the noise (leaf i:
``fold_in(., i)``), ``fold_in(k, 2)`` for the data pass. Bit-level RNG replication of NumPy /
PyTorch is out of scope (§2.3).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxmu.engine.state import TrainState
from jaxmu.engine.steps import masked_ce_step
from jaxmu.methods._base import (BS, D_BATCH, D_BOOL, D_LR, D_MOM, D_WD, EP, LR, U01, WD,
    MethodError, MethodSpec, OneOf, StaticContext, at_least, nonneg, unit)
from jaxmu.methods.layouts import bn_modules
from jaxmu.methods.plan import Batch, Pass, Phase, Plan
from jaxmu.methods.reinit import reset_classifier
from jaxmu.models.names import reference_name, tree_paths

LAYER_SELECT = 9
FINE_LR_LIST = (2e-4, 2e-4, 2e-4, 1e-3, 1e-3, 1e-4)
NAME_FILTERS = ("torchvision", "module")
FINE_LR_SCHEDULES = ("list", "scalar")


class KeyTable(NamedTuple):
    """Static facts about the parameter leaves (flattening order)."""

    names: tuple[str, ...]
    is_bn: tuple[bool, ...]
    nonbn: tuple[int, ...]  # leaf indices of the non-bn keys


def key_table(arch: str, params, batch_stats, name_filter: str = "torchvision") -> KeyTable:
    if name_filter not in NAME_FILTERS:
        raise MethodError(f"name_filter must be one of {NAME_FILTERS}, got {name_filter!r}")
    paths = tree_paths(params)
    names = tuple(reference_name(arch, p) for p in paths)
    if name_filter == "torchvision":
        is_bn = tuple("bn" in n for n in names)
    else:
        bns = bn_modules(batch_stats)
        is_bn = tuple(p[:-1] in bns and p[-1] in ("scale", "bias") for p in paths)
    return KeyTable(names, is_bn, tuple(i for i, b in enumerate(is_bn) if not b))


def partial_masks(table: KeyTable, key, ep, seen, noise_ratio, reset_epochs: int, *,
                  layer_select: int = LAYER_SELECT, noise_only_unseen: bool = True):
    """One partial epoch's selection: (trainable [leaves], noised [non-bn], new seen [non-bn]).

    ``seen`` is a bool vector over the non-bn keys. Selected = the first ``n_sel`` of a random
    permutation of the non-bn keys; noise candidates = its first ``c`` entries, c =
    min(floor(noise_ratio * 9), n_sel), only when ``ep >= reset_epochs``.
    """
    n_nb = len(table.nonbn)
    n_sel = min(layer_select, n_nb)
    perm = jax.random.permutation(jax.random.fold_in(key, 0), n_nb)
    rank = jnp.zeros((n_nb,), jnp.int32).at[perm].set(jnp.arange(n_nb, dtype=jnp.int32))
    selected = rank < n_sel
    count = jnp.minimum(jnp.floor(jnp.asarray(noise_ratio, jnp.float32) * LAYER_SELECT), n_sel)
    cand = (rank.astype(jnp.float32) < count) & (jnp.asarray(ep) >= reset_epochs)
    noised = cand & ~seen if noise_only_unseen else cand
    trainable = jnp.ones((len(table.names),), bool)
    if n_nb:
        trainable = trainable.at[jnp.asarray(table.nonbn)].set(selected)
    return trainable, noised, seen | selected


def add_noise(table: KeyTable, params, noised, origin_noise, key):
    """theta_i += origin_noise * N(0, I) on the non-bn leaves flagged in ``noised``."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    out = list(leaves)
    for j, i in enumerate(table.nonbn):
        z = jax.random.normal(jax.random.fold_in(key, i), leaves[i].shape, leaves[i].dtype)
        out[i] = leaves[i] + jnp.where(noised[j], origin_noise, 0.0).astype(leaves[i].dtype) * z
    return jax.tree_util.tree_unflatten(treedef, out)


def leaf_mask_tree(params, trainable):
    """Tree of scalar bools (one per leaf) from a [leaves] bool vector."""
    treedef = jax.tree_util.tree_structure(params)
    return jax.tree_util.tree_unflatten(treedef, [trainable[i] for i in range(treedef.num_leaves)])


def fine_lr(hp, ep, E: int, F: int, schedule: str):
    if schedule == "scalar":
        return hp["fine_learning_rate"]
    idx = jnp.clip(ep - (E - F), 0, len(FINE_LR_LIST) - 1)  # clipped only in partial epochs (unused there)
    return jnp.asarray(FINE_LR_LIST, jnp.float32)[idx]


def _check(static) -> tuple[int, int, int, int]:
    E, F, R, B = static["epochs"], static["fine_epochs"], static["reset_epochs"], static["batch_size"]
    if static["fine_lr_schedule"] == "list" and min(E, F) > 0 and F > len(FINE_LR_LIST):
        raise MethodError(f"rni: fine_lr_schedule='list' has {len(FINE_LR_LIST)} entries but fine_epochs={F}; "
                          "use fine_lr_schedule='scalar'")
    return E, F, R, B


class State(NamedTuple):
    """The model being trained (its optimizer re-created every epoch), the non-bn keys selected
    so far (``seen`` [non-bn]) and this epoch's trainable leaves (``trainable`` [leaves])."""

    train: TrainState
    seen: jax.Array
    trainable: jax.Array


def init(params, batch_stats, hp, key, ctx: StaticContext, data) -> State:
    """Step 1: the head reset on ``fold_in(key, 0)``; nothing selected yet."""
    del data
    table = key_table(ctx.arch, params, batch_stats, ctx.static["name_filter"])
    params = reset_classifier(ctx.arch, params, jax.random.fold_in(key, 0))
    train = TrainState.create(params, batch_stats, {n: hp[n] for n in ("learning_rate", "momentum", "weight_decay")})
    return State(train, jnp.zeros((len(table.nonbn),), bool), jnp.ones((len(table.names),), bool))


def update(state: State, batch: Batch, hp, key, ctx: StaticContext, *, phase: str):
    """``select`` (epoch start, key k): this epoch's subset, noise and new SGD; ``step``: masked CE."""
    if phase == "step":
        mask = leaf_mask_tree(state.train.params, state.trainable)
        return state._replace(train=masked_ce_step(ctx, batch.data, state.train, batch.indices, key, train=True,
                                                   trainable=mask)), {}
    E, F, R, _ = _check(ctx.static)
    table = key_table(ctx.arch, state.train.params, state.train.batch_stats, ctx.static["name_filter"])
    # One body for both phases (one compiled program): the fine phase is the partial phase
    # with every leaf trainable, no noise and the fine optimizer's hyperparameters.
    ep = batch.epoch
    fine = ep >= max(0, E - F)
    trainable, noised, seen = partial_masks(table, key, ep, state.seen, hp["noise_ratio"], R,
                                            noise_only_unseen=ctx.static["noise_only_unseen"])
    trainable = trainable | fine
    p = add_noise(table, state.train.params, noised & ~fine, hp["origin_noise"], jax.random.fold_in(key, 1))
    lr = jnp.where(fine, fine_lr(hp, ep, E, F, ctx.static["fine_lr_schedule"]), hp["learning_rate"])
    mom = jnp.where(fine, hp["fine_momentum"], hp["momentum"])
    wd = jnp.where(fine, hp["fine_weight_decay"], hp["weight_decay"])
    train = TrainState.create(p, state.train.batch_stats, {"learning_rate": lr, "momentum": mom, "weight_decay": wd})
    return State(train, seen, trainable), {}


def plan(ctx: StaticContext) -> Plan:
    """E epochs on ``fold_in(key, 1)``: ``select`` with k_e, then one pass over D_r on ``fold_in(k_e, 2)``."""
    E, _, _, B = _check(ctx.static)
    return (Phase("rni", E, on_epoch="select", passes=(Pass("step", "retain", B, key=(2,)),), key=(1,)),)


SPEC = MethodSpec(
    name="rni",
    init=init,
    update=update,
    plan=plan,
    defaults={
        "epochs": 9, "fine_epochs": 4, "reset_epochs": 1, "batch_size": 64,
        "learning_rate": 2e-4, "momentum": 0.9, "weight_decay": 5e-4,
        "fine_learning_rate": 2e-4, "fine_momentum": 0.9, "fine_weight_decay": 5e-4,
        "noise_ratio": 0.7, "origin_noise": 0.04,
        "fine_lr_schedule": "list", "name_filter": "torchvision", "noise_only_unseen": True,
    },
    search_space={
        "fine_epochs": EP, "fine_learning_rate": LR, "fine_weight_decay": WD, "reset_epochs": EP,
        "noise_ratio": U01, "origin_noise": U01,
        "learning_rate": LR, "weight_decay": WD, "batch_size": BS, "epochs": EP,
    },
    static=frozenset({"epochs", "fine_epochs", "reset_epochs", "batch_size", "fine_lr_schedule", "name_filter",
                      "noise_only_unseen"}),
    domains={
        "epochs": at_least(0, "a number of epochs"), "fine_epochs": at_least(0, "a number of epochs"),
        "reset_epochs": at_least(0, "a number of epochs"), "batch_size": D_BATCH,
        "learning_rate": D_LR, "momentum": D_MOM, "weight_decay": D_WD,
        "fine_learning_rate": D_LR, "fine_momentum": D_MOM, "fine_weight_decay": D_WD,
        "noise_ratio": unit("the fraction of selected layers noised"),
        "origin_noise": nonneg("a noise standard deviation"),
        "fine_lr_schedule": OneOf(FINE_LR_SCHEDULES, "the reference's fixed list or a searched scalar"),
        "name_filter": OneOf(NAME_FILTERS, "how BatchNorm parameters are recognised"),
        "noise_only_unseen": D_BOOL,
    },
    doc="reset head, train random parameter subsets with noise injection, then fine-tune all",
    tune_overrides={"fine_lr_schedule": "scalar"},  # HPO searches a scalar fine lr (§4.18)
)
