"""The NeurIPS 2023 unlearning-challenge forgetting score (docs/protocol.md §9).

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

Computation (issue 13 item 6): a rule's ε depends only on its counts (TP, FP), so the score
evaluates the reference's float32 ε formula once per count pair (a table) and finds, for E
examples at once, which count pairs the ~160,000 double-threshold rules of each example reach
from the gaps between the pooled sorted populations (see "fast path" below); single-threshold
rules are counted by binary search. At the U-LiRA study scale (1,184 examples, 32 models per
population) this takes 0.4 s where the rule-by-rule loop over examples took 10.3 s (2 cores).
It stays host-side NumPy in float64 rather than a jitted float32 program: the threshold grids
are float64 ``linspace`` values whose exact rounding decides the counts where data sit on grid
points (common: the grids start at the populations' extremes), grid sizes depend on the data,
and the golden fixtures must match bit for bit. ``_example_epsilon_reference`` (the rule-by-rule
transcription) is kept as the oracle of the tests and the fallback of an uncertifiable example.
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
    """Reference float64 φ with the 1e-45 floor (docs/protocol.md §9.2 step 1, LiRA ``score.py``).

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


def _example_epsilon_reference(pos: np.ndarray, neg: np.ndarray, delta: float, cap: float) -> float:
    """ε of one example from its positive [N_p] and negative [N_n] populations (§9.2 3–8).

    The rule-by-rule transcription of the reference (every double-threshold rule counted by
    binary search, ε evaluated per rule): the oracle of the vectorised path
    (``per_example_epsilon``) and its fallback for an example the fast path cannot certify.
    """
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


# ----------------------------------------------------------------------------- fast path
#
# A rule's ε depends on its counts (TP, FP) only, so the maximum over the ~160,000 rules of an
# example is the maximum of a fixed table E[TP, FP] (``_epsilon_table``: the reference's float32
# formula, evaluated once per count pair) over the count pairs that the rules reach. With the two
# populations pooled and sorted, z_1 ≤ … ≤ z_K, a rule [l, r] counts the members between the
# gaps g = #{z < l} and h = #{z ≤ r}: TP = P(h) − P(g), FP = N(h) − N(g) (P, N: cumulative
# counts of the two populations, clipped at 0 as ``_between``), so the reached pairs are fixed
# by the reached (h, g) pairs — at most (K + 1)² instead of 400 × 400 binary searches.
#
# For one right threshold r the left thresholds are NumPy's ``linspace`` grid
# l_j = fl(fl(j·s) + a), j < 399, l_399 = b, a = r − w − 2, b = r − w + 2: monotone, spacing
# s ≈ 0.01. l_0 = a and l_399 = b reach the gaps g(a) and g(b); a gap strictly between them lies
# inside [a, b], so it is reached unless it is narrower than the spacing (a *narrow* gap,
# z_{g+1} − z_g ≤ 1.5·s, checked with a 50 % margin over rounding: |φ| < 1e6 is required). A
# narrow gap is reached iff c(z_{g+1}) > c(z_g) with c(v) = #{j : l_j ≤ v}; c(v) is taken
# from the estimate ⌊(v − a)/s⌋ + 1 and certified by evaluating the grid exactly (the same two
# roundings as ``linspace``) on both sides of it. An example that cannot be certified (never
# seen on data: it would take |φ| ≥ 1e6 or an estimate off by two) is recomputed by
# ``_example_epsilon_reference``. The result is the reference's, bit for bit (oracle tests).
# The gap method costs O(K²) per example; above K = 256 pooled models the rules are counted
# one by one instead (``_double_threshold_best_direct``, O(log K) per rule).

_N_RIGHT = _N_LEFT + 1  # right thresholds per example: ⌈((max + 2) − (min + w − 2))·100⌉ ≈ 400
_MAX_ABS = 1e6  # beyond it the narrow-gap margin is not certified (fallback to the reference)
_GAP_METHOD_MAX_K = 256  # pooled population size up to which the gap method is the faster
_ELEMENTS = 1 << 21  # elements of the largest [examples, R or K, K] temporary per chunk


