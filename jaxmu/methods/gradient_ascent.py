"""GA — gradient ascent on the forget set (``docs/methods.md`` §4.2).

Reference: ``munl/unlearning/gradient_ascent.py`` (adapted from OPTML-Group/Unlearn-Sparse
``unlearn/GA.py``; Jia et al., "Model Sparsity Can Simplify Machine Unlearning", arXiv 2304.04934).

Update rule, for E epochs over D_f only (shuffled, unaugmented, train mode; D_r is never used):

    theta <- SGD(lr, mu, wd).step(theta, grad[-CE(f_theta(x_f), y_f)])

PyTorch SGD with coupled weight decay (the decay term still shrinks the weights while the loss is
ascended); no learning-rate schedule. Partial last batches are kept (own BatchNorm batch stats).

Defaults: lr 0.01, mu 0.9, wd 5e-4, E 10, B 256. Search space: the generic set G (momentum fixed
at 0.9, not searched). No quirk flags. Works on every architecture (mlp, cnn, resnet18,
tinyvit_11m: train mode, so TinyViT drop-path is active with per-step keys).
"""

from __future__ import annotations

from jaxmu.methods._base import StaticContext
from jaxmu.methods.plan import Pass, Phase, Plan
from jaxmu.methods.recipes import sgd_spec


def plan(ctx: StaticContext) -> Plan:
    """E epochs of SGD steps on -CE over D_f (shuffled), no schedule."""
    s = ctx.static
    return (Phase("ascend", s["epochs"], passes=(Pass("ascend", "forget", s["batch_size"]),), count="epochs"),)


SPEC = sgd_spec("gradient_ascent", plan,
                {"epochs": 10, "batch_size": 256, "learning_rate": 0.01, "momentum": 0.9, "weight_decay": 5e-4},
                "gradient ascent on D_f (SGD, no schedule)")
