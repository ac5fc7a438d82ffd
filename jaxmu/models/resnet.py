"""ResNet-18 exactly as torchvision's ``resnet18(num_classes=C)`` (``docs/protocol.md`` §3.1).

Architecture (NHWC, PyTorch symmetric padding everywhere)::

    conv1   7x7/2 pad 3, 64, no bias      (stem="cifar": 3x3/1 pad 1)
    bn1 -> ReLU -> max-pool 3x3/2 pad 1   (-inf padding; stem="cifar": no max-pool)
    layer1  2 BasicBlocks,  64
    layer2  2 BasicBlocks, 128   first block stride 2 with 1x1-conv + BN downsample
    layer3  2 BasicBlocks, 256   (same pattern)
    layer4  2 BasicBlocks, 512   (same pattern)
    global average pool -> fc 512 -> C

BasicBlock: conv3x3(stride s, pad 1, no bias) -> BN -> ReLU -> conv3x3 -> BN, plus the identity
(or ``downsample_conv`` 1x1/s -> ``downsample_bn``), then ReLU.

On 32x32 input with the ImageNet stem the spatial sizes are 16 (stem conv), 8 (max-pool), then
8 / 4 / 2 / 1 after layer1..layer4. Parameter count: 11,179,077 (C=5), 11,181,642 (C=10),
11,227,812 (C=100).

Initialisation (torchvision): conv kernels kaiming-normal, mode fan_out, ReLU gain; BN scale 1,
bias 0, running mean 0, running variance 1; ``fc`` PyTorch default U(+-1/sqrt(512)). BatchNorm
has PyTorch semantics (``docs/methods.md`` §2.6, ``jaxmu.models.layers.BatchNorm``).

Parameter tree (top-level keys = ``block_names``; reference names in ``jaxmu.models.names``)::

    conv1/kernel, bn1/{scale,bias}, layer1/{0,1}/{conv1,bn1,conv2,bn2}/...,
    layer2/0/{..., downsample_conv, downsample_bn}, ..., fc/{kernel,bias}
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxmu.models.base import Model
from jaxmu.models.layers import (
    BatchNorm,
    Conv,
    Dense,
    kaiming_normal_fan_out,
    max_pool_3x3_s2_p1,
    resolve_conv_impl,
)

RESNET18_BLOCK_NAMES: tuple[str, ...] = (
    "conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "fc",
)
"""Top-level parameter groups of ResNet-18 in forward order (stem first, head last)."""

RESNET18_STAGES: tuple[tuple[int, int], ...] = ((64, 1), (128, 2), (256, 2), (512, 2))
"""``(channels, stride of the first block)`` of layer1..layer4."""

STEMS: tuple[str, ...] = ("imagenet", "cifar")


def _conv(features: int, kernel_size: int, stride: int, padding: int, impl: str, name: str) -> Conv:
    """Bias-free convolution with torchvision's kaiming-normal (fan_out, ReLU) init."""
    return Conv(
        features, kernel_size, stride=stride, padding=padding, use_bias=False, impl=impl,
        kernel_init=kaiming_normal_fan_out, name=name,
    )


class BasicBlock(nn.Module):
    """torchvision ``BasicBlock`` (expansion 1).

    Attributes:
      features: output channels.
      stride: stride of the first 3x3 conv (and of the downsample 1x1 conv).
      conv_impl: ``"im2col"`` or ``"xla"``, passed to every convolution.
    """

    features: int
    stride: int = 1
    conv_impl: str = "im2col"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        y = _conv(self.features, 3, self.stride, 1, self.conv_impl, "conv1")(x)
        y = nn.relu(BatchNorm(name="bn1")(y, train))
        y = _conv(self.features, 3, 1, 1, self.conv_impl, "conv2")(y)
        y = BatchNorm(name="bn2")(y, train)
        if self.stride != 1 or x.shape[-1] != self.features:
            shortcut = _conv(self.features, 1, self.stride, 0, self.conv_impl, "downsample_conv")(x)
            shortcut = BatchNorm(name="downsample_bn")(shortcut, train)
        else:
            shortcut = x
        return nn.relu(y + shortcut)


class ResLayer(nn.Module):
    """One ResNet stage (torchvision ``layerK``): ``num_blocks`` BasicBlocks named "0", "1", ...

    Attributes:
      features: channels of every block.
      stride: stride of the first block (the others use stride 1).
      num_blocks: number of BasicBlocks (2 for ResNet-18).
      conv_impl: convolution implementation passed to every block.
    """

    features: int
    stride: int = 1
    num_blocks: int = 2
    conv_impl: str = "im2col"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        for i in range(self.num_blocks):
            x = BasicBlock(
                self.features, self.stride if i == 0 else 1, self.conv_impl, name=str(i)
            )(x, train)
        return x


class ResNet18(nn.Module):
    """torchvision ResNet-18 (``docs/protocol.md`` §3.1); see the module docstring.

    Attributes:
      num_classes: number of logits C.
      stem: ``"imagenet"`` (7x7/2 conv + 3x3/2 max-pool, the benchmark's setting) or
        ``"cifar"`` (3x3/1 conv, no max-pool).
      conv_impl: ``"im2col"`` or ``"xla"`` (``"auto"`` is resolved), used by every convolution.
    """

    num_classes: int
    stem: str = "imagenet"
    conv_impl: str = "im2col"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """``x``: ``[batch, H, W, C_in]`` -> logits ``[batch, num_classes]``."""
        if self.stem not in STEMS:
            raise ValueError(f"unknown stem {self.stem!r}: choose one of {STEMS}")
        impl = resolve_conv_impl(self.conv_impl)
        if self.stem == "imagenet":
            x = _conv(64, 7, 2, 3, impl, "conv1")(x)
        else:
            x = _conv(64, 3, 1, 1, impl, "conv1")(x)
        x = nn.relu(BatchNorm(name="bn1")(x, train))
        if self.stem == "imagenet":
            x = max_pool_3x3_s2_p1(x)
        for k, (features, stride) in enumerate(RESNET18_STAGES, start=1):
            x = ResLayer(features, stride, 2, impl, name=f"layer{k}")(x, train)
        x = jnp.mean(x, axis=(1, 2))
        return Dense(self.num_classes, name="fc")(x)


def build_resnet18(
    num_classes: int,
    input_shape: tuple[int, int, int],
    conv_impl: str = "auto",
    stem: str = "imagenet",
) -> Model:
    """ResNet-18 as a :class:`~jaxmu.models.base.Model` (``docs/protocol.md`` §3.1).

    Args:
      num_classes: number of logits C.
      input_shape: ``(H, W, C_in)`` of one input (the benchmark uses 32x32x3 and 224x224x3).
      conv_impl: ``"auto"``, ``"im2col"`` or ``"xla"``.
      stem: ``"imagenet"`` (reference) or ``"cifar"``.
    Returns:
      ``Model("resnet18", ...)`` with ``block_names`` ``RESNET18_BLOCK_NAMES``.
    """
    if stem not in STEMS:
        raise ValueError(f"unknown stem {stem!r}: choose one of {STEMS}")
    module = ResNet18(num_classes=num_classes, stem=stem, conv_impl=resolve_conv_impl(conv_impl))
    return Model("resnet18", module, tuple(input_shape), num_classes, RESNET18_BLOCK_NAMES)


__all__ = [
    "RESNET18_BLOCK_NAMES",
    "RESNET18_STAGES",
    "STEMS",
    "BasicBlock",
    "ResLayer",
    "ResNet18",
    "build_resnet18",
]
