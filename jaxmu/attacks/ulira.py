"""U-LiRA: per-example unlearning inference, both formulations of docs/protocol.md §8.3 (items 5, 9).

Inputs are the recorded arrays of §8.3 item 4: φ ``[M, N, A]`` for every model, example and
augmentation, and a role array ``[M, N]`` saying what each model did with each example:
``NEVER_SEEN`` (0, x in the never-seen half of the model's split), ``RETAINED`` (1, trained on
and kept) or ``FORGOTTEN`` (2, x in the model's forget set). For a retrained model R_{s,f} the
role of x ∈ F(s, f) is FORGOTTEN (it was not trained on x).

* Hayes et al. (``ulira_hayes``): IN = unlearned models U with x forgotten; OUT = retrained
  models R not trained on x (roles NEVER_SEEN or FORGOTTEN). Pairs: positives (U_{s,f}, x),
  negatives (R_{s,f}, x) for x ∈ F(s, f) — balanced by construction.
* Deep Unlearn style (``ulira_deepunlearn``): IN as above; OUT = the same method's unlearned
  models with x never seen. Pairs: positives (U, x forgotten), negatives (U, x never seen),
  the larger side subsampled without replacement with the given random state to balance.

Scores come from ``cross_fitted_scores`` (no in-sample scoring, §8.3 item 8): ``folds_*`` give
each model's hold-out fold (``holdout_folds`` over splits, mapped to models by split), so
models of one split pair are never scored with fits they contributed to. The default σ rule is
``"auto"`` (fixed variance below 64 members per example, §8.3 item 6). Scores are higher for
"unlearned" (positive). A model whose φ is not finite (a diverged unlearned or retrained
model) is excluded from every fit and pair and counted in ``n_diverged``, not a crash. These
numbers are not comparable with the benchmark's own variant
(§8.1), which uses 0/1 correctness and in-sample fits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from jaxmu.attacks.crossfit import CrossFitScores, Folds, cross_fitted_scores
from jaxmu.attacks.lira import FixedVariance, as_phi
from jaxmu.attacks.roc import attack_summary

__all__ = ["FORGOTTEN", "NEVER_SEEN", "RETAINED", "ULiraResult", "ulira_deepunlearn", "ulira_hayes"]

NEVER_SEEN, RETAINED, FORGOTTEN = 0, 1, 2


@dataclass(frozen=True)
class ULiraResult:
    """Scored evaluation pairs of one U-LiRA run.

    ``scores``/``labels`` (1 = unlearned-and-forgotten, the positive class) and the pair's
    ``model_index`` (row of the stacked targets: for Hayes, U rows 0..M_u−1 then R rows
    M_u..M_u+M_r−1; use it as bootstrap groups) and ``example_index``. Pairs whose fit was
    empty (no IN or OUT member outside the fold) are dropped and counted in ``n_unscored``;
    models with non-finite φ (diverged) are left out of the fits and pairs, counted in
    ``n_diverged``.
    """

    scores: np.ndarray  # [P]
    labels: np.ndarray  # [P] bool
    model_index: np.ndarray  # [P]
    example_index: np.ndarray  # [P]
    summary: dict[str, float]
    formulation: str
    mode: str
    n_unscored: int
    fits: CrossFitScores
    n_diverged: int = 0


def _roles(name: str, role: Any, phi: Any) -> tuple[np.ndarray, np.ndarray]:
    p = as_phi(phi)  # float32 stays float32 (exact: the statistics promote where they compute)
    if p.ndim == 2:
        p = p[..., None]
    if p.ndim != 3:
        raise ValueError(f"phi for {name} must be [M, N, A] (or [M, N]), got shape {p.shape}")
    r = np.asarray(role)
    if r.shape != p.shape[:2]:
        raise ValueError(f"{name} shape {r.shape} must equal phi's [M, N] = {p.shape[:2]}")
    if not np.issubdtype(r.dtype, np.integer) or not np.isin(r, (0, 1, 2)).all():
        raise ValueError(f"{name} must hold ints in {{0 never-seen, 1 retained, 2 forgotten}}")
    return p, r


def _folds(name: str, folds: Folds, m: int) -> Folds:
    if isinstance(folds, str):
        return folds
    f = np.asarray(folds)
    if f.shape != (m,) or not np.issubdtype(f.dtype, np.integer):
        raise ValueError(f"{name} must be an int array [M] = [{m}], got {f.dtype} {f.shape}")
    return f


def _result(
    fits: CrossFitScores,
    eval_mask: np.ndarray,
    label_map: np.ndarray,
    formulation: str,
    mode: str,
) -> ULiraResult:
    """Collect the scored pairs of ``eval_mask``; ``label_map`` [M, N] is True for positives."""
    if fits.diverged is not None:
        eval_mask = eval_mask & ~fits.diverged[:, None]
    rows, cols = np.nonzero(eval_mask)
    s = fits.scores[rows, cols]
    ok = ~np.isnan(s)
    labels = label_map[rows, cols][ok]
    return ULiraResult(
        scores=s[ok],
        labels=labels,
        model_index=rows[ok],
        example_index=cols[ok],
        summary=attack_summary(s[ok], labels),
        formulation=formulation,
        mode=mode,
        n_unscored=int((~ok).sum()),
        fits=fits,
        n_diverged=int(fits.diverged.sum()) if fits.diverged is not None else 0,
    )


def ulira_hayes(
    phi_u: Any,
    role_u: Any,
    phi_r: Any,
    role_r: Any,
    folds_u: Folds,
    folds_r: Folds,
    *,
    mode: Literal["online", "offline"] = "online",
    fixed_variance: FixedVariance = "auto",
    offline_method: Literal["logpdf", "abs_z"] = "logpdf",
) -> ULiraResult:
    """Hayes-style U-LiRA (§8.2, §8.3 items 5 and 9): unlearned vs retrained on x ∈ F.

    Args:
      phi_u, role_u: ``[M_u, N, A]`` φ and ``[M_u, N]`` roles of the unlearned models.
      phi_r, role_r: the same for the retrained models (``A`` and ``N`` must match).
      folds_u, folds_r: hold-out fold per model (``[M_u]``, ``[M_r]``; the same fold numbering,
        typically ``split_folds[split_of_model]``); ``"loo"`` for both gives leave-one-out.
      mode: ``"online"`` (IN/OUT likelihood ratio) or ``"offline"`` (OUT only, two-sided).
    """
    pu, ru = _roles("role_u", role_u, phi_u)
    pr, rr = _roles("role_r", role_r, phi_r)
    if pu.shape[1:] != pr.shape[1:]:
        raise ValueError(f"U and R φ disagree on [N, A]: {pu.shape[1:]} vs {pr.shape[1:]}")
    mu, mr = pu.shape[0], pr.shape[0]
    fu, fr = _folds("folds_u", folds_u, mu), _folds("folds_r", folds_r, mr)
    if isinstance(fu, str) != isinstance(fr, str):
        raise ValueError("folds_u and folds_r must both be arrays or both be 'loo'")
    folds: Folds = "loo" if isinstance(fu, str) else np.concatenate([fu, fr])
    zeros_u, zeros_r = np.zeros_like(ru, dtype=bool), np.zeros_like(rr, dtype=bool)
    in_mask = np.concatenate([ru == FORGOTTEN, zeros_r])
    out_mask = np.concatenate([zeros_u, rr != RETAINED])
    eval_mask = np.concatenate([ru == FORGOTTEN, rr == FORGOTTEN])
    fits = cross_fitted_scores(
        np.concatenate([pu, pr]),
        in_mask,
        out_mask,
        eval_mask,
        folds,
        mode=mode,
        fixed_variance=fixed_variance,
        offline_method=offline_method,
    )
    label_map = np.concatenate([ru == FORGOTTEN, zeros_r])
    return _result(fits, eval_mask, label_map, "hayes", mode)


def ulira_deepunlearn(
    phi_u: Any,
    role_u: Any,
    folds_u: Folds,
    *,
    rng: np.random.RandomState | np.random.Generator,
    mode: Literal["online", "offline"] = "online",
    fixed_variance: FixedVariance = "auto",
    offline_method: Literal["logpdf", "abs_z"] = "logpdf",
) -> ULiraResult:
    """Deep-Unlearn-style U-LiRA (§8.3 items 5 and 9): forgotten vs never seen, same method.

    Positive pairs (U, x forgotten), negative pairs (U, x never seen); the larger side is
    subsampled without replacement by ``rng`` to balance. ``model_index`` indexes ``phi_u``.
    """
    if not isinstance(rng, (np.random.RandomState, np.random.Generator)):
        raise TypeError("rng must be a np.random.RandomState or np.random.Generator")
    pu, ru = _roles("role_u", role_u, phi_u)
    fu = _folds("folds_u", folds_u, pu.shape[0])
    finite = np.isfinite(pu).all(axis=(1, 2))[:, None]  # a diverged model joins no pair
    pos, neg = (ru == FORGOTTEN) & finite, (ru == NEVER_SEEN) & finite
    n_pos, n_neg = int(pos.sum()), int(neg.sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("need both forgotten and never-seen (model, example) pairs")
    eval_mask = np.zeros_like(pos)
    for side, n_keep in ((pos, min(n_pos, n_neg)), (neg, min(n_pos, n_neg))):
        flat = np.flatnonzero(side)
        pick = flat if flat.size == n_keep else np.sort(rng.choice(flat, n_keep, replace=False))
        eval_mask.flat[pick] = True
    fits = cross_fitted_scores(
        pu,
        pos,
        neg,
        eval_mask,
        fu,
        mode=mode,
        fixed_variance=fixed_variance,
        offline_method=offline_method,
    )
    return _result(fits, eval_mask, pos, "deepunlearn", mode)


def forgotten_populations(phi: np.ndarray, roles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-example φ over the models that forgot it: ``[n_per_example, n_examples]`` and the columns.

    Keeps the examples forgotten by the most common number of models (S/2 for a partition),
    so the populations are rectangular for the NeurIPS ε score.
    """
    forgot = roles == FORGOTTEN
    counts = forgot.sum(0)
    target = np.bincount(counts[counts > 0]).argmax() if (counts > 0).any() else 0
    cols = np.flatnonzero(counts == target)
    mat = np.stack([phi[forgot[:, c], c] for c in cols], axis=1) if len(cols) else np.zeros((0, 0))
    return mat, cols
