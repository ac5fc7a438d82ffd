"""ROC statistics of membership / unlearning attacks (docs/protocol.md §8.2, §8.3 item 10).

Host-side NumPy. Convention: a higher score means "positive" (member / unlearned), and a
threshold t predicts positive iff score ≥ t. Ties are handled by grouping equal scores into one
ROC point (so AUC counts tied positive/negative pairs as 1/2, the Mann–Whitney statistic).

* balanced accuracy = max_t 1 − (FPR_t + FNR_t)/2 (LiRA's "accuracy");
* TPR at FPR level α = the largest TPR over ROC points with FPR strictly below α;
* bootstrap intervals resample *target models* (groups) with replacement, because pairs of
  one model are dependent (§8.3 item 10).

Oracles (§10.1), IN ~ N(d, 1) vs OUT ~ N(0, 1): AUC → Φ(d/√2), balanced accuracy → Φ(d/2),
TPR at FPR α → 1 − Φ(Φ⁻¹(1 − α) − d).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

__all__ = [
    "attack_summary",
    "auc",
    "balanced_accuracy",
    "bootstrap_ci",
    "roc_curve",
    "tpr_at_fpr",
]


def _scores_labels(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel()
    if s.shape != y.shape:
        raise ValueError(f"scores ({s.size}) and labels ({y.size}) must have the same length")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN; drop unscored pairs before the ROC")
    if y.dtype != bool:
        if not np.isin(y, (0, 1)).all():
            raise ValueError("labels must be boolean or 0/1 (1 = positive)")
        y = y.astype(bool)
    if y.all() or not y.any():
        raise ValueError("labels need both classes (positives and negatives)")
    return s, y


def roc_curve(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points (fpr, tpr, thresholds), from (0, 0) at t = +inf to (1, 1) at t = min score.

    One point per distinct score value (ties grouped); ``thresholds`` decreasing.
    """
    s, y = _scores_labels(scores, labels)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last_of_group = np.r_[s[1:] != s[:-1], True]
    tp = np.cumsum(y)[last_of_group]
    fp = np.cumsum(~y)[last_of_group]
    tpr = np.r_[0.0, tp / tp[-1]]
    fpr = np.r_[0.0, fp / fp[-1]]
    thresholds = np.r_[np.inf, s[last_of_group]]
    return fpr, tpr, thresholds


def _auc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) * 0.5))


def _bal_acc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    return float(np.max(1.0 - (fpr + (1.0 - tpr)) / 2.0))


def _tpr_at(fpr: np.ndarray, tpr: np.ndarray, level: float) -> float:
    ok = fpr < level
    return float(np.max(tpr[ok])) if ok.any() else 0.0


def auc(scores: Any, labels: Any) -> float:
    """Area under the ROC curve (trapezoids; ties count 1/2)."""
    return _auc(*roc_curve(scores, labels)[:2])


def balanced_accuracy(scores: Any, labels: Any) -> float:
    """max_t 1 − (FPR_t + FNR_t)/2 over all thresholds (0.5 = chance)."""
    return _bal_acc(*roc_curve(scores, labels)[:2])


def tpr_at_fpr(scores: Any, labels: Any, fpr_level: float) -> float:
    """Largest TPR among thresholds with FPR strictly below ``fpr_level`` (e.g. 0.01)."""
    if not 0.0 < fpr_level <= 1.0:
        raise ValueError(f"fpr_level must be in (0, 1], got {fpr_level}")
    return _tpr_at(*roc_curve(scores, labels)[:2], fpr_level)


def attack_summary(scores: Any, labels: Any) -> dict[str, float]:
    """``accuracy`` (balanced, best threshold), ``auc``, ``tpr_at_1pct``, ``tpr_at_0.1pct``,
    plus the pair counts ``n_pos``/``n_neg`` (§8.3 item 10)."""
    fpr, tpr, _ = roc_curve(scores, labels)
    y = np.asarray(labels).ravel().astype(bool)
    return {
        "accuracy": _bal_acc(fpr, tpr),
        "auc": _auc(fpr, tpr),
        "tpr_at_1pct": _tpr_at(fpr, tpr, 0.01),
        "tpr_at_0.1pct": _tpr_at(fpr, tpr, 0.001),
        "n_pos": int(y.sum()),
        "n_neg": int((~y).sum()),
    }


