"""Scalar evaluation metrics of the Deep Unlearn benchmark (docs/protocol.md §6.1, §6.3–6.5, §7.1).

Arrays in, arrays out. Wherever there is a model axis it is the leading axis: logits are
``[M, n, C]`` (or ``[n, C]`` for one model) and per-model metrics come back as ``[M]``.
Seed-level quantities (retention, RetDev, RTE, HPO objectives) are elementwise, so stacks of
seeds or trials plug straight in.

``accuracy`` and ``per_example_ce`` run on NumPy arrays (host, float64) or on JAX arrays
(device, usable under ``jit``/``vmap``: shape checks only, no value checks); everything else is
host-side NumPy.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "Summary",
    "accuracy",
    "hpo_objectives",
    "indiscernibility",
    "objective_score",
    "on_finite_rows",
    "per_example_ce",
    "retdev",
    "retention",
    "run_time_efficiency",
    "summarize",
    "tug_of_war",
]


# --------------------------------------------------------------------------- helpers


def _is_jax(x: Any) -> bool:
    """True for JAX arrays and tracers (without importing JAX for NumPy callers)."""
    mod = type(x).__module__
    return mod.startswith(("jax", "jaxlib"))


def _as_float(name: str, x: Any, *, allow_inf: bool = False) -> np.ndarray:
    """Host float64 array; NaN (and inf unless allowed) raise ValueError."""
    a = np.asarray(x, dtype=np.float64)
    if np.isnan(a).any():
        raise ValueError(f"{name} contains NaN; pass finite values")
    if not allow_inf and np.isinf(a).any():
        raise ValueError(f"{name} contains inf; pass finite values")
    return a


def _check_unit_interval(name: str, a: np.ndarray) -> None:
    if ((a < 0.0) | (a > 1.0)).any():
        raise ValueError(f"{name} must lie in [0, 1] (fractions, not percentages)")


def _check_logits_labels(logits: Any, labels: Any) -> None:
    """Shape contract: logits [M, n, C] or [n, C]; labels [n] or (for 3-D logits) [M, n]."""
    if logits.ndim not in (2, 3):
        raise ValueError(f"logits must be [M, n, C] or [n, C], got shape {tuple(logits.shape)}")
    if logits.shape[-1] < 2:
        raise ValueError("logits need at least 2 classes in the last axis")
    batch = tuple(logits.shape[:-1])
    if tuple(labels.shape) not in (batch, batch[-1:]):
        raise ValueError(
            f"labels shape {tuple(labels.shape)} does not match logits {tuple(logits.shape)}; "
            "pass labels [n] (shared) or [M, n] (per model)"
        )


def _check_label_values(labels: np.ndarray, n_classes: int) -> None:
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"labels must lie in [0, {n_classes}); got out-of-range values")


# --------------------------------------------------------------------------- §6.1


def accuracy(logits: Any, labels: Any) -> Any:
    """Top-1 accuracy as a fraction in [0, 1] (docs/protocol.md §6.1, scikit-learn ``accuracy_score``).

    acc_m = (1/n) Σ_i 1[argmax_c z_{m,i,c} = y_i].

    Args:
      logits: ``[M, n, C]`` (a model stack) or ``[n, C]`` (one model), NumPy or JAX.
      labels: integer ``[n]`` shared by all models, or ``[M, n]`` per model.

    Returns:
      ``[M]`` for stacked logits, a scalar for ``[n, C]``; float64 NumPy for NumPy input,
      a JAX array for JAX input. Ties in the argmax go to the lowest class index.
    """
    if _is_jax(logits) or _is_jax(labels):
        import jax.numpy as jnp

        logits, labels = jnp.asarray(logits), jnp.asarray(labels)
        _check_logits_labels(logits, labels)
        return jnp.mean(jnp.argmax(logits, axis=-1) == labels, axis=-1)
    logits, labels = np.asarray(logits), np.asarray(labels)
    _check_logits_labels(logits, labels)
    _check_label_values(labels, logits.shape[-1])
    if logits.shape[-2] == 0:
        raise ValueError("accuracy of an empty set is undefined; pass at least one example")
    if np.isnan(logits).any():
        raise ValueError("logits contain NaN; accuracy would be arbitrary")
    return np.mean(np.argmax(logits, axis=-1) == labels, axis=-1, dtype=np.float64)


def per_example_ce(logits: Any, labels: Any) -> Any:
    """Per-example cross-entropy ℓ_i = −log softmax(z_i)_{y_i} (docs/protocol.md §6.2 step 1).

    Computed stably as ``−log_softmax(z)[y]`` = logsumexp(z) − z_y (never log of a softmax).
    The reference computes it with ``nn.CrossEntropyLoss(reduction="none")`` in float32 and
    hands the values to NumPy as float64; NumPy input here is computed in float64.

    Args:
      logits: ``[M, n, C]`` or ``[n, C]``, NumPy or JAX.
      labels: integer ``[n]`` or ``[M, n]``.

    Returns:
      ``[M, n]`` (or ``[n]``) losses, same array library as the input.
    """
    if _is_jax(logits) or _is_jax(labels):
        import jax
        import jax.numpy as jnp

        logits, labels = jnp.asarray(logits), jnp.asarray(labels)
        _check_logits_labels(logits, labels)
        logp = jax.nn.log_softmax(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)))
        labels = jnp.broadcast_to(labels, logits.shape[:-1])
        return -jnp.take_along_axis(logp, labels[..., None], axis=-1)[..., 0]
    from scipy.special import log_softmax

    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels)
    _check_logits_labels(logits, labels)
    _check_label_values(labels, logits.shape[-1])
    logp = log_softmax(logits, axis=-1)
    labels = np.broadcast_to(labels, logits.shape[:-1])
    return -np.take_along_axis(logp, labels[..., None], axis=-1)[..., 0]


# --------------------------------------------------------------------------- §6.3–6.5


def indiscernibility(mia: Any) -> np.ndarray:
    """Indisc(MIA) = 1 − |MIA − 0.5| / 0.5 = 1 − |2·MIA − 1| ∈ [0, 1] (docs/protocol.md §6.3).

    1 is best (MIA = 0.5, what a retrained model scores); elementwise over any shape.
    """
    m = _as_float("mia", mia)
    _check_unit_interval("mia", m)
    return 1.0 - np.abs(2.0 * m - 1.0)


def retention(acc_method: Any, acc_retrain: Any) -> np.ndarray:
    """Accuracy retention acc_method / acc_R with R of the same seed (docs/protocol.md §6.4).

    Elementwise over seeds. As in the reference (``compute_accuracy_retention``) both
    accuracies must lie in [0, 1] and the retrain accuracy must be strictly positive.
    """
    a = _as_float("acc_method", acc_method)
    r = _as_float("acc_retrain", acc_retrain)
    _check_unit_interval("acc_method", a)
    _check_unit_interval("acc_retrain", r)
    if (r <= 0.0).any():
        raise ValueError("acc_retrain must be > 0 (retention divides by the retrain accuracy)")
    try:
        return a / r
    except ValueError as e:  # pragma: no cover - numpy broadcasting message
        raise ValueError(f"acc_method and acc_retrain do not broadcast: {e}") from None


def retdev(ra: Any, fa: Any, ta: Any, ra_r: Any, fa_r: Any, ta_r: Any) -> np.ndarray:
    """RetDev = |RR − 1| + |FR − 1| + |TR − 1| (docs/protocol.md §6.4), elementwise over seeds.

    RR = RA/RA_R, FR = FA/FA_R, TR = TA/TA_R; 0 is best (the method matches retraining).
    """
    rr = retention(ra, ra_r)
    fr = retention(fa, fa_r)
    tr = retention(ta, ta_r)
    return np.abs(rr - 1.0) + np.abs(fr - 1.0) + np.abs(tr - 1.0)


def tug_of_war(ra: Any, fa: Any, ta: Any, ra_r: Any, fa_r: Any, ta_r: Any) -> np.ndarray:
    """ToW = (1 − |RA − RA_R|)·(1 − |FA − FA_R|)·(1 − |TA − TA_R|), elementwise over seeds.

    Zhao et al., "What makes unlearning hard and what to do about it" (NeurIPS 2024), the
    tug-of-war score: the product over retain, forget and test of one minus the absolute
    accuracy gap to the retrained model of the same seed. 1 is best (every accuracy equals
    retraining's); accuracies in [0, 1], so ToW ∈ [0, 1].
    """
    accs = [_as_float(n, a) for n, a in zip(("ra", "fa", "ta", "ra_r", "fa_r", "ta_r"), (ra, fa, ta, ra_r, fa_r, ta_r))]
    for n, a in zip(("ra", "fa", "ta", "ra_r", "fa_r", "ta_r"), accs):
        _check_unit_interval(n, a)
    u, r = accs[:3], accs[3:]
    return (1.0 - np.abs(u[0] - r[0])) * (1.0 - np.abs(u[1] - r[1])) * (1.0 - np.abs(u[2] - r[2]))


def run_time_efficiency(t_retrain: Any, t_method: Any) -> np.ndarray:
    """RTE = t_R / t_method (docs/protocol.md §6.5); > 1 means faster than retraining.

    Both times are wall-clock seconds measured the same way (jaxmu: per-model time of a
    stack after ``block_until_ready``, compilation excluded) on the same device.
    Reference asserts kept: t_method > 0, t_retrain ≥ 0.
    """
    tr = _as_float("t_retrain", t_retrain)
    tm = _as_float("t_method", t_method)
    if (tm <= 0.0).any():
        raise ValueError("t_method must be > 0 seconds")
    if (tr < 0.0).any():
        raise ValueError("t_retrain must be >= 0 seconds")
    return tr / tm


# --------------------------------------------------------------------------- §5, §6.7


@dataclass(frozen=True)
class Summary:
    """Mean and standard deviation over seeds (docs/protocol.md §5, §6.7).

    Iterates as ``(mean, std)`` so ``mean, std = summarize(x)`` works. ``n`` counts the seeds
    the summary is over; ``n_excluded`` the seeds left out because their value is NaN (a
    diverged model, ``jaxmu.engine.finite``). ``single_seed`` flags a one-seed summary (std
    reported as 0.0; such numbers must be flagged in tables).
    """

    mean: Any
    std: Any
    n: int
    ddof: int
    single_seed: bool
    n_excluded: int = 0

    def __iter__(self) -> Iterator[Any]:
        return iter((self.mean, self.std))

    def count_note(self) -> str:
        """``""``, ``"1 seed"``, or ``"2 of 3; 1 diverged"`` when seeds were left out."""
        if self.n_excluded:
            return f"{self.n} of {self.n + self.n_excluded}; {self.n_excluded} diverged"
        return "1 seed" if self.single_seed else ""


def summarize(values: Any) -> Summary:
    """Mean ± std over the leading (seed) axis (docs/protocol.md §5: means over the 10 seeds).

    Seeds whose value is NaN (diverged models; for trailing axes, a seed with any NaN) are
    left out and counted in ``n_excluded``: with S the finite seeds, n = |S|,

        mean = (1/n) Σ_{s∈S} v_s,   std = sqrt(Σ_{s∈S} (v_s − mean)² / (n − ddof)).

    std uses ddof = 1 (the sample standard deviation, as pandas' ``DataFrame.std`` used in
    reporting) when n ≥ 2, and ddof = 0 (std = 0.0) for a single seed, which is flagged with
    ``single_seed=True``. If every seed diverged, mean and std are NaN and n = 0. Trailing axes
    are kept (``[M, ...] -> [...]``); inf still raises (it is not a divergence marker).
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 0:
        v = v[None]
    if v.shape[0] == 0:
        raise ValueError("summarize needs at least one seed; got an empty array")
    if np.isinf(v).any():
        raise ValueError("values contains inf; pass finite values (NaN marks a diverged seed)")
    keep = ~np.isnan(v.reshape(v.shape[0], -1)).any(axis=1)
    v, excluded = v[keep], int((~keep).sum())
    n = v.shape[0]
    ddof = 1 if n > 1 else 0
    if n == 0:
        mean = std = np.full(v.shape[1:], np.nan)
    else:
        mean = v.mean(axis=0)
        std = v.std(axis=0, ddof=ddof)
    if mean.ndim == 0:
        mean, std = float(mean), float(std)
    return Summary(mean=mean, std=std, n=n, ddof=ddof, single_seed=n == 1, n_excluded=excluded)


def on_finite_rows(fn: Any, ok: Any, *arrays: Any) -> np.ndarray:
    """``fn(*arrays)`` evaluated on the rows m with ``ok[m]``; NaN on the other (diverged) rows.

    out_m = fn(a_m, b_m, …) if ok_m else NaN, for elementwise per-seed metrics (indiscernibility,
    retention, RetDev) whose own input checks reject NaN. The finite rows see exactly the values
    they would see without the diverged ones, so their results are unchanged bit for bit.
    """
    ok = np.asarray(ok, bool)
    rows = [np.asarray(a, np.float64) for a in arrays]
    out = np.full(ok.shape + rows[0].shape[1:], np.nan)
    if ok.any():
        out[ok] = fn(*(r[ok] for r in rows))
    return out


# --------------------------------------------------------------------------- §7.1, §7.2


def hpo_objectives(
    ra_u: Any, fa_u: Any, va_u: Any, val_mia_u: Any, ra_r: Any, fa_r: Any, va_r: Any
) -> np.ndarray:
    """The four minimised HPO objectives of docs/protocol.md §7.1 ("objective10").

    o1 = |RA_u − RA_R|/3, o2 = |FA_u − FA_R|/3, o3 = |VA_u − VA_R|/3,
    o4 = 1 − Indisc(ValMIA_u) = |2·ValMIA_u − 1|, with R the same seed's retrained model and
    accuracies as fractions. Elementwise; returns ``[..., 4]`` (last axis = objective).
    """
    acc = {
        "ra_u": ra_u,
        "fa_u": fa_u,
        "va_u": va_u,
        "ra_r": ra_r,
        "fa_r": fa_r,
        "va_r": va_r,
    }
    a = {k: _as_float(k, v) for k, v in acc.items()}
    for k, v in a.items():
        _check_unit_interval(k, v)
    o4 = 1.0 - indiscernibility(val_mia_u)
    try:
        parts = np.broadcast_arrays(
            np.abs(a["ra_u"] - a["ra_r"]) / 3.0,
            np.abs(a["fa_u"] - a["fa_r"]) / 3.0,
            np.abs(a["va_u"] - a["va_r"]) / 3.0,
            o4,
        )
    except ValueError as e:
        raise ValueError(f"hpo_objectives inputs do not broadcast: {e}") from None
    return np.stack(parts, axis=-1)


def objective_score(objs: Any) -> np.ndarray:
    """Trial score = Euclidean norm of the four objective values (docs/protocol.md §7.2 step 2).

    ``objs`` is ``[..., 4]``; failed trials carry ``inf`` objectives and score ``inf``.
    """
    o = _as_float("objs", objs, allow_inf=True)
    if o.ndim == 0 or o.shape[-1] != 4:
        raise ValueError(f"objs must have a last axis of 4 objectives, got shape {o.shape}")
    with np.errstate(over="ignore", invalid="ignore"):
        score = np.sqrt(np.sum(o * o, axis=-1))
    return np.where(np.isinf(o).any(axis=-1), math.inf, score)
