"""Offline RMIA (Zarifzadeh, Liu & Shokri, ICML 2024, "Low-Cost High-Power Membership Inference
Attacks"), and its use as an unlearning audit with the retrained models as references.

The attack. For a target model θ, reference models θ'_1..θ'_K that did *not* train on the
examples (offline: OUT models only) and a population Z of non-members:

    Pr(x | θ)  = softmax(f_θ(x))_y                      (the probability of the true class)
    Pr(x)      = ½ [(1 + a) · mean_k Pr(x | θ'_k) + (1 − a)]   (offline approximation of
                 ½(Pr_IN + Pr_OUT), with Pr_IN ≈ a·Pr_OUT + (1 − a); paper §3, App. B.2)
    LR_θ(x, z) = [Pr(x | θ) / Pr(x)] / [Pr(z | θ) / Pr(z)]
    score(x)   = Pr_{z ∈ Z}[ LR_θ(x, z) > γ ]

A member x scores high: θ gives it more probability than the references do, relative to how θ
treats the population. ``a`` = 0.3 and γ = 1 are the published offline defaults (the authors'
code ``privacytrustlab/ml_privacy_meter``, ``modules/mia/attacks/rmia.py``, tunes ``a`` on a
paired model; here it is a fixed argument).

**The unlearning audit is an adaptation** (not in the paper): the target is each unlearned
model; the references are the *retrained* models (they never saw D_f, so they are OUT for the
forget, validation and test points alike); Z is D_v; the attack scores D_f (positives) against
D_t (negatives), and its ROC AUC is reported per seed (``stack_rmia_auc``). A model that has
forgotten D_f the way retraining does scores ≈ 0.5; the original model, which trained on D_f,
scores higher. To treat every stack alike, model m is attacked with the retrained models of the
*other* seeds (leave-one-out: ``K = S − 1``), so the retrained stack itself can be scored too.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxmu.attacks.roc import auc

OFFLINE_A = 0.3
GAMMA = 1.0


def true_class_probability(logits: Any, labels: Any) -> np.ndarray:
    """softmax(logits)_y in float64, shape ``logits.shape[:-1]`` (a stable log-softmax)."""
    z = np.asarray(logits, np.float64)
    y = np.broadcast_to(np.asarray(labels), z.shape[:-1])
    z = z - z.max(axis=-1, keepdims=True)
    log_p = np.take_along_axis(z, y[..., None].astype(np.int64), axis=-1)[..., 0] - np.log(np.exp(z).sum(axis=-1))
    return np.exp(log_p)


def offline_marginal(p_refs: Any, a: float = OFFLINE_A) -> np.ndarray:
    """Pr(x) = ½[(1 + a)·mean_k Pr(x | θ'_k) + (1 − a)] from ``p_refs`` ``[K, n]`` (OUT models)."""
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"offline a must lie in [0, 1], got {a}")
    p = np.asarray(p_refs, np.float64)
    if p.ndim != 2 or p.shape[0] < 1:
        raise ValueError(f"reference probabilities must be [K >= 1, n], got shape {p.shape}")
    return 0.5 * ((1.0 + a) * p.mean(axis=0) + (1.0 - a))


def rmia_scores(p_target_x: Any, p_refs_x: Any, p_target_z: Any, p_refs_z: Any, *, a: float = OFFLINE_A,
                gamma: float = GAMMA) -> np.ndarray:
    """score(x) = fraction of the population z with LR_θ(x, z) > γ, for every x: ``[n]``.

    ``p_target_x`` ``[n]`` / ``p_target_z`` ``[m]``: Pr(· | θ) of the candidates and the
    population; ``p_refs_x`` ``[K, n]`` / ``p_refs_z`` ``[K, m]``: the same under the OUT
    reference models. LR > γ ⇔ r_z < r_x / γ with r = Pr(·|θ)/Pr(·), so each candidate counts
    the population ratios below its own by one sorted search (O((n + m) log m)).
    """
    r_x = np.asarray(p_target_x, np.float64) / offline_marginal(p_refs_x, a)
    r_z = np.sort(np.asarray(p_target_z, np.float64) / offline_marginal(p_refs_z, a))
    if r_z.size == 0:
        raise ValueError("the RMIA population is empty: it needs at least one non-member example")
    if gamma <= 0:
        raise ValueError(f"gamma must be positive, got {gamma}")
    return np.searchsorted(r_z, r_x / gamma, side="left") / r_z.size


def stack_rmia_auc(target: dict[str, np.ndarray], refs: dict[str, np.ndarray], *, a: float = OFFLINE_A,
                   gamma: float = GAMMA) -> np.ndarray:
    """Per target model m: the ROC AUC of RMIA scores of D_f (members) against D_t (non-members),
    population D_v, references = every reference model except index m (leave-one-out).

    ``target`` / ``refs``: ``{"forget", "val", "test": [models, n] true-class probabilities}``
    (the two stacks share the seed order). A NaN row (a diverged model) gives NaN and is never
    used as a reference; a target with no finite reference left gives NaN.
    """
    n_models = target["forget"].shape[0]
    ok_ref = np.all([np.isfinite(refs[s]).all(axis=1) for s in ("forget", "val", "test")], axis=0)
    out = np.full(n_models, np.nan)
    labels = np.r_[np.ones(target["forget"].shape[1]), np.zeros(target["test"].shape[1])]
    for m in range(n_models):
        use = ok_ref & (np.arange(ok_ref.size) != m)
        rows = [target[s][m] for s in ("forget", "val", "test")]
        empty = target["forget"].shape[1] == 0 or target["test"].shape[1] == 0
        if empty or not use.any() or not all(np.isfinite(r).all() for r in rows):
            continue
        x_t = np.r_[rows[0], rows[2]]
        x_r = np.concatenate([refs["forget"][use], refs["test"][use]], axis=1)
        out[m] = auc(rmia_scores(x_t, x_r, rows[1], refs["val"][use], a=a, gamma=gamma), labels)
    return out
