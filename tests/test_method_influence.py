"""IU (docs/methods.md §4.9): the recursion against a numpy transcription of the reference loop,
gradient sums against per-sample gradients, and the full update against a by-hand pipeline."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmu.methods as M
from jaxmu.methods import influence
from jaxmu.methods.stack import unlearn_stack, unlearning_key
from jaxmu.engine.passes import gather
from jaxmu.methods import driver


def _np_woodfisher(v, H, N):
    """Transcription of ``woodfisher`` in the reference (loop over a batch-1 loader)."""
    k, o = v.astype(np.float64).copy(), None
    for idx, h in enumerate(H.astype(np.float64)):
        if o is None:
            o = h.copy()
        else:
            tmp = o @ h
            k -= (k @ h / (N + tmp)) * o
            o -= (tmp / (N + tmp)) * o
        if idx > N:
            return k
    return k


@pytest.mark.parametrize("N,rows", [(5, 12), (50, 9), (0, 4)])
def test_recursion_matches_reference_loop(N, rows):
    rng = np.random.default_rng(N)
    v = rng.normal(size=6).astype(np.float32)
    H = rng.normal(size=(rows, 6)).astype(np.float32) * 3
    got = influence.recursion(jnp.asarray(v), jnp.asarray(H), N)
    np.testing.assert_allclose(got, _np_woodfisher(v, H, N), rtol=1e-4, atol=1e-5)
    if rows > N + 2:  # rows past N + 1 are ignored
        H2 = H.copy()
        H2[N + 2:] = 1e3
        np.testing.assert_array_equal(influence.recursion(jnp.asarray(v), jnp.asarray(H2), N), got)


def test_influence_vector():
    Gf, Gr = jnp.array([3.0, -1.0]), jnp.array([2.0, 4.0])
    np.testing.assert_allclose(influence.influence_vector(Gf, Gr, 2, 6),
                               np.array([3.0, -1.0]) / 8 - np.array([2.0, 4.0]) * 2 / (8 * 6), rtol=1e-6)


def _one(tree, i):
    return jax.tree_util.tree_map(lambda x: x[i], tree)


@pytest.fixture(scope="module")
def per_sample(tiny):
    """Per-example flat gradients (eval mode) of model 0 on D_f and D_r."""
    params, bs = _one(tiny.params, 0), _one(tiny.batch_stats, 0)

    @jax.jit
    def grads(idx):
        def one(i):
            x, y = gather(tiny.ctx, tiny.data, i[None])
            return influence.flat_grad(tiny.ctx, params, bs, x, y)
        return jax.vmap(one)(idx)

    return np.asarray(grads(tiny.data.forget), np.float64), np.asarray(grads(tiny.data.retain), np.float64)


def test_grad_sum_is_sum_of_per_sample(tiny, per_sample):
    params, bs = _one(tiny.params, 0), _one(tiny.batch_stats, 0)
    ctx = tiny.ctx.with_static({"batch_size": 25, "N": 1000})
    gradients = influence.plan(ctx)[0]  # the passes over D_f and D_r, through the driver

    def run():
        state = influence.init(params, bs, {}, None, ctx, tiny.data)
        return driver.run_phase(influence.SPEC, gradients, state, {}, jax.random.PRNGKey(0), ctx, tiny.data).G_f

    G_f = jax.jit(run)()
    ref = per_sample[0].sum(0)
    np.testing.assert_allclose(G_f, ref, rtol=1e-3, atol=1e-4 * np.abs(ref).max())


def test_driver_matches_by_hand(tiny, per_sample):
    N = 5
    m = M.get("influence", batch_size=100, N=N, num_epochs=3)  # num_epochs is dead: accepted
    assert "num_epochs" not in m.spec.search_space and "N" in m.static
    alphas = np.array([0.2, 0.5], np.float32)
    r = unlearn_stack(m.spec, m.static, {"alpha": alphas}, tiny.ctx, tiny.data, tiny.params, tiny.batch_stats,
                      unlearning_key())
    pf, pr = per_sample
    nf, nr = len(pf), len(pr)
    v = pf.sum(0) / (nf + nr) - pr.sum(0) * nf / ((nf + nr) * nr)
    k = _np_woodfisher(v, pr, N)
    flat0, _ = jax.flatten_util.ravel_pytree(_one(tiny.params, 0))
    flat1, _ = jax.flatten_util.ravel_pytree(_one(r.params, 0))
    delta = np.asarray(flat1, np.float64) - np.asarray(flat0, np.float64)
    np.testing.assert_allclose(delta, 0.2 * k, rtol=2e-2, atol=2e-3 * np.abs(0.2 * k).max())
    assert np.abs(delta).max() > 0
    jax.tree_util.tree_map(np.testing.assert_array_equal, r.batch_stats, tiny.batch_stats)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree_util.tree_leaves(r.params))
