"""The vectorized trainer, the model-axis modes, the optimizer and the fast convolution."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmu.engine.evaluate import Evaluator
from jaxmu.metrics import accuracy
from jaxmu.engine.optim import cosine_factor, step_decay_factor, torch_sgd
from jaxmu.training import Trainer
from jaxmu.types import DeviceData
from jaxmu.models import build_model
from jaxmu.models.layers import BatchNorm, conv2d

EPOCHS = 2
BATCH = 64


def _tree_close(a, b, atol=1e-5):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=1e-5)


@pytest.fixture(scope="module")
def setup(digits, digits_splits):
    model = build_model("cnn", digits.num_classes, digits.images.shape[1:])
    data = DeviceData(jnp.asarray(digits.images), jnp.asarray(digits.labels))
    # a small subset with a partial last batch (300 = 4 * 64 + 44)
    subset = jnp.asarray(digits_splits.retain[:300])
    return model, data, subset, digits


def _trainer(model, ds, mode, shared=True, augment="flip"):
    return Trainer(model, BATCH, EPOCHS, augment, ds.mean, ds.std, shared_data=shared, model_axis=mode)


def _train(trainer, keys, subset, data_key, data, lr=0.1):
    state = trainer.init(keys, lr, 0.9, 5e-4)
    return trainer.run_epochs(state, subset, data_key, jnp.int32(EPOCHS), data)


@pytest.fixture(scope="module")
def vmapped_result(setup):
    model, data, subset, ds = setup
    keys = jnp.stack([jax.random.PRNGKey(s) for s in range(3)])
    lrs = jnp.array([0.1, 0.05, 0.02])
    tr = _trainer(model, ds, "vmap")
    return _train(tr, keys, subset, jax.random.PRNGKey(123), data, lrs), keys, lrs


def test_vmap_equals_python_loop_of_single_models(setup, vmapped_result):
    model, data, subset, ds = setup
    stacked, keys, lrs = vmapped_result
    tr = _trainer(model, ds, "vmap")
    for i in range(3):
        single = _train(tr, keys[i : i + 1], subset, jax.random.PRNGKey(123), data, lrs[i : i + 1])
        _tree_close(jax.tree_util.tree_map(lambda x: x[i : i + 1], stacked.params), single.params)
        _tree_close(jax.tree_util.tree_map(lambda x: x[i : i + 1], stacked.batch_stats), single.batch_stats)
    assert int(stacked.epoch[0]) == EPOCHS


def test_loop_and_chunked_modes_equal_vmap(setup, vmapped_result):
    model, data, subset, ds = setup
    stacked, keys, lrs = vmapped_result
    for mode in ("loop", "chunked"):
        tr = Trainer(model, BATCH, EPOCHS, "flip", ds.mean, ds.std, model_axis=mode, chunk_size=2)
        other = _train(tr, keys, subset, jax.random.PRNGKey(123), data, lrs)
        _tree_close(stacked.params, other.params)


def test_same_seed_same_result_and_hyperparameters_matter(setup, vmapped_result):
    model, data, subset, ds = setup
    stacked, keys, lrs = vmapped_result
    again = _train(_trainer(model, ds, "vmap"), keys, subset, jax.random.PRNGKey(123), data, lrs)
    for x, y in zip(jax.tree_util.tree_leaves(stacked.params), jax.tree_util.tree_leaves(again.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # models 0 and 1 differ in init and lr; a different data key changes the result
    other = _train(_trainer(model, ds, "vmap"), keys, subset, jax.random.PRNGKey(7), data, lrs)
    assert not np.allclose(np.asarray(other.params["head"]["kernel"]), np.asarray(stacked.params["head"]["kernel"]))


def test_per_model_subsets_and_keys(setup):
    """Unshared mode: each model trains on its own index set with its own data key."""
    model, data, subset, ds = setup
    tr = _trainer(model, ds, "vmap", shared=False)
    keys = jnp.stack([jax.random.PRNGKey(0)] * 2)
    subsets = jnp.stack([subset, subset[::-1]])
    dkeys = jnp.stack([jax.random.PRNGKey(1), jax.random.PRNGKey(1)])
    out = _train(tr, keys, subsets, dkeys, data)
    # same init, same key, same *set* of examples but a different order -> same permutation of
    # a different sequence -> different models
    assert not np.allclose(np.asarray(out.params["head"]["kernel"][0]), np.asarray(out.params["head"]["kernel"][1]))
    single = _train(_trainer(model, ds, "vmap", shared=True), keys[:1], subsets[1], dkeys[1], data)
    _tree_close(jax.tree_util.tree_map(lambda x: x[1:], out.params), single.params)


def test_resume_at_any_epoch_gives_identical_state(setup):
    model, data, subset, ds = setup
    tr = Trainer(model, BATCH, 3, "flip", ds.mean, ds.std, model_axis="vmap")
    keys = jnp.stack([jax.random.PRNGKey(0)])
    full = tr.run_epochs(tr.init(keys, 0.1, 0.9, 5e-4), subset, jax.random.PRNGKey(1), jnp.int32(3), data)
    part = tr.run_epochs(tr.init(keys, 0.1, 0.9, 5e-4), subset, jax.random.PRNGKey(1), jnp.int32(1), data)
    part = tr.run_epochs(part, subset, jax.random.PRNGKey(1), jnp.int32(3), data)
    for x, y in zip(jax.tree_util.tree_leaves(full), jax.tree_util.tree_leaves(part)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_training_learns_and_evaluator_modes_agree(setup, vmapped_result, digits_splits):
    model, data, subset, ds = setup
    stacked, _, _ = vmapped_result
    test_idx = digits_splits.test
    y = jnp.asarray(ds.labels[test_idx])
    outs = []
    for mode in ("vmap", "loop"):
        ev = Evaluator(model, ds.mean, ds.std, batch_size=100, model_axis=mode)
        outs.append(ev.logits(stacked.params, stacked.batch_stats, test_idx, data))
    np.testing.assert_allclose(np.asarray(outs[0]), np.asarray(outs[1]), atol=1e-4)
    assert outs[0].shape == (3, len(test_idx), 10)
    ev = Evaluator(model, ds.mean, ds.std, batch_size=100, model_axis="vmap")
    for i in range(3):  # a Python loop of single-model stacks gives the same rows
        one = jax.tree_util.tree_map(lambda x: x[i : i + 1], (stacked.params, stacked.batch_stats))
        np.testing.assert_allclose(np.asarray(ev.logits(*one, test_idx, data))[0], np.asarray(outs[0][i]), atol=1e-4)
    acc = np.asarray(accuracy(outs[0], y))
    assert acc[0] > 0.5, acc  # 2 epochs on 300 examples already far above chance (0.1)


# --------------------------------------------------------------------------- optimizer


def test_torch_sgd_matches_pytorch_rule():
    """d = g + wd*theta; m = mu*m + d (m0 = d); theta -= lr*m."""
    lr, mu, wd = 0.1, 0.9, 0.01
    opt = torch_sgd(lr, mu, wd)
    theta = jnp.array([1.0, -2.0])
    state = opt.init(theta)
    m = np.zeros(2)
    th = np.array([1.0, -2.0])
    for g in ([0.5, 0.5], [1.0, -1.0], [0.0, 2.0]):
        d = np.array(g) + wd * th
        m = mu * m + d
        th = th - lr * m
        upd, state = opt.update(jnp.array(g), state, theta)
        theta = theta + upd
    np.testing.assert_allclose(np.asarray(theta), th, rtol=1e-6)


def test_schedules():
    assert float(cosine_factor(0, 10)) == pytest.approx(1.0)
    assert float(cosine_factor(5, 10)) == pytest.approx(0.5)
    assert float(cosine_factor(10, 10)) == pytest.approx(0.0, abs=1e-7)
    # step decay, E = 10: milestones (5, 8, 9)
    got = [float(step_decay_factor(e, 10, 0.1, one_based=True)) for e in range(1, 11)]
    assert got == pytest.approx([1, 1, 1, 1, 1, 0.1, 0.1, 0.1, 0.01, 0.001])
    # E = 1: milestones (0, 0, 0), the single epoch runs at 1e-3 (docs/methods.md §4.6)
    assert float(step_decay_factor(1, 1, 0.1, one_based=True)) == pytest.approx(1e-3)


# --------------------------------------------------------------------------- layers


@pytest.mark.parametrize("stride,pad,k", [(1, 1, 3), (2, 3, 7), (2, 0, 1), (1, 0, 3)])
def test_im2col_conv_equals_xla_conv_values_and_gradients(stride, pad, k):
    kx, kw = jax.random.split(jax.random.PRNGKey(0))
    x = jax.random.normal(kx, (2, 11, 11, 3))
    w = jax.random.normal(kw, (k, k, 3, 4))

    def f(impl):
        return lambda x, w: jnp.sum(jnp.sin(conv2d(x, w, stride=stride, padding=pad, impl=impl)))

    np.testing.assert_allclose(
        conv2d(x, w, stride=stride, padding=pad, impl="im2col"),
        conv2d(x, w, stride=stride, padding=pad, impl="xla"), atol=1e-4)
    ga = jax.grad(f("im2col"), argnums=(0, 1))(x, w)
    gb = jax.grad(f("xla"), argnums=(0, 1))(x, w)
    for a, b in zip(ga, gb):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4)


def test_batchnorm_pytorch_semantics():
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 3, 3, 2)) * 3 + 1
    bn = BatchNorm()
    v = bn.init(jax.random.PRNGKey(0), x, train=False)
    y, upd = bn.apply(v, x, train=True, mutable=["batch_stats"])
    flat = np.asarray(x).reshape(-1, 2)
    n = flat.shape[0]
    np.testing.assert_allclose(upd["batch_stats"]["mean"], 0.1 * flat.mean(0), rtol=1e-5)
    np.testing.assert_allclose(upd["batch_stats"]["var"], 0.9 + 0.1 * flat.var(0, ddof=1), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(y).reshape(-1, 2), (flat - flat.mean(0)) / np.sqrt(flat.var(0) + 1e-5),
                               atol=1e-4)
    y_eval = bn.apply(v, x, train=False)  # running stats mean 0, var 1
    np.testing.assert_allclose(y_eval, np.asarray(x) / np.sqrt(1 + 1e-5), rtol=1e-5)
    assert n == 36


def test_auto_chunk_switches_vmap_to_chunks_that_fit(setup):
    from jaxmu.engine.execution import auto_chunk

    assert auto_chunk("vmap", 10, 100, 10_000) == ("vmap", 10)
    assert auto_chunk("vmap", 10, 100, 350) == ("chunked", 3)
    assert auto_chunk("vmap", 10, 100, 50) == ("chunked", 1)
    assert auto_chunk("loop", 10, 100, 50) == ("loop", 10)
    model, data, subset, ds = setup
    per_model = Trainer(model, BATCH, 1, "none", ds.mean, ds.std).bytes_per_model(data)
    assert 10_000 < per_model < 50_000_000  # a digits CNN step: tens of kB to a few MB


def test_flat_update_equals_per_leaf_update(setup, vmapped_result):
    model, data, subset, ds = setup
    stacked, keys, lrs = vmapped_result
    tr = Trainer(model, BATCH, EPOCHS, "flip", ds.mean, ds.std, model_axis="vmap", flat_update=True)
    flat = _train(tr, keys, subset, jax.random.PRNGKey(123), data, lrs)
    _tree_close(stacked.params, flat.params, atol=1e-6)
    _tree_close(stacked.batch_stats, flat.batch_stats, atol=1e-6)


@pytest.mark.parametrize("mode", ["vmap", "loop", "chunked"])
def test_map_models_takes_pytree_in_axes(mode):
    """A NamedTuple prefix mixes shared (None) and per-model (0) fields, in every execution mode."""
    from typing import NamedTuple

    from jaxmu.engine.execution import leaf_axes, map_models

    class Pair(NamedTuple):
        shared: jax.Array
        per_model: jax.Array

    def one(pair, w):
        return {"y": pair.shared @ w + pair.per_model.sum()}

    shared = jnp.arange(6.0).reshape(2, 3)
    per_model = jnp.arange(12.0).reshape(4, 3)  # 4 models
    w = jnp.arange(4 * 3 * 2, dtype=jnp.float32).reshape(4, 3, 2)
    axes = (Pair(None, 0), 0)
    assert leaf_axes(axes, (Pair(shared, per_model), w)) == (None, 0, 0)
    got = jax.jit(map_models(one, axes, mode=mode, chunk_size=3, mesh=None))(Pair(shared, per_model), w)
    want = [one(Pair(shared, per_model[i]), w[i])["y"] for i in range(4)]
    np.testing.assert_allclose(np.asarray(got["y"]), np.stack(want), rtol=1e-6)
