"""CT (docs/methods.md §4.16): kernel transpose exactness, no-conv refusal, CT == FT on transposed weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmu.methods as M
from jaxmu.methods import ct
from jaxmu.methods.stack import unlearn_stack, unlearning_key


def _synthetic():
    k = jax.random.PRNGKey(0)
    r = lambda i, s: jax.random.normal(jax.random.fold_in(k, i), s)
    return {
        "conv1": {"kernel": r(0, (3, 3, 2, 4))},
        "down": {"kernel": r(1, (1, 1, 4, 5))},
        "dw": {"kernel": r(2, (3, 3, 1, 6))},
        "bn": {"scale": r(3, (4,)), "bias": r(4, (4,))},
        "head": {"kernel": r(5, (5, 10)), "bias": r(6, (10,))},
    }


def test_transpose_exact_and_involutive():
    p = _synthetic()
    t = ct.transpose_kernels(p)
    for name in ("conv1", "dw"):
        a, b = np.asarray(p[name]["kernel"]), np.asarray(t[name]["kernel"])
        # PyTorch W[o, i, h, w] -> W[o, i, w, h]; HWIO: b[w, h, i, o] = a[h, w, i, o]
        np.testing.assert_array_equal(b, a.transpose(1, 0, 2, 3))
        oihw = a.transpose(3, 2, 0, 1)
        np.testing.assert_array_equal(b.transpose(3, 2, 0, 1), oihw.swapaxes(2, 3))
        assert not np.array_equal(a, b)
    np.testing.assert_array_equal(t["down"]["kernel"], p["down"]["kernel"])  # 1x1 unchanged
    for name in ("bn", "head"):
        for leaf in p[name]:
            np.testing.assert_array_equal(t[name][leaf], p[name][leaf])
    tt = ct.transpose_kernels(t)
    jax.tree_util.tree_map(np.testing.assert_array_equal, tt, p)


def test_non_square_kernel_raises():
    with pytest.raises(M.MethodError):
        ct.transpose_kernels({"c": {"kernel": jnp.zeros((3, 1, 2, 2))}})


def test_ct_is_finetune_on_transposed(tiny):
    key = unlearning_key()
    m = M.get("ct", epochs=1, batch_size=100)
    r = unlearn_stack(m.spec, m.static, m.arrays, tiny.ctx, tiny.data, tiny.params, tiny.batch_stats, key)
    f = M.get("finetune", epochs=1, batch_size=100, learning_rate=1e-3, weight_decay=5e-4)
    tp = jax.vmap(ct.transpose_kernels)(tiny.params)
    rf = unlearn_stack(f.spec, f.static, f.arrays, tiny.ctx, tiny.data, tp, tiny.batch_stats, key)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), r.params, rf.params)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                           r.batch_stats, rf.batch_stats)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree_util.tree_leaves(r.params))
    # the fine-tune moved the (transposed) weights
    assert not np.allclose(r.params["conv1"]["kernel"], tp["conv1"]["kernel"])


def test_zero_lr_gives_transposed_weights(tiny):
    m = M.get("ct", epochs=1, batch_size=100, learning_rate=0.0)
    r = unlearn_stack(m.spec, m.static, m.arrays, tiny.ctx, tiny.data, tiny.params, tiny.batch_stats,
                      unlearning_key())
    tp = jax.vmap(ct.transpose_kernels)(tiny.params)
    jax.tree_util.tree_map(np.testing.assert_array_equal, r.params, tp)