def bootstrap_ci(
    scores: Any,
    labels: Any,
    groups: Any,
    n_boot: int,
    rng: np.random.RandomState | np.random.Generator,
    *,
    level: float = 0.95,
    statistic: Callable[[np.ndarray, np.ndarray], Mapping[str, float]] = attack_summary,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals over target models (§8.3 item 10).

    Each replicate draws the distinct ``groups`` (e.g. the target-model index of each pair)
    with replacement and pools all pairs of the drawn groups; replicates missing a class are
    redrawn. Returns ``{name: (lo, hi)}`` for every float entry of ``statistic``.
    """
    s, y = _scores_labels(scores, labels)
    g = np.asarray(groups).ravel()
    if g.shape != s.shape:
        raise ValueError(f"groups ({g.size}) must have one entry per score ({s.size})")
    if n_boot < 2:
        raise ValueError(f"n_boot must be >= 2, got {n_boot}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    uniq, inv = np.unique(g, return_inverse=True)
    draw = rng.integers if isinstance(rng, np.random.Generator) else rng.randint
    q = [(1.0 - level) / 2.0 * 100.0, (1.0 + level) / 2.0 * 100.0]
    if statistic is attack_summary:
        reps = _weighted_replicates(s, y, inv, uniq.size, n_boot, draw)
        return {k: tuple(float(x) for x in np.percentile(v, q)) for k, v in reps.items()}
    order = np.argsort(inv, kind="stable")
    starts = np.searchsorted(inv[order], np.arange(uniq.size))
    ends = np.r_[starts[1:], s.size]
    members = [order[a:b] for a, b in zip(starts, ends)]
    reps: dict[str, list[float]] = {}
    done, tries = 0, 0
    while done < n_boot:
        tries += 1
        if tries > 20 * n_boot:
            raise ValueError("bootstrap replicates keep missing a class; too few groups")
        idx = np.concatenate([members[j] for j in draw(0, uniq.size, size=uniq.size)])
        yy = y[idx]
        if yy.all() or not yy.any():
            continue
        for k, v in statistic(s[idx], yy).items():
            if isinstance(v, float):
                reps.setdefault(k, []).append(v)
        done += 1
    return {k: tuple(float(x) for x in np.percentile(v, q)) for k, v in reps.items()}


def _weighted_replicates(s: np.ndarray, y: np.ndarray, inv: np.ndarray, n_groups: int, n_boot: int,
                         draw: Callable[..., np.ndarray]) -> dict[str, list[float]]:
    """``attack_summary``'s float statistics of ``n_boot`` group resamples, without pooling copies.

    A resample that draws group j c_j times is the pooled sample in which every pair of j has
    weight c_j: one sort of all pairs serves every replicate, whose ROC is the cumulative weighted
    positive and negative counts at the tie boundaries (O(P) instead of a sort of the pooled
    pairs). Groups drawn 0 times add ROC points equal to their predecessor, which change neither
    the AUC, the best balanced accuracy nor the TPR at an FPR level, so every replicate equals the
    pooled computation's (to rounding). The draws and redraws are the pooled loop's, in its order.
    """
    order = np.argsort(-s, kind="stable")
    ss, ys, gs = s[order], y[order], inv[order]
    last = np.r_[ss[1:] != ss[:-1], True]
    reps: dict[str, list[float]] = {k: [] for k in ("accuracy", "auc", "tpr_at_1pct", "tpr_at_0.1pct")}
    done, tries = 0, 0
    while done < n_boot:
        tries += 1
        if tries > 20 * n_boot:
            raise ValueError("bootstrap replicates keep missing a class; too few groups")
        w = np.bincount(draw(0, n_groups, size=n_groups), minlength=n_groups)[gs]
        tp, fp = np.cumsum(w * ys)[last], np.cumsum(w * ~ys)[last]
        if tp[-1] == 0 or fp[-1] == 0:
            continue
        tpr, fpr = np.r_[0.0, tp / tp[-1]], np.r_[0.0, fp / fp[-1]]
        for k, v in (("accuracy", _bal_acc(fpr, tpr)), ("auc", _auc(fpr, tpr)),
                     ("tpr_at_1pct", _tpr_at(fpr, tpr, 0.01)), ("tpr_at_0.1pct", _tpr_at(fpr, tpr, 0.001))):
            reps[k].append(v)
        done += 1
    return reps
