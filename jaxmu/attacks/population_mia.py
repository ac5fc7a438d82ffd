"""Population (loss-threshold) membership inference of Deep Unlearn (docs/protocol.md §6.2).

Host-side NumPy (scikit-learn for the reference path); only the per-example losses come from
the device (``jaxmu.metrics.per_example_ce``). Procedure for one model and a held-out set H
(``munl/evaluation/membership_inference_attack.py: evaluate_mia_on_pointwise_losses``):

1. shuffle H's loss array, then D_f's, with one random stream (the reference uses NumPy's
   global generator, seeded with 123 once per model evaluation; the Val MIA runs first and
   the Test MIA continues the same stream with a fresh, stored-order D_f array);
2. keep the first m = min(|D_f|, |H|) of each;
3. rows: the m D_f losses labelled 0, then the m H losses labelled 1 (the reference's
   variable names say the opposite; the layout matters for bit-exact fold replay);
4. ``LogisticRegression()`` defaults on the single unscaled loss feature;
5. ``StratifiedShuffleSplit(n_splits=10, test_size=0.1, random_state=123)``, accuracy;
6. MIA = mean of the 10 fold accuracies (0.5 is ideal).

Two implementations:

* ``population_mia`` / ``model_mias``: one model, scikit-learn itself (``cross_val_score``);
  the reference oracle. ``population_mia(f, h, rng=np.random.RandomState(123))`` reproduces
  the golden values (``tests/fixtures/golden_metrics.npz``, ``mia{i}``) to the last bit, and
  ``model_mias`` the reference's pair (Val MIA, Test MIA) of one evaluation.
* ``population_mia_stacked`` / ``model_mias_stacked`` (used by the pipeline and the HPO): a
  model stack at once. Steps 1–3 run per model with its own ``RandomState(seed)`` (same
  draws as above); the folds of step 5 are computed once per m (they depend only on the label
  layout and ``random_state``); all models × folds logistic regressions of step 4 are fitted
  in one vectorized call of ``jaxmu.attacks.logistic.fit_logistic_lbfgs``, a replay of
  scikit-learn's ``lbfgs`` (SciPy L-BFGS-B) trajectory and stopping point.

Why a replay and not the exact optimum: L-BFGS-B stops at ``max|∇F| ≤ 1e-4`` (``tol``), which
on weakly separable losses (MIA near 0.5, the interesting case) happens after 0–3
iterations, well before the optimum. Measured on 32-model stacks of 180 vs 180 losses (folds
of 324 train / 36 test rows), predictions of the exact optimum (``fit_logistic_exact``) vs
scikit-learn: equal distributions — 7 of 320 folds differ (up to 22 of 36 test rows), 5 of 32
MIAs change, by up to 0.0083; Gamma(1) vs Gamma(1.5) with scaled D_f — 4 of 320 folds, 2 of 32
MIAs, up to 0.0028; H shifted by 0.5 (well separated) — none. The replay matched
scikit-learn's coefficients to ≤ 2e-12 relative with identical iteration counts on 400 test
problems (0–18 iterations), and the MIAs bit for bit on the golden fixtures and on 640
random rows (m from 6 to 500, ties, near-separable data); it can differ only where a test row
lies within rounding (~1e-12) of the decision boundary or a stopping test is decided within
rounding of its threshold. Speed (shared 2-core host, ``bench/population_mia.py``): 32 models
of 180 vs 180 losses, ~4–5 ms per model vectorized vs ~0.45–0.5 s with scikit-learn
(~100×); 10 models at CIFAR size (m = 4250), ~55–80 ms vs ~0.7–1.0 s (~12×).

Deviation: the caller's arrays are copied, never shuffled in place.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "REFERENCE_SEED",
    "attack_accuracy_stacked",
    "model_mias",
    "model_mias_stacked",
    "population_mia",
    "population_mia_stacked",
    "stratified_folds",
]

REFERENCE_SEED = 123
_MIN_PER_SIDE = 6  # StratifiedShuffleSplit(test_size=0.1) needs >= 2 test rows for 2 classes
_MAX_FIT_ELEMENTS = 1 << 22  # training values per batched fit (~32 MB per float64 temporary)


def _losses(name: str, x: Any, *, ndim: int = 1) -> np.ndarray:
    a = np.array(x, dtype=np.float64)  # a copy: shuffling never touches the caller's array
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or inf; pass finite per-example losses")
    return a


def population_mia(
    forget_losses: Any,
    heldout_losses: Any,
    *,
    rng: np.random.RandomState | np.random.Generator,
    n_splits: int = 10,
    test_size: float = 0.1,
    cv_random_state: int = REFERENCE_SEED,
) -> float:
    """Loss-based population MIA accuracy of one model (docs/protocol.md §6.2, exact procedure).

    Args:
      forget_losses: ``[n_f]`` per-example CE losses on D_f (stored order).
      heldout_losses: ``[n_h]`` losses on the held-out set H (D_v or D_t, stored order).
      rng: the stream that shuffles H then D_f. Pass ``np.random.RandomState(123)`` (or the
        RandomState continuing a model's evaluation, see ``model_mias``) for exact replay of
        the reference's ``np.random.seed(123); np.random.shuffle(...)``. A ``Generator``
        is accepted but gives values equal only in distribution. It is advanced in place.
      n_splits, test_size, cv_random_state: the ``StratifiedShuffleSplit`` (defaults are the
        reference's).

    Returns:
      Mean cross-validated accuracy of the attack, a float in [0, 1].
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedShuffleSplit, cross_val_score

    if not isinstance(rng, (np.random.RandomState, np.random.Generator)):
        raise TypeError("rng must be a np.random.RandomState (exact replay) or Generator")
    forget = _losses("forget_losses", forget_losses)
    heldout = _losses("heldout_losses", heldout_losses)
    m = min(forget.shape[0], heldout.shape[0])
    if m < _MIN_PER_SIDE:
        raise ValueError(
            f"population MIA needs >= {_MIN_PER_SIDE} losses on each side, got "
            f"{forget.shape[0]} forget and {heldout.shape[0]} held-out"
        )
    rng.shuffle(heldout)  # the reference shuffles the held-out ("first") array first
    rng.shuffle(forget)
    x = np.concatenate([forget[:m], heldout[:m]]).reshape(-1, 1)
    y = np.concatenate([np.zeros(m, dtype=int), np.ones(m, dtype=int)])
    cv = StratifiedShuffleSplit(
        n_splits=n_splits, test_size=test_size, random_state=cv_random_state
    )
    scores = cross_val_score(LogisticRegression(), x, y, cv=cv, scoring="accuracy")
    return float(np.mean(scores))


def model_mias(
    forget_losses: Any, val_losses: Any, test_losses: Any, *, seed: int = REFERENCE_SEED
) -> tuple[float, float]:
    """(Val MIA, Test MIA) of one model with the reference's random-number order (§6.2).

    One ``RandomState(seed)`` per model evaluation: the Val MIA (H = D_v) draws first, the
    Test MIA (H = D_t) continues the same stream with a fresh stored-order D_f array, as
    ``evaluate_model`` does after ``setup_seed(123)``.
    """
    rng = np.random.RandomState(seed)
    val_mia = population_mia(forget_losses, val_losses, rng=rng)
    test_mia = population_mia(forget_losses, test_losses, rng=rng)
    return val_mia, test_mia


def stratified_folds(
    m: int,
    *,
    n_splits: int = 10,
    test_size: float = 0.1,
    cv_random_state: int = REFERENCE_SEED,
) -> tuple[np.ndarray, np.ndarray]:
    """The reference's folds of ``2m`` rows laid out as m label-0 then m label-1 rows.

    ``StratifiedShuffleSplit(n_splits, test_size=test_size, random_state=cv_random_state)``
    applied to ``y = [0]*m + [1]*m`` (its draws depend only on ``y`` and the random state, not
    on the feature values, so one call serves every model with the same ``m``).

    Returns:
      ``(train [n_splits, n_train], test [n_splits, n_test])`` row indices, in
      scikit-learn's order.
    """
    from sklearn.model_selection import StratifiedShuffleSplit

    y = _labels(m)
    cv = StratifiedShuffleSplit(
        n_splits=n_splits, test_size=test_size, random_state=cv_random_state
    )
    splits = list(cv.split(np.zeros((2 * m, 1)), y))
    return np.stack([tr for tr, _ in splits]), np.stack([te for _, te in splits])


def attack_accuracy_stacked(
    rows: Any,
    *,
    n_splits: int = 10,
    test_size: float = 0.1,
    cv_random_state: int = REFERENCE_SEED,
) -> np.ndarray:
    """Cross-validated accuracy of the loss-threshold attack for a stack of prepared rows.

    Steps 4–6 of the procedure (module docstring) for every model at once: row ``i`` of
    ``rows`` (``[M, 2m]``) is model ``i``'s m shuffled D_f losses (label 0) followed by its m
    shuffled held-out losses (label 1). Folds from ``stratified_folds`` (computed once); all
    ``M × n_splits`` logistic regressions are fitted in one batched call of
    ``jaxmu.attacks.logistic.fit_logistic_lbfgs`` (scikit-learn's ``LogisticRegression()``
    fit replayed); a fold's accuracy is the mean over its test rows of
    ``[w x + b > 0] == label`` (scikit-learn's ``predict``; ``accuracy_score``), the MIA the
    mean of the fold accuracies. A row holding a NaN or inf gives NaN; the others are
    computed as without it.
    """
    from jaxmu.attacks.logistic import decision_function, fit_logistic_lbfgs

    x = _rows("rows", rows)
    if x.shape[1] % 2 or x.shape[1] < 2 * _MIN_PER_SIDE:
        raise ValueError(
            f"rows must be [models, 2m] with m >= {_MIN_PER_SIDE}, got shape {x.shape}"
        )
    m = x.shape[1] // 2
    out = np.full(x.shape[0], np.nan)
    ok = np.flatnonzero(np.isfinite(x).all(axis=1))
    if ok.size == 0:
        return out
    train, test = stratified_folds(
        m, n_splits=n_splits, test_size=test_size, cv_random_state=cv_random_state
    )
    y = _labels(m).astype(np.float64)
    per_chunk = max(1, _MAX_FIT_ELEMENTS // train.size)  # models per batched fit (memory bound)
    for start in range(0, ok.size, per_chunk):
        rows_ok = ok[start:start + per_chunk]
        xs = x[rows_ok]
        k, f = rows_ok.size, train.shape[0]
        w, b, _ = fit_logistic_lbfgs(  # one problem per (model, fold), model-major
            xs[:, train].reshape(k * f, -1), np.tile(y[train], (k, 1))
        )
        pred = decision_function(w.reshape(k, f), b.reshape(k, f), xs[:, test]) > 0
        fold_acc = np.mean(pred == (y[test] == 1), axis=-1)  # [k, n_splits]
        out[rows_ok] = np.mean(fold_acc, axis=-1)
    return out


def population_mia_stacked(
    forget_losses: Any, heldout_losses: Any, *, seed: int = REFERENCE_SEED
) -> np.ndarray:
    """``population_mia`` of a model stack, vectorized: ``[M, n_f]``, ``[M, n_h]`` -> ``[M]``.

    Row ``i`` equals ``population_mia(forget[i], heldout[i], rng=RandomState(seed))`` (the
    Val-MIA position of a model evaluation; equal up to rounding-level ties, see the module
    docstring): each model gets a fresh ``RandomState(seed)`` for its two shuffles, then
    ``attack_accuracy_stacked`` fits all models and folds in one call. A row with a NaN or
    inf loss in either array gives NaN.
    """
    f = _rows("forget_losses", forget_losses)
    h = _rows("heldout_losses", heldout_losses)
    _same_models(forget=f, heldout=h)
    m = _pair_size(f.shape[1], h.shape[1])
    ok = np.isfinite(f).all(axis=1) & np.isfinite(h).all(axis=1)
    x = np.full((f.shape[0], 2 * m), np.nan)
    for i in np.flatnonzero(ok):
        x[i] = _shuffled_pair(f[i], h[i], np.random.RandomState(seed), m)
    return attack_accuracy_stacked(x)


def model_mias_stacked(
    forget_losses: Any, val_losses: Any, test_losses: Any, *, seed: int = REFERENCE_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """``model_mias`` of a stack: ``[M, n_f]``, ``[M, n_v]``, ``[M, n_t]`` -> ``[M]``, ``[M]``.

    Every model gets its own ``RandomState(seed)``, exactly as every reference evaluation
    reseeds the global generator, so a model's MIA does not depend on the other rows: the
    shuffles run per model in the reference's order (D_v, D_f for the Val MIA, then D_t and a
    fresh stored-order D_f for the Test MIA, one stream), then each MIA is one vectorized
    ``attack_accuracy_stacked`` call over all models. A diverged model (a row with a NaN or inf
    loss in any of the three arrays) gets NaN for both MIAs; the finite rows are computed
    exactly as without it.
    """
    f = _rows("forget_losses", forget_losses)
    v = _rows("val_losses", val_losses)
    t = _rows("test_losses", test_losses)
    _same_models(forget=f, val=v, test=t)
    m_v = _pair_size(f.shape[1], v.shape[1])
    m_t = _pair_size(f.shape[1], t.shape[1])
    ok = np.isfinite(f).all(axis=1) & np.isfinite(v).all(axis=1) & np.isfinite(t).all(axis=1)
    xv = np.full((f.shape[0], 2 * m_v), np.nan)
    xt = np.full((f.shape[0], 2 * m_t), np.nan)
    for i in np.flatnonzero(ok):
        rng = np.random.RandomState(seed)
        xv[i] = _shuffled_pair(f[i], v[i], rng, m_v)
        xt[i] = _shuffled_pair(f[i], t[i], rng, m_t)
    return attack_accuracy_stacked(xv), attack_accuracy_stacked(xt)


def _labels(m: int) -> np.ndarray:
    return np.concatenate([np.zeros(m, dtype=int), np.ones(m, dtype=int)])


def _shuffled_pair(
    forget: np.ndarray, heldout: np.ndarray, rng: np.random.RandomState, m: int
) -> np.ndarray:
    """Steps 1–3: shuffle copies of H then D_f with ``rng``; first m of D_f, then of H."""
    h = np.array(heldout, dtype=np.float64)
    f = np.array(forget, dtype=np.float64)
    rng.shuffle(h)
    rng.shuffle(f)
    return np.concatenate([f[:m], h[:m]])


def _pair_size(n_f: int, n_h: int) -> int:
    m = min(n_f, n_h)
    if m < _MIN_PER_SIDE:
        raise ValueError(
            f"population MIA needs >= {_MIN_PER_SIDE} losses on each side, got "
            f"{n_f} forget and {n_h} held-out"
        )
    return m


def _same_models(**arrays: np.ndarray) -> None:
    sizes = {k: a.shape[0] for k, a in arrays.items()}
    if len(set(sizes.values())) > 1:
        shown = ", ".join(f"{k} {n}" for k, n in sizes.items())
        raise ValueError(f"model axes differ: {shown}; pass one row per model in each array")


def _rows(name: str, x: Any) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {a.shape}")
    return a
