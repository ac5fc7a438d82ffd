"""GA (docs/methods.md §4.2): SGD ascent on CE over D_f only, train mode, coupled decay, no schedule."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxmu.methods as M
from jaxmu.methods.stack import unlearn_stack, unlearning_key
from jaxmu.engine.passes import gather

LRS = np.array([0.01, 0.05], np.float32)
WD, MU = 5e-4, 0.9


def _model(tree, i):
    return jax.tree_util.tree_map(lambda a: a[i], tree)


@pytest.fixture(scope="module")
def result(tiny):
    # B = n_f = 60: one full batch per epoch, so the shuffle cannot change the (mean) loss.
    m = M.get("gradient_ascent", epochs=2, batch_size=60)
    arrays = {**m.arrays, "learning_rate": LRS, "weight_decay": WD, "momentum": MU}
    return unlearn_stack(m.spec, m.static, arrays, tiny.ctx, tiny.data, tiny.params, tiny.batch_stats,
                         unlearning_key())


def test_spec():
    spec = M.get("gradient_ascent").spec
    assert set(spec.search_space) == {"learning_rate", "weight_decay", "batch_size", "epochs"}
    h = M.get("gradient_ascent").hparams
    assert (h["learning_rate"], h["momentum"], h["weight_decay"], h["epochs"], h["batch_size"]) == (
        0.01, 0.9, 5e-4, 10, 256)


def test_two_epochs_match_hand_written_sgd_ascent(tiny, result):
    x, y = gather(tiny.ctx, tiny.data, tiny.data.forget)
    model = tiny.ctx.model

    @jax.jit
    def grad(p, bs):
        def f(p):
            logits, nbs = model.apply(p, bs, x, train=True)
            return -jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y)), nbs
        return jax.grad(f, has_aux=True)(p)

    for i in range(2):
        p, bs = _model(tiny.params, i), _model(tiny.batch_stats, i)
        mom = None
        for _ in range(2):  # two epochs = two steps; constant lr (no schedule), momentum 0.9
            g, bs = grad(p, bs)
            d = jax.tree_util.tree_map(lambda gi, pi: gi + WD * pi, g, p)
            mom = d if mom is None else jax.tree_util.tree_map(lambda mi, di: MU * mi + di, mom, d)
            p = jax.tree_util.tree_map(lambda pi, mi, lr=LRS[i]: pi - lr * mi, p, mom)
        got_p, got_bs = _model(result.params, i), _model(result.batch_stats, i)
        chex.assert_trees_all_close(got_p, p, rtol=1e-4, atol=1e-5)
        chex.assert_trees_all_close(got_bs, bs, rtol=1e-4, atol=1e-5)


def test_forget_loss_goes_up_and_larger_lr_moves_further(tiny, result):
    x, y = gather(tiny.ctx, tiny.data, tiny.data.forget)

    def ce(params, bs, i):
        logits, _ = tiny.ctx.model.apply(_model(params, i), _model(bs, i), x, train=False)
        return float(jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y)))

    before = [ce(tiny.params, tiny.batch_stats, i) for i in range(2)]
    after = [ce(result.params, result.batch_stats, i) for i in range(2)]
    assert after[0] > before[0] and after[1] > before[1]
    assert after[1] - before[1] > after[0] - before[0]  # model 1 has the 5x learning rate