def _epsilon_table(n_pos: int, n_neg: int, delta: float) -> np.ndarray:
    """ε of a rule with counts (TP, FP), ``[n_pos + 1, n_neg + 1]`` float32 (§9.2 step 7).

    The reference's float32 formula (``_rule_eps``) on every count pair: +inf for the perfect
    rule (TP = n_pos, FP = 0), NaN for a discarded rule (exactly one of FPR, FNR zero, or both
    branches NaN). Elementwise float32, so each entry equals the reference's value of that rule.
    """
    f32 = np.float32
    tp = np.broadcast_to(np.arange(n_pos + 1)[:, None], (n_pos + 1, n_neg + 1))
    fp = np.broadcast_to(np.arange(n_neg + 1)[None, :], (n_pos + 1, n_neg + 1))
    fnr = (n_pos - tp).astype(f32) / f32(n_pos)
    fpr = fp.astype(f32) / f32(n_neg)
    one = f32(1.0 - delta)
    with np.errstate(divide="ignore", invalid="ignore"):
        eps = np.fmax(np.log(one - fpr) - np.log(fnr), np.log(one - fnr) - np.log(fpr))
    eps[(fpr == 0) != (fnr == 0)] = np.nan
    eps[(fpr == 0) & (fnr == 0)] = np.inf
    return eps


