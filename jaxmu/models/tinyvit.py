"""TinyViT-11M, a port of Microsoft's ``tiny_vit.py`` as used by the benchmark
(``docs/protocol.md`` §3.2: ``munl/models/vit11m.py`` -> ``thirdparty/tiny_vit.py``, timm 0.4.12).

Configuration: embed_dims [64, 128, 256, 448], depths [2, 2, 6, 2], num_heads [2, 4, 8, 14],
window_sizes [7, 7, 14, 7], drop_path_rate 0.1 (linearly spaced over the 12 blocks), mlp_ratio 4,
MBConv expand ratio 4, local conv kernel 3, exact (erf) GELU, dropout 0.

Architecture (NHWC throughout; the reference's token sequences ``[B, H*W, C]`` are the
row-major flattening of these maps, so every operation is the same)::

    patch_embed  Conv2d_BN(3->32, 3x3/2 p1) -> GELU -> Conv2d_BN(32->64, 3x3/2 p1)      (x1/4)
    layers_0     ConvLayer: 2 MBConv(64) -> PatchMerging(64->128)                       (x1/2)
    layers_1     BasicLayer: 2 TinyViTBlock(128, 4 heads, window 7) -> PatchMerging(->256)
    layers_2     BasicLayer: 6 TinyViTBlock(256, 8 heads, window 14) -> PatchMerging(->448)
    layers_3     BasicLayer: 2 TinyViTBlock(448, 14 heads, window 7)
    mean over tokens -> norm_head (LayerNorm) -> head (Linear 448 -> C)

Units (reference class names):

* ``Conv2d_BN`` (``ConvBN``): conv without bias (``c``) + BatchNorm (``bn``) whose scale is
  initialised to ``bn_weight_init`` (1, or 0 for the last unit of every MBConv).
* ``MBConv``: 1x1 Conv2d_BN (x4) -> GELU -> depthwise 3x3 Conv2d_BN -> GELU -> 1x1 Conv2d_BN
  (bn_weight_init 0) -> drop-path -> + shortcut -> GELU.
* ``PatchMerging``: 1x1 Conv2d_BN -> GELU -> depthwise 3x3/2 p1 Conv2d_BN -> GELU -> 1x1 Conv2d_BN.
* ``TinyViTBlock``: x + drop_path(WindowAttention(x)) -> depthwise 3x3 Conv2d_BN (``local_conv``,
  no activation) -> x + drop_path(Mlp(x)). Mlp = LayerNorm -> fc1 (x4) -> GELU -> fc2.
* ``Attention`` (per window of ``ws*ws`` tokens): LayerNorm -> qkv Linear(C, 3C) viewed as
  ``[heads, (q | k | v)]`` per token (head-major, then q/k/v split) -> softmax(q k^T / sqrt(d) +
  attention_biases[:, idx]) v -> proj. ``attention_biases`` ``[heads, n_offsets]`` (zeros at init)
  is indexed by the relative offset ``(|dy|, |dx|)`` of two window positions, offsets numbered in
  first-seen order exactly as the reference (``attention_bias_index``).
* Window padding (reference semantics, decisive on 32x32 inputs where the maps of stages 1-3 are
  4x4, 2x2, 1x1): when the map is not a multiple of the window it is zero-padded at the bottom and
  right to one, partitioned into windows, and the padded tokens take part in attention **unmasked**
  (after the LayerNorm inside ``Attention`` they equal the LayerNorm bias); the output is cropped.
* Drop-path (timm ``DropPath``): in train mode, per sample, ``x / keep * Bernoulli(keep)``
  with randomness from the ``"dropout"`` rng; identity in eval mode and when the rate is 0.

Initialisation (reference ``_init_weights`` + PyTorch defaults): Linear weights truncated normal
(std 0.02, absolute bounds +-2, i.e. effectively N(0, 0.02^2)), Linear biases 0; LayerNorm 1/0
(eps 1e-5); conv kernels PyTorch default U(+-1/sqrt(fan_in)), fan_in = (I/groups)*kh*kw;
BatchNorm (PyTorch semantics, ``docs/methods.md`` §2.6) scale ``bn_weight_init``, bias 0, running
mean 0, running variance 1; attention biases 0.

Depthwise convolutions (groups = channels) use ``lax.conv_general_dilated(feature_group_count=C)``
for ``conv_impl="xla"`` and, for ``"im2col"``, a sum of kh*kw shifted (strided) slices times the
per-channel kernel taps, which contains no convolution op (``docs/performance.md`` §2).

Parameter tree: top-level keys ``patch_embed``, ``layers_0`` .. ``layers_3``, ``norm_head``,
``head`` (``TINYVIT_BLOCK_NAMES``); inside, ``seq_0``/``seq_2``, ``blocks_<i>``, ``downsample``,
``attn``, ``mlp``, ``local_conv``, ``conv1..3``, ``c``, ``bn`` mirror the reference module paths
(``jaxmu.models.names`` maps them). Kernels: conv HWIO ``[kh, kw, I/groups, O]``, dense
``[in, out]``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxmu.models.base import Model
from jaxmu.models.layers import BatchNorm, Conv, resolve_conv_impl, torch_default_uniform

TINYVIT_BLOCK_NAMES: tuple[str, ...] = (
    "patch_embed", "layers_0", "layers_1", "layers_2", "layers_3", "norm_head", "head",
)
"""Top-level parameter groups of TinyViT in forward order (stem first, head last)."""

LAYERNORM_EPS = 1e-5  # torch.nn.LayerNorm default


# --------------------------------------------------------------------------- helpers


def gelu(x: jax.Array) -> jax.Array:
    """``torch.nn.GELU()``: the exact, erf-based GELU."""
    return jax.nn.gelu(x, approximate=False)


def trunc_normal_init(std: float = 0.02, a: float = -2.0, b: float = 2.0) -> Callable:
    """timm ``trunc_normal_(w, std=std)``: N(0, std^2) truncated to the *absolute* bounds [a, b].

    With std 0.02 the bounds lie 100 standard deviations out, so the truncation never binds; the
    draw is a plain normal clipped to [a, b] (``jax.random.truncated_normal`` would map its
    boundary uniforms to +-100 std, which a normal draw cannot produce).
    """

    def init(key, shape, dtype=jnp.float32):
        return jnp.clip(jax.random.normal(key, shape, dtype) * std, a, b)

    return init


def attention_bias_index(window_size: int) -> np.ndarray:
    """``attention_bias_idxs`` of the reference ``Attention``: ``[N, N]``, N = window_size**2.

    Entry (i, j) numbers the offset ``(|dy|, |dx|)`` between window positions i and j, offsets
    numbered in the order first met when iterating i, then j, over row-major positions.
    """
    points = list(itertools.product(range(window_size), range(window_size)))
    offsets: dict[tuple[int, int], int] = {}
    idxs = []
    for p1 in points:
        for p2 in points:
            off = (abs(p1[0] - p2[0]), abs(p1[1] - p2[1]))
            if off not in offsets:
                offsets[off] = len(offsets)
            idxs.append(offsets[off])
    n = len(points)
    return np.asarray(idxs, dtype=np.int32).reshape(n, n)


def drop_path_rates(drop_path_rate: float, depths: Sequence[int]) -> list[float]:
    """``torch.linspace(0, rate, sum(depths))`` as float32 values, one per block."""
    return np.linspace(0.0, drop_path_rate, int(sum(depths)), dtype=np.float32).tolist()


def depthwise_conv2d(
    x: jax.Array,
    kernel: jax.Array,
    *,
    stride: int = 1,
    padding: int = 0,
    impl: str = "im2col",
) -> jax.Array:
    """Depthwise 2-D convolution (``groups = channels``), NHWC input, kernel ``[kh, kw, 1, C]``.

    ``impl="xla"``: ``lax.conv_general_dilated(..., feature_group_count=C)``.
    ``impl="im2col"``: ``y[b,i,j,c] = sum_{di,dj} x_pad[b, s*i+di, s*j+dj, c] * w[di,dj,0,c]``
    as a sum of shifted strided slices (no convolution op; a plain elementwise product under
    ``vmap`` over models).
    """
    kh, kw, one, c = kernel.shape
    if one != 1 or x.shape[-1] != c:
        raise ValueError(
            f"depthwise_conv2d: kernel {kernel.shape} does not match {x.shape[-1]} channels"
        )
    impl = resolve_conv_impl(impl)
    if impl == "xla":
        return jax.lax.conv_general_dilated(
            x, kernel, window_strides=(stride, stride),
            padding=((padding, padding), (padding, padding)),
            dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c,
        )
    if padding:
        x = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    h, w = x.shape[1], x.shape[2]
    ho, wo = (h - kh) // stride + 1, (w - kw) // stride + 1
    out = None
    for i in range(kh):
        for j in range(kw):
            rows = slice(i, i + stride * (ho - 1) + 1, stride)
            cols = slice(j, j + stride * (wo - 1) + 1, stride)
            tap = x[:, rows, cols, :]
            term = tap * kernel[i, j, 0, :]
            out = term if out is None else out + term
    return out


# --------------------------------------------------------------------------- modules


class TruncDense(nn.Module):
    """``nn.Linear`` under TinyViT's init: weight trunc-normal(std .02) ``[in, out]``, bias 0."""

    features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", trunc_normal_init(0.02), (x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        return x @ kernel + bias


