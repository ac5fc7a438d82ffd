"""The NeurIPS 2023 unlearning-challenge forgetting score (protocol.md §9).

Host-side NumPy, vectorised over decision rules (threshold-grid sizes depend on the data,
so this never runs under ``jit``; §9.4). Reproduces ``google-deepmind/unlearning_evaluation``
``metric.py`` value for value (golden fixtures ``eps_N{16,64,512}``, exact to the last bit):

* φ (``logit_scaled_confidence_reference``): max-subtracted float64 softmax,
  φ = ln(p_y + 1e-45) − ln(Σ_{k≠y} p_k + 1e-45) (saturates at ±103.616).
* Per example, positive population = retrained iff median(R) > median(U) (strict).
* Degenerate check: min(range)/max(range) < 0.01 → ε = cap (0/0 does not trigger it,
  as in the reference).
* Single-threshold rules: ⌈(max − min)·100⌉ thresholds over both populations pooled, built
  like ``torch.linspace`` in float32 (the reference's thresholds are float32); φ ≥ t → positive.
* Double-threshold rules: "positive" relabelled to the smaller-range population (ties swap),
  width w = smaller range, right thresholds linspace(min_pos + w − 2, max_pos + 2,
  ⌈((max_pos + 2) − (min_pos + w − 2))·100⌉) in float64, 400 left thresholds
  linspace(r − w − 2, r − w + 2) each; l ≤ φ ≤ r → positive.
* Rates are float32 fractions (the reference's ``torch.mean(... float32)``) and ε is
  evaluated in float32 like the reference: FPR = FNR = 0 → ε = ∞; exactly one of them 0 →
  rule discarded; else ε = max(ln(1 − δ − FPR) − ln FNR, ln(1 − δ − FNR) − ln FPR) clipped
  below at 0 (a NaN branch is ignored; a rule with both branches NaN is discarded).
* Per-example ε = max over surviving rules, clipped to [0, cap]. Deviation (§10.2): the
  published code asserts on a NumPy array and crashes when several rules survive; this
  implements the evident intent and returns NaN only when no rule survives.
* Generalisation: N_u ≠ N_r is allowed (the reference requires equal sizes).

Counting is by binary search on sorted populations (exact, same comparisons as the
reference), so N = 512 with 24 examples runs in well under a second.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "DELTA",
    "EPSILON_CAP",
    "ForgetScore",
    "bucket_points",
    "final_score",
    "forget_score",
    "logit_scaled_confidence_reference",
    "neurips_forget_score",
    "per_example_epsilon",
]

DELTA = 1e-5
EPSILON_CAP = 50.0
_PER_UNIT = 100
_BUFFER = 2.0
_N_LEFT = math.ceil(2 * _BUFFER * _PER_UNIT)  # 400
_CHUNK = 2048  # right thresholds per chunk (x 400 left thresholds)


def logit_scaled_confidence_reference(logits: Any, labels: Any) -> np.ndarray:
    """Reference float64 φ with the 1e-45 floor (protocol.md §9.2 step 1, LiRA ``score.py``).

    Args:
      logits: ``[..., C]`` (e.g. ``[M, n, C]``), any float dtype; computed in float64.
      labels: integers broadcastable to ``logits.shape[:-1]``.

    Returns:
      φ of shape ``logits.shape[:-1]``, float64, within ±103.616.
    """
    z = np.array(logits, dtype=np.float64)
    if z.ndim < 1 or z.shape[-1] < 2:
        raise ValueError(f"logits must be [..., C] with C >= 2, got shape {z.shape}")
    y = np.asarray(labels)
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {y.dtype}")
    try:
        y = np.broadcast_to(y, z.shape[:-1])
    except ValueError:
        raise ValueError(f"labels {y.shape} do not broadcast to logits {z.shape[:-1]}") from None
    if y.size and (y.min() < 0 or y.max() >= z.shape[-1]):
        raise ValueError(f"labels must lie in [0, {z.shape[-1]})")
    z -= z.max(axis=-1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=-1, keepdims=True)
    onehot = y[..., None] == np.arange(z.shape[-1])
    p_correct = np.sum(np.where(onehot, p, 0.0), axis=-1)
    p_wrong = np.sum(np.where(onehot, 0.0, p), axis=-1)
    return np.log(p_correct + 1e-45) - np.log(p_wrong + 1e-45)


def _torch_linspace_f32(start: float, stop: float, num: int) -> np.ndarray:
    """``torch.linspace(start, stop, num)`` (CPU, float32) bit for bit, as float64 values.

    step = (stop − start)/(num − 1) in float32; the first half counts up from start, the
    second half down from stop, each value one fused multiply-add rounded to float32.
    """
    a, b = np.float32(start), np.float32(stop)
    if num <= 0:
        return np.zeros(0)
    if num == 1:
        return np.array([a], dtype=np.float64)
    step = np.float64((b - a) / np.float32(num - 1))
    i = np.arange(num)
    vals = np.where(i < num // 2, np.float64(a) + step * i, np.float64(b) - step * (num - 1 - i))
    return vals.astype(np.float32).astype(np.float64)


def _rule_eps(tp: np.ndarray, fp: np.ndarray, n_pos: int, n_neg: int, delta: float):
    """(any perfect rule, max ε over surviving rules or NaN) from per-rule counts (float32)."""
    f32 = np.float32
    fnr = (n_pos - tp).astype(f32) / f32(n_pos)  # the reference averages 1[pred neg] directly
    fpr = fp.astype(f32) / f32(n_neg)
    perfect = (fpr == 0) & (fnr == 0)
    keep = (fpr != 0) & (fnr != 0)
    if perfect.any():
        return True, math.nan
    fpr, fnr = fpr[keep], fnr[keep]
    one = f32(1.0 - delta)  # the reference's ``1 - delta - x`` rounds (1 - δ) to float32
    with np.errstate(divide="ignore", invalid="ignore"):
        eps = np.fmax(np.log(one - fpr) - np.log(fnr), np.log(one - fnr) - np.log(fpr))
    eps = eps[~np.isnan(eps)]
    if eps.size == 0:
        return False, math.nan
    return False, float(max(np.max(eps), f32(0.0)))


def _between(s: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """#{φ ∈ s : l ≤ φ ≤ r} per rule (s sorted), flattened; empty intervals count 0."""
    n = np.searchsorted(s, right, "right") - np.searchsorted(s, left, "left")
    return np.maximum(n, 0).ravel()


