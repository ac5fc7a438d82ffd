"""EU-k (docs/methods.md §4.11): re-initialisation rules and bounds, kept running statistics,
post-reinit anchor and augmented retain stream, frozen stem."""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np

import jaxmu.methods as M
from jaxmu.engine.optim import step_decay_factor
from jaxmu.engine.passes import run_epochs, run_pass
from jaxmu.methods import eu_k
from jaxmu.methods.recipes import fk_init, fk_step
from jaxmu.methods.reinit import reinit_groups

STATIC = {"epochs": 1, "batch_size": 120, "num_blocks": 1, "bn_mode": "eval", "attention_biases": "frozen",
          "reset_bn_stats": False}


def fk_finetune(ctx, data, params, batch_stats, hp, key, *, static, mask, augment="none"):
    """The reference loop ``fk_finetune`` written out (not through the driver): anchor = ``params``,
    epoch e on ``fold_in(key, e)`` at lr * r^m(e), one shuffled pass over D_r."""
    anchor = params
    state = fk_init(params, batch_stats, hp).train

    def step(s, idx, k):
        return fk_step(ctx, data, s, idx, k, mask=mask, anchor=anchor, hp=hp, bn_mode=static["bn_mode"],
                       augment=augment)

    def epoch(st, e, k):
        st = st.with_lr(hp["learning_rate"] * step_decay_factor(e, static["epochs"], hp["sgda_decay_rate"],
                                                                one_based=False))
        return run_pass(st, data.retain, static["batch_size"], k, step)

    state = run_epochs(state, static["epochs"], key, epoch)
    return state.params, state.batch_stats


def _one(tree):
    return jax.tree_util.tree_map(lambda x: x[0], tree)


def _uniform_like(x, bound):
    x = np.asarray(x).ravel()
    assert np.abs(x).max() <= bound + 1e-7
    assert np.abs(x).max() > 0.9 * bound
    np.testing.assert_allclose(x.std(), bound / math.sqrt(3), rtol=0.1)


def test_reinit_cnn_bounds_and_untouched(tiny):
    params, bs = _one(tiny.params), _one(tiny.batch_stats)
    new, new_bs, mask = eu_k.reinit_last_k(tiny.ctx, params, bs, jax.random.PRNGKey(3), static=STATIC)
    assert {g for g in mask if all(jax.tree_util.tree_leaves(mask[g]))} == {"conv2", "bn2", "head"}
    assert not any(jax.tree_util.tree_leaves({g: mask[g] for g in ("conv1", "bn1")}))
    kc = new["conv2"]["kernel"]  # HWIO [3, 3, 16, 32]: fan_out = 32 * 9
    _uniform_like(kc, math.sqrt(6 / (32 * 9)))
    kh = new["head"]["kernel"]  # [512, 10]
    _uniform_like(kh, math.sqrt(6 / (kh.shape[0] + kh.shape[1])))
    np.testing.assert_array_equal(new["head"]["bias"], 0)
    np.testing.assert_array_equal(new["bn2"]["scale"], 1)
    np.testing.assert_array_equal(new["bn2"]["bias"], 0)
    for g in ("conv1", "bn1"):
        chex.assert_trees_all_equal(params[g], new[g])
    for a, b in zip(jax.tree_util.tree_leaves(bs), jax.tree_util.tree_leaves(new_bs)):
        np.testing.assert_array_equal(a, b)  # running statistics not reset (faithful)
    _, reset_bs, _ = eu_k.reinit_last_k(tiny.ctx, params, bs, jax.random.PRNGKey(3), static={**STATIC, "reset_bn_stats": True})
    np.testing.assert_array_equal(reset_bs["bn2"]["mean"], 0)
    np.testing.assert_array_equal(reset_bs["bn2"]["var"], 1)
    np.testing.assert_array_equal(reset_bs["bn1"]["mean"], bs["bn1"]["mean"])


