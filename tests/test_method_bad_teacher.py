"""BT (docs/methods.md §4.7): competent/incompetent teacher KL, elementwise-mean reduction, PyTorch Adam."""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmu.methods as M
from jaxmu.methods import bad_teacher
from jaxmu.methods.stack import unlearn_stack, unlearning_key
from jaxmu.engine.passes import gather

T = np.array([1.0, 2.5], np.float32)
LR = np.array([1e-3, 1e-2], np.float32)
WD = 1e-2


def _model(tree, i):
    return jax.tree_util.tree_map(lambda a: a[i], tree)


def _kl(t, s, temp, reduction):
    logq = jax.nn.log_softmax(t / temp, -1)
    elem = jnp.exp(logq) * (logq - jax.nn.log_softmax(s / temp, -1))
    if reduction == "mean":
        return jnp.sum(elem) / elem.size  # (1 / (B C)) sum_i sum_c
    return jnp.sum(elem) / elem.shape[0] * temp ** 2


def _hand_adam(ctx, data, p, bs, bad, temp, lr, steps, reduction):
    """Reference semantics written out: teachers in eval mode, student train mode, Adam + coupled L2."""
    model = ctx.model
    idx = jnp.concatenate([data.forget, data.retain])
    u = jnp.arange(idx.shape[0]) < data.forget.shape[0]
    x, _ = gather(ctx, data, idx)

    @jax.jit
    def teacher(p, bs, bad):
        tg = model.apply(p, bs, x, train=False)[0]
        tb = model.apply(bad[0], bad[1], x, train=False)[0]
        return jnp.where(u[:, None], tb, tg)

    t = teacher(p, bs, bad)
    m = jax.tree_util.tree_map(jnp.zeros_like, p)
    v = jax.tree_util.tree_map(jnp.zeros_like, p)
    for k in range(1, steps + 1):
        g, bs = _grad(model, p, bs, x, t, jnp.float32(temp), reduction)
        d = jax.tree_util.tree_map(lambda gi, pi: gi + WD * pi, g, p)
        m = jax.tree_util.tree_map(lambda a, b: 0.9 * a + 0.1 * b, m, d)
        v = jax.tree_util.tree_map(lambda a, b: 0.999 * a + 0.001 * b * b, v, d)
        p = jax.tree_util.tree_map(
            lambda pi, mi, vi, k=k: pi - lr * (mi / (1 - 0.9 ** k)) / (jnp.sqrt(vi / (1 - 0.999 ** k)) + 1e-8), p, m, v)
    return p, bs


@functools.partial(jax.jit, static_argnums=(0, 6))
def _grad(model, q, bs, x, t, temp, reduction):
    def f(q):
        s, nbs = model.apply(q, bs, x, train=True)
        return _kl(t, s, temp, reduction), nbs
    return jax.grad(f, has_aux=True)(q)


def test_spec():
    spec = M.get("bad_teacher").spec
    assert set(spec.search_space) == {"learning_rate", "weight_decay", "batch_size", "epochs", "kl_temperature"}
    assert "momentum" in spec.dead and "momentum" not in spec.defaults
    h = M.get("bad_teacher", momentum=0.9).hparams
    assert (h["incompetent_teacher"], h["kl_reduction"], h["kl_temperature"]) == ("resnet18", "mean", 1.0)


@pytest.fixture(scope="module")
def result(tiny):
    # B = 300 = n_f + n_r: one batch per epoch; two epochs = two Adam steps.
    m = M.get("bad_teacher", epochs=2, batch_size=300, incompetent_teacher="same_arch")
    arrays = {**m.arrays, "kl_temperature": T, "learning_rate": LR, "weight_decay": WD}
    return unlearn_stack(m.spec, m.static, arrays, tiny.ctx, tiny.data, tiny.params, tiny.batch_stats,
                         unlearning_key())


def test_two_epochs_match_hand_written_adam(tiny, result):
    bad = tiny.ctx.model.init(jax.random.fold_in(unlearning_key(), 0))  # shared by both models
    for i in range(2):
        p, bs = _hand_adam(tiny.ctx, tiny.data, _model(tiny.params, i), _model(tiny.batch_stats, i), bad,
                           T[i], LR[i], 2, "mean")
        chex.assert_trees_all_close(_model(result.params, i), p, rtol=1e-4, atol=3e-6)
        chex.assert_trees_all_close(_model(result.batch_stats, i), bs, rtol=1e-4, atol=1e-6)


def test_batchmean_t2_reduction_step(tiny):
    ctx, data = tiny.ctx, tiny.data
    p0, bs0 = _model(tiny.params, 0), _model(tiny.batch_stats, 0)
    hp = {"learning_rate": jnp.float32(1e-2), "weight_decay": jnp.float32(WD), "kl_temperature": jnp.float32(2.0)}
    key = jax.random.PRNGKey(4)
    examples = jnp.concatenate([data.forget, data.retain])
    pos = jnp.arange(examples.shape[0])

    @jax.jit
    def one(p, bs):
        sctx = ctx.with_static({"incompetent_teacher": "same_arch"})
        st = bad_teacher.init(p, bs, hp, key, sctx, data)
        bad_model = bad_teacher.incompetent_model(sctx, "same_arch")
        out = {r: bad_teacher.bt_step(ctx, data, st.train, st.good, bad_model, st.bad, examples, pos, hp, key,
                                      reduction=r)
               for r in ("batchmean_t2", "mean")}
        return out, st.bad

    out, bad = one(p0, bs0)
    want, _ = _hand_adam(ctx, data, p0, bs0, bad, 2.0, 1e-2, 1, "batchmean_t2")
    chex.assert_trees_all_close(out["batchmean_t2"].params, want, rtol=1e-4, atol=3e-6)
    # with coupled L2 the loss scale matters even for Adam: the two reductions differ
    diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree_util.tree_leaves(out["mean"].params),
                                                              jax.tree_util.tree_leaves(out["batchmean_t2"].params)))
    assert diff > 1e-4


def test_resnet18_incompetent_teacher_for_any_student(tiny):
    """Faithful teacher: a fresh ImageNet-stem ResNet-18 on the student's inputs (shape-checked only)."""
    model = bad_teacher.incompetent_model(tiny.ctx, "resnet18")
    assert model.name == "resnet18" and model.input_shape == tiny.ctx.model.input_shape
    params, bs = jax.eval_shape(model.init, jax.random.PRNGKey(0))
    assert sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(params)) > 11_000_000
    x = jax.ShapeDtypeStruct((5, *tiny.ctx.model.input_shape), jnp.float32)
    out = jax.eval_shape(lambda p, b, x: model.apply(p, b, x, train=False)[0], params, bs, x)
    assert out.shape == (5, tiny.ctx.num_classes)
    assert bad_teacher.incompetent_model(tiny.ctx, "same_arch") is tiny.ctx.model
    with pytest.raises(M.MethodError):
        bad_teacher.incompetent_model(tiny.ctx, "vgg")
