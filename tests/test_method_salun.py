"""SalUn (docs/methods.md §4.5): cumulative saliency, global stable top-floor(N tau) mask, masked SRL step."""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxmu.methods as M
from jaxmu.methods import relabel as _relabel
from jaxmu.methods import salun
from jaxmu.methods.stack import unlearn_stack, unlearning_key
from jaxmu.engine.passes import gather, order

TAU = np.array([1.0, 0.37], np.float32)
LR = np.array([0.05, 0.1], np.float32)
WD = 1e-3


def _model(tree, i):
    return jax.tree_util.tree_map(lambda a: a[i], tree)


def _ce(logits, y):
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))


def test_spec():
    spec = M.get("salun").spec
    assert set(spec.search_space) == {"learning_rate", "weight_decay", "batch_size", "epochs", "threshold"}
    assert {"mask_learning_rate", "mask_momentum", "mask_weight_decay"} <= spec.dead
    m = M.get("salun", mask_momentum=0.9)  # dead: accepted, ignored
    assert "mask_momentum" not in m.hparams and m.hparams["momentum"] == 0.0


def test_threshold_mask_keeps_exactly_floor_n_tau_entries():
    rng = np.random.default_rng(0)
    A = {"a": jnp.asarray(rng.normal(size=(7, 5)), jnp.float32), "b": jnp.asarray(rng.normal(size=(13,)), jnp.float32)}
    n = 48
    f = jax.jit(jax.vmap(salun.threshold_mask, in_axes=(None, 0)))  # tau per model under vmap
    taus = np.array([0.0, 0.1, 0.37, 0.5, 0.99, 1.0], np.float32)
    masks = f(A, jnp.asarray(taus))
    flat_abs = np.concatenate([np.abs(np.asarray(A["a"])).ravel(), np.abs(np.asarray(A["b"]))])
    for i, t in enumerate(taus):
        mk = np.concatenate([np.asarray(masks["a"][i]).ravel(), np.asarray(masks["b"][i])])
        k = math.floor(n * float(t))
        assert set(np.unique(mk)) <= {0.0, 1.0} and mk.sum() == k
        if 0 < k < n:  # the kept entries are the largest |A|
            assert flat_abs[mk == 1].min() >= flat_abs[mk == 0].max()
    # ties (all |A| equal, mixed signs): stable tie-break by flat index keeps the first k entries
    T = {"a": jnp.asarray(np.where(np.arange(35) % 2, 2.0, -2.0).reshape(7, 5), jnp.float32),
         "b": jnp.full((13,), 2.0, jnp.float32)}
    m = salun.threshold_mask(T, 0.5)
    mk = np.concatenate([np.asarray(m["a"]).ravel(), np.asarray(m["b"])])
    np.testing.assert_array_equal(mk, (np.arange(n) < 24).astype(np.float32))


def test_saliency_cumulative_weights_earlier_batches_more(tiny):
    from jaxmu.methods import StaticContext
    from jaxmu.models import build_model

    data = tiny.data
    model = build_model("mlp", 10, (8, 8, 1))  # cheap to compile; the rule is model-agnostic
    ctx = StaticContext(model, 10, tiny.ctx.mean, tiny.ctx.std)
    p, bs = model.init(jax.random.PRNGKey(1))
    key = jax.random.PRNGKey(5)
    # B = 32 on 60 forget examples: batches of 32 and 28 (partial kept), eval mode
    perm = order(data.forget, jax.random.fold_in(key, 0), True)

    @jax.jit
    def grad(idx):
        x, y = gather(ctx, data, idx)
        return jax.grad(lambda q: -_ce(model.apply(q, bs, x, train=False)[0], y))(p)

    g1, g2 = grad(perm[:32]), grad(perm[32:])
    sal = jax.jit(lambda acc: salun.saliency(ctx, data, p, bs, 32, key, accumulation=acc), static_argnums=0)
    cum, plain = sal("cumulative"), sal("sum")
    for c, s_, a, b in zip(*(jax.tree_util.tree_leaves(t) for t in (cum, plain, g1, g2))):
        np.testing.assert_allclose(c, 2 * a + b, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(s_, a + b, rtol=1e-4, atol=1e-6)
    with pytest.raises(M.MethodError):
        salun.saliency(ctx, data, p, bs, 32, key, accumulation="bogus")


@pytest.fixture(scope="module")
def result(tiny):
    # E = 1, B = 300: phase 2 is one SGD step on the whole relabelled stream; momentum 0.9 is
    # irrelevant on a first step but the coupled decay is not (masked-out weights still decay).
    m = M.get("salun", epochs=1, batch_size=300)
    arrays = {**m.arrays, "threshold": TAU, "learning_rate": LR, "weight_decay": WD, "momentum": 0.9}
    return unlearn_stack(m.spec, m.static, arrays, tiny.ctx, tiny.data, tiny.params, tiny.batch_stats,
                         unlearning_key())


def test_masked_relabel_step(tiny, result):
    key = unlearning_key()
    data, ctx = tiny.data, tiny.ctx
    n_f = data.forget.shape[0]
    examples = jnp.concatenate([data.forget, data.retain])
    ek = jax.random.fold_in(jax.random.fold_in(key, 1), 0)
    perm = np.asarray(jax.random.permutation(jax.random.fold_in(ek, 0), examples.shape[0]))
    x, y = gather(ctx, data, examples[perm])
    y = np.asarray(y).copy()
    y[perm < n_f] = np.asarray(_relabel.label_sequence(key, n_f, ctx.num_classes))
    static = {"batch_size": 300, "mask_accumulation": "cumulative", "eval_attention_biases": "frozen"}
    masks = jax.jit(jax.vmap(lambda p, bs, t: salun.make_mask(ctx, data, p, bs, {"threshold": t},
                                                              jax.random.fold_in(key, 2), static=static)))(
        tiny.params, tiny.batch_stats, jnp.asarray(TAU))

    @jax.jit
    def grad(p, bs):
        def f(q):
            logits, nbs = ctx.model.apply(q, bs, x, train=True)
            return _ce(logits, jnp.asarray(y)), nbs
        return jax.grad(f, has_aux=True)(p)

    for i in range(2):
        p, bs = _model(tiny.params, i), _model(tiny.batch_stats, i)
        mask = _model(masks, i)
        n = sum(a.size for a in jax.tree_util.tree_leaves(mask))
        assert sum(float(a.sum()) for a in jax.tree_util.tree_leaves(mask)) == math.floor(n * float(TAU[i]))
        g, bs_new = grad(p, bs)
        want = jax.tree_util.tree_map(lambda pi, gi, mi, lr=LR[i]: pi - lr * (mi * gi + WD * pi), p, g, mask)
        got = _model(result.params, i)
        for a, b, mi, p0 in zip(*(jax.tree_util.tree_leaves(t) for t in (got, want, mask, p))):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-6)
            off = np.asarray(mi) == 0  # masked-out entries: decay only
            np.testing.assert_allclose(np.asarray(a)[off], (np.asarray(p0) * (1 - LR[i] * WD))[off], rtol=1e-6)
        chex.assert_trees_all_close(_model(result.batch_stats, i), bs_new, rtol=1e-4, atol=1e-6)
