"""EU-k — exact unlearning of the last k blocks: re-initialise them and retrain (``methods.md`` §4.11).

Reference: ``munl/unlearning/exact_unlearning_k.py`` (+ ``scrub_utils.py: fk_finetune``,
``munl/models/__init__.py: init_weights``); EU-k as in Goel et al., arXiv 2201.06640, used as a
baseline by SCRUB (arXiv 2302.09880).

1. Re-initialise the last k blocks and the classifier (``reinit.reinit_groups``): conv kernels
   U(+-sqrt(6 / fan_out)) (kaiming-uniform, fan_out, ReLU gain; fan_out = O*kh*kw), conv biases
   0; BatchNorm scale 1, shift 0, **running mean/variance kept**; linear kernels
   U(+-sqrt(6 / (fan_in + fan_out))) (xavier-uniform), biases 0; LayerNorm parameters and TinyViT
   attention biases untouched.
2. Exactly CF-k's loop (``cf_k.fk_finetune``) from the re-initialised model, with the L2 anchor
   P_init = the **re-initialised** parameters, in **eval mode** (the new blocks are normalised
   with the old running statistics throughout), on D_r with the **train transform**
   (``ctx.train_augment``; the only augmented unlearning stream of the benchmark):

       L = CE + (lambda/2) sum_T ||P - P_init||^2;  plain SGD on T; lr_e = lr * r^m(e) (0-based).

Static: ``epochs``, ``batch_size``, ``num_blocks``, flags ``bn_mode``, ``attention_biases``,
``reset_bn_stats``. Arrays: ``learning_rate``, ``sgda_decay_rate``, ``sgda_weight_decay``.
Dead: ``sgda_learning_rate``, ``momentum``, ``training_epoch_factor`` (never read by the
reference).

Quirk flags (faithful defaults): ``bn_mode="eval"`` and ``attention_biases="frozen"`` as in
CF-k (§5 #19); ``reset_bn_stats=False`` (§5 #20) keeps the old running statistics of the
re-initialised BatchNorms, ``True`` resets them to mean 0, variance 1.

Randomness: re-initialisation draws from ``fold_in(key, 0)`` (leaf i: ``fold_in(., i)``), the
training loop (shuffles, augmentation) from ``fold_in(key, 1)``.
"""

from __future__ import annotations

import jax

from jaxmu.methods._base import D_BOOL, MethodSpec, SplitData, StaticContext
from jaxmu.methods.cf_k import DEFAULTS as CF_DEFAULTS
from jaxmu.methods.cf_k import DOMAINS as CF_DOMAINS
from jaxmu.methods.cf_k import SEARCH as CF_SEARCH
from jaxmu.methods.cf_k import STATIC as CF_STATIC
from jaxmu.methods.layouts import selected_groups, trainable_mask
from jaxmu.methods.recipes import fk_finetune
from jaxmu.methods.reinit import reinit_groups


def init(ctx: StaticContext, params, batch_stats, key, *, static):
    """Re-initialised (params, batch_stats) and the static trainable mask."""
    k = static["num_blocks"]
    groups = selected_groups(ctx.arch, params, k)
    mask = trainable_mask(ctx.arch, params, k, attention_biases=static["attention_biases"])
    params, batch_stats = reinit_groups(params, batch_stats, groups, key, reset_bn_stats=static["reset_bn_stats"])
    return params, batch_stats, mask


def run(ctx: StaticContext, data: SplitData, params, batch_stats, hp, key, *, static):
    params, batch_stats, mask = init(ctx, params, batch_stats, jax.random.fold_in(key, 0), static=static)
    return fk_finetune(ctx, data, params, batch_stats, hp, jax.random.fold_in(key, 1), static=static, mask=mask,
                       augment=ctx.train_augment)


SPEC = MethodSpec(
    name="eu_k",
    run=run,
    defaults={**CF_DEFAULTS, "reset_bn_stats": False},
    search_space=dict(CF_SEARCH),
    static=CF_STATIC | {"reset_bn_stats"},
    dead=frozenset({"sgda_learning_rate", "momentum", "training_epoch_factor"}),
    domains={**CF_DOMAINS, "reset_bn_stats": D_BOOL},
    doc="re-initialise the last k blocks + classifier, retrain them on augmented D_r (eval mode)",
)
