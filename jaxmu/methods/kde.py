"""KDE — reset stem and head, distil on D_v, then distil + CE on D_r (``docs/methods.md`` §4.17).

Reference: ``munl/unlearning/kgltop6.py`` (xcadet/deepunlearn), adapted from the Kaggle notebook
"unlearning-by-resetting-layers-7th-on-private-lb" (NeurIPS 2023 Machine Unlearning
Challenge); paper: Deep Unlearn, arXiv 2410.01276.

Update rule (t = theta_0, frozen, eval mode; student s in train mode; q = softmax(t/T)):

    reset (PyTorch default init, U(+-1/sqrt(fan_in)) for kernel and bias): stem conv + head
    KL(t||s)   = (1/B) sum_i sum_c q_ic (log q_ic - log softmax(s/T)_ic)   (batchmean, no T^2)
    warm-up:   E_w epochs over D_v in STORED order (not shuffled), batch B,
               SGD(lr, mu, wd), constant lr, loss KL(t||s)
    retain:    E_r epochs over D_r (shuffled), batch B, a NEW SGD(lr_r, mu_r, wd_r) (momentum 0)
               with lr_e = lr_r (1 + cos(pi e / E_r)) / 2, loss
               soft-CE + CE(s, y) + KL(t||s),  soft-CE = mean_i sum_c -q_ic log softmax(s/T)_ic
               (the reference applies log-softmax twice; it is idempotent)

Reset mapping (the reference resets ``model.conv1`` if present and ``model.fc`` or else
``model.head``): resnet18 ``conv1`` (7x7 stem, fan_in 3*7*7, no bias) + ``fc``;
tinyvit_11m only ``head`` (no ``conv1`` attribute; ``norm_head`` untouched); cnn ``conv1`` + ``head``;
mlp ``fc1`` (weight and bias; its stem layer, per ``names.stem_paths``) + ``head``. BatchNorm
layers of the stem (``bn1``) keep their parameters and statistics, as in the reference.

Hyperparameter names: ``epochs`` / ``learning_rate`` / ``momentum`` / ``weight_decay`` are the
reference's ``num_epochs`` / ``optimizer.*`` (warm-up); ``retain_epochs`` / ``retain_*`` are
``retain_num_epochs`` / ``retain_optimizer.*``.

Faithful: warm-up on the validation split (``warmup_split="val"``; no clean alternative is
defined, the flag only records it). Consequence: D_v is training data here and also the HPO
objective's non-member set — report Test MIA next to Val MIA.

Structure (``jaxmu.methods.plan``): ``init`` resets stem and head and holds the teacher; the plan
is a warm-up phase, then a retain phase whose one-shot step creates the retain optimizer.

Randomness: reset draws from ``fold_in(key, 0)``; warm-up epoch keys ``fold_in(fold_in(key, 1), e)``
(TinyViT drop-path only; phase key ``(1,)``); retain epochs ``fold_in(fold_in(key, 2), e)`` (phase
key ``(2,)``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxmu.engine.losses import cross_entropy, kl_div
from jaxmu.engine.state import TrainState
from jaxmu.engine.steps import distill_step
from jaxmu.methods._base import (D_EPOCHS, D_LR, D_MOM, D_TEMP, D_WD, EP, LR, TEMP, WD, MethodError,
    MethodSpec, OneOf, StaticContext, generic_domains, generic_space)
from jaxmu.methods.plan import Batch, Pass, Phase, Plan, Schedule
from jaxmu.methods.reinit import torch_default_reinit
from jaxmu.models.names import head_paths

_STEM = {"resnet18": (("conv1",),), "cnn": (("conv1",),), "mlp": (("fc1",),), "tinyvit_11m": ()}


def reset_paths(arch: str) -> tuple[tuple[str, ...], ...]:
    """Module prefixes re-initialised by KDE (see the module docstring)."""
    if arch not in _STEM:
        raise MethodError(f"kde: no reset rule for architecture {arch!r}")
    return _STEM[arch] + tuple(head_paths(arch))


def soft_ce(t_logits, s_logits, temperature) -> jax.Array:
    """mean_i sum_c -softmax(t/T)_ic log_softmax(s/T)_ic."""
    q = jax.nn.softmax(t_logits / temperature, axis=-1)
    return jnp.mean(jnp.sum(-q * jax.nn.log_softmax(s_logits / temperature, axis=-1), axis=-1))


def warmup_update(ctx, data, teacher, state: TrainState, idx, key, temperature) -> TrainState:
    return distill_step(ctx, data, teacher, state, idx, key, lambda t, s, y: kl_div(t, s, temperature, "batchmean"))


def retain_update(ctx, data, teacher, state: TrainState, idx, key, temperature) -> TrainState:
    return distill_step(ctx, data, teacher, state, idx, key, lambda t, s, y: (
        soft_ce(t, s, temperature) + cross_entropy(s, y) + kl_div(t, s, temperature, "batchmean")))


class State(NamedTuple):
    """The student being trained and the frozen teacher ``(params, batch_stats)`` = theta_0."""

    train: TrainState
    teacher: tuple[Any, Any]


def init(params, batch_stats, hp, key, ctx: StaticContext, data) -> State:
    """Teacher = theta_0; student with stem/head reset (``fold_in(key, 0)``), fresh SGD."""
    del data
    student = torch_default_reinit(params, reset_paths(ctx.arch), jax.random.fold_in(key, 0))
    return State(TrainState.create(student, batch_stats, hp), (params, batch_stats))


def update(state: State, batch: Batch, hp, key, ctx: StaticContext, *, phase: str):
    """``warmup`` / ``retain``: one distillation step; ``retain_optimizer``: the fresh retain SGD."""
    T = hp["temperature"]
    st = state.train
    if phase == "retain_optimizer":
        st = TrainState.create(st.params, st.batch_stats, hp, prefix="retain_")
    elif phase == "warmup":
        st = warmup_update(ctx, batch.data, state.teacher, st, batch.indices, key, T)
    else:
        st = retain_update(ctx, batch.data, state.teacher, st, batch.indices, key, T)
    return state._replace(train=st), {}


def plan(ctx: StaticContext) -> Plan:
    """Warm-up: E_w epochs over D_v in stored order (phase key fold_in(key, 1)), constant lr; then
    a fresh retain SGD and E_r epochs over D_r (phase key fold_in(key, 2)), cosine lr_r."""
    s = ctx.static
    B = s["batch_size"]
    return (Phase("warmup", s["epochs"], passes=(Pass("warmup", "val", B, shuffle=False),), key=(1,), count="epochs"),
            Phase("retain", s["retain_epochs"], passes=(Pass("retain", "retain", B),), once="retain_optimizer",
                  schedule=Schedule("cosine", rate="retain_learning_rate"), key=(2,), count="retain_epochs"))


SPEC = MethodSpec(
    name="kde", init=init, update=update, plan=plan,
    defaults={"epochs": 3, "retain_epochs": 3, "batch_size": 64, "temperature": 5.0,
              "learning_rate": 9e-4, "momentum": 0.9, "weight_decay": 5e-4,
              "retain_learning_rate": 1e-3, "retain_momentum": 0.9, "retain_weight_decay": 5e-4,
              "warmup_split": "val"},
    search_space={**generic_space(), "temperature": TEMP, "retain_epochs": EP,
                  "retain_learning_rate": LR, "retain_weight_decay": WD},
    static=frozenset({"epochs", "retain_epochs", "batch_size", "warmup_split"}),
    ragged=frozenset({"epochs", "retain_epochs"}),
    domains={**generic_domains(), "temperature": D_TEMP, "retain_epochs": D_EPOCHS,
             "retain_learning_rate": D_LR, "retain_momentum": D_MOM, "retain_weight_decay": D_WD,
             "warmup_split": OneOf(("val",), "the reference distils on D_v only; no clean variant")},
    doc="reset stem+head, distil on D_v, then soft-CE + CE + KL on D_r (cosine)",
)