def _table_max(
    tp: np.ndarray, fp: np.ndarray, reached: np.ndarray, table: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(perfect rule reached, max ε of the reached surviving rules or −inf) per example.

    ``tp``, ``fp``, ``reached``: ``[E, ...]`` count pairs and whether a rule reaches them.
    """
    vals = table[tp, fp]
    axes = tuple(range(1, tp.ndim))
    perfect = (reached & (vals == np.inf)).any(axis=axes)
    best = np.where(reached & np.isfinite(vals), vals, -np.inf).max(axis=axes)
    return perfect, best.astype(np.float64)


def _linspace_rows(start: np.ndarray, stop: np.ndarray, num: np.ndarray, width: int) -> np.ndarray:
    """Row e = ``np.linspace(start[e], stop[e], num[e])`` (num ≥ 2), padded to ``width``:
    fl(fl(i·step) + start) with step = (stop − start)/(num − 1), the last value stop."""
    step = (stop - start) / (num - 1)
    y = np.arange(width, dtype=np.float64)[None, :] * step[:, None] + start[:, None]
    y[np.arange(y.shape[0]), num - 1] = stop
    return y


def _grid_window(q: np.ndarray, v: np.ndarray, start: np.ndarray, step: np.ndarray, half: int):
    """#{j ≤ 398 : l_j ≤ v} from the estimate q, and whether it is certified.

    l_j is evaluated exactly for j = q − half … q + half − 1; l is monotone, so the count is
    (q − half) + the hits there when l_{q−half} ≤ v < l_{q+half−1} (or those indices fall off
    the grid), which certifies it.
    """
    last = float(_N_LEFT - 2)
    first = q - half
    count = np.maximum(first, 0.0)
    hits = []
    for d in range(2 * half):
        j = first + d
        hit = (np.clip(j, 0.0, last) * step + start) <= v
        hits.append(hit)
        count = count + ((j >= 0.0) & (j <= last) & hit)
    certified = ((first < 0.0) | hits[0]) & ((first + 2 * half - 1 > last) | ~hits[-1])
    return count, certified


def _grid_count(
    v: np.ndarray, start: np.ndarray, step: np.ndarray, stop: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """c(v) = #{j : l_j ≤ v} on the left grid l_j = fl(fl(j·step) + start), j < 399, l_399 = stop,
    and whether it is certified.

    The estimate q = ⌊(v − start)/step⌋ + 1 is checked by evaluating the grid exactly (the
    same two roundings as ``linspace``) at q − 1 and q. It is off by one when v sits on a grid
    point, which the layout makes common (grids and data share the populations' extremes):
    those entries are recounted over q − 2 … q + 1.
    """
    v = np.broadcast_to(v, start.shape)
    q = np.clip(np.floor((v - start) / step) + 1.0, 0.0, _N_LEFT - 1.0)
    count, certified = _grid_window(q, v, start, step, 1)
    redo = np.nonzero(~certified)
    if redo[0].size:
        count[redo], certified[redo] = _grid_window(q[redo], v[redo], start[redo], step[redo], 2)
    return count.astype(np.int64) + (stop <= v), certified


def _rows_searchsorted(z: np.ndarray, t: np.ndarray, side: str) -> np.ndarray:
    """Row by row ``np.searchsorted(z[e], t[e], side)``, ``z`` sorted ``[E, K]``, ``t`` ``[E, R]``
    (R binary searches per row: cheaper than comparing all R × K pairs)."""
    out = np.empty(t.shape, np.intp)
    for e in range(z.shape[0]):
        out[e] = np.searchsorted(z[e], t[e], side)
    return out


def _double_threshold_best(
    dp: np.ndarray, dn: np.ndarray, width: np.ndarray, table: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Double-threshold rules of §9.2 step 5 for E examples at once.

    Args:
      dp, dn: ``[E, a]``, ``[E, b]`` sorted "positive" (peakier) and negative populations.
      width: ``[E]`` the smaller range w.
      table: ``_epsilon_table(a, b, δ)``.

    Returns:
      (perfect rule reached ``[E]``, max surviving ε ``[E]`` or −inf, ``exact`` ``[E]``: False
      where the grid could not be certified — recompute those with the reference).
    """
    n_ex, a = dp.shape
    k = a + dn.shape[1]
    lo = (dp[:, 0] + width) - _BUFFER
    hi = dp[:, -1] + _BUFFER
    num = np.ceil((hi - lo) * _PER_UNIT)
    exact = np.isfinite(num) & (num >= 2) & (num <= 2 * _N_RIGHT)
    num = np.where(exact, num, 2).astype(np.intp)
    n_right = int(num.max())
    right = _linspace_rows(lo, hi, num, n_right)  # [E, R]
    row_ok = np.arange(n_right)[None, :] < num[:, None]
    shift = right - width[:, None]  # the reference's r − w − 2 and r − w + 2
    start, stop = shift - _BUFFER, shift + _BUFFER
    step = (stop - start) / (_N_LEFT - 1)
    sound = (step > 0) & ((_N_LEFT - 2) * step + start <= stop)
    sound &= np.maximum(np.abs(start), np.abs(stop)) < _MAX_ABS
    exact &= (sound | ~row_ok).all(axis=1)

    z = np.concatenate([dp, dn], axis=1)
    order = np.argsort(z, axis=1, kind="stable")
    z = np.take_along_axis(z, order, axis=1)  # pooled, sorted [E, K]
    zero = np.zeros((n_ex, 1), np.intp)
    cum_p = np.concatenate([zero, np.cumsum(order < a, axis=1)], axis=1)  # [E, K + 1]
    cum_n = np.concatenate([zero, np.cumsum(order >= a, axis=1)], axis=1)
    h = _rows_searchsorted(z, right, "right")  # gap of r: #{z ≤ r}  [E, R]
    g_lo = _rows_searchsorted(z, start, "left")  # gap of l_0 = start: #{z < l_0}
    g_hi = _rows_searchsorted(z, stop, "left")  # gap of l_399 = stop

    # coverage[e, h, g] = #{right thresholds with gap h whose left grid reaches gap g}
    size = n_ex * (k + 1) * (k + 2)
    base = (np.arange(n_ex)[:, None] * (k + 1) + h) * (k + 2)
    cover = np.bincount((base + g_lo)[row_ok], minlength=size)
    cover -= np.bincount((base + g_hi + 1)[row_ok], minlength=size)
    cover = np.cumsum(cover.reshape(n_ex, k + 1, k + 2), axis=2)[..., : k + 1]
    spacing = 1.5 * np.where(row_ok, step, 0.0).max(axis=1)
    en, gn = np.nonzero(np.diff(z, axis=1) <= spacing[:, None])
    gap = (gn + 1)[:, None]  # narrow gap g, between z_g and z_{g+1} (1-based: z[:, g - 1], z[:, g])
    inside = (g_lo[en] < gap) & (gap < g_hi[en]) & row_ok[en]
    pi, ri = np.nonzero(inside)  # (narrow gap, right threshold) pairs to settle exactly
    if pi.size:
        e, g = en[pi], gn[pi] + 1
        st, sg, sp = start[e, ri], step[e, ri], stop[e, ri]
        c1, ok1 = _grid_count(z[e, g - 1], st, sg, sp)  # c(z_g)
        c2, ok2 = _grid_count(z[e, g], st, sg, sp)  # c(z_{g+1})
        exact[e[~(ok1 & ok2)]] = False
        skipped = c1 == c2
        idx = ((e * (k + 1) + h[e, ri]) * (k + 1) + g)[skipped]
        cover -= np.bincount(idx, minlength=n_ex * (k + 1) * (k + 1)).reshape(cover.shape)
    tp = np.maximum(cum_p[:, :, None] - cum_p[:, None, :], 0)  # [E, h, g]
    fp = np.maximum(cum_n[:, :, None] - cum_n[:, None, :], 0)
    return (*_table_max(tp, fp, cover > 0, table), exact)


def _double_threshold_best_direct(
    dp: np.ndarray, dn: np.ndarray, width: np.ndarray, table: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``_double_threshold_best`` rule by rule, one example at a time: the reference's grids and
    binary-search counts, ε from the table. Cheaper than the gap method for large populations
    (its cost grows with K², this one's with log K)."""
    n_ex = dp.shape[0]
    perfect = np.zeros(n_ex, bool)
    best = np.full(n_ex, -np.inf)
    for e in range(n_ex):
        w = width[e]
        lo, hi = dp[e, 0] + w - _BUFFER, dp[e, -1] + _BUFFER
        right = np.linspace(lo, hi, num=int(np.ceil((hi - lo) * _PER_UNIT)))
        for c in range(0, right.shape[0], _CHUNK):
            r = right[c : c + _CHUNK]
            left = np.linspace(r - w - _BUFFER, r - w + _BUFFER, num=_N_LEFT, axis=-1)
            tp, fp = _between(dp[e], left, r[:, None]), _between(dn[e], left, r[:, None])
            hit, val = _table_max(tp[None], fp[None], np.ones((1, tp.size), bool), table)
            perfect[e] |= hit[0]
            best[e] = max(best[e], val[0])
    return perfect, best, np.ones(n_ex, bool)


def _single_threshold_best(
    sp: np.ndarray, sn: np.ndarray, table: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Single-threshold rules of §9.2 step 4 (φ ≥ t → positive) for E examples.

    ``sp`` ``[E, a]``, ``sn`` ``[E, b]`` sorted; ``table`` = ``_epsilon_table(a, b, δ)``. The grid
    length follows each example's range, so this loops over examples (two binary searches of a
    few hundred thresholds each: about 0.1 s per thousand examples).
    """
    n_ex, a = sp.shape
    b = sn.shape[1]
    perfect = np.zeros(n_ex, bool)
    best = np.full(n_ex, -np.inf)
    lo, hi = np.minimum(sp[:, 0], sn[:, 0]), np.maximum(sp[:, -1], sn[:, -1])
    for e in range(n_ex):
        thr = _torch_linspace_f32(lo[e], hi[e], math.ceil((hi[e] - lo[e]) * _PER_UNIT))
        if thr.size:
            tp = a - np.searchsorted(sp[e], thr, "left")
            fp = b - np.searchsorted(sn[e], thr, "left")
            hit, val = _table_max(tp[None], fp[None], np.ones((1, thr.size), bool), table)
            perfect[e], best[e] = hit[0], val[0]
    return perfect, best


def _block_epsilon(pos: np.ndarray, neg: np.ndarray, delta: float, cap: float) -> np.ndarray:
    """ε (§9.2 steps 3–8) of E examples with positive ``[E, N_p]`` and negative ``[E, N_n]``
    populations, vectorised over examples."""
    n_ex, n_p = pos.shape
    n_n = neg.shape[1]
    sp, sn = np.sort(pos, axis=1), np.sort(neg, axis=1)
    pos_diff, neg_diff = sp[:, -1] - sp[:, 0], sn[:, -1] - sn[:, 0]
    largest, smallest = np.maximum(pos_diff, neg_diff), np.minimum(pos_diff, neg_diff)
    with np.errstate(divide="ignore", invalid="ignore"):
        degenerate = (largest > 0) & (smallest / largest < 0.01)
    perfect = np.zeros(n_ex, bool)
    best = np.full(n_ex, -np.inf)
    exact = np.ones(n_ex, bool)
    swap = pos_diff >= neg_diff  # double rules: "positive" is the smaller-range population
    k = n_p + n_n
    per_chunk = max(1, _ELEMENTS // (k * max(_N_RIGHT, k + 2)))
    for sw in (False, True):
        sel = np.flatnonzero((swap == sw) & ~degenerate)
        dp, dn = (sn, sp) if sw else (sp, sn)
        table = _epsilon_table(dp.shape[1], dn.shape[1], delta)
        for c in range(0, sel.size, per_chunk):
            idx = sel[c : c + per_chunk]
            method = (
                _double_threshold_best if k <= _GAP_METHOD_MAX_K else _double_threshold_best_direct
            )
            hit, val, ok = method(dp[idx], dn[idx], smallest[idx], table)
            perfect[idx] |= hit
            best[idx] = np.maximum(best[idx], val)
            exact[idx] &= ok
    live = np.flatnonzero(~degenerate & ~perfect)
    hit, val = _single_threshold_best(sp[live], sn[live], _epsilon_table(n_p, n_n, delta))
    perfect[live] |= hit
    best[live] = np.maximum(best[live], val)
    eps = np.where(best > -np.inf, np.clip(best, 0.0, cap), np.nan)
    eps[degenerate | perfect] = cap
    for e in np.flatnonzero(~exact & ~degenerate):
        eps[e] = _example_epsilon_reference(pos[e], neg[e], delta, cap)
    return eps


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
    """Per-example ε lower bounds (docs/protocol.md §9.2 steps 2–8).

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
    for flag in (False, True):  # one block per orientation (the two sizes differ if N_u ≠ N_r)
        cols = np.flatnonzero(retrain_pos == flag)
        if cols.size:
            pos, neg = (r, u) if flag else (u, r)
            eps[cols] = _block_epsilon(pos[:, cols].T, neg[:, cols].T, delta, cap)
    return eps


def _per_example_epsilon_reference(
    phi_unlearned: Any, phi_retrained: Any, delta: float = DELTA, cap: float = EPSILON_CAP
) -> np.ndarray:
    """``per_example_epsilon`` one example and one rule at a time (the test oracle)."""
    u = _phi_matrix("phi_unlearned", phi_unlearned)
    r = _phi_matrix("phi_retrained", phi_retrained)
    retrain_pos = np.median(r, axis=0) > np.median(u, axis=0)
    eps = np.empty(u.shape[1])
    for i in range(u.shape[1]):
        pos, neg = (r[:, i], u[:, i]) if retrain_pos[i] else (u[:, i], r[:, i])
        eps[i] = _example_epsilon_reference(pos, neg, delta, cap)
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
