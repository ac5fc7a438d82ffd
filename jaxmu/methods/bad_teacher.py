"""BT — bad teaching: competent / incompetent teacher distillation (``docs/methods.md`` §4.7).

Reference: ``munl/unlearning/bad_teacher.py`` (from vikram2000b/bad-teaching-unlearning
``unlearn.py``; Chundawat et al., "Can Bad Teaching Induce Forgetting? Unlearning in Deep Networks
using an Incompetent Teacher", arXiv 2205.08096).

Teachers: competent t_g = theta_0 (eval mode, theta_0's running statistics); incompetent t_b = a
freshly initialised, never-trained network in eval mode (initial running stats mean 0, var 1).
Student s = theta_0 in train mode. Data: D_r ∪ D_f with origin flag u (1 = forget), shuffled,
batch B, unaugmented (the combined stream of ``relabel``). Per batch, with T = ``kl_temperature``:

    q_i = softmax(t_b(x_i)/T) if u_i = 1 else softmax(t_g(x_i)/T),   p_i = softmax(s(x_i)/T)
    "mean" (faithful):         L = (1 / (B C)) sum_i sum_c q_ic (log q_ic - log p_ic)
    "batchmean_t2" (clean):    L = T^2 (1 / B) sum_i sum_c q_ic (log q_ic - log p_ic)
    theta <- Adam(lr, wd as coupled L2).step(theta, grad L)      (no schedule)

Quirk flags and faithful defaults (``docs/methods.md`` §5 #15, #16):
  ``incompetent_teacher="resnet18"`` (faithful): always a torchvision-style ResNet-18 with C
    outputs and the ImageNet stem (``jaxmu.models.build_model("resnet18", C, input_shape)``, the
    student's input shape), also when the student is TinyViT / cnn / mlp. It runs on the tiny 8x8
    inputs too (spatial size 1 from layer2 on). ``"same_arch"`` (clean): a fresh init of the
    student's own architecture (``ctx.model.init``).
  ``kl_reduction="mean"`` (faithful: PyTorch ``kl_div`` default, elementwise mean over B x C, no
    T^2) / ``"batchmean_t2"`` (clean).
The incompetent teacher's initialisation is drawn from ``fold_in(key, 0)`` — the unlearning
randomness — so it is shared by every model of a stack in faithful mode; epochs use
fold_in(key, 1).

Structure: ``State`` holds the student and both teachers (their static model comes from
``ctx.static``); one phase of E epochs, each a shuffled pass over the combined stream
(``jaxmu.methods.relabel.combined``) of ``bt_step``.

Defaults: lr 0.01, wd 0, E 10, T 1, B 256. Search: G + kl_temperature: TEMP. Dead: ``momentum``
(G's momentum is ignored by Adam). T = 0 is a legal trial and gives non-finite results (not a
crash). The reference's per-epoch checkpoint writes are not reproduced (§2.8).
Cost: the ResNet-18 teacher forward runs on every batch (as in the reference).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxmu.engine.losses import forward, kl_div
from jaxmu.engine.passes import gather
from jaxmu.engine.state import TrainState
from jaxmu.engine.steps import loss_step
from jaxmu.methods import relabel
from jaxmu.methods._base import (D_TEMP, TEMP, MethodError, MethodSpec, OneOf, SplitData,
    StaticContext, generic_domains, generic_space)
from jaxmu.methods.plan import Batch, Pass, Phase, Plan
from jaxmu.models.base import Model

TEACHERS = ("resnet18", "same_arch")
REDUCTIONS = ("mean", "batchmean_t2")


class Teacher(NamedTuple):
    """A frozen network run in eval mode (``model`` is static, closed over)."""

    params: Any
    batch_stats: Any


@functools.cache
def _resnet18(num_classes: int, input_shape: tuple[int, ...]) -> Model:
    from jaxmu.models import build_model

    return build_model("resnet18", num_classes, tuple(input_shape), stem="imagenet")


def incompetent_model(ctx: StaticContext, kind: str) -> Model:
    if kind not in TEACHERS:
        raise MethodError(f"bad_teacher.incompetent_teacher must be one of {TEACHERS}, got {kind!r}")
    if kind == "same_arch":
        return ctx.model
    return _resnet18(ctx.num_classes, tuple(ctx.model.input_shape))


def bt_step(ctx: StaticContext, data: SplitData, state: TrainState, good: Teacher, bad_model: Model, bad: Teacher,
            examples, pos, hp, key, *, reduction: str) -> TrainState:
    """One Adam step on the bad-teaching KL for the combined-stream positions ``pos``."""
    x, _ = gather(ctx, data, examples[pos])
    u = pos < data.forget.shape[0]
    t_good, _ = forward(ctx, good.params, good.batch_stats, x, train=False)
    t_bad, _ = bad_model.apply(bad.params, bad.batch_stats, x, train=False)
    t = jax.lax.stop_gradient(jnp.where(u[:, None], t_bad.astype(jnp.float32), t_good.astype(jnp.float32)))

    def loss_fn(p):
        logits, bs = forward(ctx, p, state.batch_stats, x, train=True, key=key)
        return kl_div(t, logits, hp["kl_temperature"], reduction), bs

    return loss_step(state, loss_fn)


class State(NamedTuple):
    """The student (Adam), the competent teacher theta_0 and the incompetent teacher."""

    train: TrainState
    good: Teacher
    bad: Teacher


def init(params, batch_stats, hp, key, ctx: StaticContext, data: SplitData) -> State:
    """Teachers and the student; the incompetent teacher is initialised from ``fold_in(key, 0)``."""
    del data
    bad_model = incompetent_model(ctx, ctx.static["incompetent_teacher"])
    bad = Teacher(*bad_model.init(jax.random.fold_in(key, 0)))
    good = Teacher(params, batch_stats)
    return State(TrainState.create(params, batch_stats, hp, optimizer="adam"), good, bad)


def update(state: State, batch: Batch, hp, key, ctx: StaticContext, *, phase: str):
    """``distill``: one ``bt_step`` on the combined-stream positions ``batch.indices``."""
    del phase
    s = ctx.static
    examples, _ = relabel.combined(batch.data)
    new = bt_step(ctx, batch.data, state.train, state.good, incompetent_model(ctx, s["incompetent_teacher"]),
                  state.bad, examples, batch.indices, hp, key, reduction=s["kl_reduction"])
    return state._replace(train=new), {}


def plan(ctx: StaticContext) -> Plan:
    """E epochs (phase key ``fold_in(key, 1)``) of one shuffled pass over the combined stream."""
    s = ctx.static
    return (Phase("distill", s["epochs"], passes=(Pass("distill", "combined", s["batch_size"]),), key=(1,),
                  count="epochs"),)


SPEC = MethodSpec(
    name="bad_teacher", init=init, update=update, plan=plan,
    defaults={"epochs": 10, "batch_size": 256, "learning_rate": 0.01, "weight_decay": 0.0, "kl_temperature": 1.0,
              "incompetent_teacher": "resnet18", "kl_reduction": "mean"},
    search_space={**generic_space(), "kl_temperature": TEMP},
    static=frozenset({"epochs", "batch_size", "incompetent_teacher", "kl_reduction"}),
    ragged=frozenset({"epochs"}),
    dead=frozenset({"momentum"}),
    domains={**generic_domains(mom=None), "kl_temperature": D_TEMP,
             "incompetent_teacher": OneOf(TEACHERS, "the architecture of the random teacher on D_f"),
             "kl_reduction": OneOf(REDUCTIONS, "how the KL divergence is averaged")},
    doc="distil from theta_0 on D_r and from a random ResNet-18 on D_f (Adam, elementwise-mean KL)",
)
