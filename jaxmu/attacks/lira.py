"""LiRA building blocks: the statistic φ (JAX) and per-example Gaussian fits and scores (NumPy).

protocol.md §8.2 (LiRA conventions, ``tensorflow/privacy`` ``research/mi_lira_2021``) and
§8.3 items 4, 6, 7 (jaxmu's U-LiRA protocol).

* φ = z_y − logsumexp_{k≠y} z_k, the logit-scaled confidence log(p_y / (1 − p_y)) computed
  from logits with a masked logsumexp in float32 — never log(p/(1−p)) of a float32 softmax,
  which saturates near φ ≈ 16.6 (§8.3 item 4). Device side, works under ``jit``/``vmap``.
  The float64 reference with the 1e-45 floor is ``neurips_score.logit_scaled_confidence_reference``.
* Fits over the model axis with a membership mask (§8.3 item 6): μ = median (masked, exact,
  as NumPy's median of the members), σ = population std (ddof 0) + 1e-30 (LiRA ``plot.py``).
  Fixed-variance option: one σ per population = std of the pooled residuals φ − μ(x) over
  members, examples and augmentations (``tensorflow_privacy``'s
  ``compute_score_lira(fix_variance=True)``; LiRA's ``plot.py`` instead pools raw, uncentred
  IN scores — jaxmu uses residuals, §8.3 item 6).
* Scores (§8.3 item 7), higher = more likely IN:
  online = mean_A [log N(φ; μ_in, σ_in²) − log N(φ; μ_out, σ_out²)];
  offline two-sided = −mean_A log N(φ; μ_out, σ_out²) (the reference code's choice), or
  mean_A |φ − μ_out| / σ_out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

import numpy as np

__all__ = [
    "FIXED_VARIANCE_THRESHOLD",
    "GaussianFit",
    "choose_fixed_variance",
    "fit_gaussians",
    "gaussian_logpdf",
    "lira_offline_score",
    "lira_online_score",
    "logit_scaled_confidence",
]

SIGMA_FLOOR = 1e-30
FIXED_VARIANCE_THRESHOLD = 64  # §8.3 item 6: fixed variance below 64 members (unconfirmed)
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)

FixedVariance = bool | Literal["auto"]


def logit_scaled_confidence(logits: Any, labels: Any) -> Any:
    """φ = z_y − logsumexp_{k≠y} z_k in JAX, at least float32 (§8.2, §8.3 item 4).

    Args:
      logits: ``[..., C]`` (e.g. ``[M, n, C]`` from a vmapped apply), C ≥ 2.
      labels: integer labels broadcastable to ``logits.shape[:-1]``.

    Returns:
      φ with shape ``logits.shape[:-1]``. Finite for finite logits: logits [0, 40] with
      y = 1 give φ = 40 (no saturation, no inf/NaN). Usable under ``jit`` and ``vmap``.
    """
    import jax
    import jax.numpy as jnp

    z = jnp.asarray(logits)
    z = z.astype(jnp.promote_types(z.dtype, jnp.float32))
    if z.ndim < 1 or z.shape[-1] < 2:
        raise ValueError(f"logits must be [..., C] with C >= 2, got shape {z.shape}")
    y = jnp.asarray(labels)
    if not jnp.issubdtype(y.dtype, jnp.integer):
        raise ValueError(f"labels must be integers, got dtype {y.dtype}")
    try:
        y = jnp.broadcast_to(y, z.shape[:-1])
    except ValueError:
        raise ValueError(f"labels {y.shape} do not broadcast to logits {z.shape[:-1]}") from None
    onehot = y[..., None] == jnp.arange(z.shape[-1])
    z_y = jnp.sum(jnp.where(onehot, z, 0.0), axis=-1)
    z_rest = jax.nn.logsumexp(jnp.where(onehot, -jnp.inf, z), axis=-1)
    return z_y - z_rest


class GaussianFit(NamedTuple):
    """Per-example Gaussian fit of one population: ``mu``/``sigma`` [N, A], ``count`` [N].

    Examples without members have NaN ``mu`` and ``sigma`` and score NaN.
    ``fixed_variance`` records which σ rule produced ``sigma``.
    """

    mu: np.ndarray
    sigma: np.ndarray
    count: np.ndarray
    fixed_variance: bool = False


def _phi_and_mask(phi: Any, mask: Any) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(phi, dtype=np.float64)
    if p.ndim == 2:
        p = p[..., None]  # a single augmentation
    if p.ndim != 3:
        raise ValueError(f"phi must be [M, N, A] (or [M, N]), got shape {p.shape}")
    m = np.asarray(mask)
    if m.dtype != bool:
        raise ValueError(f"member_mask must be boolean [M, N], got dtype {m.dtype}")
    if m.shape != p.shape[:2]:
        raise ValueError(f"member_mask shape {m.shape} must equal phi's [M, N] = {p.shape[:2]}")
    if not np.isfinite(p[m]).all():
        raise ValueError("phi has NaN or inf at member positions; compute φ from logits")
    return p, m


def choose_fixed_variance(count: Any, threshold: int = FIXED_VARIANCE_THRESHOLD) -> bool:
    """True when the typical population is small: median member count (over examples with
    members) below ``threshold`` (§8.3 item 6; LiRA README: fixed variance wins at 16)."""
    c = np.asarray(count)
    c = c[c > 0]
    return bool(c.size == 0 or np.median(c) < threshold)


def fit_gaussians(
    phi: Any, member_mask: Any, *, fixed_variance: FixedVariance = False
) -> GaussianFit:
    """Fit N(μ(x), σ(x)²) per example and augmentation over the population's models.

    Args:
      phi: ``[M, N, A]`` statistics of M models on N examples with A augmentations
        (``[M, N]`` is read as A = 1). Values outside the mask are ignored (may be NaN).
      member_mask: boolean ``[M, N]``: model m belongs to the population for example n.
      fixed_variance: ``False`` (per-example σ), ``True`` (one pooled σ from residuals), or
        ``"auto"`` (``choose_fixed_variance`` on the member counts).

    Returns:
      ``GaussianFit(mu [N, A], sigma [N, A], count [N], fixed_variance)``;
      μ = median of the members, σ = std (ddof 0) + 1e-30.
    """
    p, m = _phi_and_mask(phi, member_mask)
    count = m.sum(axis=0)
    if fixed_variance == "auto":
        fixed_variance = choose_fixed_variance(count)
    elif not isinstance(fixed_variance, (bool, np.bool_)):
        raise ValueError(f"fixed_variance must be True, False or 'auto', got {fixed_variance!r}")
    masked = np.where(m[..., None], p, np.nan)
    # Exact masked median: NaNs sort last, members occupy the first count rows.
    s = np.sort(masked, axis=0)
    c = np.broadcast_to(count[:, None], s.shape[1:])
    lo = np.take_along_axis(s, np.maximum((c - 1) // 2, 0)[None], axis=0)[0]
    hi = np.take_along_axis(s, np.minimum(c // 2, max(s.shape[0] - 1, 0))[None], axis=0)[0]
    has = c > 0
    mu = np.where(has, 0.5 * (lo + hi), np.nan)
    resid = masked - mu[None]
    if fixed_variance:
        r = resid[np.broadcast_to(m[..., None], resid.shape)]
        sd = float(np.std(r)) if r.size else math.nan
        sigma = np.where(has, sd + SIGMA_FLOOR, np.nan)
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.nansum(masked, axis=0) / c
            var = np.nansum((masked - mean[None]) ** 2, axis=0) / c
        sigma = np.where(has, np.sqrt(var) + SIGMA_FLOOR, np.nan)
    return GaussianFit(mu=mu, sigma=sigma, count=count, fixed_variance=bool(fixed_variance))


def gaussian_logpdf(x: Any, mu: Any, sigma: Any) -> np.ndarray:
    """log N(x; μ, σ²) = −½((x − μ)/σ)² − ln σ − ½ ln 2π, in float64 (σ down to 1e-30 is safe)."""
    x, mu, sigma = (np.asarray(v, dtype=np.float64) for v in (x, mu, sigma))
    z = (x - mu) / sigma
    return -0.5 * z * z - np.log(sigma) - _LOG_SQRT_2PI


def _target(phi_target: Any, fit: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """φ_target as [..., N, A] float64 plus the fit's μ, σ [N, A]."""
    mu, sigma = np.asarray(fit[0], np.float64), np.asarray(fit[1], np.float64)
    if mu.ndim != 2 or sigma.shape != mu.shape:
        raise ValueError(f"fit mu/sigma must both be [N, A], got {mu.shape} and {sigma.shape}")
    t = np.asarray(phi_target, dtype=np.float64)
    if t.shape[-2:] != mu.shape:
        if mu.shape[1] == 1 and t.shape[-1:] == mu.shape[:1]:
            t = t[..., None]  # [..., N] against a single-augmentation fit
        else:
            raise ValueError(
                f"phi_target shape {t.shape} must end in the fit's [N, A] = {mu.shape}"
            )
    return t, mu, sigma


