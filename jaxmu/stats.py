"""Intervals over seeds and paired comparisons of stacks (issue 14 items 1-2).

Every model seed s gives one value v_s per stack (the 10 seeds of the benchmark, protocol §5);
stacks of the same setting share their seeds — the original, the retrained model and every
method's unlearned model of seed s start from the same initialisation — so two stacks are
compared *paired* over seeds.

* ``interval``: Student-t interval of the mean over the finite seeds,
  ``mean ± t_{0.975, n-1} · sd / sqrt(n)`` (sd with ddof 1). NaN seeds (diverged models) are
  left out and counted; one seed has no interval (NaN half-width).
* ``paired``: the paired t-test of ``a - b`` over the seeds finite in both: the mean
  difference, its t-interval and the two-sided p-value (``scipy.stats.ttest_rel``). A
  difference whose interval excludes 0 (p < 1 - level) is *significant*.
* ``separation``: the original–retrain gap of each metric (paired), and the one-sentence
  warning a report gives when a tuning objective's gap is within noise: the objective then
  rewards whatever is closest to noise, and "do nothing" can win the tuning.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

import numpy as np

from jaxmu.metrics import summarize

LEVEL = 0.95
METHOD_NOTE = "± is the half-width of a 95% Student-t interval over seeds"


@dataclasses.dataclass(frozen=True)
class Interval:
    """A mean over ``n`` finite seeds (``excluded`` NaN seeds left out) and its half-width."""

    mean: float
    half_width: float
    n: int
    excluded: int = 0
    why: str = "diverged"  # what the excluded (NaN) seeds are: "diverged", "undefined", or "NaN" for both

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width

    def format(self, digits: int = 4) -> str:
        """``0.9811 ± 0.0019``; ``(1 seed)`` or ``(2 of 3; 1 diverged)`` when it applies (``why``
        names the excluded seeds: a metric undefined for a finite model — RetDev when the retrained
        model scores 0 on a split — says ``undefined``)."""
        if self.n == 0:
            return "nan" + (f" (0 of {self.excluded}; {self.excluded} {self.why})" if self.excluded else "")
        hw = "n/a" if math.isnan(self.half_width) else f"{self.half_width:.{digits}f}"
        note = f" ({self.n} of {self.n + self.excluded}; {self.excluded} {self.why})" if self.excluded else (
            " (1 seed)" if self.n == 1 else "")
        return f"{self.mean:.{digits}f} ± {hw}{note}"


def _t_quantile(level: float, dof: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.5 + level / 2, dof))


def interval(values: Any, level: float = LEVEL, diverged: Any = None) -> Interval:
    """The mean of ``values`` (one per seed, NaN = left out) and its t-interval half-width.

    ``diverged`` (bool per seed, optional) tells why NaN seeds are left out: NaN seeds that all
    diverged are ``diverged`` (the default when it is not given), NaN seeds of finite models are
    ``undefined``, a mix is ``NaN``.

    >>> round(interval([1.0, 2.0, 3.0]).half_width, 4)  # t_{.975, 2} * 1 / sqrt(3)
    2.4841
    """
    s = summarize(np.asarray(values, np.float64).reshape(-1))  # NaN seeds left out and counted there
    hw = _t_quantile(level, s.n - 1) * s.std / math.sqrt(s.n) if s.n >= 2 else math.nan
    why = "diverged"
    if diverged is not None and s.n_excluded:
        nan = np.isnan(np.asarray(values, np.float64).reshape(-1))
        d = np.asarray(diverged, bool).reshape(-1)
        why = "diverged" if d[nan].all() else ("undefined" if not d[nan].any() else "NaN")
    return Interval(float(s.mean), hw, s.n, s.n_excluded, why)


@dataclasses.dataclass(frozen=True)
class Paired:
    """``a - b`` paired over the seeds finite in both: its interval and two-sided p-value."""

    diff: Interval
    p_value: float
    level: float = LEVEL

    @property
    def significant(self) -> bool:
        return self.p_value < 1.0 - self.level


def paired(a: Any, b: Any, level: float = LEVEL) -> Paired:
    """Paired t-test of ``a - b`` (same seeds, same order).

    >>> paired([0.9, 0.8, 0.7, 0.9], [0.5, 0.4, 0.45, 0.5]).significant
    True
    """
    a, b = np.asarray(a, np.float64).reshape(-1), np.asarray(b, np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"paired comparison needs one value per seed on both sides; got {a.size} and {b.size}")
    d = a - b
    diff = interval(d, level)
    ok = ~np.isnan(d)
    if diff.n < 2 or float(np.ptp(d[ok])) == 0.0:
        p = math.nan if diff.n < 2 else (1.0 if diff.mean == 0.0 else 0.0)
        return Paired(diff, p, level)
    import warnings

    from scipy.stats import ttest_rel

    with warnings.catch_warnings():  # near-constant differences: scipy warns of precision, p is still ~0
        warnings.simplefilter("ignore", RuntimeWarning)
        return Paired(diff, float(ttest_rel(a[ok], b[ok]).pvalue), level)


# The HPO objective each metric feeds (protocol §7.1): the gap original-retrain of that metric is
# what a tuned method has room to close.
OBJECTIVE_OF = {"retain_acc": "|RA_u - RA_R|", "forget_acc": "|FA_u - FA_R|", "val_acc": "|VA_u - VA_R|",
                "val_mia": "|2 ValMIA_u - 1|"}


def separation(original: Mapping[str, Any], retrain: Mapping[str, Any], metrics: Sequence[str],
               level: float = LEVEL) -> dict[str, Paired]:
    """The paired original − retrain gap of each metric present in both."""
    return {m: paired(original[m], retrain[m], level) for m in metrics if m in original and m in retrain}


def separation_table(gaps: Mapping[str, Paired]) -> str:
    """Markdown: metric, the objective it feeds, gap ± interval, p, separates?"""
    lines = ["| metric | tuning objective | original − retrain | p (paired t) | separates? |", "|---|---|---|---|---|"]
    for m, g in gaps.items():
        p = "n/a" if math.isnan(g.p_value) else f"{g.p_value:.3g}"
        objective = OBJECTIVE_OF.get(m, "—").replace("|", "\\|")  # a literal | inside a markdown cell
        lines.append(f"| {m} | {objective} | {g.diff.format()} | {p} | "
                     f"{'yes' if g.significant else '**no**'} |")
    return "\n".join(lines)


def separation_warnings(gaps: Mapping[str, Paired]) -> list[str]:
    """One sentence per tuning objective whose original–retrain gap is within noise."""
    out = []
    for m, g in gaps.items():
        if m in OBJECTIVE_OF and not g.significant:
            out.append(f"warning: original and retrain do not differ beyond noise in {m} (gap {g.diff.format()}, "
                       f"p = {g.p_value:.2g}): the tuning objective {OBJECTIVE_OF[m]} measures noise in this setting.")
    return out
