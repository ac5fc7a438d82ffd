"""The small CPU-default models: ``mlp`` and ``cnn``.

``mlp``: flatten -> 128 -> ReLU -> 128 -> ReLU -> C (on digits: 64-128-128-10).
``cnn``: conv3x3(16, pad 1) -> BN -> ReLU -> conv3x3(32, pad 1) -> BN -> ReLU ->
2x2 average pool -> flatten -> dense C. On 8x8 digits this is the CNN measured in
``docs/performance.md`` §1 (about 2.6 GFLOP per model-epoch) plus BatchNorm, so that
the methods' BatchNorm modes are exercised on the CPU default as on ResNet-18.
PyTorch default initialisation throughout.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from jaxmu.models.layers import BatchNorm, Conv, Dense, avg_pool


class MLP(nn.Module):
    num_classes: int
    hidden: tuple[int, ...] = (128, 128)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = x.reshape(x.shape[0], -1)
        for i, h in enumerate(self.hidden):
            x = nn.relu(Dense(h, name=f"fc{i + 1}")(x))
        return Dense(self.num_classes, name="head")(x)


class CNN(nn.Module):
    num_classes: int
    channels: tuple[int, ...] = (16, 32)
    conv_impl: str = "im2col"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        for i, c in enumerate(self.channels):
            x = Conv(c, 3, padding=1, use_bias=False, impl=self.conv_impl, name=f"conv{i + 1}")(x)
            x = nn.relu(BatchNorm(name=f"bn{i + 1}")(x, train))
        if min(x.shape[1], x.shape[2]) >= 2:
            x = avg_pool(x, 2)
        x = x.reshape(x.shape[0], -1)
        return Dense(self.num_classes, name="head")(x)
