"""CF-k — catastrophic forgetting of the last k blocks (``methods.md`` §4.10).

Reference: ``munl/unlearning/catastrophic_forgetting_k.py`` with ``munl/unlearning/scrub_utils.py:
fk_finetune, run_train_epoch, l2_penalty`` (adapted from meghdadk/SCRUB
``small_scale_unlearning.ipynb``; CF-k as a baseline of SCRUB, Kurmanji et al., arXiv
2302.09880, after Goel et al., arXiv 2201.06640).

Trainable set T = leaves of the last k blocks + the classifier (``jaxmu.methods.layouts``: stem
and TinyViT ``norm_head`` never). For epochs e = 0..E-1, one pass over D_r (shuffled,
unaugmented, batch B), **eval mode** (BatchNorm running statistics used, never updated):

    L(theta) = CE(f_theta(x), y) + (lambda / 2) * sum_{P in T} ||P - P_init||^2,   P_init = theta_0
    P <- P - lr_e * grad_P L   for P in T   (plain SGD: momentum 0, weight decay 0)
    lr_e = learning_rate * r^m(e),  m(e) = #{d in (floor(.5E), floor(.8E), floor(.9E)) : e > d}

with lambda = ``sgda_weight_decay`` and r = ``sgda_decay_rate`` (0-based step decay of §2.5;
E = 10: epochs 0-5 lr, 6-8 lr*r, 9 lr*r^2). Frozen leaves get no gradient, decay or momentum
(``TrainState.apply_gradients(trainable=...)``) and are wrapped in ``stop_gradient`` (no back-propagation
into the frozen prefix). BatchNorm statistics are returned unchanged.

Static: ``epochs`` (E), ``batch_size`` (B), ``num_blocks`` (k), flags ``bn_mode`` and
``attention_biases``. Arrays: ``learning_rate``, ``sgda_decay_rate``, ``sgda_weight_decay``.
Dead (accepted, ignored, never searched): ``sgda_learning_rate`` (the reference passes
``learning_rate`` as the schedule's base), ``momentum`` (the SGD has none).

Quirk flags (faithful defaults, ``methods.md`` §5 #19 and the TinyViT note):

* ``bn_mode="eval"``: the reference calls ``model.eval()`` in every epoch, so the run never
  uses batch statistics. ``"train"`` uses batch statistics and updates running statistics of
  every BatchNorm (frozen ones included, as PyTorch would).
* ``attention_biases="frozen"``: on TinyViT, the reference's eval-mode attention uses a cached
  bias table, so attention biases receive no gradient; ``"trainable"`` differentiates them.

Architectures: all four (block mapping in ``layouts``; cnn/mlp mappings are jaxmu's choice, the
reference only supports ResNet-18 and TinyViT). k beyond the number of blocks selects all blocks.
"""

from __future__ import annotations

import jax

from jaxmu.methods._base import (
    BS,
    D_BATCH,
    D_EPOCHS,
    D_LR,
    EP,
    LR,
    NL,
    U01,
    WD,
    MethodSpec,
    OneOf,
    SplitData,
    StaticContext,
    at_least,
    nonneg,
    unit,
)
from jaxmu.methods.layouts import ATTENTION_BIAS_MODES, trainable_mask
from jaxmu.methods.recipes import BN_MODES, fk_finetune  # noqa: F401  (BN_MODES: the bn_mode domain)
from jaxmu.methods.recipes import fk_epoch_lr as epoch_lr  # noqa: F401
from jaxmu.methods.recipes import fk_init as init  # noqa: F401
from jaxmu.methods.recipes import fk_update as update  # noqa: F401


def run(ctx: StaticContext, data: SplitData, params, batch_stats, hp, key, *, static):
    mask = trainable_mask(ctx.arch, params, static["num_blocks"], attention_biases=static["attention_biases"])
    return fk_finetune(ctx, data, params, batch_stats, hp, jax.random.fold_in(key, 1), static=static, mask=mask)


DEFAULTS = {
    "epochs": 10, "batch_size": 256, "num_blocks": 1,
    "learning_rate": 0.01, "sgda_decay_rate": 0.1, "sgda_weight_decay": 0.1,
    "bn_mode": "eval", "attention_biases": "frozen",
}
SEARCH = {
    "epochs": EP, "batch_size": BS, "sgda_decay_rate": U01, "sgda_weight_decay": WD,
    "learning_rate": LR, "num_blocks": NL,
}
STATIC = frozenset({"epochs", "batch_size", "num_blocks", "bn_mode", "attention_biases"})
DOMAINS = {
    "epochs": D_EPOCHS, "batch_size": D_BATCH, "num_blocks": at_least(1, "the number of trailing blocks trained"),
    "learning_rate": D_LR, "sgda_decay_rate": unit("the step-decay factor of the learning rate"),
    "sgda_weight_decay": nonneg("the weight of the L2 pull towards the start"),
    "bn_mode": OneOf(BN_MODES, "BatchNorm mode of the training passes"),
    "attention_biases": OneOf(ATTENTION_BIAS_MODES, "TinyViT attention biases in CF-k/EU-k"),
}

SPEC = MethodSpec(
    name="cf_k",
    run=run,
    defaults=DEFAULTS,
    search_space=SEARCH,
    static=STATIC,
    dead=frozenset({"sgda_learning_rate", "momentum"}),
    domains=DOMAINS,
    doc="fine-tune only the last k blocks + classifier (eval mode, plain SGD, L2 to start, step decay)",
)
