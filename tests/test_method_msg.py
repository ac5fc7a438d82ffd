"""MSG (docs/methods.md §4.13): mask counts and ranks, re-draw statistics, the linear up/down
schedule, the multiplier before decay, the BN mode of the gradient pass, and the driver."""

import jax
import jax.numpy as jnp
import numpy as np

import jaxmu.methods as M
from jaxmu.engine import optim
from jaxmu.engine.state import TrainState
from jaxmu.engine.steps import ce_step
from jaxmu.methods import driver, msg, ranking
from jaxmu.methods.stack import unlearn_stack, unlearning_key
from jaxmu.engine.losses import cross_entropy, forward
from jaxmu.engine.passes import gather


def _one(tree, i):
    return jax.tree_util.tree_map(lambda x: x[i], tree)


def test_smallest_mask_counts_half_even_and_ties():
    a = jnp.array([1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 2.0])
    # round(0.5 * 7) = round(3.5) = 4: the three zeros, then the first 1.0 by flat index
    np.testing.assert_array_equal(ranking.smallest_mask(a, 0.5), [1, 1, 0, 1, 0, 1, 0])
    assert int(ranking.smallest_mask(jnp.arange(5.0), 0.5).sum()) == round(0.5 * 5) == 2  # 2.5 -> 2
    assert int(ranking.smallest_mask(a, 0.0).sum()) == 0 and bool(ranking.smallest_mask(a, 1.0).all())
    g = jax.random.normal(jax.random.PRNGKey(0), (3, 3, 8, 16))
    for rho in (0.3, 0.77):
        m = np.asarray(ranking.smallest_mask(jnp.abs(g), rho))
        assert m.sum() == round(rho * g.size)
        absg = np.abs(np.asarray(g))
        assert absg[m].max() <= absg[~m].min()
    # rho is traced: one vmapped call with per-model rates
    counts = jax.vmap(lambda r: ranking.smallest_mask(jnp.abs(g), r).sum())(jnp.array([0.3, 0.5]))
    np.testing.assert_array_equal(counts, [round(0.3 * g.size), round(0.5 * g.size)])


def test_schedule():
    f = lambda E: np.asarray([optim.linear_annealing_factor(e, E) for e in range(E)])
    np.testing.assert_allclose(f(5), [1 / 3, 2 / 3, 1, 2 / 3, 1 / 3], rtol=1e-6)
    np.testing.assert_allclose(f(4), [1 / 2, 1, 2 / 3, 1 / 3], rtol=1e-6)
    np.testing.assert_allclose(f(1), [1.0])


def _params():
    k = jax.random.PRNGKey(3)
    return {"conv1": {"kernel": jax.random.normal(k, (3, 3, 4, 64))},
            "conv2": {"kernel": jax.random.normal(jax.random.fold_in(k, 1), (3, 3, 64, 64))},
            "bn": {"scale": jnp.ones(64)}, "head": {"kernel": jnp.ones((64, 10)), "bias": jnp.zeros(10)}}


def test_reinit_and_multiplier():
    p = _params()
    G = jax.tree_util.tree_map(lambda x: jax.random.normal(jax.random.PRNGKey(9), x.shape), p)
    masks = msg.select(p, G, 0.3, "per_layer")
    new, mult = msg.reinit(p, masks, jax.random.PRNGKey(5))
    for name, m in zip(("conv1", "conv2"), masks):  # conv_kernel_indices order = flatten order
        w0, w1, m = np.asarray(p[name]["kernel"]), np.asarray(new[name]["kernel"]), np.asarray(m)
        assert m.sum() == round(0.3 * w0.size)
        absg = np.abs(np.asarray(G[name]["kernel"]))
        assert absg[m].max() <= absg[~m].min()
        np.testing.assert_array_equal(w1[~m], w0[~m])
        assert (w1[m] != w0[m]).all()
        np.testing.assert_array_equal(mult[name]["kernel"], np.where(m, 1.0, 0.1).astype(np.float32))
    drawn = np.asarray(new["conv2"]["kernel"])[np.asarray(masks[1])]
    assert abs(drawn.std() / np.sqrt(2 / (64 * 9)) - 1) < 0.05 and abs(drawn.mean()) < 0.01
    for name in ("bn", "head"):
        for leaf in p[name]:
            np.testing.assert_array_equal(new[name][leaf], p[name][leaf])
            assert float(mult[name][leaf]) == 1.0


def test_global_scope():
    p = _params()
    G = jax.tree_util.tree_map(lambda x: jax.random.normal(jax.random.PRNGKey(9), x.shape) *
                               (10.0 if x.ndim == 4 and x.shape[2] == 4 else 1.0), p)
    masks = [np.asarray(m) for m in msg.select(p, G, 0.3, "global")]
    total = sum(m.size for m in masks)
    assert sum(m.sum() for m in masks) == round(0.3 * total)
    sel = np.concatenate([np.abs(np.asarray(G[n]["kernel"]))[m] for n, m in zip(("conv1", "conv2"), masks)])
    uns = np.concatenate([np.abs(np.asarray(G[n]["kernel"]))[~m] for n, m in zip(("conv1", "conv2"), masks)])
    assert sel.max() <= uns.min()
    assert masks[0].mean() < 0.3 < masks[1].mean()  # the large-gradient layer gets fewer


