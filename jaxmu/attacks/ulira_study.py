"""The Deep Unlearn study's own U-LiRA variant (docs/protocol.md §8.1), replayed on jaxmu's populations.

The reference (``munl/lira/gather_lira_predictions.py``, ``consolidate_predictions.py``; CIFAR-10
with ResNet-18 only) scores each forgotten instance with a per-example Gaussian likelihood ratio on
the **0/1 correctness** z = 1[argmax p(x) = y] of the *same method's* unlearned models:

* forgotten(x): the unlearned models whose forget set held x; never(x): the unlearned models
  whose split never saw x (both sides are unlearned models — the OUT side is "unlearned but
  never seen", not "retrained");
* μ_f, σ_f = mean and population standard deviation of z over forgotten(x); μ_n, σ_n over
  never(x) — fitted **in sample** (the scored models are part of their own fit);
* for each forgotten instance (model m, example x):
  P(member) = N(z; μ_f, σ_f) / (N(z; μ_f, σ_f) + N(z; μ_n, σ_n)), equal priors.

The step that turns these per-instance P into the paper's single number is not in the reference
repository; jaxmu reports, as docs/protocol.md §8.1 recommends, the mean P over forgotten instances
(0.5 = indistinguishable), the fraction with P > 0.5, and the number of degenerate examples.
**Where the reference is silent, jaxmu decides**: with 0/1 statistics σ = 0 whenever a side is
all-correct or all-wrong and the Gaussian density is undefined (the reference does not guard);
such an example is *degenerate*, its instances get P = NaN, and it is left out of the mean and
the fraction and counted instead (so is an example with an empty side). These numbers are not
comparable with the Hayes-style or cross-fitted numbers of ``jaxmu.attacks.ulira`` (§8.3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from jaxmu.attacks.ulira import FORGOTTEN, NEVER_SEEN

__all__ = ["StudyULiRA", "ulira_study"]


@dataclass(frozen=True)
class StudyULiRA:
    """Per-instance P(member) ``[M, N]`` (NaN where x was not forgotten by m or is degenerate)
    and the summary of docs/protocol.md §8.1."""

    p_member: np.ndarray
    mean_p: float
    frac_above_half: float
    n_instances: int
    n_degenerate: int

    def summary(self) -> dict[str, float]:
        return {"study_mean_p": self.mean_p, "study_frac_p_gt_half": self.frac_above_half,
                "study_instances": float(self.n_instances), "study_degenerate_examples": float(self.n_degenerate)}


def _normal_pdf(z: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.exp(-0.5 * ((z - mu) / sigma) ** 2) / (sigma * np.sqrt(2.0 * np.pi))


def _side(z: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = mask.sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        mu = np.where(mask, z, 0.0).sum(0) / n
        var = np.where(mask, (z - mu) ** 2, 0.0).sum(0) / n
    return mu, np.sqrt(var)


def ulira_study(correct: Any, roles: Any) -> StudyULiRA:
    """The §8.1 variant for one method's unlearned population (see module).

    Args:
      correct: ``[M, N]`` 0/1 (or bool) correctness of each unlearned model on each pool example.
      roles: ``[M, N]`` roles as in ``jaxmu.attacks.ulira`` (0 never seen, 1 retained, 2 forgotten).
    """
    z = np.asarray(correct)
    r = np.asarray(roles)
    if z.ndim != 2 or r.shape != z.shape:
        raise ValueError(f"correct and roles must both be [models, examples]; got {z.shape} and {r.shape}")
    if not np.isin(z, (0, 1)).all():
        raise ValueError("correct must hold 0/1 correctness (argmax p(x) == y), not scores")
    z = z.astype(np.float64)
    forgot, never = r == FORGOTTEN, r == NEVER_SEEN
    mu_f, sd_f = _side(z, forgot)
    mu_n, sd_n = _side(z, never)
    degenerate = ~((sd_f > 0) & (sd_n > 0))  # σ = 0 or an empty side (NaN)
    with np.errstate(divide="ignore", invalid="ignore"):
        d_f, d_n = _normal_pdf(z, mu_f, sd_f), _normal_pdf(z, mu_n, sd_n)
        p = d_f / (d_f + d_n)
    p = np.where(forgot & ~degenerate[None], p, np.nan)
    scored = p[~np.isnan(p)]
    return StudyULiRA(
        p_member=p,
        mean_p=float(scored.mean()) if scored.size else float("nan"),
        frac_above_half=float((scored > 0.5).mean()) if scored.size else float("nan"),
        n_instances=int(scored.size),
        n_degenerate=int((degenerate & forgot.any(0)).sum()),
    )
