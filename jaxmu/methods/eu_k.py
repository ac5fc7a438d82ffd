"""EU-k — exact unlearning of the last k blocks: re-initialise them and retrain (``docs/methods.md`` §4.11).

Reference: ``munl/unlearning/exact_unlearning_k.py`` (+ ``scrub_utils.py: fk_finetune``,
``munl/models/__init__.py: init_weights``); EU-k as in Goel et al., arXiv 2201.06640, used as a
baseline by SCRUB (arXiv 2302.09880).

1. Re-initialise the last k blocks and the classifier (``reinit.reinit_groups``): conv kernels
   U(+-sqrt(6 / fan_out)) (kaiming-uniform, fan_out, ReLU gain; fan_out = O*kh*kw), conv biases
   0; BatchNorm scale 1, shift 0, **running mean/variance kept**; linear kernels
   U(+-sqrt(6 / (fan_in + fan_out))) (xavier-uniform), biases 0; LayerNorm parameters and TinyViT
   attention biases untouched.
2. Exactly CF-k's loop (``recipes.fk_update`` / ``fk_plan``) from the re-initialised model, with the L2 anchor
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

Structure: ``init`` re-initialises (step 1) and starts CF-k's state ``recipes.Anchored`` on the
result (the anchor); update and plan are CF-k's (``recipes.fk_update``, ``recipes.fk_plan``) with
the pass phase ``"augmented"``.

Randomness: re-initialisation draws from ``fold_in(key, 0)`` (leaf i: ``fold_in(., i)``), the
training loop (shuffles, augmentation) from ``fold_in(key, 1)`` (the plan's phase key).
"""

from __future__ import annotations

import jax

from jaxmu.methods._base import D_BOOL, MethodSpec, StaticContext
from jaxmu.methods.layouts import selected_groups, trainable_mask
from jaxmu.methods.recipes import (FK_DEFAULTS, FK_DOMAINS, FK_SEARCH, FK_STATIC, Anchored, fk_init,
    fk_plan, fk_update)
from jaxmu.methods.reinit import reinit_groups


def reinit_last_k(ctx: StaticContext, params, batch_stats, key, *, static):
    """Re-initialised (params, batch_stats) and the static trainable mask."""
    k = static["num_blocks"]
    groups = selected_groups(ctx.arch, params, k)
    mask = trainable_mask(ctx.arch, params, k, attention_biases=static["attention_biases"])
    params, batch_stats = reinit_groups(params, batch_stats, groups, key, reset_bn_stats=static["reset_bn_stats"])
    return params, batch_stats, mask


def init(params, batch_stats, hp, key, ctx: StaticContext, data) -> Anchored:
    """Step 1 on ``fold_in(key, 0)``, then CF-k's state anchored at the re-initialised parameters."""
    params, batch_stats, _ = reinit_last_k(ctx, params, batch_stats, jax.random.fold_in(key, 0), static=ctx.static)
    return fk_init(params, batch_stats, hp, key, ctx, data)


def plan(ctx: StaticContext):
    """CF-k's plan, its pass drawn through the train transform."""
    return fk_plan(ctx, augmented=True)


SPEC = MethodSpec(
    name="eu_k", init=init, update=fk_update, plan=plan,
    defaults={**FK_DEFAULTS, "reset_bn_stats": False},
    search_space=dict(FK_SEARCH),
    static=FK_STATIC | {"reset_bn_stats"},
    ragged=frozenset({"epochs"}),
    dead=frozenset({"sgda_learning_rate", "momentum", "training_epoch_factor"}),
    domains={**FK_DOMAINS, "reset_bn_stats": D_BOOL},
    doc="re-initialise the last k blocks + classifier, retrain them on augmented D_r (eval mode)",
)
