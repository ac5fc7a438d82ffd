"""Layers with PyTorch semantics and a convolution that is fast on XLA:CPU.

Two facts from ``docs/performance.md`` §2 shape this module:

1. Gradient convolutions inside ``lax.scan``/``while`` loops run ~35x slower on XLA:CPU.
2. ``jax.vmap`` over convolution weights becomes a grouped convolution, 4-8x slower per model.

``conv2d`` therefore has two implementations with equal results (float tolerance):

* ``"xla"``: ``lax.conv_general_dilated`` (cuDNN on GPU; the right choice there).
* ``"im2col"``: the kh*kw shifted (strided) slices of the padded input are concatenated along
  the channel axis and contracted with the reshaped kernel in one ``dot_general``:

      y[b, i, j, o] = sum_{di, dj, c} x_pad[b, s*i + di, s*j + dj, c] * w[di, dj, c, o]

  It contains no convolution op at all, so neither trap applies: its gradients are slices,
  pads and matrix products (fast inside loops), and under ``vmap`` the contraction becomes a
  batched matrix product instead of a grouped convolution. A custom VJP writes the weight
  gradient as a canonical ``g^T @ patches`` product (``_im2col_conv``): autodiff's
  ``patches^T @ g`` misses XLA:CPU's fast dot path (~15-20% of a digits-CNN step).

``"auto"`` resolves to ``im2col`` on CPU and ``xla`` elsewhere (``resolve_conv_impl``).

BatchNorm follows PyTorch (``docs/methods.md`` §2.6): eps 1e-5, running statistics updated with
momentum 0.1 and the *unbiased* batch variance, normalisation with the biased variance.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

CONV_IMPLS = ("auto", "im2col", "xla")


def resolve_conv_impl(impl: str) -> str:
    """Map ``"auto"`` to the fastest implementation for the default backend."""
    if impl not in CONV_IMPLS:
        raise ValueError(f"unknown conv_impl {impl!r}: choose one of {', '.join(CONV_IMPLS)}")
    if impl == "auto":
        return "im2col" if jax.default_backend() == "cpu" else "xla"
    return impl


def _pairs(v: int | Sequence[int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def conv2d(
    x: jax.Array,
    kernel: jax.Array,
    *,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    impl: str = "im2col",
) -> jax.Array:
    """2-D convolution (cross-correlation, as PyTorch) in NHWC / HWIO layouts.

    Args:
      x: ``[batch, H, W, C]`` input.
      kernel: ``[kh, kw, C, O]`` kernel.
      stride: stride per spatial axis.
      padding: symmetric zero padding per spatial axis (PyTorch's ``padding=p``).
      impl: ``"im2col"`` or ``"xla"`` (see the module docstring); ``"auto"`` is resolved.
    Returns:
      ``[batch, H_out, W_out, O]`` with ``H_out = (H + 2p - kh) // s + 1``.
    """
    sh, sw = _pairs(stride)
    ph, pw = _pairs(padding)
    kh, kw, cin, cout = kernel.shape
    if x.shape[-1] != cin:
        raise ValueError(f"conv2d: input has {x.shape[-1]} channels, kernel expects {cin}")
    impl = resolve_conv_impl(impl)
    if impl == "xla":
        return jax.lax.conv_general_dilated(
            x, kernel, window_strides=(sh, sw), padding=((ph, ph), (pw, pw)),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
    return _im2col_conv(x, kernel, (sh, sw), (ph, pw))


def _im2col_patches(x: jax.Array, kh: int, kw: int, stride, padding) -> tuple[jax.Array, tuple[int, int, int]]:
    """``[B*H_out*W_out, kh*kw*C]`` patch matrix of ``x`` (row = one output pixel) and its shape."""
    (sh, sw), (ph, pw) = stride, padding
    if ph or pw:
        x = jnp.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    b, h, w, c = x.shape
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    if kh == 1 and kw == 1:
        patches = x[:, : sh * (ho - 1) + 1 : sh, : sw * (wo - 1) + 1 : sw, :]
    else:
        cols = [
            x[:, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw, :]
            for i in range(kh)
            for j in range(kw)
        ]
        patches = jnp.concatenate(cols, axis=-1)
    return patches.reshape(b * ho * wo, kh * kw * c), (b, ho, wo)


def _matmul(a: jax.Array, b: jax.Array) -> jax.Array:
    """``[N, K] @ [K, O]`` in the canonical row-major form XLA:CPU's fast (YNNPACK) dot takes."""
    return jax.lax.dot_general(a, b, (((1,), (0,)), ((), ())))


def _im2col_plain(x, kernel, stride, padding):
    """im2col forward; gradients by ordinary autodiff (the reference of ``_im2col_conv``)."""
    kh, kw, _, cout = kernel.shape
    p, (b, ho, wo) = _im2col_patches(x, kh, kw, stride, padding)
    return _matmul(p, kernel.reshape(-1, cout)).reshape(b, ho, wo, cout)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _im2col_conv(x, kernel, stride, padding):
    """im2col convolution with a hand-written VJP whose products are all canonical.

    Autodiff of ``patches @ W`` gives the weight gradient as ``patches^T @ g`` with a transposed
    left operand, which XLA:CPU does not hand to its fast dot library (YNNPACK) and runs
    ~2-4x slower. Here ``dW = (g^T @ patches)^T`` with ``g^T`` (4-9x smaller than the patches)
    materialised and both transposes fenced by ``lax.optimization_barrier`` so the algebraic
    simplifier cannot fold them back into the dot. The input gradient is ``g @ W^T`` scattered
    back by the transpose of the patch extraction (pads and adds). Values equal autodiff's up
    to float summation order (bench/README.md, tests/test_conv_impls.py).
    """
    return _im2col_plain(x, kernel, stride, padding)


def _im2col_conv_fwd(x, kernel, stride, padding):
    kh, kw, _, cout = kernel.shape
    p, (b, ho, wo) = _im2col_patches(x, kh, kw, stride, padding)
    y = _matmul(p, kernel.reshape(-1, cout)).reshape(b, ho, wo, cout)
    return y, (p, x, kernel)


def _im2col_conv_bwd(stride, padding, res, g):
    p, x, kernel = res
    kh, kw, _, cout = kernel.shape
    g2 = g.reshape(-1, cout)
    gt = jax.lax.optimization_barrier(g2.T)  # [O, N]
    dw = jax.lax.optimization_barrier(_matmul(gt, p)).T.reshape(kernel.shape)
    dcol = jax.lax.dot_general(g2, kernel.reshape(-1, cout), (((1,), (1,)), ((), ())))
    _, pullback = jax.vjp(lambda xx: _im2col_patches(xx, kh, kw, stride, padding)[0], x)
    (dx,) = pullback(dcol)
    return dx, dw


_im2col_conv.defvjp(_im2col_conv_fwd, _im2col_conv_bwd)


# --------------------------------------------------------------------------- initialisers


def torch_default_uniform(fan_in: int) -> Callable:
    """PyTorch's default Linear/Conv init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / np.sqrt(max(fan_in, 1))

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def kaiming_normal_fan_out(key, shape, dtype=jnp.float32):
    """torchvision conv init: N(0, 2 / fan_out), fan_out = O * kh * kw (HWIO kernel)."""
    fan_out = shape[-1] * int(np.prod(shape[:-2]))
    return jax.random.normal(key, shape, dtype) * np.sqrt(2.0 / fan_out)


# --------------------------------------------------------------------------- modules


class Conv(nn.Module):
    """Conv layer with PyTorch's symmetric padding and initialisation.

    ``kernel_init=None`` uses PyTorch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    """

    features: int
    kernel_size: int = 3
    stride: int = 1
    padding: int = 0
    use_bias: bool = True
    impl: str = "im2col"
    kernel_init: Callable | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel_size
        cin = x.shape[-1]
        fan_in = cin * k * k
        kinit = self.kernel_init or torch_default_uniform(fan_in)
        kernel = self.param("kernel", kinit, (k, k, cin, self.features))
        y = conv2d(x, kernel, stride=self.stride, padding=self.padding, impl=self.impl)
        if self.use_bias:
            y = y + self.param("bias", torch_default_uniform(fan_in), (self.features,))
        return y


class Dense(nn.Module):
    """Linear layer with PyTorch's default initialisation (weight and bias U(+-1/sqrt(in)))."""

    features: int
    use_bias: bool = True
    kernel_init: Callable | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        fan_in = x.shape[-1]
        kinit = self.kernel_init or torch_default_uniform(fan_in)
        kernel = self.param("kernel", kinit, (fan_in, self.features))
        y = x @ kernel
        if self.use_bias:
            y = y + self.param("bias", torch_default_uniform(fan_in), (self.features,))
        return y


class BatchNorm(nn.Module):
    """BatchNorm with PyTorch semantics over all axes but the last (``docs/methods.md`` §2.6).

    Train mode: normalise with the biased batch variance; update
    ``mean <- 0.9 mean + 0.1 batch_mean`` and ``var <- 0.9 var + 0.1 * n/(n-1) * batch_var``
    with n = elements per channel. Eval mode: use the running statistics, update nothing.
    """

    momentum: float = 0.1
    eps: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
        if train:
            axes = tuple(range(x.ndim - 1))
            mean = jnp.mean(x, axes)
            var = jnp.mean(jnp.square(x - mean), axes)
            n = int(np.prod([x.shape[a] for a in axes]))
            if not self.is_initializing():
                m = self.momentum
                unbiased = var * (n / max(n - 1, 1))
                ra_mean.value = (1 - m) * ra_mean.value + m * jax.lax.stop_gradient(mean)
                ra_var.value = (1 - m) * ra_var.value + m * jax.lax.stop_gradient(unbiased)
        else:
            mean, var = ra_mean.value, ra_var.value
        return (x - mean) * jax.lax.rsqrt(var + self.eps) * scale + bias


def avg_pool(x: jax.Array, window: int) -> jax.Array:
    """Non-overlapping average pooling (stride = window) on NHWC input, via a reshape."""
    b, h, w, c = x.shape
    x = x[:, : h - h % window, : w - w % window, :]
    return x.reshape(b, h // window, window, w // window, window, c).mean(axis=(2, 4))


def max_pool_3x3_s2_p1(x: jax.Array) -> jax.Array:
    """PyTorch ``MaxPool2d(3, stride=2, padding=1)`` (padding with -inf)."""
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