def _example_epsilon(pos: np.ndarray, neg: np.ndarray, delta: float, cap: float) -> float:
    """ε of one example from its positive [N_p] and negative [N_n] populations (§9.2 3–8)."""
    pos_diff = pos.max() - pos.min()
    neg_diff = neg.max() - neg.min()
    largest, smallest = max(pos_diff, neg_diff), min(pos_diff, neg_diff)
    if largest > 0 and smallest / largest < 0.01:
        return cap
    sp, sn = np.sort(pos), np.sort(neg)
    found_perfect, best = False, -math.inf

    def _merge(result: tuple[bool, float]) -> None:
        nonlocal found_perfect, best
        found_perfect |= result[0]
        if not math.isnan(result[1]):
            best = max(best, result[1])

    # Double-threshold rules: "positive" is the peakier (smaller-range) population.
    dp, dn = (sn, sp) if pos_diff >= neg_diff else (sp, sn)
    width = smallest
    lo = dp[0] + width - _BUFFER
    hi = dp[-1] + _BUFFER
    right = np.linspace(lo, hi, num=int(np.ceil((hi - lo) * _PER_UNIT)))
    for c in range(0, right.shape[0], _CHUNK):
        r = right[c : c + _CHUNK]
        left = np.linspace(r - width - _BUFFER, r - width + _BUFFER, num=_N_LEFT, axis=-1)
        tp, fp = _between(dp, left, r[:, None]), _between(dn, left, r[:, None])
        _merge(_rule_eps(tp, fp, dp.size, dn.size, delta))
        if found_perfect:
            return cap
    # Single-threshold rules over both populations pooled; φ >= t predicts positive.
    lo, hi = min(sp[0], sn[0]), max(sp[-1], sn[-1])
    thr = _torch_linspace_f32(lo, hi, math.ceil((hi - lo) * _PER_UNIT))
    if thr.size:
        tp = sp.size - np.searchsorted(sp, thr, "left")
        fp = sn.size - np.searchsorted(sn, thr, "left")
        _merge(_rule_eps(tp, fp, sp.size, sn.size, delta))
    if found_perfect:
        return cap
    return float(np.clip(best, 0.0, cap)) if best > -math.inf else math.nan


def _phi_matrix(name: str, x: Any) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] < 2:
        raise ValueError(f"{name} must be [N_models >= 2, n_examples], got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or inf; compute φ with the 1e-45 floor")
    return a