def layer_norm(name: str) -> nn.LayerNorm:
    """``torch.nn.LayerNorm(C)``: eps 1e-5, two-pass biased variance, weight 1, bias 0."""
    return nn.LayerNorm(epsilon=LAYERNORM_EPS, use_fast_variance=False, name=name)


class BatchNormInit(BatchNorm):
    """:class:`BatchNorm` whose scale starts at ``scale_init_value`` (``Conv2d_BN.bn_weight_init``).

    The semantics (PyTorch running statistics, eps) are inherited unchanged; only the initial
    value of the ``scale`` parameter differs.
    """

    scale_init_value: float = 1.0

    def param(  # type: ignore[override]
        self, name: str, init_fn: Callable, *init_args, **init_kwargs
    ):
        if name == "scale":
            init_fn = nn.initializers.constant(self.scale_init_value)
        return super().param(name, init_fn, *init_args, **init_kwargs)


class DepthwiseConv(nn.Module):
    """``nn.Conv2d(C, C, k, stride, pad, groups=C, bias=False)``; kernel ``[k, k, 1, C]``,
    PyTorch default init U(+-1/sqrt(k*k))."""

    kernel_size: int = 3
    stride: int = 1
    padding: int = 1
    impl: str = "im2col"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k, c = self.kernel_size, x.shape[-1]
        kernel = self.param("kernel", torch_default_uniform(k * k), (k, k, 1, c))
        return depthwise_conv2d(x, kernel, stride=self.stride, padding=self.padding, impl=self.impl)


