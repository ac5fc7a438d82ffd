"""PRMQ (docs/methods.md §4.15): global L1 prune set and count, re-draw bounds, loss formula,
step budget floor(L*E)+1 across pass boundaries, fp16 round trip."""

import math

import jax
import jax.numpy as jnp
import numpy as np

import jaxmu.methods as M
from jaxmu.methods import prmq
from jaxmu.engine.state import TrainState


def _synthetic():
    k = jax.random.PRNGKey(0)
    r = lambda i, s: jax.random.normal(jax.random.fold_in(k, i), s)  # noqa: E731
    return {
        "conv": {"kernel": r(0, (3, 3, 2, 4)), "bias": r(1, (4,))},
        "dw": {"kernel": r(2, (3, 3, 1, 6))},
        "bn": {"scale": r(3, (4,)) * 1e-3, "bias": r(4, (4,)) * 1e-3},   # tiny but never pruned
        "ln": {"scale": r(5, (5,)) * 1e-3},
        "head": {"kernel": r(6, (5, 10)), "bias": r(7, (10,))},
    }


def test_prune_set_and_exact_count():
    p = _synthetic()
    paths = prmq.prune_paths(p)
    assert set(paths) == {("conv", "kernel"), ("conv", "bias"), ("dw", "kernel"), ("head", "kernel"),
                          ("head", "bias")}
    assert ("conv", "bias") not in prmq.prune_paths(p, prune_biases=False)
    flat = np.concatenate([np.abs(np.asarray(p[a][b])).ravel() for a, b in paths])
    n = flat.size  # 72 + 4 + 54 + 50 + 10 = 190
    for amount in (0.0, 0.3, 0.99, 1.0):
        q = jax.jit(prmq.global_l1_prune, static_argnums=1)(p, tuple(paths), jnp.float32(amount))
        k = int(round(amount * n))
        out = np.concatenate([np.asarray(q[a][b]).ravel() for a, b in paths])
        assert int((out == 0).sum()) == k
        thr = np.sort(flat)[k - 1] if k else -1.0
        kept = np.concatenate([np.asarray(p[a][b]).ravel() for a, b in paths])
        np.testing.assert_array_equal(out, np.where(np.abs(kept) <= thr, 0.0, kept))
        for name in ("bn", "ln"):  # normalisation layers untouched
            jax.tree_util.tree_map(np.testing.assert_array_equal, q[name], p[name])


def test_redraw_zeros_bounds():
    p = _synthetic()
    z = prmq.global_l1_prune(p, prmq.prune_paths(p), 1.0)  # everything zero
    r = prmq.redraw_zeros(z, jax.random.PRNGKey(1))
    for name, fan_in in (("conv", 3 * 3 * 2), ("dw", 3 * 3 * 1), ("head", 5)):
        w = np.asarray(r[name]["kernel"])
        b = math.sqrt(1.0 / fan_in)
        assert np.all(np.abs(w) <= b) and np.abs(w).max() > 0.7 * b and np.all(w != 0)
    np.testing.assert_array_equal(r["conv"]["bias"], 0.0)   # biases restart from 0
    np.testing.assert_array_equal(r["head"]["bias"], 0.0)
    # non-zero entries are kept
    q = prmq.global_l1_prune(p, prmq.prune_paths(p), 0.5)
    r = prmq.redraw_zeros(q, jax.random.PRNGKey(1))
    nz = np.asarray(q["head"]["kernel"]) != 0
    np.testing.assert_array_equal(np.asarray(r["head"]["kernel"])[nz], np.asarray(q["head"]["kernel"])[nz])


def test_loss_formula():
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(6, 4)).astype(np.float32), rng.normal(size=(6, 4)).astype(np.float32)
    y = np.array([0, 1, 1, 3, 2, 1])
    w = np.array([1.0, 0.5, 2.0, 3.0], np.float32)
    logp = s - np.log(np.exp(s).sum(1, keepdims=True))
    logq = t - np.log(np.exp(t).sum(1, keepdims=True))
    ce = -logp[np.arange(6), y]
    h_s, h_t = -(np.exp(logp) * logp).sum(1), -(np.exp(logq) * logq).sum(1)
    want = (w[y] * ce).sum() / w[y].sum() + np.mean((h_s - h_t) ** 2)
    np.testing.assert_allclose(prmq.prmq_loss(jnp.asarray(s), jnp.asarray(t), jnp.asarray(y), jnp.asarray(w)),
                               want, rtol=1e-5)


def test_step_count_crosses_pass_boundaries(tiny, monkeypatch):
    """n_r = 240, B = 64: L = 4; E = 3.2 -> int(12.8) + 1 = 13 steps = 3 passes (3 x 4 batches,
    the 4th of each partial: 48) + 1 full batch of a 4th shuffle."""
    assert prmq.train_steps(240, 64, 3.2) == 13
    assert prmq.train_steps(240, 64, 1.0) == 5
    assert prmq.train_steps(240, 64, 0.5) == 3

    def fake_update(ctx, data, teacher, state, idx, key, loss):
        p = dict(state.params)
        p["head"] = {"kernel": state.params["head"]["kernel"] + 1.0,
                     "bias": state.params["head"]["bias"] + idx.shape[0]}
        return TrainState(p, state.batch_stats, state.opt_state)

    monkeypatch.setattr(prmq, "distill_step", fake_update)
    m = M.get("prmq", fp16_roundtrip=False, prune_amount=0.0)
    hp = {k: jnp.float32(v) for k, v in m.arrays.items()}
    params, bs = jax.tree_util.tree_map(lambda x: x[0], (tiny.params, tiny.batch_stats))
    out, _ = M.METHODS["prmq"].unlearn_one(tiny.ctx, tiny.data, params, bs, hp, jax.random.PRNGKey(0),
                                          static=m.static)
    np.testing.assert_allclose(out["head"]["kernel"] - params["head"]["kernel"], 13.0, atol=1e-4)
    np.testing.assert_allclose(out["head"]["bias"] - params["head"]["bias"], 3 * 240 + 64, atol=1e-3)


def test_fp16_roundtrip():
    x = {"a": jnp.array([0.1, 1e-8, 7e4, -7e4, 1.0 + 2 ** -12], jnp.float32)}
    y = np.asarray(prmq.fp16_roundtrip(x)["a"])
    assert y[0] == np.float32(np.float16(0.1)) and y[3] == -np.inf
    assert np.isinf(y[2]) and y[1] == 0.0 and y[4] == 1.0


def test_end_to_end_prunes_and_quantises(tiny):
    from jaxmu.methods.stack import unlearn_stack, unlearning_key

    m = M.get("prmq", epochs=0.0, batch_size=120)  # 1 step
    r = unlearn_stack(m.spec, m.static, m.arrays, tiny.ctx, tiny.data, tiny.params, tiny.batch_stats, unlearning_key())
    for leaf in jax.tree_util.tree_leaves((r.params, r.batch_stats)):
        a = np.asarray(leaf)
        assert np.all(np.isfinite(a))
        np.testing.assert_array_equal(a, a.astype(np.float16).astype(np.float32))
    # 99 % of the prune set was re-drawn: few entries stay near theta_0 (one small step at lr 5e-4)
    near = [np.abs(np.asarray(r.params[a]["kernel"]) - np.asarray(tiny.params[a]["kernel"])) < 2e-3
            for a in ("conv1", "conv2", "head")]
    frac = sum(x.sum() for x in near) / sum(x.size for x in near)
    assert 0.0 < frac < 0.05