def lira_online_score(phi_target: Any, fit_in: Sequence[Any], fit_out: Sequence[Any]) -> np.ndarray:
    """Online LiRA score mean_A [log N(φ; μ_in, σ_in²) − log N(φ; μ_out, σ_out²)] (§8.3 item 7).

    Args:
      phi_target: ``[..., N, A]`` φ of target models (leading axes e.g. the model axis).
      fit_in, fit_out: ``GaussianFit`` (or ``(mu, sigma, ...)``) with ``mu``/``sigma`` [N, A].

    Returns:
      ``[..., N]`` log-likelihood ratios, higher = more likely IN; NaN where a fit is empty.
    """
    t, mu_in, s_in = _target(phi_target, fit_in)
    _, mu_out, s_out = _target(phi_target, fit_out)
    llr = gaussian_logpdf(t, mu_in, s_in) - gaussian_logpdf(t, mu_out, s_out)
    return llr.mean(axis=-1)


def lira_offline_score(
    phi_target: Any, fit_out: Sequence[Any], *, method: Literal["logpdf", "abs_z"] = "logpdf"
) -> np.ndarray:
    """Offline (OUT-only), two-sided LiRA score (§8.2, §8.3 item 7), higher = more likely IN.

    ``"logpdf"``: −mean_A log N(φ; μ_out, σ_out²) (the reference code's scoring);
    ``"abs_z"``: mean_A |φ − μ_out| / σ_out. Two-sided because unlearning can over-forget.
    """
    t, mu, sigma = _target(phi_target, fit_out)
    if method == "logpdf":
        return -gaussian_logpdf(t, mu, sigma).mean(axis=-1)
    if method == "abs_z":
        return (np.abs(t - mu) / sigma).mean(axis=-1)
    raise ValueError(f"method must be 'logpdf' or 'abs_z', got {method!r}")
