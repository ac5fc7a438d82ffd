"""SRL (docs/methods.md §4.3): relabelled D_f + D_r stream, label sequence in access order, SGD no schedule."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxmu.methods as M
from jaxmu.methods import relabel as _relabel
from jaxmu.methods.stack import unlearn_stack, unlearning_key
from jaxmu.engine.passes import gather

LRS = np.array([0.1, 0.02], np.float32)
WD, MU = 5e-4, 0.9


def _model(tree, i):
    return jax.tree_util.tree_map(lambda a: a[i], tree)


def test_sequence_labels_follow_access_order():
    n_f, n, C = 5, 12, 10
    key = jax.random.PRNGKey(7)
    s = np.asarray(_relabel.label_sequence(key, n_f, C))
    for e in range(3):
        perm = np.asarray(jax.random.permutation(jax.random.PRNGKey(e), n))
        lab = np.asarray(_relabel.assigned_labels("sequence", key, e, jnp.asarray(perm), n_f, C))
        reached = [p for p in perm if p < n_f]  # forget positions in the order the epoch reaches them
        for k, p in enumerate(reached):
            assert lab[p] == s[k]
        assert sorted(lab) == sorted(s)  # same multiset every epoch


def test_independent_labels_redrawn_per_epoch():
    key = jax.random.PRNGKey(7)
    perm = jnp.arange(300)
    a = np.asarray(_relabel.assigned_labels("independent", key, 0, perm, 200, 10))
    b = np.asarray(_relabel.assigned_labels("independent", key, 1, perm, 200, 10))
    assert a.min() >= 0 and a.max() < 10 and (a != b).mean() > 0.5
    assert sorted(a) != sorted(b)
    with pytest.raises(M.MethodError):
        _relabel.assigned_labels("bogus", key, 0, perm, 200, 10)


@pytest.fixture(scope="module")
def result(tiny):
    # B = n_f + n_r = 300: one full batch per epoch (two epochs = two SGD steps).
    m = M.get("random_relabel", epochs=2, batch_size=300)
    arrays = {**m.arrays, "learning_rate": LRS, "weight_decay": WD, "momentum": MU}
    return unlearn_stack(m.spec, m.static, arrays, tiny.ctx, tiny.data, tiny.params, tiny.batch_stats,
                         unlearning_key())


def test_matches_hand_written_relabelled_sgd(tiny, result):
    key = unlearning_key()
    data = tiny.data
    n_f = data.forget.shape[0]
    examples = jnp.concatenate([data.forget, data.retain])
    model = tiny.ctx.model
    s = np.asarray(_relabel.label_sequence(key, n_f, tiny.ctx.num_classes))
    targets = []
    for e in range(2):
        ek = jax.random.fold_in(jax.random.fold_in(key, 1), e)  # epoch key of the training phase
        perm = np.asarray(jax.random.permutation(jax.random.fold_in(ek, 0), examples.shape[0]))
        x, y = gather(tiny.ctx, data, examples[perm])
        y = np.asarray(y).copy()
        is_f = perm < n_f
        y[is_f] = s[: is_f.sum()]  # k-th forget example reached gets s[k]
        targets.append((x, jnp.asarray(y)))
    true_f = np.asarray(data.labels)[np.asarray(data.forget)]
    assert 0 < (s != true_f[: len(s)]).sum()

    @jax.jit
    def grad(p, bs, x, y):
        def f(p):
            logits, nbs = model.apply(p, bs, x, train=True)
            return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y)), nbs
        return jax.grad(f, has_aux=True)(p)

    for i in range(2):
        p, bs = _model(tiny.params, i), _model(tiny.batch_stats, i)
        mom = None
        for x, y in targets:
            g, bs = grad(p, bs, x, y)
            d = jax.tree_util.tree_map(lambda gi, pi: gi + WD * pi, g, p)
            mom = d if mom is None else jax.tree_util.tree_map(lambda mi, di: MU * mi + di, mom, d)
            p = jax.tree_util.tree_map(lambda pi, mi, lr=LRS[i]: pi - lr * mi, p, mom)  # constant lr
        chex.assert_trees_all_close(_model(result.params, i), p, rtol=1e-4, atol=2e-5)
        chex.assert_trees_all_close(_model(result.batch_stats, i), bs, rtol=1e-4, atol=2e-5)
