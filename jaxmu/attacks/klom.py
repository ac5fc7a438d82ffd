"""KLOM: the KL divergence of margins between unlearned models and oracle retrains.

Georgiev et al., "Attribute-to-Delete: Machine Unlearning via Datamodel Matching" (2024), and
their data-unlearning-bench (``src/eval.py``: ``compute_binned_KL_div``, ``kl_from_margins``).
Unlearning is judged against the *distribution* of outcomes over training randomness: for each
example x, the margins of many unlearned models (one per training/unlearning seed) are one
sample, the margins of many oracle retrains (trained without the forget set) another, and

    KLOM(x) = KL( P_unlearned(margin(x)) ‖ P_oracle(margin(x)) )

estimated with histograms. A benchmark reports a high percentile (the 95th) of KLOM(x) over the
forget, retain and validation points separately: 0 means the unlearned models are
indistinguishable from retraining on that point.

The estimator, as published (reproduced exactly, including its edge cases):

* margin(x) = z_y − logsumexp_{k≠y} z_k — exactly LiRA's logit-scaled confidence φ
  (``jaxmu.attacks.lira.logit_scaled_confidence``), which the evaluator records per example;
* both samples are clipped to [−100, 100];
* per example, 20 equal-width bins spanning min..max of the two clipped samples together
  (``linspace(lo, hi, 21)``; when lo = hi the range is [lo, lo + 1]);
* a sample falls in bin i when edge_{i−1} ≤ v < edge_i — ``np.digitize`` semantics, so a sample
  equal to the combined maximum falls past the last edge and is **not counted** (the published
  code's quirk; it is kept so numbers compare with the benchmark's);
* p, q = bin counts / totals; where p > 0, q is floored at ε = 1e-5; both are then renormalised
  (``scipy.stats.entropy``) and KL = Σ p log(p / q) over bins with p > 0. A side whose every
  sample sits at the maximum has no counted sample, and KLOM(x) is NaN (0/0 in the reference).

Everything is vectorized over examples (no Python loop over points): the bin index of a value is
the number of edges ≤ it, found by comparing against the 21 edges of its column.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

__all__ = ["KLOM_BINS", "KLOM_CLIP", "KLOM_EPS", "KLOM_PERCENTILE", "klom", "klom_summary"]

KLOM_BINS = 20
KLOM_CLIP = 100.0
KLOM_EPS = 1e-5
KLOM_PERCENTILE = 95.0


def _samples(name: str, x: Any) -> np.ndarray:
    a = np.asarray(x, np.float64)
    if a.ndim != 2 or a.shape[0] < 1:
        raise ValueError(f"{name} must be [models, examples] with at least one model, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} has non-finite margins; drop diverged models before KLOM")
    return np.clip(a, -KLOM_CLIP, KLOM_CLIP)


def _bin_probabilities(v: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Per-column bin frequencies ``[bins, N]`` (a sample at or past the last edge is not counted)."""
    index = (v[:, :, None] >= edges[None]).sum(-1)  # [M, N] in 0..bins+1; 1..bins are counted
    counts = np.stack([(index == i).sum(0) for i in range(1, edges.shape[-1])])
    with np.errstate(invalid="ignore", divide="ignore"):
        return counts / counts.sum(0)


def klom(margins_unlearned: Any, margins_oracle: Any, *, chunk: int = 4096) -> np.ndarray:
    """KLOM(x) for every example: ``[N]`` from margins ``[M_u, N]`` and ``[M_o, N]`` (see module).

    The two populations may have different sizes (the published code requires equal ones;
    the estimator does not). ``chunk`` bounds memory (examples per block).
    """
    u = _samples("margins_unlearned", margins_unlearned)
    o = _samples("margins_oracle", margins_oracle)
    if u.shape[1] != o.shape[1]:
        raise ValueError(f"both populations need the same examples: {u.shape[1]} vs {o.shape[1]} columns")
    out = np.empty(u.shape[1])
    steps = np.arange(KLOM_BINS + 1, dtype=np.float64)
    for s in range(0, u.shape[1], chunk):
        uu, oo = u[:, s:s + chunk], o[:, s:s + chunk]
        lo = np.minimum(uu.min(0), oo.min(0))
        hi = np.maximum(uu.max(0), oo.max(0))
        hi = np.where(lo >= hi, lo + 1.0, hi)
        edges = lo[:, None] + steps[None] * ((hi - lo) / KLOM_BINS)[:, None]  # np.linspace's formula
        edges[:, -1] = hi
        p = _bin_probabilities(uu, edges)
        q = _bin_probabilities(oo, edges)
        q = np.where(p > 0, np.maximum(q, KLOM_EPS), q)
        with np.errstate(invalid="ignore", divide="ignore"):
            p = p / p.sum(0)
            q = q / q.sum(0)
            terms = np.where(p > 0, p * np.log(p / q), 0.0)
        out[s:s + chunk] = np.where(np.isnan(p).any(0), np.nan, terms.sum(0))
    return out


def klom_summary(per_example: Any, groups: Mapping[str, Any], percentile: float = KLOM_PERCENTILE) -> dict[str, float]:
    """The reported numbers: the ``percentile``-th KLOM over each group's examples.

    ``groups`` maps a name (``forget``, ``retain``, ``val``) to the column indices (or a boolean
    mask) of its examples. NaN examples (degenerate, see module) are left out of the percentile;
    a group with none left reports NaN.
    """
    k = np.asarray(per_example, np.float64)
    out: dict[str, float] = {}
    for name, sel in groups.items():
        sel = np.asarray(sel)
        v = k[sel if sel.dtype == bool else sel.astype(np.intp)]
        v = v[~np.isnan(v)]
        out[name] = float(np.percentile(v, percentile)) if v.size else float("nan")
    return out
