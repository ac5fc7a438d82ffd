"""Population (loss-threshold) membership inference of Deep Unlearn (protocol.md §6.2).

Host-side NumPy/scikit-learn; only the per-example losses come from the device
(``jaxmu.metrics.per_example_ce``). Procedure for one model and a held-out set H
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

Exact replay: ``population_mia(f, h, rng=np.random.RandomState(123))`` reproduces the golden
values (``tests/fixtures/golden_metrics.npz``, ``mia{i}``) to the last bit, and
``model_mias`` reproduces the reference's pair (Val MIA, Test MIA) of one evaluation.
Deviation: the caller's arrays are copied, never shuffled in place.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["REFERENCE_SEED", "model_mias", "model_mias_stacked", "population_mia"]

REFERENCE_SEED = 123
_MIN_PER_SIDE = 6  # StratifiedShuffleSplit(test_size=0.1) needs >= 2 test rows for 2 classes


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
    """Loss-based population MIA accuracy of one model (protocol.md §6.2, exact procedure).

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


def model_mias_stacked(
    forget_losses: Any, val_losses: Any, test_losses: Any, *, seed: int = REFERENCE_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """``model_mias`` for a model stack: ``[M, n_f]``, ``[M, n_v]``, ``[M, n_t]`` -> ``[M]``, ``[M]``.

    A host loop (scikit-learn); every model gets its own ``RandomState(seed)``, exactly as
    every reference evaluation reseeds the global generator, so a model's MIA does not depend
    on the other rows. A diverged model (a row with a NaN or inf loss in any of the three
    arrays) gets NaN for both MIAs; the finite rows are computed exactly as without it.
    """
    f = _rows("forget_losses", forget_losses)
    v = _rows("val_losses", val_losses)
    t = _rows("test_losses", test_losses)
    if not f.shape[0] == v.shape[0] == t.shape[0]:
        raise ValueError(
            f"model axes differ: forget {f.shape[0]}, val {v.shape[0]}, test {t.shape[0]}; "
            "pass one row per model in each array"
        )
    out = np.full((f.shape[0], 2), np.nan)
    for i in range(f.shape[0]):
        if np.isfinite(f[i]).all() and np.isfinite(v[i]).all() and np.isfinite(t[i]).all():
            out[i] = model_mias(f[i], v[i], t[i], seed=seed)
    return out[:, 0], out[:, 1]


def _rows(name: str, x: Any) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {a.shape}")
    return a
