"""CFW — stem-conv noise ("confuser") + class-weighted fine-tuning (``docs/methods.md`` §4.14).

Reference: ``munl/unlearning/kgltop3.py`` (xcadet/deepunlearn), a port of a NeurIPS 2023
Machine Unlearning Challenge solution (Kaggle); paper: Deep Unlearn, arXiv 2410.01276.

Update rule (train mode throughout, D_r shuffled each epoch, batch B, partial batch kept):

    confuser(s):  W <- W + s * N(0, I)    for each conv kernel in scope
    w_c = n_r / (C * n_c)                 (scikit-learn "balanced", counts over D_r labels)
    loss(batch) = CE_mean(f(x), y) * mean_{i in batch} w_{y_i}
    confuser(sigma_start)
    for e = 0..E-1:
        lr_e = lr * (1 + cos(pi e / E)) / 2          (cosine per epoch, eta_min 0)
        one pass over D_r with SGD(lr_e, mu, wd) on loss
        if e == E - 2: confuser(sigma_final)          (never runs when E = 1)

The class weights only rescale the whole batch loss (no per-sample weighting), as the
reference's ``CustomCrossEntropyLoss`` does (``mean(CE_mean * w[y])``).

Confuser scope (static ``confuser_scope``): ``"top_level_conv"`` (faithful: the reference perturbs
every *top-level* child whose name contains ``conv``) is mapped to "the stem convolution":
resnet18 and cnn ``conv1``, nothing on tinyvit_11m (CFW is then class-weighted fine-tuning) or
mlp; ``"all_convs"`` (clean): every convolution kernel (TinyViT depthwise and 1x1, ResNet
downsample included). Why cnn's ``conv2`` is not perturbed: §4.14.

The final confuser is the epoch-start hook of epoch E-1 (the parameters after epoch E-2's pass),
gated on the epoch. Keys: confuser ``fold_in(key, 0)`` (start), ``fold_in(key, 1)`` (final);
epoch e's data order ``fold_in(fold_in(key, 2), e)``. Static: ``epochs`` (ragged under tuning),
``batch_size``, ``confuser_scope``; arrays: the SGD's and both confuser stds. Dead:
``class_weight``. Known discrepancies (an absent class's weight): §4.14.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxmu.engine.losses import cross_entropy
from jaxmu.engine.passes import class_counts
from jaxmu.engine.state import TrainState
from jaxmu.engine.steps import batch_step
from jaxmu.methods._base import (U01, MethodError, MethodSpec, OneOf, SplitData, StaticContext,
    generic_domains, generic_space, nonneg)
from jaxmu.methods.noise import add_noise
from jaxmu.methods.plan import Batch, Pass, Phase, Plan, Schedule, epoch_count
from jaxmu.models.names import conv_kernel_paths

SCOPES = ("top_level_conv", "all_convs")
_STEM_CONV = {"resnet18": ("conv1", "kernel"), "cnn": ("conv1", "kernel")}


def confuser_paths(arch: str, params, scope: str) -> list[tuple[str, ...]]:
    """Kernel paths the confuser perturbs (see the module docstring)."""
    if scope == "top_level_conv":
        p = _STEM_CONV.get(arch)
        return [p] if p is not None else []
    if scope == "all_convs":
        return conv_kernel_paths(params)
    raise MethodError(f"cfw: unknown confuser_scope {scope!r}: choose one of {', '.join(SCOPES)}")


def confuser(params, paths, std, key):
    """W <- W + std * N(0, I) on the kernels at ``paths``; kernel ``j`` uses ``fold_in(key, j)``."""
    return add_noise(params, {p: (std, jax.random.fold_in(key, j)) for j, p in enumerate(paths)})


def class_weights(data: SplitData, num_classes: int) -> jax.Array:
    """Balanced weights w_c = n_r / (C n_c) over D_r labels (inf for an absent class)."""
    counts = class_counts(data, num_classes)
    return data.retain.shape[0] / (num_classes * counts)


def weighted_loss(logits, y, weights) -> jax.Array:
    """CE_mean(batch) x mean of the batch's class weights."""
    return cross_entropy(logits, y) * jnp.mean(weights[y])


def weighted_step(ctx: StaticContext, data: SplitData, state: TrainState, idx, key, weights) -> TrainState:
    """One SGD step on the class-weighted CE of batch ``idx`` (train mode)."""
    return batch_step(ctx, data, state, idx, key, lambda z, y: weighted_loss(z, y, weights))


class State(NamedTuple):
    """The model being trained, the class weights and the final confuser's key."""

    train: TrainState
    weights: jax.Array
    final_key: jax.Array


def init(params, batch_stats, hp, key, ctx: StaticContext, data: SplitData) -> State:
    """The start confuser (key ``fold_in(key, 0)``), then a fresh SGD state."""
    paths = confuser_paths(ctx.arch, params, ctx.static["confuser_scope"])
    weights = class_weights(data, ctx.num_classes)
    params = confuser(params, paths, hp["start_confuser_std"], jax.random.fold_in(key, 0))
    return State(TrainState.create(params, batch_stats, hp), weights, jax.random.fold_in(key, 1))


def update(state: State, batch: Batch, hp, key, ctx: StaticContext, *, phase: str):
    """``final_confuser`` (epoch start): the final noise at epoch E-1 only; ``step``: one weighted step."""
    st = state.train
    if phase == "final_confuser":
        E = epoch_count(hp, ctx)
        paths = confuser_paths(ctx.arch, st.params, ctx.static["confuser_scope"])
        confused = confuser(st.params, paths, hp["final_confuser_std"], state.final_key)
        last = jnp.logical_and(batch.epoch == E - 1, E >= 2)  # E = 1 has no final confuser (plan)
        params = jax.tree_util.tree_map(lambda a, b: jnp.where(last, a, b), confused, st.params)
        return state._replace(train=st.replace(params=params)), {}
    return state._replace(train=weighted_step(ctx, batch.data, st, batch.indices, key, state.weights)), {}


def plan(ctx: StaticContext) -> Plan:
    """E epochs (phase key (2,), cosine): the final confuser hook (E >= 2), one pass over D_r."""
    s = ctx.static
    return (Phase("finetune", s["epochs"], key=(2,), schedule=Schedule("cosine"),
                  on_epoch="final_confuser" if s["epochs"] >= 2 else None,
                  passes=(Pass("step", "retain", s["batch_size"]),), count="epochs"),)


SPEC = MethodSpec(
    name="cfw", init=init, update=update, plan=plan,
    defaults={"epochs": 4, "batch_size": 64, "learning_rate": 7e-4, "momentum": 0.9, "weight_decay": 5e-4,
              "start_confuser_std": 0.6, "final_confuser_std": 0.005, "confuser_scope": "top_level_conv"},
    search_space={**generic_space(), "start_confuser_std": U01, "final_confuser_std": U01},
    static=frozenset({"epochs", "batch_size", "confuser_scope"}),
    ragged=frozenset({"epochs"}),
    dead=frozenset({"class_weight"}),
    domains={**generic_domains(), "start_confuser_std": nonneg("a noise standard deviation"),
             "final_confuser_std": nonneg("a noise standard deviation"),
             "confuser_scope": OneOf(SCOPES, "which conv kernels the confuser perturbs")},
    doc="stem-conv noise (confuser) + class-weighted fine-tune on D_r (cosine per epoch)",
)
