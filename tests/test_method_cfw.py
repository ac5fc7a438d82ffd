"""CFW (docs/methods.md §4.14): confuser scope per architecture, class weights, batch-level weighting,
confuser schedule (start, then once after epoch E-2)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmu.methods as M
from jaxmu.methods import cfw
from jaxmu.methods.stack import unlearn_stack, unlearning_key
from jaxmu.engine.state import TrainState
from jaxmu.engine.steps import ce_step as ce_update


def _one(tree, i=0):
    return jax.tree_util.tree_map(lambda x: x[i], tree)


def test_confuser_scope():
    cnn = {"conv1": {"kernel": jnp.zeros((3, 3, 1, 4))}, "conv2": {"kernel": jnp.zeros((3, 3, 4, 4))},
           "head": {"kernel": jnp.zeros((4, 2)), "bias": jnp.zeros(2)}}
    assert cfw.confuser_paths("cnn", cnn, "top_level_conv") == [("conv1", "kernel")]
    assert cfw.confuser_paths("resnet18", {}, "top_level_conv") == [("conv1", "kernel")]
    assert cfw.confuser_paths("tinyvit_11m", {}, "top_level_conv") == []
    assert cfw.confuser_paths("mlp", {}, "top_level_conv") == []
    assert cfw.confuser_paths("cnn", cnn, "all_convs") == [("conv1", "kernel"), ("conv2", "kernel")]
    with pytest.raises(M.MethodError):
        cfw.confuser_paths("cnn", cnn, "everything")


def test_class_weights_balanced(tiny):
    w = np.asarray(cfw.class_weights(tiny.data, 10))
    y = np.asarray(tiny.data.labels)[np.asarray(tiny.data.retain)]
    counts = np.bincount(y, minlength=10)
    np.testing.assert_allclose(w, len(y) / (10 * counts), rtol=1e-6)


def test_weights_scale_whole_batch_loss(tiny):
    """One step (mu, wd irrelevant at step 1 with wd=0) == plain CE step with lr * mean(w[y])."""
    params, bs = _one(tiny.params), _one(tiny.batch_stats)
    weights = jnp.arange(1.0, 11.0)  # strongly unequal, so per-sample weighting would differ
    idx = tiny.data.retain[:32]
    mean_w = float(jnp.mean(weights[tiny.data.labels[idx]]))
    hp = {"learning_rate": jnp.float32(0.05), "momentum": jnp.float32(0.9), "weight_decay": jnp.float32(0.0)}
    st = TrainState.create(params, bs, hp)
    a = cfw.weighted_step(tiny.ctx, tiny.data, st, idx, jax.random.PRNGKey(0), weights)
    hp2 = dict(hp, learning_rate=jnp.float32(0.05 * mean_w))
    b = ce_update(tiny.ctx, tiny.data, TrainState.create(params, bs, hp2), idx, jax.random.PRNGKey(0))
    jax.tree_util.tree_map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-6), a.params, b.params)
    assert not np.allclose(a.params["head"]["kernel"], params["head"]["kernel"])


def test_confuser_schedule_with_zero_lr(tiny):
    """lr = wd = 0: only the confuser moves parameters. E = 3: start noise, then the final
    noise exactly once (after epoch 1 = E-2). Shared key: both models see the same noise draws."""
    m = M.get("cfw", epochs=3, batch_size=120, learning_rate=0.0, weight_decay=0.0)
    arrays = dict(m.arrays, start_confuser_std=np.array([0.5, 0.0], np.float32),
                  final_confuser_std=np.array([0.0, 0.2], np.float32))
    r = unlearn_stack(m.spec, m.static, arrays, tiny.ctx, tiny.data, tiny.params, tiny.batch_stats, unlearning_key())
    d = np.asarray(r.params["conv1"]["kernel"] - tiny.params["conv1"]["kernel"])
    assert 0.4 < d[0].std() < 0.6          # sigma_start only
    assert 0.15 < d[1].std() < 0.25        # sigma_final applied once (twice would be ~0.28 with fresh draws,
    # 0.4 with the same draw; never would be 0)
    key = unlearning_key()
    n0 = jax.random.normal(jax.random.fold_in(jax.random.fold_in(key, 0), 0), d.shape[1:])
    n1 = jax.random.normal(jax.random.fold_in(jax.random.fold_in(key, 1), 0), d.shape[1:])
    np.testing.assert_allclose(d[0], 0.5 * np.asarray(n0), atol=1e-5)
    np.testing.assert_allclose(d[1], 0.2 * np.asarray(n1), atol=1e-5)
    for name in ("conv2", "head", "bn1"):
        jax.tree_util.tree_map(np.testing.assert_array_equal, r.params[name], tiny.params[name])