def test_masked_update_scales_before_decay(tiny):
    params, bs = _one(tiny.params, 0), _one(tiny.batch_stats, 0)
    mult = jax.tree_util.tree_map(lambda x: jnp.float32(1.0), params)
    m = (jnp.arange(params["conv2"]["kernel"].size) % 3 == 0).reshape(params["conv2"]["kernel"].shape)
    mult["conv2"]["kernel"] = jnp.where(m, 1.0, 0.1)
    hp = {"learning_rate": jnp.float32(0.1), "momentum": jnp.float32(0.9), "weight_decay": jnp.float32(0.01)}
    idx = tiny.data.retain[:50]
    key = jax.random.PRNGKey(0)
    st = ce_step(tiny.ctx, tiny.data, TrainState.create(params, bs, hp), idx, key, grad_scale=mult)
    x, y = gather(tiny.ctx, tiny.data, idx)
    g = jax.grad(lambda p: cross_entropy(forward(tiny.ctx, p, bs, x, train=True, key=key)[0], y))(params)
    w, gw = params["conv2"]["kernel"], g["conv2"]["kernel"]
    expected = w - 0.1 * (gw * jnp.where(m, 1.0, 0.1) + 0.01 * w)  # first step: momentum buffer = d
    np.testing.assert_allclose(st.params["conv2"]["kernel"], expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(st.params["head"]["kernel"],
                               params["head"]["kernel"] - 0.1 * (g["head"]["kernel"] + 0.01 * params["head"]["kernel"]),
                               rtol=1e-5, atol=1e-7)


def test_driver_zero_lr_reinitialises_exactly_the_small_gradient_entries(tiny):
    rhos = np.array([0.3, 0.5], np.float32)
    m = M.get("msg", epochs=1, batch_size=100, learning_rate=0.0, weight_decay=0.0)
    arrays = {**m.arrays, "init_rate": rhos}
    key = unlearning_key()
    r = unlearn_stack(m.spec, m.static, arrays, tiny.ctx, tiny.data, tiny.params, tiny.batch_stats, key)
    hp = {k: jnp.float32(v) for k, v in arrays.items() if k != "init_rate"}

    def grad_pass(p, b, train_bn):
        """Step 1 alone: MSG's gradient phase through the driver -> (G, running statistics)."""
        ctx = tiny.ctx.with_static({**m.static, "grad_pass_bn": "train" if train_bn else "eval"})
        state = msg.init(p, b, hp, key, ctx, tiny.data)
        state = driver.run_phase(msg.SPEC, msg.plan(ctx)[0], state, hp, key, ctx, tiny.data)
        return state.G, state.train.batch_stats

    gp = jax.jit(grad_pass, static_argnums=2)
    for i, rho in enumerate(rhos):
        p0, b0 = _one(tiny.params, i), _one(tiny.batch_stats, i)
        G, bs_after = gp(p0, b0, True)
        for name in ("conv1", "conv2"):
            w0, w1 = np.asarray(p0[name]["kernel"]), np.asarray(r.params[name]["kernel"][i])
            changed = w1 != w0
            assert changed.sum() == round(float(rho) * w0.size)
            absg = np.abs(np.asarray(G[name]["kernel"]))
            # the gradients here come from another program than the driver's (float rounding):
            # entries on the threshold may differ in the last bits, not more
            assert absg[changed].max() <= absg[~changed].min() * (1 + 1e-5)
        for name in ("bn1", "bn2", "head"):
            for leaf in p0[name]:
                np.testing.assert_array_equal(r.params[name][leaf][i], p0[name][leaf])
        # the train-mode gradient pass moved the running statistics
        assert not np.allclose(bs_after["bn1"]["mean"], b0["bn1"]["mean"])
    # grad_pass_bn="eval": the gradient pass leaves the running statistics untouched
    _, bs_eval = gp(_one(tiny.params, 0), _one(tiny.batch_stats, 0), False)
    jax.tree_util.tree_map(np.testing.assert_array_equal, bs_eval, _one(tiny.batch_stats, 0))


def test_driver_defaults_finite(tiny):
    m = M.get("msg", epochs=1, batch_size=100)
    r = unlearn_stack(m.spec, m.static, m.arrays, tiny.ctx, tiny.data, tiny.params, tiny.batch_stats,
                      unlearning_key())
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree_util.tree_leaves((r.params, r.batch_stats)))
    acc = tiny.accuracy(r.params, r.batch_stats, tiny.test_idx)
    assert (acc > 0.5).all(), acc