def per_example_epsilon(
    phi_unlearned: Any, phi_retrained: Any, delta: float = DELTA, cap: float = EPSILON_CAP
) -> np.ndarray:
    """Per-example ε lower bounds (protocol.md §9.2 steps 2–8).

    Args:
      phi_unlearned: ``[N_u, n]`` φ of the n forget examples under N_u unlearned models.
      phi_retrained: ``[N_r, n]`` φ under N_r retrained models.
      delta, cap: δ = 1e-5 and the ε cap 50 of the challenge.

    Returns:
      ``[n]`` float64 ε in [0, cap]; NaN only for an example where no rule survives.
    """
    u = _phi_matrix("phi_unlearned", phi_unlearned)
    r = _phi_matrix("phi_retrained", phi_retrained)
    if u.shape[1] != r.shape[1]:
        raise ValueError(
            f"example axes differ: unlearned {u.shape[1]}, retrained {r.shape[1]}; "
            "pass φ of the same forget examples"
        )
    retrain_pos = np.median(r, axis=0) > np.median(u, axis=0)
    eps = np.empty(u.shape[1])
    for i in range(u.shape[1]):
        pos, neg = (r[:, i], u[:, i]) if retrain_pos[i] else (u[:, i], r[:, i])
        eps[i] = _example_epsilon(pos, neg, delta, cap)
    return eps


def bucket_points(n_models: int) -> np.ndarray:
    """Points of the buckets [0, 0.5), [0.5, 1), … below ε_max = ⌈ln(N − 1)⌉: 2^(−b) (§9.2 9)."""
    if n_models < 2:
        raise ValueError(f"n_models must be >= 2 (ε_max = ceil(ln(N - 1))), got {n_models}")
    eps_max = math.ceil(math.log(n_models - 1))
    return 0.5 ** np.arange(2 * eps_max)


def forget_score(eps: Any, n_models: int) -> float:
    """F = mean over forget examples of the bucket value of ε (§9.2 steps 9–10).

    ``n_models`` is N, the number of unlearned models; scores are comparable only at equal N
    (§9.3). ε ≥ ε_max, and NaN ε, are worth 0. With N = 2, ε_max = ⌈ln 1⌉ = 0 leaves no bucket,
    so F = 0 whatever the populations: the score needs N ≥ 3 to say anything.
    """
    e = np.asarray(eps, dtype=np.float64)
    if e.ndim != 1 or e.size == 0:
        raise ValueError(f"eps must be a non-empty [n] array, got shape {e.shape}")
    pts = bucket_points(n_models)
    if pts.size == 0:
        return 0.0
    idx = np.floor(np.where(np.isnan(e), np.inf, np.maximum(e, 0.0)) / 0.5)
    ok = idx < pts.size
    values = np.where(ok, pts[np.where(ok, idx, 0).astype(int)], 0.0)
    return float(np.sum(values) / e.size)


def final_score(f: float, ra_u: Any, ra_r: Any, ta_u: Any, ta_r: Any) -> float:
    """Final score = F · (mean RA_U / mean RA_R) · (mean TA_U / mean TA_R) (§9.2 step 11).

    Means over the unlearned and the retrained runs respectively (arrays ``[N_u]``, ``[N_r]``).
    """
    means = []
    for name, v in (("ra_u", ra_u), ("ra_r", ra_r), ("ta_u", ta_u), ("ta_r", ta_r)):
        a = np.asarray(v, dtype=np.float64)
        if a.size == 0 or not np.isfinite(a).all():
            raise ValueError(f"{name} must be a non-empty array of finite accuracies")
        means.append(float(a.mean()))
    if means[1] <= 0 or means[3] <= 0:
        raise ValueError("retrained accuracies must have a positive mean")
    return float(f) * (means[0] / means[1]) * (means[2] / means[3])


@dataclass(frozen=True)
class ForgetScore:
    """A forgetting score with what it depends on (§9.3: record N)."""

    eps: np.ndarray  # [n] per-example ε
    forget_score: float  # F
    n_models: int  # N (unlearned models), fixes ε_max and the buckets
    n_retrained: int
    epsilon_max: int


def neurips_forget_score(phi_unlearned: Any, phi_retrained: Any) -> ForgetScore:
    """ε per example and F in one call, with N recorded (§9.2 steps 2–10)."""
    eps = per_example_epsilon(phi_unlearned, phi_retrained)
    n_u, n_r = np.shape(phi_unlearned)[0], np.shape(phi_retrained)[0]
    return ForgetScore(
        eps=eps,
        forget_score=forget_score(eps, n_u),
        n_models=n_u,
        n_retrained=n_r,
        epsilon_max=math.ceil(math.log(n_u - 1)),
    )
