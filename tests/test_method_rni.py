"""RNI (docs/methods.md §4.18): bn-key table, per-epoch selection and noise (count, unseen-only),
frozen leaves bit-identical, head reset, fine lr list, one end-to-end run."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmu.methods as M
from jaxmu.engine.optim import torch_sgd
from jaxmu.engine.state import TrainState
from jaxmu.engine.steps import masked_ce_step as masked_ce_update
from jaxmu.methods import layouts, rni
from jaxmu.methods.noise import add_noise
from jaxmu.models import build_model
from jaxmu.models.names import tree_paths
from jaxmu.models.trees import unflatten_like


@pytest.fixture(scope="module")
def resnet_table():
    model = build_model("resnet18", 10, (32, 32, 3))
    p, bs = jax.eval_shape(model.init, jax.random.PRNGKey(0))
    return layouts.key_table("resnet18", p, bs), layouts.key_table("resnet18", p, bs, "module")


def _one(tree):
    return jax.tree_util.tree_map(lambda x: x[0], tree)


def test_key_table_resnet18(resnet_table):
    t, tm = resnet_table
    assert sum(t.is_bn) == 34 and len(t.nonbn) == 28
    assert "layer2.0.downsample.1.weight" in [t.names[i] for i in t.nonbn]
    assert sum(tm.is_bn) == 40  # module filter adds the 3 downsample BatchNorms


def test_partial_masks_selection_and_noise(resnet_table):
    t, _ = resnet_table
    n_nb = len(t.nonbn)
    bn_idx = [i for i, b in enumerate(t.is_bn) if b]
    masks = jax.jit(lambda k, ep, seen, nr: rni.partial_masks(t, k, ep, seen, nr, 1))
    none = jnp.zeros((n_nb,), bool)
    sels = []
    for s in range(5):
        tr, noised, seen = masks(jax.random.PRNGKey(s), 1, none, 0.7)
        tr, noised, seen = map(np.asarray, (tr, noised, seen))
        sel = tr[list(t.nonbn)]
        assert sel.sum() == 9 and tr[bn_idx].all()
        assert noised.sum() == 6 and not (noised & ~sel).any()  # floor(0.7 * 9) = 6 of the 9
        np.testing.assert_array_equal(seen, sel)
        sels.append(sel)
    assert len({s.tobytes() for s in sels}) > 1  # traced-random selection
    # before reset_epochs: no noise
    assert not np.asarray(masks(jax.random.PRNGKey(0), 0, none, 0.7)[1]).any()
    # dynamic count: floor(nr * 9)
    for nr, c in [(0.0, 0), (0.35, 3), (0.99, 8), (1.0, 9)]:
        assert int(np.asarray(masks(jax.random.PRNGKey(0), 2, none, nr)[1]).sum()) == c
    # only keys never selected before are noised
    tr, cand, _ = map(np.asarray, masks(jax.random.PRNGKey(7), 1, none, 0.7))
    seen = np.zeros(n_nb, bool)
    seen[np.flatnonzero(cand)[:4]] = True
    seen[np.flatnonzero(~tr[list(t.nonbn)])[:5]] = True
    _, noised, new_seen = map(np.asarray, masks(jax.random.PRNGKey(7), 1, jnp.asarray(seen), 0.7))
    np.testing.assert_array_equal(noised, cand & ~seen)
    assert noised.sum() == 2
    np.testing.assert_array_equal(new_seen, seen | tr[list(t.nonbn)])
    _, all_c, _ = rni.partial_masks(t, jax.random.PRNGKey(7), 1, jnp.asarray(seen), 0.7, 1, noise_only_unseen=False)
    np.testing.assert_array_equal(np.asarray(all_c), cand)


def test_small_arch_selects_all_and_caps_noise(tiny):
    t = layouts.key_table("cnn", _one(tiny.params), _one(tiny.batch_stats))
    assert len(t.nonbn) == 4 and sum(t.is_bn) == 4
    tr, noised, _ = rni.partial_masks(t, jax.random.PRNGKey(0), 3, jnp.zeros((4,), bool), 0.7, 1)
    assert np.asarray(tr).all() and int(np.asarray(noised).sum()) == 4


def test_add_noise_only_on_noised_leaves(tiny):
    params = _one(tiny.params)
    t = layouts.key_table("cnn", params, _one(tiny.batch_stats))
    names = [t.names[i] for i in t.nonbn]
    noised = jnp.asarray([n == "conv2.weight" for n in names])
    paths = tree_paths(params)
    new = add_noise(params, {paths[i]: (jnp.where(noised[j], 0.04, 0.0), jax.random.fold_in(jax.random.PRNGKey(0), i))
                             for j, i in enumerate(t.nonbn)})
    for name, a, b in zip(t.names, jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(new)):
        if name == "conv2.weight":
            d = (np.asarray(b) - np.asarray(a)).ravel()
            np.testing.assert_allclose(d.std(), 0.04, rtol=0.05)
            assert abs(d.mean()) < 0.004
        else:
            np.testing.assert_array_equal(a, b)


def test_masked_step_freezes_leaves_bit_identical(tiny):
    params, bs = _one(tiny.params), _one(tiny.batch_stats)
    t = layouts.key_table("cnn", params, bs)
    trainable = jnp.asarray([n in ("conv2.weight", "bn1.weight") for n in t.names])
    mask = unflatten_like(params, list(trainable))
    st = TrainState(params, bs, torch_sgd(0.1, 0.9, 0.01).init(params))
    new = jax.jit(lambda s: masked_ce_update(tiny.ctx, tiny.data, s, tiny.data.retain[:64], jax.random.PRNGKey(0),
                                             train=True, trainable=mask))(st)
    for name, a, b in zip(t.names, jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(new.params)):
        if name in ("conv2.weight", "bn1.weight"):
            assert np.abs(np.asarray(a) - np.asarray(b)).max() > 0
        else:
            np.testing.assert_array_equal(a, b, err_msg=name)
    # train mode: running statistics of every BatchNorm move, frozen normalisation params included
    assert np.abs(np.asarray(new.batch_stats["bn2"]["mean"]) - np.asarray(bs["bn2"]["mean"])).max() > 0


def test_fine_lr_list_and_checks():
    hp = {"fine_learning_rate": jnp.float32(0.5)}
    lrs = [float(rni.fine_lr(hp, ep, 9, 4, "list")) for ep in range(5, 9)]
    np.testing.assert_allclose(lrs, [2e-4, 2e-4, 2e-4, 1e-3], rtol=1e-6)
    assert float(rni.fine_lr(hp, 6, 9, 4, "scalar")) == 0.5
    base = dict(M.get("rni").static)
    with pytest.raises(M.MethodError, match="fine_lr_schedule"):
        rni._check({**base, "fine_epochs": 7})
    rni._check({**base, "fine_epochs": 7, "fine_lr_schedule": "scalar"})
    m = M.get("rni")
    assert "momentum" not in m.spec.search_space and "fine_momentum" not in m.spec.search_space
    assert m.static["epochs"] == 9 and m.static["fine_epochs"] == 4 and m.static["reset_epochs"] == 1


def test_end_to_end_head_reset_noise_and_bn(tiny):
    """E=2, F=1, R=0: one partial epoch (all 4 cnn keys selected and noised) + one fine epoch."""
    m = M.get("rni", epochs=2, fine_epochs=1, reset_epochs=0, batch_size=240, learning_rate=1e-5)
    params, bs = _one(tiny.params), _one(tiny.batch_stats)
    f = jax.jit(lambda hp: M.METHODS["rni"].unlearn_one(tiny.ctx, tiny.data, params, bs, hp, jax.random.PRNGKey(123),
                                                        static=m.static))
    hp = {k: jnp.float32(v) for k, v in m.arrays.items()}
    p_noise, bs_out = f(hp)
    p_quiet, _ = f({**hp, "origin_noise": jnp.float32(0.0)})
    d = np.asarray(p_noise["conv2"]["kernel"]) - np.asarray(p_quiet["conv2"]["kernel"])
    np.testing.assert_allclose(d.std(), 0.04, rtol=0.1)  # noise added once, training moves little
    assert np.abs(np.asarray(p_quiet["conv2"]["kernel"]) - np.asarray(params["conv2"]["kernel"])).max() < 0.01
    bound = 1 / math.sqrt(params["head"]["kernel"].shape[0])
    hk = np.asarray(p_quiet["head"]["kernel"])
    assert np.abs(hk).max() < bound + 0.01 and np.abs(hk - np.asarray(params["head"]["kernel"])).max() > 0.05
    assert np.abs(np.asarray(bs_out["bn1"]["var"]) - np.asarray(bs["bn1"]["var"])).max() > 0
    for leaf in jax.tree_util.tree_leaves((p_noise, bs_out)):
        assert np.isfinite(np.asarray(leaf)).all()
