"""CF-k — catastrophic forgetting of the last k blocks (``docs/methods.md`` §4.10).

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

Quirk flags (faithful defaults, ``docs/methods.md`` §5 #19 and the TinyViT note):

* ``bn_mode="eval"``: the reference calls ``model.eval()`` in every epoch, so the run never
  uses batch statistics. ``"train"`` uses batch statistics and updates running statistics of
  every BatchNorm (frozen ones included, as PyTorch would).
* ``attention_biases="frozen"``: on TinyViT, the reference's eval-mode attention uses a cached
  bias table, so attention biases receive no gradient; ``"trainable"`` differentiates them.

Structure: state ``recipes.Anchored`` (the ``TrainState`` and the anchor theta_0), init
``recipes.fk_init``, update ``recipes.fk_update`` (pass phase ``"step"``: unaugmented), plan
``recipes.fk_plan`` (one phase on ``fold_in(key, 1)``, ``Schedule("step")``); all shared with EU-k.

Architectures: all four (block mapping in ``layouts``; cnn/mlp mappings are jaxmu's choice, the
reference only supports ResNet-18 and TinyViT). k beyond the number of blocks selects all blocks.
"""

from __future__ import annotations

from jaxmu.methods._base import MethodSpec
from jaxmu.methods.recipes import (FK_DEFAULTS, FK_DOMAINS, FK_SEARCH, FK_STATIC, fk_init, fk_plan,
    fk_update)

SPEC = MethodSpec(
    name="cf_k", init=fk_init, update=fk_update, plan=fk_plan,
    defaults=FK_DEFAULTS,
    search_space=FK_SEARCH,
    static=FK_STATIC,
    ragged=frozenset({"epochs"}),
    dead=frozenset({"sgda_learning_rate", "momentum"}),
    domains=FK_DOMAINS,
    doc="fine-tune only the last k blocks + classifier (eval mode, plain SGD, L2 to start, step decay)",
)