def test_reinit_tinyvit_like_tree():
    """LayerNorm and attention biases untouched; depthwise fan_out = C * 9; dense xavier; BN 1/0."""
    r = np.random.default_rng(0)
    f = lambda *s: jnp.asarray(r.normal(size=s), jnp.float32)
    params = {"layers_3": {"blocks_0": {
        "attn": {"norm": {"scale": f(64), "bias": f(64)}, "attention_biases": f(4, 49),
                 "qkv": {"kernel": f(64, 192), "bias": f(192)}},
        "local_conv": {"c": {"kernel": f(3, 3, 1, 64)}, "bn": {"scale": f(64), "bias": f(64)}}}},
        "head": {"kernel": f(64, 10), "bias": f(10)}, "norm_head": {"scale": f(64), "bias": f(64)}}
    bs = {"layers_3": {"blocks_0": {"local_conv": {"bn": {"mean": f(64), "var": f(64) ** 2}}}}}
    new, new_bs = reinit_groups(params, bs, ("layers_3", "head"), jax.random.PRNGKey(0))
    b0, n0 = params["layers_3"]["blocks_0"], new["layers_3"]["blocks_0"]
    for leaf in ("scale", "bias"):
        np.testing.assert_array_equal(n0["attn"]["norm"][leaf], b0["attn"]["norm"][leaf])
        np.testing.assert_array_equal(new["norm_head"][leaf], params["norm_head"][leaf])
    np.testing.assert_array_equal(n0["attn"]["attention_biases"], b0["attn"]["attention_biases"])
    _uniform_like(n0["attn"]["qkv"]["kernel"], math.sqrt(6 / (64 + 192)))
    np.testing.assert_array_equal(n0["attn"]["qkv"]["bias"], 0)
    _uniform_like(n0["local_conv"]["c"]["kernel"], math.sqrt(6 / (64 * 9)))
    np.testing.assert_array_equal(n0["local_conv"]["bn"]["scale"], 1)
    np.testing.assert_array_equal(n0["local_conv"]["bn"]["bias"], 0)
    np.testing.assert_array_equal(new_bs["layers_3"]["blocks_0"]["local_conv"]["bn"]["var"],
                                  bs["layers_3"]["blocks_0"]["local_conv"]["bn"]["var"])


def test_run_is_reinit_then_cfk_on_augmented_retain(tiny):
    m = M.get("eu_k", epochs=1, batch_size=120, learning_rate=0.05, sgda_weight_decay=0.5)
    assert m.static == STATIC and "training_epoch_factor" in m.spec.dead
    params, bs = _one(tiny.params), _one(tiny.batch_stats)
    hp = {k: jnp.float32(v) for k, v in m.arrays.items()}
    key = jax.random.PRNGKey(123)
    out = jax.jit(lambda p, b: M.METHODS["eu_k"].unlearn_one(tiny.ctx, tiny.data, p, b, hp, key,
                                                             static=m.static))(params, bs)

    def manual(augment):
        p0, b0, mask = eu_k.reinit_last_k(tiny.ctx, params, bs, jax.random.fold_in(key, 0), static=m.static)
        return fk_finetune(tiny.ctx, tiny.data, p0, b0, hp, jax.random.fold_in(key, 1), static=m.static,
                           mask=mask, augment=augment)

    assert tiny.ctx.train_augment != "none"
    ref = jax.jit(lambda: (manual(tiny.ctx.train_augment), manual("none")))()
    chex.assert_trees_all_close(out, ref[0], rtol=1e-6, atol=1e-7)
    assert any(np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-6 for a, b in
               zip(jax.tree_util.tree_leaves(out[0]["head"]), jax.tree_util.tree_leaves(ref[1][0]["head"])))
    for g in ("conv1", "bn1"):
        chex.assert_trees_all_equal(params[g], out[0][g])
    for a, b in zip(jax.tree_util.tree_leaves(bs), jax.tree_util.tree_leaves(out[1])):
        np.testing.assert_array_equal(a, b)  # eval mode: running statistics untouched
    # two steps per epoch: the second step's L2 pull is towards the re-initialised weights, so the
    # trained head stays close to the re-initialised head, far from the original one
    p0 = eu_k.reinit_last_k(tiny.ctx, params, bs, jax.random.fold_in(key, 0), static=m.static)[0]
    d_re = np.abs(np.asarray(out[0]["head"]["kernel"]) - np.asarray(p0["head"]["kernel"])).max()
    d_orig = np.abs(np.asarray(out[0]["head"]["kernel"]) - np.asarray(params["head"]["kernel"])).max()
    assert d_re < 0.1 * d_orig
