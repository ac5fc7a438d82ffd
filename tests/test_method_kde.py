"""KDE (docs/methods.md §4.17): reset mapping and PyTorch default bounds, loss formulas, warm-up on
D_v in stored order at constant lr, retain phase with a fresh cosine-scheduled optimizer."""

import math

import jax
import jax.numpy as jnp
import numpy as np

import jaxmu.methods as M
from jaxmu.methods import kde
from jaxmu.methods.reinit import torch_default_reinit
from jaxmu.engine.state import TrainState


def _one(tree, i=0):
    return jax.tree_util.tree_map(lambda x: x[i], tree)


def test_reset_paths_per_arch():
    assert kde.reset_paths("resnet18") == (("conv1",), ("fc",))
    assert kde.reset_paths("tinyvit_11m") == (("head",),)
    assert kde.reset_paths("cnn") == (("conv1",), ("head",))
    assert kde.reset_paths("mlp") == (("fc1",), ("head",))


def test_reinit_bounds_and_untouched(tiny):
    params = _one(tiny.params)
    new = torch_default_reinit(params, kde.reset_paths("cnn"), jax.random.PRNGKey(3))
    for path, fan_in in ((("conv1", "kernel"), 9 * 1), (("head", "kernel"), 512), (("head", "bias"), 512)):
        w = np.asarray(new[path[0]][path[1]])
        b = 1 / math.sqrt(fan_in)
        assert np.all(np.abs(w) <= b) and np.abs(w).max() > 0.8 * b
        assert not np.allclose(w, params[path[0]][path[1]])
    for name in ("conv2", "bn1", "bn2"):
        jax.tree_util.tree_map(np.testing.assert_array_equal, new[name], params[name])


def test_losses():
    rng = np.random.default_rng(0)
    t, s = rng.normal(size=(4, 5)).astype(np.float32), rng.normal(size=(4, 5)).astype(np.float32)
    T = 2.5
    q = np.exp(t / T) / np.exp(t / T).sum(1, keepdims=True)
    logp = s / T - np.log(np.exp(s / T).sum(1, keepdims=True))
    np.testing.assert_allclose(kde.soft_ce(jnp.asarray(t), jnp.asarray(s), T), np.mean(np.sum(-q * logp, 1)), rtol=1e-5)
    from jaxmu.engine.losses import kl_div
    np.testing.assert_allclose(kl_div(jnp.asarray(t), jnp.asarray(s), T, "batchmean"),
                               np.mean(np.sum(q * (np.log(q) - logp), 1)), rtol=1e-5)  # no T^2


def test_phase_structure(tiny, monkeypatch):
    """Warm-up: E_w = 2 epochs over D_v (60) in stored order, B = 16 -> 4 steps each at constant lr;
    retain: E_r = 3 epochs x 15 steps with lr_r (1 + cos(pi e / 3)) / 2 from a fresh optimizer."""
    val = np.asarray(tiny.data.val)
    params, bs = _one(tiny.params), _one(tiny.batch_stats)
    reset = torch_default_reinit(params, kde.reset_paths("cnn"), jax.random.fold_in(jax.random.PRNGKey(0), 0))
    b1 = reset["head"]["bias"][1]

    def fake_warm(ctx, data, teacher, st, idx, key, T):
        b = st.params["head"]["bias"]
        n = jnp.round(b[1] - b1)  # steps so far
        b = b.at[0].add((n + 1) * idx[0]).at[1].add(1.0).at[2].add(st.opt_state.hyperparams["learning_rate"])
        return TrainState({**st.params, "head": {**st.params["head"], "bias": b}}, st.batch_stats, st.opt_state)

    def fake_retain(ctx, data, teacher, st, idx, key, T):
        b = st.params["head"]["bias"]
        b = b.at[3].add(1.0).at[4].add(st.opt_state.hyperparams["learning_rate"])
        b = b.at[5].add(st.opt_state.hyperparams["momentum"])
        return TrainState({**st.params, "head": {**st.params["head"], "bias": b}}, st.batch_stats, st.opt_state)

    monkeypatch.setattr(kde, "warmup_update", fake_warm)
    monkeypatch.setattr(kde, "retain_update", fake_retain)
    m = M.get("kde", epochs=2, retain_epochs=3, batch_size=16, retain_momentum=0.5)
    hp = {k: jnp.float32(v) for k, v in m.arrays.items()}
    out, _ = M.METHODS["kde"].unlearn_one(tiny.ctx, tiny.data, params, bs, hp, jax.random.PRNGKey(0), static=m.static)
    d = np.asarray(out["head"]["bias"] - reset["head"]["bias"], np.float64)
    firsts = [val[16 * b] for b in range(4)] * 2
    np.testing.assert_allclose(d[0], sum((i + 1) * f for i, f in enumerate(firsts)), rtol=1e-6)
    np.testing.assert_allclose(d[1], 8, atol=1e-4)
    np.testing.assert_allclose(d[2], 8 * 9e-4, rtol=1e-3)
    np.testing.assert_allclose(d[3], 45, atol=1e-4)
    lrs = sum(15 * 1e-3 * (1 + math.cos(math.pi * e / 3)) / 2 for e in range(3))
    np.testing.assert_allclose(d[4], lrs, rtol=1e-3)
    np.testing.assert_allclose(d[5], 45 * 0.5, rtol=1e-4)   # retain optimizer has its own momentum


def test_end_to_end_zero_lr_is_reset(tiny):
    """All learning rates and decays 0: the result is theta_0 with the stem conv and head reset
    (per-model reset draws are the same: shared key), other parameters untouched."""
    from jaxmu.methods.stack import unlearn_stack, unlearning_key

    m = M.get("kde", epochs=1, retain_epochs=1, batch_size=60, learning_rate=0.0, weight_decay=0.0,
              retain_learning_rate=0.0, retain_weight_decay=0.0)
    r = unlearn_stack(m.spec, m.static, m.arrays, tiny.ctx, tiny.data, tiny.params, tiny.batch_stats, unlearning_key())
    for name in ("conv2", "bn1", "bn2"):
        jax.tree_util.tree_map(np.testing.assert_array_equal, r.params[name], tiny.params[name])
    np.testing.assert_array_equal(r.params["head"]["kernel"][0], r.params["head"]["kernel"][1])
    assert np.abs(np.asarray(r.params["head"]["kernel"])).max() <= 1 / math.sqrt(512)
    assert not np.allclose(r.params["conv1"]["kernel"], tiny.params["conv1"]["kernel"])
