"""FCS (docs/methods.md §4.12): losses, per-step cosine of O2, forget/retain BN-stat order, pairing of
the forget round, retain lr x B/64, step counts of the three phases."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmu.methods as M
from jaxmu.methods import fcs
from jaxmu.engine import losses, optim
from jaxmu.engine.losses import forward
from jaxmu.engine.passes import gather
from jaxmu.engine.state import TrainState


def _one(tree, i=0):
    return jax.tree_util.tree_map(lambda x: x[i], tree)


def _hp(**kw):
    m = M.get("fcs", **kw)
    return {k: jnp.float32(v) for k, v in m.arrays.items()}, m.static


def test_losses_match_formulas():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(5, 4)).astype(np.float32)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    want = np.mean(np.sum(0.25 * (np.log(0.25) - logp), 1))
    np.testing.assert_allclose(losses.kl_to_uniform(jnp.asarray(z)), want, rtol=1e-5)
    zr = rng.normal(size=(3, 4)).astype(np.float32)
    s = z @ zr.T / 1.15
    ls = s - np.log(np.exp(s).sum(1, keepdims=True))  # along the retain axis (size 3)
    np.testing.assert_allclose(losses.contrastive_loss(jnp.asarray(z), jnp.asarray(zr), 1.15), -ls.mean(), rtol=1e-5)


def test_per_step_cosine():
    lr, eta = 3e-4, 1e-6
    for t, T in ((0, 8), (4, 8), (8, 8), (3, 7)):
        want = eta + (lr - eta) * (1 + math.cos(math.pi * t / T)) / 2
        np.testing.assert_allclose(optim.cosine_lr(jnp.int32(t), T, lr, eta), want, rtol=1e-5)
    assert float(optim.cosine_lr(jnp.int32(1), 4, 1e-3, 1e-2)) > 1e-3   # eta_min > lr: rises


def test_init_three_optimizers_retain_lr_scaled(tiny):
    params = {"w": jnp.ones(3)}
    hp, static = _hp()
    st = fcs.init(params, {}, hp, jax.random.PRNGKey(0), tiny.ctx.with_static(dict(static, batch_size=256)), tiny.data)
    np.testing.assert_allclose(st.train.hyperparams["learning_rate"], 5e-3, rtol=1e-6)
    np.testing.assert_allclose(st.opt2.hyperparams["learning_rate"], 3e-4, rtol=1e-6)
    np.testing.assert_allclose(st.opt3.hyperparams["learning_rate"], 1e-3 * 256 / 64, rtol=1e-6)
    np.testing.assert_allclose(st.opt3.hyperparams["weight_decay"], 1e-2, rtol=1e-6)


def test_forget_update_lr_and_bn_order(tiny):
    """Step t uses lr_t (momentum buffer empty at the first step, wd 0 -> delta = -lr_t g), and the
    running statistics are updated by the forget forward and then the retain forward."""
    params, bs = _one(tiny.params), _one(tiny.batch_stats)
    hp, static = _hp(eta_min=0.0)
    st0 = fcs.init(params, bs, hp, jax.random.PRNGKey(0), tiny.ctx.with_static(dict(static, batch_size=16)), tiny.data)
    idx_f, idx_r, key = tiny.data.forget[:16], tiny.data.retain[:16], jax.random.PRNGKey(0)
    upd = jax.jit(lambda s: fcs.forget_update(tiny.ctx, tiny.data, s, idx_f, idx_r, key, hp, 8))
    a = upd(st0)
    b = upd(st0._replace(step2=jnp.int32(4)))   # lr_4 = lr / 2 with T_tot = 8, eta_min = 0
    da = a.train.params["head"]["kernel"] - params["head"]["kernel"]
    db = b.train.params["head"]["kernel"] - params["head"]["kernel"]
    np.testing.assert_allclose(db, 0.5 * da, rtol=0, atol=2e-3 * float(jnp.abs(da).max()))
    assert int(a.step2) == 1 and float(jnp.abs(da).max()) > 0
    x_f, _ = gather(tiny.ctx, tiny.data, idx_f)
    x_r, _ = gather(tiny.ctx, tiny.data, idx_r)
    _, bs1 = forward(tiny.ctx, params, bs, x_f, train=True)
    _, bs2 = forward(tiny.ctx, params, bs1, x_r, train=True)
    jax.tree_util.tree_map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6), a.train.batch_stats, bs2)


@pytest.mark.parametrize("n_r, want", [(240, [60, 2 * 60, 2 * 64, 2 * 240, 4, 8, 30]),
                                       (40, [60, 2 * 48, 2 * 40, 2 * 40, 4, 6, 6])])
def test_phase_structure(tiny, monkeypatch, n_r, want):
    """n_f = 60, B = 16, E = 2: stage 1 has 4 steps (3 x 16 + 12). n_r = 240: each forget round
    pairs 4 forget batches (16,16,16,12) with 4 full retain batches; each retain round has 15 steps.
    n_r = 40 (D_r shorter than the forget round): zip stops after 3 steps, pairing forget batches
    (16,16,16) with retain batches (16,16,8); each retain round has 3 steps. T_tot = 4 * 2 = 8."""
    seen = {}

    def bump_train(train, name, amount):
        p = dict(train.params)
        p["head"] = dict(p["head"])
        col = {"s1": 0, "ff": 1, "fr": 2, "r": 3, "n1": 4, "n2": 5, "n3": 6}[name]
        p["head"]["bias"] = p["head"]["bias"].at[col].add(amount)
        return train.replace(params=p)

    def bump(st, name, amount):
        return st._replace(train=bump_train(st.train, name, amount))

    def fake_stage1(ctx, data, train, idx, key, loss, **kw):  # batch_step: stage 1 only
        return bump_train(bump_train(train, "s1", idx.shape[0]), "n1", 1.0)

    def fake_forget(ctx, data, st, idx_f, idx_r, key, hp, total):
        # T_tot is traced (the epoch count may be a per-model value): read it back at run time
        jax.debug.callback(lambda t: seen.setdefault("total", set()).add(int(t)), total)
        st = bump(bump(st, "ff", idx_f.shape[0]), "fr", idx_r.shape[0])
        return bump(st, "n2", 1.0)._replace(step2=st.step2 + 1)

    def fake_ce(ctx, data, state, idx, key, **kw):
        p = dict(state.params)
        p["head"] = dict(p["head"])
        p["head"]["bias"] = p["head"]["bias"].at[jnp.array([3, 6])].add(jnp.array([idx.shape[0], 1.0]))
        return TrainState(p, state.batch_stats, state.opt_state)

    monkeypatch.setattr(fcs, "batch_step", fake_stage1)
    monkeypatch.setattr(fcs, "forget_update", fake_forget)
    monkeypatch.setattr(fcs, "ce_step", fake_ce)
    hp, static = _hp(epochs=2, batch_size=16)
    params, bs = _one(tiny.params), _one(tiny.batch_stats)
    data = tiny.data._replace(retain=tiny.data.retain[:n_r])
    out, _ = M.METHODS["fcs"].unlearn_one(tiny.ctx, data, params, bs, hp, jax.random.PRNGKey(0), static=static)
    d = np.asarray(out["head"]["bias"] - params["head"]["bias"])
    np.testing.assert_allclose(d[:7], want, atol=1e-3)
    assert seen["total"] == {8}


def test_end_to_end_runs(tiny):
    from jaxmu.methods.stack import unlearn_stack, unlearning_key

    m = M.get("fcs", epochs=1, batch_size=60)
    r = unlearn_stack(m.spec, m.static, m.arrays, tiny.ctx, tiny.data, tiny.params, tiny.batch_stats, unlearning_key())
    for leaf in jax.tree_util.tree_leaves((r.params, r.batch_stats)):
        assert np.all(np.isfinite(np.asarray(leaf)))
    assert not np.allclose(r.params["conv2"]["kernel"], tiny.params["conv2"]["kernel"])