class ConvBN(nn.Module):
    """Reference ``Conv2d_BN``: bias-free conv ``c`` (dense or depthwise) followed by BN ``bn``.

    Attributes:
      features: output channels (for ``depthwise`` it must equal the input channels).
      kernel_size, stride, padding: PyTorch conv geometry (symmetric zero padding).
      depthwise: ``groups = channels`` when True, else ``groups = 1``.
      bn_weight_init: initial BatchNorm scale.
      conv_impl: ``"im2col"`` or ``"xla"``.
    """

    features: int
    kernel_size: int = 1
    stride: int = 1
    padding: int = 0
    depthwise: bool = False
    bn_weight_init: float = 1.0
    conv_impl: str = "im2col"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        if self.depthwise:
            if x.shape[-1] != self.features:
                raise ValueError("depthwise ConvBN needs features == input channels")
            x = DepthwiseConv(
                self.kernel_size, self.stride, self.padding, self.conv_impl, name="c"
            )(x)
        else:
            x = Conv(
                self.features, self.kernel_size, stride=self.stride, padding=self.padding,
                use_bias=False, impl=self.conv_impl, name="c",
            )(x)
        return BatchNormInit(scale_init_value=self.bn_weight_init, name="bn")(x, train)


class DropPath(nn.Module):
    """timm ``DropPath``: per-sample stochastic depth, active only in train mode.

    ``x / keep * floor(keep + U[0, 1))`` with ``keep = 1 - rate``, one draw per sample, from the
    ``"dropout"`` rng (each call draws afresh).
    """

    rate: float

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        if not train or self.rate == 0.0:
            return x
        if not self.has_rng("dropout"):
            raise ValueError(
                "TinyViT drop-path needs a 'dropout' rng in train mode "
                "(Model.apply(..., train=True, key=key))"
            )
        keep = 1.0 - self.rate
        mask = jax.random.bernoulli(
            self.make_rng("dropout"), keep, (x.shape[0],) + (1,) * (x.ndim - 1)
        )
        return x / keep * mask.astype(x.dtype)


