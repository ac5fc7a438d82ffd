"""FT — fine-tune on the retain set (``docs/methods.md`` §4.1, reference ``munl/unlearning/finetune.py``).

Update rule, for E epochs over D_r (shuffled, unaugmented, train mode):

    theta <- SGD(lr_e, mu, wd).step(theta, grad CE(f_theta(x_r), y_r)),
    lr_e = lr * (1 + cos(pi e / E)) / 2   (cosine stepped per epoch, eta_min 0)

Defaults (reference ``DefaultUnlearnerConfig``): E 5, B 256, lr 0.1, mu 0.9, wd 5e-4.
Search space: the generic set G. Plan, state and step: ``jaxmu.methods.recipes`` (shared with CT
and GA).
"""

from __future__ import annotations

from jaxmu.methods.recipes import cosine_finetune_plan, sgd_spec

SPEC = sgd_spec("finetune", cosine_finetune_plan,
                {"epochs": 5, "batch_size": 256, "learning_rate": 0.1, "momentum": 0.9, "weight_decay": 5e-4},
                "fine-tune on D_r (cosine per epoch)")
