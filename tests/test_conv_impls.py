"""The custom-VJP im2col convolution equals the plain XLA convolution (values and gradients),
directly, under ``jax.vmap`` over a models axis of kernels, and inside ``lax.scan``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmu.models.layers import _im2col_plain, conv2d

TOL = dict(atol=2e-4, rtol=2e-4)


def _inputs(k, cin=5, cout=7, hw=9, batch=4, models=None):
    kx, kw = jax.random.split(jax.random.PRNGKey(k))
    x = jax.random.normal(kx, (batch, hw, hw, cin))
    wshape = (3, 3, cin, cout) if models is None else (models, 3, 3, cin, cout)
    return x, jax.random.normal(kw, wshape) * 0.3


def _loss(impl, stride, pad):
    return lambda x, w: jnp.sum(jnp.sin(conv2d(x, w, stride=stride, padding=pad, impl=impl)))


@pytest.mark.parametrize("stride,pad,k", [(1, 1, 3), (2, 1, 3), (1, 0, 1), (2, 0, 1), (1, 0, 3), (2, 0, 3)])
def test_values_and_gradients_equal_xla(stride, pad, k):
    x, w = _inputs(0)
    w = w[:k, :k]
    for impl in ("im2col", "xla"):
        assert conv2d(x, w, stride=stride, padding=pad, impl=impl).shape == conv2d(
            x, w, stride=stride, padding=pad, impl="xla").shape
    np.testing.assert_allclose(
        conv2d(x, w, stride=stride, padding=pad, impl="im2col"),
        conv2d(x, w, stride=stride, padding=pad, impl="xla"), **TOL)
    ga = jax.grad(_loss("im2col", stride, pad), argnums=(0, 1))(x, w)
    gb = jax.grad(_loss("xla", stride, pad), argnums=(0, 1))(x, w)
    for a, b in zip(ga, gb):
        np.testing.assert_allclose(a, b, **TOL)
    # the hand-written VJP equals autodiff of the same forward
    gc = jax.grad(lambda x, w: jnp.sum(jnp.sin(_im2col_plain(x, w, (stride,) * 2, (pad,) * 2))), (0, 1))(x, w)
    for a, c in zip(ga, gc):
        np.testing.assert_allclose(a, c, **TOL)


def test_under_vmap_over_kernels_and_inputs():
    x, w = _inputs(1, models=3)
    f = lambda impl: jax.vmap(jax.grad(_loss(impl, 1, 1), argnums=(0, 1)), in_axes=(None, 0))
    for a, b in zip(f("im2col")(x, w), f("xla")(x, w)):
        np.testing.assert_allclose(a, b, **TOL)
    xs = jnp.stack([x, 2 * x, -x])
    g = lambda impl: jax.jit(jax.vmap(jax.grad(_loss(impl, 2, 1), argnums=(0, 1))))(xs, w)
    for a, b in zip(g("im2col"), g("xla")):
        np.testing.assert_allclose(a, b, **TOL)


def test_inside_scan_sgd_steps_match():
    x, w = _inputs(2)

    def train(impl):
        def body(w, xb):
            g = jax.grad(lambda w: _loss(impl, 1, 1)(xb, w) / xb.size)(w)
            return w - 0.1 * g, jnp.sum(conv2d(xb, w, stride=1, padding=1, impl=impl))
        xs = jnp.stack([x, x[::-1], -x])
        return jax.jit(lambda w: jax.lax.scan(body, w, xs))(w)

    (wa, ya), (wb, yb) = train("im2col"), train("xla")
    np.testing.assert_allclose(wa, wb, **TOL)
    np.testing.assert_allclose(ya, yb, atol=1e-2, rtol=1e-4)