class PatchEmbed(nn.Module):
    """``PatchEmbed``: Conv2d_BN(C_in -> D/2, 3x3/2 p1) -> GELU -> Conv2d_BN(D/2 -> D, 3x3/2 p1).

    Submodules ``seq_0`` and ``seq_2`` (``seq.1`` is the parameter-free GELU in the reference).
    """

    embed_dim: int
    conv_impl: str = "im2col"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = ConvBN(self.embed_dim // 2, 3, 2, 1, conv_impl=self.conv_impl, name="seq_0")(x, train)
        x = gelu(x)
        return ConvBN(self.embed_dim, 3, 2, 1, conv_impl=self.conv_impl, name="seq_2")(x, train)


class MBConv(nn.Module):
    """``MBConv`` (in = out channels); see the module docstring."""

    dim: int
    expand_ratio: float = 4.0
    drop_path: float = 0.0
    conv_impl: str = "im2col"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        hidden = int(self.dim * self.expand_ratio)
        shortcut = x
        impl = self.conv_impl
        x = gelu(ConvBN(hidden, 1, conv_impl=impl, name="conv1")(x, train))
        x = gelu(ConvBN(hidden, 3, 1, 1, depthwise=True, conv_impl=impl, name="conv2")(x, train))
        x = ConvBN(self.dim, 1, bn_weight_init=0.0, conv_impl=impl, name="conv3")(x, train)
        x = DropPath(self.drop_path)(x, train)
        return gelu(x + shortcut)


class PatchMerging(nn.Module):
    """``PatchMerging``: 1x1 ConvBN -> GELU -> depthwise 3x3/2 p1 ConvBN -> GELU -> 1x1 ConvBN."""

    out_dim: int
    conv_impl: str = "im2col"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        impl = self.conv_impl
        x = gelu(ConvBN(self.out_dim, 1, 1, 0, conv_impl=impl, name="conv1")(x, train))
        x = ConvBN(self.out_dim, 3, 2, 1, depthwise=True, conv_impl=impl, name="conv2")(x, train)
        x = gelu(x)
        return ConvBN(self.out_dim, 1, 1, 0, conv_impl=impl, name="conv3")(x, train)


class Mlp(nn.Module):
    """Reference ``Mlp``: LayerNorm ``norm`` -> ``fc1`` -> GELU -> ``fc2`` (dropout 0)."""

    hidden: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        out = x.shape[-1]
        x = layer_norm("norm")(x)
        x = gelu(TruncDense(self.hidden, name="fc1")(x))
        return TruncDense(out, name="fc2")(x)


class Attention(nn.Module):
    """Reference ``Attention`` with ``attn_ratio=1`` over windows ``[windows, ws*ws, C]``.

    Attributes:
      num_heads: heads; key_dim = d = C / num_heads.
      window_size: side of the (square) window; sets the attention-bias table.
    """

    num_heads: int
    window_size: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, n, c = x.shape
        heads = self.num_heads
        kd = c // heads
        idx = attention_bias_index(self.window_size)
        if n != idx.shape[0]:
            raise ValueError(f"Attention: {n} tokens, window of {idx.shape[0]}")
        n_offsets = int(idx.max()) + 1
        biases = self.param("attention_biases", nn.initializers.zeros, (heads, n_offsets))
        x = layer_norm("norm")(x)
        qkv = TruncDense(3 * c, name="qkv")(x).reshape(b, n, heads, 3 * kd)
        q, k, v = qkv[..., :kd], qkv[..., kd : 2 * kd], qkv[..., 2 * kd :]
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) * (kd ** -0.5)
        logits = logits + biases[:, jnp.asarray(idx)]
        attn = jax.nn.softmax(logits, axis=-1)
        out = jnp.einsum("bhqk,bkhd->bqhd", attn, v).reshape(b, n, c)
        return TruncDense(c, name="proj")(out)


