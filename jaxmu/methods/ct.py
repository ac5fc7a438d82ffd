"""CT — Convolution Transpose (``docs/methods.md`` §4.16; reference ``munl/unlearning/kgltop5.py``,
a port of a NeurIPS 2023 Machine Unlearning Challenge solution; Deep Unlearn, arXiv 2410.01276).

Update rule:

1. one-shot transform: every convolution kernel W (stem, every 3x3, every 1x1 downsample, every
   TinyViT conv incl. depthwise) has its two spatial axes swapped,
   ``W[o, i, h, w] -> W[o, i, w, h]`` in PyTorch layout, i.e. ``swapaxes(0, 1)`` of a jaxmu HWIO
   kernel ``[kh, kw, I, O]``; 1x1 kernels are unchanged; normalisation layers, linear layers
   and biases keep their values;
2. fine-tune on D_r exactly as FT (``jaxmu.methods.recipes.cosine_finetune_plan``): shuffled, unaugmented,
   batch B, train mode, CE, E epochs, a fresh PyTorch SGD(lr, mu, wd) created after the swap,
   cosine per epoch (T = E, eta_min 0): ``lr_e = lr (1 + cos(pi e / E)) / 2``;
3. the result is evaluated in eval mode.

Defaults (``DefaultKGLTop5Config``): E 3, B 64, lr 1e-3, mu 0.9, wd 5e-4. Search: the generic
set G. No quirk flags (§5 #27: the swap *defines* CT; reproduced layout-mapped).

Architectures: cnn, resnet18, tinyvit_11m. ``mlp`` has no convolution kernel, so CT would be
plain FT; it raises ``MethodError`` instead. Non-square kernels (none in the benchmark models)
raise too: the reference's swapped weight would no longer fit its layer.
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxmu.engine.state import TrainState
from jaxmu.methods._base import (MethodError, MethodSpec, StaticContext, generic_domains,
    generic_space)
from jaxmu.methods.layouts import require_convs
from jaxmu.methods.recipes import ce_update, cosine_finetune_plan, sgd_init
from jaxmu.models.trees import is_conv_kernel, map_with_path


def transpose_kernels(params):
    """Swap the spatial axes (HWIO axes 0 and 1) of every conv kernel; other leaves unchanged."""

    def f(path, x):
        if not is_conv_kernel(path, x):
            return x
        if x.shape[0] != x.shape[1]:
            raise MethodError(f"ct: conv kernel {'/'.join(path)} is not square ({x.shape[:2]})")
        return jnp.swapaxes(x, 0, 1)

    return map_with_path(f, params)


def init(params, batch_stats, hp, key, ctx: StaticContext, data) -> TrainState:
    """The kernel transpose, then a fresh SGD state (its momentum buffer starts at 0 either way)."""
    require_convs(ctx, params, "ct", "transposes convolution kernels")
    return sgd_init(transpose_kernels(params), batch_stats, hp, key, ctx, data)


SPEC = MethodSpec(
    name="ct", init=init, update=ce_update, plan=cosine_finetune_plan,
    defaults={"epochs": 3, "batch_size": 64, "learning_rate": 1e-3, "momentum": 0.9, "weight_decay": 5e-4},
    search_space=generic_space(),
    static=frozenset({"epochs", "batch_size"}),
    ragged=frozenset({"epochs"}),
    domains=generic_domains(),
    doc="transpose every conv kernel spatially, then fine-tune on D_r (cosine per epoch)",
    applies_to=("cnn", "resnet18", "tinyvit_11m"),
)
