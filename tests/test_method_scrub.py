"""SCRUB (docs/methods.md §4.6): checkpoint selection rule on synthetic error logs, D_fv mask, step
decay (1-based), msteps gating, stored-order forget stream, snapshot wiring, signs of the passes."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmu.methods as M
from jaxmu.methods import SplitData, scrub
from jaxmu.engine.losses import forward, kl_div
from jaxmu.engine.passes import error_percent, forget_val_mask, gather
from jaxmu.engine.state import TrainState


def _one(tree, i=0):
    return jax.tree_util.tree_map(lambda x: x[i], tree)


def test_select_index_rule():
    sel = lambda f, fv, k0=True: int(scrub.select_index(jnp.asarray(f, jnp.float32), fv, k0_keeps_final=k0))  # noqa
    assert sel([30, 10, 20, 25], 22.0) == 2
    assert sel([20, 12, 8, 30], 10.0) == 1            # tie |2| at k=1 and k=2: first wins
    assert sel([10, 0, 0, 0], 10.0) == 3              # k* = 0 -> final student (faithful)
    assert sel([10, 0, 0, 0], 10.0, False) == 0       # clean: theta_0
    assert sel([5, 15, 15], 10.0) == 2                # all tied -> k* = 0 -> final
    assert sel([0, 50, 100], 100.0, False) == 2


def test_forget_val_mask():
    labels = jnp.array([0, 1, 2, 3, 0, 1, 2, 3], jnp.int32)
    data = SplitData(jnp.zeros((8, 1, 1, 1), jnp.uint8), labels, jnp.arange(2), jnp.array([0, 2]),
                     jnp.array([4, 5, 6, 7]))
    np.testing.assert_array_equal(forget_val_mask(data, 4), [True, False, True, False])
    np.testing.assert_allclose(error_percent(jnp.array([True, True, False, False]), jnp.array([True, False, True, False])),
                               50.0)


def _bump(st, col, amount):
    p = dict(st.params)
    p["head"] = dict(p["head"])
    p["head"]["bias"] = p["head"]["bias"].at[col].add(amount)
    return st.replace(params=p)


def _run(tiny, **kw):
    m = M.get("scrub", **kw)
    hp = {k: jnp.float32(v) for k, v in m.arrays.items()}
    params, bs = _one(tiny.params), _one(tiny.batch_stats)
    out, _ = M.METHODS["scrub"].unlearn_one(tiny.ctx, tiny.data, params, bs, hp, jax.random.PRNGKey(0),
                                           static=m.static)
    return np.asarray(out["head"]["bias"] - params["head"]["bias"], np.float64)


@pytest.fixture
def fakes(monkeypatch):
    def fake_max(ctx, data, teacher, st, idx, key, T):
        st = _bump(_bump(st, 0, 1.0), 1, st.opt_state.hyperparams["learning_rate"])
        return _bump(st, 4, idx[0].astype(jnp.float32))

    def fake_min(ctx, data, teacher, st, idx, key, hp):
        return _bump(_bump(st, 2, 1.0), 3, st.opt_state.hyperparams["learning_rate"])

    monkeypatch.setattr(scrub, "max_update", fake_max)
    monkeypatch.setattr(scrub, "min_update", fake_min)


def test_schedule_and_gating(tiny, fakes):
    """E = 5, msteps = 3, B_f = 16 (n_f = 60: 4 steps), B_r = 64 (n_r = 240: 4 steps).
    Milestones (2, 4, 4), 1-based epochs: factors 1, 1, .1, .1, .001."""
    lr = 5e-4
    d = _run(tiny, epochs=5, msteps=3, forget_batch_size=16, retain_batch_size=64, select_checkpoint=False)
    f = np.asarray(tiny.data.forget)
    np.testing.assert_allclose(d[0], 12, atol=1e-4)                       # max pass in epochs 1..3 only
    np.testing.assert_allclose(d[1], 4 * lr * (1 + 1 + 0.1), rtol=1e-4)
    np.testing.assert_allclose(d[2], 20, atol=1e-4)
    np.testing.assert_allclose(d[3], 4 * lr * (1 + 1 + 0.1 + 0.1 + 0.001), rtol=1e-4)
    np.testing.assert_allclose(d[4], 3 * (f[0] + f[16] + f[32] + f[48]), rtol=1e-6)   # stored order
    # msteps > E: max pass every epoch; E = 1 runs at lr * 1e-3
    d = _run(tiny, epochs=1, msteps=7, forget_batch_size=64, retain_batch_size=256, select_checkpoint=False)
    np.testing.assert_allclose(d[[0, 2]], [1, 1], atol=1e-4)
    np.testing.assert_allclose(d[[1, 3]], [lr * 1e-3, lr * 1e-3], rtol=1e-2)  # float32 bias + 5e-7


@pytest.mark.parametrize("k0_keeps_final,err_f,want", [
    (True, [30, 10, 20, 25, 40, 60], 2),     # |err_f - 22|: 8, 12, 2, 3, 18, 38
    (True, [22, 50, 50, 50, 50, 22], 5),     # k* = 0 -> final (faithful)
    (False, [22, 50, 50, 50, 50, 22], 0),    # clean: theta_0
])
def test_selection_wiring(tiny, fakes, monkeypatch, k0_keeps_final, err_f, want):
    """Fake error log read from a per-epoch counter in the parameters (one min step per epoch);
    err_fv[E] = 22. The returned model is the snapshot after k* epochs."""
    base = _one(tiny.params)["head"]["bias"][2]
    table_f = jnp.asarray(err_f, jnp.float32)

    def fake_record(ctx, data, params, bs, mask):
        k = jnp.round(params["head"]["bias"][2] - base).astype(jnp.int32)
        return jnp.stack([0.0, table_f[k], 0.0, 22.0])

    monkeypatch.setattr(scrub, "split_errors", fake_record)
    d = _run(tiny, epochs=5, msteps=0, retain_batch_size=256, k0_keeps_final=k0_keeps_final)
    np.testing.assert_allclose(d[2], want, atol=1e-4)


def test_pass_signs(tiny):
    """The max step increases D_T(s, t) on its batch; the min step (gamma 0, alpha 1) decreases it."""
    params, bs = _one(tiny.params), _one(tiny.batch_stats)
    hp = {"learning_rate": jnp.float32(0.05), "momentum": jnp.float32(0.0), "weight_decay": jnp.float32(0.0),
          "gamma": jnp.float32(0.0), "alpha": jnp.float32(1.0), "temperature": jnp.float32(2.0)}
    idx = tiny.data.forget[:32]
    x, _ = gather(tiny.ctx, tiny.data, idx)
    t, _ = forward(tiny.ctx, params, bs, x, train=False)
    # start from a perturbed student so that D_T > 0 and the min direction is well defined
    noisy = jax.tree_util.tree_map(lambda p: p + 0.05 * jax.random.normal(jax.random.PRNGKey(1), p.shape), params)

    def dt(p):
        s, _ = forward(tiny.ctx, p, bs, x, train=True)
        return float(kl_div(t, s, 2.0, "batchmean_t2"))

    st = TrainState.create(noisy, bs, hp)
    up = scrub.max_update(tiny.ctx, tiny.data, (params, bs), st, idx, jax.random.PRNGKey(0), hp["temperature"])
    down = scrub.min_update(tiny.ctx, tiny.data, (params, bs), st, idx, jax.random.PRNGKey(0), hp)
    assert dt(up.params) > dt(noisy) > dt(down.params)


def test_end_to_end(tiny):
    from jaxmu.methods.stack import unlearn_stack, unlearning_key

    m = M.get("scrub", epochs=2, msteps=1, retain_batch_size=120, forget_batch_size=60, learning_rate=0.05)
    r = unlearn_stack(m.spec, m.static, m.arrays, tiny.ctx, tiny.data, tiny.params, tiny.batch_stats, unlearning_key())
    for leaf in jax.tree_util.tree_leaves((r.params, r.batch_stats)):
        assert np.all(np.isfinite(np.asarray(leaf)))
    assert not np.allclose(r.params["conv2"]["kernel"], tiny.params["conv2"]["kernel"])