def window_partition(x: jax.Array, ws: int) -> tuple[jax.Array, tuple[int, int]]:
    """Zero-pad ``[B, H, W, C]`` bottom/right to multiples of ``ws`` and cut it into windows.

    Returns ``[B * nH * nW, ws * ws, C]`` (batch-major, then window rows, then window columns)
    and the padded size ``(pH, pW)``.
    """
    b, h, w, c = x.shape
    pad_b, pad_r = (ws - h % ws) % ws, (ws - w % ws) % ws
    if pad_b or pad_r:
        x = jnp.pad(x, ((0, 0), (0, pad_b), (0, pad_r), (0, 0)))
    ph, pw = h + pad_b, w + pad_r
    x = x.reshape(b, ph // ws, ws, pw // ws, ws, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws * ws, c), (ph, pw)


def window_reverse(
    windows: jax.Array, ws: int, padded: tuple[int, int], hw: tuple[int, int]
) -> jax.Array:
    """Inverse of :func:`window_partition`, cropping the padding back to ``hw``."""
    ph, pw = padded
    c = windows.shape[-1]
    x = windows.reshape(-1, ph // ws, pw // ws, ws, ws, c).transpose(0, 1, 3, 2, 4, 5)
    x = x.reshape(-1, ph, pw, c)
    return x[:, : hw[0], : hw[1], :]


class TinyViTBlock(nn.Module):
    """Reference ``TinyViTBlock``: window attention, local depthwise conv, MLP."""

    num_heads: int
    window_size: int
    mlp_ratio: float = 4.0
    drop_path: float = 0.0
    local_conv_size: int = 3
    conv_impl: str = "im2col"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        _, h, w, c = x.shape
        if c % self.num_heads:
            raise ValueError("dim must be divisible by num_heads")
        drop = DropPath(self.drop_path)
        windows, padded = window_partition(x, self.window_size)
        a = Attention(self.num_heads, self.window_size, name="attn")(windows)
        a = window_reverse(a, self.window_size, padded, (h, w))
        x = x + drop(a, train)
        x = ConvBN(
            c, self.local_conv_size, 1, self.local_conv_size // 2, depthwise=True,
            conv_impl=self.conv_impl, name="local_conv",
        )(x, train)
        return x + drop(Mlp(int(c * self.mlp_ratio), name="mlp")(x), train)


class ConvLayer(nn.Module):
    """Stage 0 (``ConvLayer``): MBConv blocks ``blocks_<i>`` then optional ``downsample``."""

    dim: int
    depth: int
    drop_paths: tuple[float, ...]
    out_dim: int | None = None
    expand_ratio: float = 4.0
    conv_impl: str = "im2col"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        for i in range(self.depth):
            x = MBConv(
                self.dim, self.expand_ratio, self.drop_paths[i], self.conv_impl, name=f"blocks_{i}"
            )(x, train)
        if self.out_dim is not None:
            x = PatchMerging(self.out_dim, self.conv_impl, name="downsample")(x, train)
        return x


class BasicLayer(nn.Module):
    """Attention stage (``BasicLayer``): TinyViT blocks ``blocks_<i>`` then optional
    ``downsample``."""

    dim: int
    depth: int
    num_heads: int
    window_size: int
    drop_paths: tuple[float, ...]
    out_dim: int | None = None
    mlp_ratio: float = 4.0
    local_conv_size: int = 3
    conv_impl: str = "im2col"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        for i in range(self.depth):
            x = TinyViTBlock(
                self.num_heads, self.window_size, self.mlp_ratio, self.drop_paths[i],
                self.local_conv_size, self.conv_impl, name=f"blocks_{i}",
            )(x, train)
        if self.out_dim is not None:
            x = PatchMerging(self.out_dim, self.conv_impl, name="downsample")(x, train)
        return x


class TinyViT(nn.Module):
    """Reference ``TinyViT`` (defaults: the 11M configuration); see the module docstring.

    Attributes:
      num_classes: number of logits C.
      embed_dims, depths, num_heads, window_sizes, drop_path_rate, mlp_ratio,
        mbconv_expand_ratio, local_conv_size: reference hyperparameters.
      conv_impl: ``"im2col"`` or ``"xla"`` for every (dense and depthwise) convolution.
    """

    num_classes: int
    embed_dims: tuple[int, ...] = (64, 128, 256, 448)
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (2, 4, 8, 14)
    window_sizes: tuple[int, ...] = (7, 7, 14, 7)
    drop_path_rate: float = 0.1
    mlp_ratio: float = 4.0
    mbconv_expand_ratio: float = 4.0
    local_conv_size: int = 3
    conv_impl: str = "im2col"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """``x``: ``[batch, H, W, C_in]`` -> logits ``[batch, num_classes]``."""
        impl = resolve_conv_impl(self.conv_impl)
        dpr = drop_path_rates(self.drop_path_rate, self.depths)
        n_layers = len(self.depths)
        x = PatchEmbed(self.embed_dims[0], impl, name="patch_embed")(x, train)
        for i in range(n_layers):
            start = int(sum(self.depths[:i]))
            rates = tuple(dpr[start : start + self.depths[i]])
            out_dim = self.embed_dims[i + 1] if i < n_layers - 1 else None
            if i == 0:
                layer = ConvLayer(
                    self.embed_dims[0], self.depths[0], rates, out_dim, self.mbconv_expand_ratio,
                    impl, name="layers_0",
                )
            else:
                layer = BasicLayer(
                    self.embed_dims[i], self.depths[i], self.num_heads[i], self.window_sizes[i],
                    rates, out_dim, self.mlp_ratio, self.local_conv_size, impl, name=f"layers_{i}",
                )
            x = layer(x, train)
        x = jnp.mean(x, axis=(1, 2))
        x = layer_norm("norm_head")(x)
        return TruncDense(self.num_classes, name="head")(x)


def build_tinyvit_11m(
    num_classes: int,
    input_shape: tuple[int, int, int],
    conv_impl: str = "auto",
    stem: str = "imagenet",
) -> Model:
    """TinyViT-11M as a :class:`~jaxmu.models.base.Model` (``docs/protocol.md`` §3.2).

    Args:
      num_classes: number of logits C.
      input_shape: ``(H, W, C_in)``; H and W must be multiples of 32 (the reference builds its
        per-stage resolutions as ``img_size // 4 // 2**i`` and asserts them, which only agrees
        with the stride-2 convolutions then; the benchmark uses 32 and 224).
      conv_impl: ``"auto"``, ``"im2col"`` or ``"xla"``.
      stem: must be ``"imagenet"`` (TinyViT has a single patch-embedding stem).
    Returns:
      ``Model("tinyvit_11m", ...)`` with ``block_names`` ``TINYVIT_BLOCK_NAMES``.
    """
    if stem != "imagenet":
        raise ValueError(f"TinyViT has no {stem!r} stem (only 'imagenet', its patch embedding)")
    h, w = int(input_shape[0]), int(input_shape[1])
    if h % 32 or w % 32:
        raise ValueError(f"TinyViT needs H and W divisible by 32, got {h}x{w}")
    module = TinyViT(num_classes=num_classes, conv_impl=resolve_conv_impl(conv_impl))
    return Model("tinyvit_11m", module, tuple(input_shape), num_classes, TINYVIT_BLOCK_NAMES)


__all__ = [
    "TINYVIT_BLOCK_NAMES",
    "Attention",
    "BasicLayer",
    "BatchNormInit",
    "ConvBN",
    "ConvLayer",
    "DepthwiseConv",
    "DropPath",
    "MBConv",
    "Mlp",
    "PatchEmbed",
    "PatchMerging",
    "TinyViT",
    "TinyViTBlock",
    "TruncDense",
    "attention_bias_index",
    "build_tinyvit_11m",
    "depthwise_conv2d",
    "drop_path_rates",
    "trunc_normal_init",
    "window_partition",
    "window_reverse",
]
