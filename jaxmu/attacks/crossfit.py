"""Out-of-sample LiRA scoring: hold-out folds over models (docs/protocol.md §8.3 item 8).

No in-sample scoring: a model that contributed to a fit is never scored with that fit.
The default holds out folds of *complementary split pairs* — splits 2i and 2i+1 train on
complementary halves of the pool (§8.3 item 1), so each determines the other and they must
sit in the same fold — fits the Gaussians on every other fold and scores the held-out fold.
Exact leave-one-out (one model per fold) is an option (``folds="loo"``).

Fold arrays are per *model*: for the U-LiRA grid of (split, forget set) models, compute
``split_folds = holdout_folds(S, n_folds)`` once and give model (s, f) the fold
``split_folds[s]``, so the unlearned, retrained and original models of one split (which share
training data) are held out together. A negative fold marks a model that only ever serves in
fits and is never scored (e.g. extra shadow models).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from jaxmu.attacks.lira import (
    FixedVariance,
    as_phi,
    fit_members,
    lira_offline_score,
    lira_online_score,
)

__all__ = ["CrossFitScores", "cross_fitted_scores", "holdout_folds", "leave_one_out_folds"]

Folds = np.ndarray | Literal["loo"]


def holdout_folds(
    n_models: int,
    n_folds: int,
    pair: bool = True,
    rng: np.random.RandomState | np.random.Generator | None = None,
) -> np.ndarray:
    """Fold id in [0, n_folds) for each of ``n_models`` splits (or models).

    With ``pair=True`` the units are the complementary pairs (2i, 2i+1), which always share a
    fold; units are dealt round-robin (unit u → fold u mod n_folds), after a permutation of
    the units by ``rng`` if one is given. Fold sizes differ by at most one unit.
    """
    if n_models < 1:
        raise ValueError(f"n_models must be >= 1, got {n_models}")
    if pair and n_models % 2:
        raise ValueError(f"pair=True needs an even n_models (complementary pairs), got {n_models}")
    n_units = n_models // 2 if pair else n_models
    if not 2 <= n_folds <= n_units:
        raise ValueError(f"n_folds must be in [2, {n_units}] (number of units), got {n_folds}")
    unit_fold = np.arange(n_units) % n_folds
    if rng is not None:
        unit_fold = unit_fold[rng.permutation(n_units)]
    return np.repeat(unit_fold, 2) if pair else unit_fold


def leave_one_out_folds(n_models: int) -> np.ndarray:
    """Exact leave-one-out: every model is its own fold."""
    if n_models < 2:
        raise ValueError(f"leave-one-out needs >= 2 models, got {n_models}")
    return np.arange(n_models)


@dataclass(frozen=True)
class CrossFitScores:
    """Out-of-sample scores [M, N] (NaN where not evaluated, where a fit was empty, or for a
    diverged model).

    Per scored fold (``fold_ids``): member counts of the fits, ``in_count``/``out_count``
    [F, N] (``in_count`` is None offline), and the σ rule each fit used. ``diverged`` [M] marks
    the models whose φ is not finite: they are left out of every fit and never scored.
    """

    scores: np.ndarray
    fold_ids: np.ndarray
    in_count: np.ndarray | None
    out_count: np.ndarray
    fixed_variance_in: np.ndarray | None
    fixed_variance_out: np.ndarray
    diverged: np.ndarray | None = None


def _mask(name: str, x: Any, shape: tuple[int, int]) -> np.ndarray:
    m = np.asarray(x)
    if m.dtype != bool or m.shape != shape:
        raise ValueError(
            f"{name} must be a boolean [M, N] = {shape} array, got {m.dtype} {m.shape}"
        )
    return m


def cross_fitted_scores(
    phi: Any,
    in_mask: Any,
    out_mask: Any,
    eval_mask: Any,
    folds: Folds,
    *,
    mode: Literal["online", "offline"] = "online",
    fixed_variance: FixedVariance = "auto",
    offline_method: Literal["logpdf", "abs_z"] = "logpdf",
) -> CrossFitScores:
    """Score every (model, example) pair of ``eval_mask`` with fits that exclude its fold.

    For each fold k with something to score: fit IN on ``in_mask`` and OUT on ``out_mask``
    restricted to models with fold ≠ k, then score the models of fold k (online: IN/OUT
    likelihood ratio; offline: two-sided OUT-only score). See ``lira.py`` for the formulas.

    A model whose φ has a NaN or inf anywhere (a diverged model) costs only itself: it is
    removed from ``in_mask``, ``out_mask`` and ``eval_mask`` (so it joins no fit and gets no
    score) and flagged in ``diverged``; with no such model the result is unchanged.

    Args:
      phi: ``[M, N, A]`` (or ``[M, N]``) statistics of all models (targets and shadows).
      in_mask, out_mask: boolean ``[M, N]`` population memberships (``in_mask`` unused offline,
        may be None).
      eval_mask: boolean ``[M, N]`` pairs to score.
      folds: int ``[M]`` fold per model (negative: fit-only, never scored), or ``"loo"``.
      mode, fixed_variance, offline_method: scoring options.

    Returns:
      ``CrossFitScores`` with ``scores`` ``[M, N]``.
    """
    p = as_phi(phi)  # float32 stays float32: the fits promote to float64 where they compute
    if p.ndim == 2:
        p = p[..., None]
    if p.ndim != 3:
        raise ValueError(f"phi must be [M, N, A] (or [M, N]), got shape {p.shape}")
    shape = p.shape[:2]
    if mode not in ("online", "offline"):
        raise ValueError(f"mode must be 'online' or 'offline', got {mode!r}")
    inm = _mask("in_mask", in_mask, shape) if mode == "online" else None
    outm = _mask("out_mask", out_mask, shape)
    ev = _mask("eval_mask", eval_mask, shape)
    finite = np.isfinite(p).all(axis=(1, 2))
    if not finite.all():  # diverged models: in no fit, never scored; their φ is zeroed (masked out)
        keep = finite[:, None]
        p = np.where(keep[..., None], p, 0.0)
        inm = inm & keep if inm is not None else None
        outm, ev = outm & keep, ev & keep
    if isinstance(folds, str):
        if folds != "loo":
            raise ValueError(f"folds must be an int array [M] or 'loo', got {folds!r}")
        f = leave_one_out_folds(shape[0])
    else:
        f = np.asarray(folds)
        if f.shape != shape[:1] or not np.issubdtype(f.dtype, np.integer):
            raise ValueError(
                f"folds must be an int array of shape [M] = {shape[:1]}, got {f.shape}"
            )
    if (ev & (f < 0)[:, None]).any():
        raise ValueError("eval_mask selects pairs of fit-only models (negative fold); drop them")

    scores = np.full(shape, np.nan)
    fold_ids = np.unique(f[ev.any(axis=1)])
    in_counts, out_counts, fv_in, fv_out = [], [], [], []
    for k in fold_ids:
        train, test = f != k, f == k
        p_train = p[train]
        fit_out = fit_members(p_train, outm[train], fixed_variance)
        out_counts.append(fit_out.count)
        fv_out.append(fit_out.fixed_variance)
        if mode == "online":
            fit_in = fit_members(p_train, inm[train], fixed_variance)
            in_counts.append(fit_in.count)
            fv_in.append(fit_in.fixed_variance)
            with np.errstate(invalid="ignore"):
                s = lira_online_score(p[test], fit_in, fit_out)
        else:
            with np.errstate(invalid="ignore"):
                s = lira_offline_score(p[test], fit_out, method=offline_method)
        scores[test] = np.where(ev[test], s, np.nan)
    n = shape[1]
    return CrossFitScores(
        scores=scores,
        fold_ids=fold_ids,
        in_count=np.array(in_counts).reshape(-1, n) if mode == "online" else None,
        out_count=np.array(out_counts).reshape(-1, n),
        fixed_variance_in=np.array(fv_in, dtype=bool) if mode == "online" else None,
        fixed_variance_out=np.array(fv_out, dtype=bool),
        diverged=~finite,
    )
