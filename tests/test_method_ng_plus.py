"""NG+ (docs/methods.md §4.4): eval-mode BN, cyclic forget batches (partial one recurs), alpha, L2-to-init."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxmu.methods as M
from jaxmu.methods import ng_plus
from jaxmu.methods.stack import unlearn_stack, unlearning_key
from jaxmu.engine.passes import gather, order
from jaxmu.engine.state import TrainState

B = 40  # retain 240 -> 6 full batches; forget 60 -> one full (40) + one partial (20) batch, cycled
ALPHA = np.array([0.95, 0.5], np.float32)
LAM = np.array([0.0, 0.3], np.float32)
LR = np.array([0.01, 0.05], np.float32)
WD, MU = 1e-3, 0.9


def _model(tree, i):
    return jax.tree_util.tree_map(lambda a: a[i], tree)


def _ce(logits, y):
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))


@pytest.fixture(scope="module")
def result(tiny):
    m = M.get("ng_plus", epochs=1, batch_size=B)
    arrays = {**m.arrays, "alpha": ALPHA, "l2_to_init": LAM, "learning_rate": LR, "weight_decay": WD,
              "momentum": MU}
    return unlearn_stack(m.spec, m.static, arrays, tiny.ctx, tiny.data, tiny.params, tiny.batch_stats,
                         unlearning_key())


def test_spec():
    spec = M.get("ng_plus").spec
    assert set(spec.search_space) == {"learning_rate", "weight_decay", "batch_size", "epochs", "alpha"}
    h = M.get("ng_plus").hparams
    assert (h["alpha"], h["l2_to_init"], h["weight_decay"], h["bn_mode"]) == (0.95, 0.0, 0.0, "eval")
    with pytest.raises(M.MethodError):
        M.get("ng_plus", bn_mode=3)


def test_matches_hand_written_cyclic_eval_mode_run(tiny, result):
    key = unlearning_key()
    data, model = tiny.data, tiny.ctx.model
    ek = jax.random.fold_in(key, 0)  # epoch 0
    r_perm = order(data.retain, jax.random.fold_in(jax.random.fold_in(ek, 0), 0), True)
    f_perm = order(data.forget, jax.random.fold_in(ek, 1), True)
    f_batches = [f_perm[:40], f_perm[40:]]  # the partial 20-example batch recurs
    steps = [(r_perm[t * B:(t + 1) * B], f_batches[t % 2]) for t in range(6)]

    @jax.jit
    def grad(p, p0, bs, ir, if_, alpha, lam):
        xr, yr = gather(tiny.ctx, data, ir)
        xf, yf = gather(tiny.ctx, data, if_)

        def f(p):
            lr_ = _ce(model.apply(p, bs, xr, train=False)[0], yr)
            sq = sum(jnp.sum((a - b) ** 2) for a, b in zip(jax.tree_util.tree_leaves(p),
                                                            jax.tree_util.tree_leaves(p0)))
            lf = _ce(model.apply(p, bs, xf, train=False)[0], yf)
            return alpha * (lr_ + 0.5 * lam * sq) - (1 - alpha) * lf
        return jax.grad(f)(p)

    for i in range(2):
        p0, bs0 = _model(tiny.params, i), _model(tiny.batch_stats, i)
        p, mom = p0, None
        for ir, if_ in steps:
            g = grad(p, p0, bs0, ir, if_, ALPHA[i], LAM[i])
            d = jax.tree_util.tree_map(lambda gi, pi: gi + WD * pi, g, p)
            mom = d if mom is None else jax.tree_util.tree_map(lambda mi, di: MU * mi + di, mom, d)
            p = jax.tree_util.tree_map(lambda pi, mi, lr=LR[i]: pi - lr * mi, p, mom)
        chex.assert_trees_all_close(_model(result.params, i), p, rtol=1e-4, atol=2e-5)
        # eval mode: running statistics untouched
        chex.assert_trees_all_equal(_model(result.batch_stats, i), bs0)


def test_train_mode_update_uses_partial_forget_batch_stats(tiny):
    """bn_mode="train": retain forward then the (partial, own-shape) forget forward update the stats.

    Also: a leaf with a zeroed gradient (the path used for TinyViT's eval-mode attention biases)
    is not updated when weight decay is 0.
    """
    data, model, ctx = tiny.data, tiny.ctx.model, tiny.ctx.with_static({"batch_size": B})
    p0, bs0 = _model(tiny.params, 0), _model(tiny.batch_stats, 0)
    fo = order(data.forget, jax.random.PRNGKey(3), True)  # batches of B: one full, then the partial one
    part = fo[B:]
    hp = {"learning_rate": jnp.float32(0.05), "momentum": jnp.float32(0.9), "weight_decay": jnp.float32(0.0),
          "alpha": jnp.float32(0.9), "l2_to_init": jnp.float32(0.0)}
    st = TrainState.create(p0, bs0, hp)
    ir = data.retain[:B]
    scale = {k: jax.tree_util.tree_map(lambda _, k=k: float(k != "head"), v) for k, v in p0.items()}
    got = jax.jit(lambda st, j: ng_plus.ng_step(ctx, data, st, ir, fo, j, p0, hp, jax.random.PRNGKey(0),
                                               train=True, grad_scale=scale))(st, jnp.int32(1))
    chex.assert_trees_all_equal(got.params["head"], p0["head"])
    assert float(jnp.max(jnp.abs(got.params["conv1"]["kernel"] - p0["conv1"]["kernel"]))) > 0
    xr, _ = gather(ctx, data, ir)
    xf, _ = gather(ctx, data, part)
    assert part.shape == (20,)
    _, bs1 = model.apply(p0, bs0, xr, train=True)
    _, bs2 = model.apply(p0, bs1, xf, train=True)
    chex.assert_trees_all_close(got.batch_stats, bs2, rtol=1e-5, atol=1e-6)
    assert isinstance(got, TrainState)


def test_tinyvit_attention_biases_get_zero_gradient_not_frozen(tiny):
    """Reference: NG+'s loss includes ``l2_penalty(model, model_init, 0.0)`` over every parameter,
    so TinyViT's eval-mode attention biases get a zero gradient and SGD still applies coupled
    weight decay (and momentum) to them (issue 13): after one step b' = b - lr * wd * b."""
    import dataclasses

    import flax.linen as nn

    from jaxmu.models.base import Model

    class BiasedHead(nn.Module):  # an "attention bias" the eval-mode forward does not use
        @nn.compact
        def __call__(self, x, train: bool = False):
            self.param("attention_biases", nn.initializers.ones, (3,))
            return nn.Dense(10, name="head")(x.reshape(x.shape[0], -1))

    model = Model("tinyvit_11m", BiasedHead(), tiny.model.input_shape, 10, ("head",))
    ctx = dataclasses.replace(tiny.ctx, model=model)
    params, bs = model.init(jax.random.PRNGKey(0))
    stack = jax.tree_util.tree_map(lambda a: a[None], params)
    lr, wd = 0.1, 0.5
    out = {}
    for mode in ("frozen", "trainable"):
        m = M.get("ng_plus", epochs=1, batch_size=240, eval_attention_biases=mode)
        arrays = {**m.arrays, "learning_rate": lr, "weight_decay": wd, "momentum": 0.9}
        res = unlearn_stack(m.spec, m.static, arrays, ctx, tiny.data, stack, {}, unlearning_key())
        out[mode] = np.asarray(res.params["attention_biases"][0])
    np.testing.assert_allclose(out["frozen"], np.ones(3) * (1 - lr * wd), rtol=1e-6)  # decayed, not frozen
    np.testing.assert_allclose(out["trainable"], out["frozen"], rtol=1e-6)  # the forward never uses them
