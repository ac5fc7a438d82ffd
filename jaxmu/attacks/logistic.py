"""Batched one-feature logistic regression as scikit-learn's ``LogisticRegression()`` fits it.

The population MIA (docs/protocol.md §6.2, ``munl/evaluation/membership_inference_attack.py``)
fits ``LogisticRegression()`` with its defaults to a single unscaled feature (a per-example
loss) in each of 10 cross-validation folds, once per model. This module fits all of those
problems at once: arrays have a batch axis ``[P, n]`` (P problems, e.g. models × folds, of n
rows each); float64 NumPy, no device.

Objective (scikit-learn 1.x ``LinearModelLoss`` with ``HalfBinomialLoss``; ``C = 1``, ``l2``
penalty on the weight only, intercept unpenalised), for one problem with rows ``x_i`` and
labels ``y_i ∈ {0, 1}``::

    F(w, b) = (1/n) Σ_i [log(1 + exp(z_i)) − y_i z_i] + w² / (2 C n),     z_i = w x_i + b,

i.e. ``(½ w² + C Σ_i logloss_i) / (C n)``. ``F`` is strictly convex when both labels occur,
so it has one finite minimiser even for separable data (the penalty bounds ``w``, the two
classes bound ``b``).

Two solvers:

``fit_logistic_lbfgs`` (used by the MIA) replays what scikit-learn does: ``lbfgs``, i.e.
SciPy's L-BFGS-B (``scipy/optimize/__lbfgsb.c``, v3.0, the unconstrained path) with
scikit-learn's options ``maxiter=100, maxls=50, gtol=1e-4, ftol=64·eps`` and memory 10, the
Moré–Thuente line search ``dcsrch``/``dcstep`` (ftol 1e-3, gtol 0.9, xtol 0.1) and the same
stopping tests, started at ``(0, 0)``. It has to be the same *stopping point*, not just the
same optimum: L-BFGS-B stops once ``max(|∂F/∂w|, |∂F/∂b|) ≤ 1e-4``, and on weakly
separable data (attack accuracy near 0.5, the common case for a good unlearning method) that
happens after 0–3 iterations, far from the optimum; there the predictions of the exact
optimum and of scikit-learn differ in many test rows (measured: up to 26 of 36 rows of a fold;
MIAs moved by up to 0.008, see ``jaxmu.attacks.population_mia``). The replay differs from
SciPy only in rounding (the search direction ``−H g`` comes from the two-loop recursion
instead of the compact-form factorisation, and NumPy's sums round differently from BLAS),
which changes a prediction only for a test row within ~1e-12 of the decision boundary or a
stopping test decided within rounding of its threshold.

Version: written against and checked with scikit-learn 1.9.1 and SciPy 1.17.1 (the installed
ones; the golden fixtures agree with them). The stopping point depends on scikit-learn's
scaling of the objective (``1/n``, ``LinearModelLoss``) and on ``lbfgs``'s options; a
scikit-learn release that changes either would change the reference values, and the tests
against scikit-learn (``tests/test_attacks_population_mia.py``) would show it.

``fit_logistic_exact`` is the exact minimiser by damped Newton (reference oracle for the
objective; not what scikit-learn returns, see above).

All per-problem arithmetic is elementwise or a reduction along the problem's own row, so a
problem's result does not depend on the other problems of the batch.
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = [
    "decision_function",
    "fit_logistic_exact",
    "fit_logistic_lbfgs",
    "logistic_loss_grad",
]

_EPS = 2.220446049250313e-16  # SciPy's epsmach
_BLOCK = 1 << 15  # values per block of the objective evaluation (cache-sized temporaries)
_FG, _CONV, _WARN = 0, 1, 2  # dcsrch task codes


# --------------------------------------------------------------------------- objective


def _half_binomial(raw: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise log-loss and its derivative in ``raw`` for labels ``y ∈ {0, 1}``, with
    scikit-learn's branches (``sklearn/_loss/_loss.pyx.tp: closs_grad_half_binomial``)::

        raw ≤ −37: e = exp(raw),  loss = e − y raw,           grad = e − y
        raw ≤ −2:  e = exp(raw),  loss = log1p(e) − y raw,    grad = ((1−y) e − y) / (1+e)
        raw ≤ 18:  e = exp(−raw), loss = log1p(e) + (1−y) raw, grad = ((1−y) − y e) / (1+e)
        else:      e = exp(−raw), loss = e + (1−y) raw,       grad = ((1−y) − y e) / (1+e)

    Evaluated with y's values substituted (``y raw`` is ``raw`` or ``±0`` and ``a ± 0 = a``),
    which gives the same bits as the formulas above with fewer passes.
    """
    yb = y != 0
    neg = raw <= -2
    e = np.negative(raw)
    np.copyto(e, raw, where=neg)
    np.exp(e, out=e)
    tail = (raw <= -37) | (raw > 18)
    loss = np.log1p(e)
    np.copyto(loss, e, where=tail)
    # + (1 − y) raw on the positive side, − y raw on the negative side: ±raw where nonzero
    loss += np.where(neg, np.where(yb, -raw, 0.0), np.where(yb, 0.0, raw))
    num = np.where(neg, np.where(yb, -1.0, e), np.where(yb, -e, 1.0))
    grad = num / (1.0 + e)
    far = raw <= -37
    if far.any():
        np.copyto(grad, e - y, where=far)
    return loss, grad


def logistic_loss_grad(
    w: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray, *, C: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(F, ∂F/∂w, ∂F/∂b)`` of scikit-learn's objective (module docstring), per problem.

    ``w``, ``b``: ``[P]``; ``x``, ``y``: ``[P, n]`` with ``y ∈ {0, 1}``. Same operation order
    as ``LinearModelLoss.loss_gradient`` (mean loss, then ``½ (1/(C n)) w²``; pointwise
    gradient divided by n before the sums).
    """
    x, y = _check(x, y)
    return _loss_grad_rows(x, y, np.arange(x.shape[0]), w, b, C)


def _loss_grad_rows(
    x: np.ndarray, y: np.ndarray, rows: np.ndarray, w: np.ndarray, b: np.ndarray, C: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``logistic_loss_grad`` of problems ``rows`` of ``x``/``y`` (``w``, ``b`` per row of
    ``rows``), over blocks of problems so the temporaries stay in cache; every value is
    computed within its own problem's row."""
    n = x.shape[1]
    l2 = 1.0 / (C * n)
    f, gw, gb = np.empty(rows.size), np.empty(rows.size), np.empty(rows.size)
    step = max(1, _BLOCK // n)
    for s in range(0, rows.size, step):
        blk = slice(s, s + step)
        xb, wb, bb = x[rows[blk]], w[blk], b[blk]
        raw = xb * wb[:, None]
        raw += bb[:, None]
        loss, gp = _half_binomial(raw, y[rows[blk]])
        f[blk] = np.sum(loss, axis=-1) / n + 0.5 * l2 * (wb * wb)
        gp /= n
        gw[blk] = np.sum(xb * gp, axis=-1) + l2 * wb
        gb[blk] = np.sum(gp, axis=-1)
    return f, gw, gb


def decision_function(w: np.ndarray, b: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``w x + b`` for ``x`` of shape ``w.shape + [n]``; scikit-learn predicts class 1 where
    it is > 0 (``LinearClassifierMixin.predict``)."""
    return x * w[..., None] + b[..., None]


def _check(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] < 2:
        raise ValueError(f"x must be [problems, n] with n >= 2, got shape {x.shape}")
    y = np.broadcast_to(np.asarray(y, dtype=np.float64), x.shape)
    if not np.isfinite(x).all():
        raise ValueError("x contains NaN or inf")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("y must hold labels 0 and 1 only")
    return x, y


# --------------------------------------------------------------------------- L-BFGS-B replay


def _dcstep(
    stx, fx, dx, sty, fy, dy, stp, fp, dp, brackt, stpmin, stpmax
):
    """One safeguarded step of the Moré–Thuente line search, elementwise (SciPy's ``dcstep``).

    Returns ``(stx, fx, dx, sty, fy, dy, stp, brackt)``.
    """
    with np.errstate(all="ignore"):
        sgnd = dp * (dx / np.abs(dx))
        c1 = fp > fx
        c2 = ~c1 & (sgnd < 0.0)
        c3 = ~c1 & ~c2 & (np.abs(dp) < np.abs(dx))
        c4 = ~c1 & ~c2 & ~c3
        theta = 3.0 * (fx - fp) / (stp - stx) + dx + dp
        s = np.fmax(np.abs(theta), np.fmax(np.abs(dx), np.abs(dp)))
        # case 1: higher function value, the minimum is bracketed
        g1 = s * np.sqrt((theta / s) ** 2 - (dx / s) * (dp / s))
        g1 = np.where(stp < stx, -g1, g1)
        r1 = ((g1 - dx) + theta) / (((g1 - dx) + g1) + dp)
        stpc1 = stx + r1 * (stp - stx)
        stpq1 = stx + ((dx / ((fx - fp) / (stp - stx) + dx)) / 2.0) * (stp - stx)
        stpf1 = np.where(
            np.abs(stpc1 - stx) < np.abs(stpq1 - stx), stpc1, stpc1 + (stpq1 - stpc1) / 2.0
        )
        # case 2: lower function value, derivatives of opposite sign, bracketed
        g2 = s * np.sqrt((theta / s) ** 2 - (dx / s) * (dp / s))
        g2 = np.where(stp > stx, -g2, g2)
        r2 = ((g2 - dp) + theta) / (((g2 - dp) + g2) + dx)
        stpc2 = stp + r2 * (stx - stp)
        stpq2 = stp + (dp / (dp - dx)) * (stx - stp)
        stpf2 = np.where(np.abs(stpc2 - stp) > np.abs(stpq2 - stp), stpc2, stpq2)
        # case 3: lower value, same sign, the derivative magnitude decreases
        g3 = s * np.sqrt(np.fmax(0.0, (theta / s) ** 2 - (dx / s) * (dp / s)))
        g3 = np.where(stp > stx, -g3, g3)
        r3 = ((g3 - dp) + theta) / ((g3 + (dx - dp)) + g3)
        stpc3 = np.where(
            (r3 < 0.0) & (g3 != 0.0), stp + r3 * (stx - stp), np.where(stp > stx, stpmax, stpmin)
        )
        stpq3 = stp + (dp / (dp - dx)) * (stx - stp)
        near = np.where(np.abs(stpc3 - stp) < np.abs(stpq3 - stp), stpc3, stpq3)
        cap = stp + 0.66 * (sty - stp)
        near = np.where(stp > stx, np.fmin(cap, near), np.fmax(cap, near))
        far = np.where(np.abs(stpc3 - stp) > np.abs(stpq3 - stp), stpc3, stpq3)
        far = np.fmax(stpmin, np.fmin(stpmax, far))
        stpf3 = np.where(brackt, near, far)
        # case 4: lower value, same sign, the derivative magnitude does not decrease
        theta4 = 3.0 * (fp - fy) / (sty - stp) + dy + dp
        s4 = np.fmax(np.abs(theta4), np.fmax(np.abs(dy), np.abs(dp)))
        g4 = s4 * np.sqrt((theta4 / s4) ** 2 - (dy / s4) * (dp / s4))
        g4 = np.where(stp > sty, -g4, g4)
        r4 = ((g4 - dp) + theta4) / (((g4 - dp) + g4) + dy)
        stpf4 = np.where(
            brackt, stp + r4 * (sty - stp), np.where(stp > stx, stpmax, stpmin)
        )
    stpf = np.select([c1, c2, c3, c4], [stpf1, stpf2, stpf3, stpf4])
    brackt = brackt | c1 | c2
    # update the interval
    to_y = c1
    x_to_y = ~c1 & (sgnd < 0.0)
    sty, fy, dy = (
        np.where(to_y, stp, np.where(x_to_y, stx, sty)),
        np.where(to_y, fp, np.where(x_to_y, fx, fy)),
        np.where(to_y, dp, np.where(x_to_y, dx, dy)),
    )
    stx, fx, dx = np.where(to_y, stx, stp), np.where(to_y, fx, fp), np.where(to_y, dx, dp)
    return stx, fx, dx, sty, fy, dy, stpf, brackt


@dataclasses.dataclass
class _Search:
    """``dcsrch``'s saved state for a set of problems (all ``[P]`` arrays)."""

    brackt: np.ndarray
    stage: np.ndarray
    ginit: np.ndarray
    gtest: np.ndarray
    gx: np.ndarray
    gy: np.ndarray
    finit: np.ndarray
    fx: np.ndarray
    fy: np.ndarray
    stx: np.ndarray
    sty: np.ndarray
    stmin: np.ndarray
    stmax: np.ndarray
    width: np.ndarray
    width1: np.ndarray

    def take(self, i: np.ndarray) -> _Search:
        return _Search(**{k: v[i] for k, v in dataclasses.asdict(self).items()})

    def put(self, i: np.ndarray, other: _Search) -> None:
        for k, v in dataclasses.asdict(other).items():
            getattr(self, k)[i] = v


_FTOL, _GTOL, _XTOL = 1e-3, 0.9, 0.1  # lnsrlb's constants


def _dcsrch_start(f: np.ndarray, g: np.ndarray, stp: np.ndarray, stpmax: np.ndarray) -> _Search:
    """``dcsrch`` with task START (the caller has checked ``g < 0``)."""
    zero = np.zeros_like(f)
    width = stpmax - 0.0
    return _Search(
        brackt=np.zeros(f.shape, bool), stage=np.ones(f.shape, np.int8), ginit=g.copy(),
        gtest=_FTOL * g, gx=g.copy(), gy=g.copy(), finit=f.copy(), fx=f.copy(), fy=f.copy(),
        stx=zero.copy(), sty=zero.copy(), stmin=zero.copy(), stmax=stp + 4.0 * stp,
        width=width, width1=width / 0.5,
    )


def _dcsrch(
    f: np.ndarray, g: np.ndarray, stp: np.ndarray, s: _Search, stpmax: np.ndarray
) -> tuple[np.ndarray, np.ndarray, _Search]:
    """One continuation call of ``dcsrch`` at trial step ``stp`` with value ``f``, slope ``g``.

    Returns ``(task, new stp, state)``: task ``_FG`` asks for an evaluation at the new step;
    ``_CONV``/``_WARN`` end the search at ``stp`` (unchanged).
    """
    stpmin = 0.0
    s = dataclasses.replace(s)
    ftest = s.finit + stp * s.gtest
    s.stage = np.where((s.stage == 1) & (f <= ftest) & (g >= 0.0), 2, s.stage).astype(np.int8)
    warn = (s.brackt & ((stp <= s.stmin) | (stp >= s.stmax)))
    warn |= s.brackt & ((s.stmax - s.stmin) <= _XTOL * s.stmax)
    warn |= (stp == stpmax) & (f <= ftest) & (g <= s.gtest)
    warn |= (stp == stpmin) & ((f > ftest) | (g >= s.gtest))
    conv = (f <= ftest) & (np.abs(g) <= _GTOL * (-s.ginit))
    task = np.where(conv, _CONV, np.where(warn, _WARN, _FG))
    go = task == _FG
    # modified function in stage 1 while the value is above the sufficient-decrease line
    mod = go & (s.stage == 1) & (f <= s.fx) & (f > ftest)
    gt = np.where(mod, s.gtest, 0.0)
    stx, fx, dx, sty, fy, dy, new, brackt = _dcstep(
        s.stx, s.fx - s.stx * gt, s.gx - gt, s.sty, s.fy - s.sty * gt, s.gy - gt,
        stp, f - stp * gt, g - gt, s.brackt, s.stmin, s.stmax,
    )
    fx, fy, dx, dy = fx + stx * gt, fy + sty * gt, dx + gt, dy + gt
    # without the modification, fx - 0*stx etc. are exact, so one dcstep call serves both
    shrink = brackt & (np.abs(sty - stx) >= 0.66 * s.width1)
    new = np.where(shrink, stx + 0.5 * (sty - stx), new)
    width1 = np.where(brackt, s.width, s.width1)
    width = np.where(brackt, np.abs(sty - stx), s.width)
    stmin = np.where(brackt, np.fmin(stx, sty), new + 1.1 * (new - stx))
    stmax = np.where(brackt, np.fmax(stx, sty), new + 4.0 * (new - stx))
    new = np.fmin(np.fmax(new, stpmin), stpmax)
    back = brackt & ((new <= stmin) | (new >= stmax) | (stmax - stmin <= _XTOL * stmax))
    new = np.where(back, stx, new)
    upd = _Search(
        brackt=brackt, stage=s.stage, ginit=s.ginit, gtest=s.gtest, gx=dx, gy=dy,
        finit=s.finit, fx=fx, fy=fy, stx=stx, sty=sty, stmin=stmin, stmax=stmax,
        width=width, width1=width1,
    )
    out = s
    for k in ("brackt", "gx", "gy", "fx", "fy", "stx", "sty", "stmin", "stmax", "width", "width1"):
        setattr(out, k, np.where(go, getattr(upd, k), getattr(s, k)))
    return task, np.where(go, new, stp), out


def _two_loop(
    g: np.ndarray, S: np.ndarray, Y: np.ndarray, sy: np.ndarray, col: np.ndarray,
    theta: np.ndarray,
) -> np.ndarray:
    """``H g`` for the L-BFGS inverse Hessian with ``H₀ = I/θ`` and the ``col`` newest pairs.

    ``S``, ``Y``: ``[P, m, 2]`` oldest first; ``sy``: ``[P, m]`` the stored ``s·y``.
    """
    m = S.shape[1]
    rows = np.arange(g.shape[0])
    q = g.copy()
    alphas = []
    for k in range(m):  # newest to oldest
        valid = k < col
        i = np.maximum(col - 1 - k, 0)
        s_i, y_i = S[rows, i], Y[rows, i]
        a = np.where(valid, np.sum(s_i * q, axis=-1) / sy[rows, i], 0.0)
        q = q - a[:, None] * np.where(valid[:, None], y_i, 0.0)
        alphas.append(a)
    r = q / theta[:, None]
    for k in reversed(range(m)):  # oldest to newest
        valid = k < col
        i = np.maximum(col - 1 - k, 0)
        s_i, y_i = S[rows, i], Y[rows, i]
        beta = np.where(valid, np.sum(y_i * r, axis=-1) / sy[rows, i], 0.0)
        r = r + (alphas[k] - beta)[:, None] * np.where(valid[:, None], s_i, 0.0)
    return r


@dataclasses.dataclass
class _State:
    """L-BFGS-B's saved state (``mainlb`` + ``lnsrlb``) for P problems; parameters ``[w, b]``."""

    x: np.ndarray  # [P, 2] current point (the trial point while searching)
    f: np.ndarray
    g: np.ndarray  # [P, 2]
    S: np.ndarray  # [P, m, 2] correction pairs, oldest first
    Y: np.ndarray
    sy: np.ndarray  # [P, m]
    col: np.ndarray
    iupdat: np.ndarray
    theta: np.ndarray
    iter: np.ndarray
    nit: np.ndarray  # SciPy's Python-level iteration count (n_iterations)
    d: np.ndarray  # [P, 2] search direction
    z: np.ndarray  # [P, 2] x + d
    t: np.ndarray  # [P, 2] x at the start of the line search
    r: np.ndarray  # [P, 2] g at the start of the line search
    fold: np.ndarray
    gd: np.ndarray
    gdold: np.ndarray
    stp: np.ndarray
    dtd: np.ndarray
    stpmx: np.ndarray
    ifun: np.ndarray
    search: _Search
    done: np.ndarray


def _new_state(p: int, m: int) -> _State:
    z1, z2 = np.zeros(p), np.zeros((p, 2))
    i0 = np.zeros(p, np.int64)
    return _State(
        x=z2.copy(), f=z1.copy(), g=z2.copy(), S=np.zeros((p, m, 2)), Y=np.zeros((p, m, 2)),
        sy=np.ones((p, m)), col=i0.copy(), iupdat=i0.copy(), theta=np.ones(p), iter=i0.copy(),
        nit=i0.copy(), d=z2.copy(), z=z2.copy(), t=z2.copy(), r=z2.copy(), fold=z1.copy(),
        gd=z1.copy(), gdold=z1.copy(), stp=z1.copy(), dtd=z1.copy(), stpmx=z1.copy(),
        ifun=i0.copy(), search=_dcsrch_start(z1, -np.ones(p), np.ones(p), np.ones(p)),
        done=np.zeros(p, bool),
    )


def _pg_norm(g: np.ndarray) -> np.ndarray:
    return np.fmax(np.abs(g[:, 0]), np.abs(g[:, 1]))


def _start_search(st: _State, i: np.ndarray) -> np.ndarray:
    """LINE222 → LINE666 for problems ``i``: direction, then ``lnsrlb``'s first call.

    Sets the first trial point ``x``; returns the problems among ``i`` whose direction is not
    a descent direction (``info = -4``, handled by the caller).
    """
    x, g, col = st.x[i], st.g[i], st.col[i]
    hg = _two_loop(g, st.S[i], st.Y[i], st.sy[i], col, st.theta[i])
    z = np.where((col > 0)[:, None], x + (-hg), x + 1.0 * (-g))  # subsm / cauchy (θ = 1)
    d = z - x
    dnorm = np.sqrt(np.sum(d * d, axis=-1))
    stpmx = np.full(i.shape, 1.0e10)
    stp = np.where(st.iter[i] == 0, np.fmin(1.0 / dnorm, stpmx), 1.0)
    gd = np.sum(g * d, axis=-1)
    st.d[i], st.z[i], st.dtd[i], st.stpmx[i], st.stp[i] = d, z, dnorm**2, stpmx, stp
    st.t[i], st.r[i], st.fold[i], st.gd[i], st.gdold[i] = x, g, st.f[i], gd, gd
    bad = gd >= 0.0
    ok = i[~bad]
    st.search.put(ok, _dcsrch_start(st.f[ok], gd[~bad], stp[~bad], stpmx[~bad]))
    st.ifun[ok] = 1
    st.x[ok] = _trial(st, ok)
    return i[bad]


def _trial(st: _State, i: np.ndarray) -> np.ndarray:
    stp = st.stp[i][:, None]
    return np.where(stp == 1.0, st.z[i], stp * st.d[i] + st.t[i])


def _fail(st: _State, i: np.ndarray) -> np.ndarray:
    """The line-search failure branch of ``mainlb``: restore the search's start point; stop
    problems without corrections (ABNORMAL), reset the others' memory. Returns the reset ones."""
    st.x[i], st.g[i], st.f[i] = st.t[i], st.r[i], st.fold[i]
    stop = st.col[i] == 0
    st.done[i[stop]] = True
    again = i[~stop]
    st.col[again], st.iupdat[again], st.theta[again] = 0, 0, 1.0
    return again


def _restart(st: _State, i: np.ndarray) -> None:
    """Start a line search for ``i``; a failure resets memory and retries once (col = 0)."""
    bad = _start_search(st, i)
    if bad.size:
        again = _fail(st, bad)
        if again.size:
            _fail(st, _start_search(st, again))


def _new_x(st: _State, i: np.ndarray, pgtol: float, max_iter: int) -> None:
    """The line search of ``i`` ended (NEW_X): stopping tests, memory update, next search."""
    st.iter[i] += 1
    st.nit[i] += 1
    g, f, fold = st.g[i], st.f[i], st.fold[i]
    stop = st.nit[i] >= max_iter
    stop |= _pg_norm(g) <= pgtol
    ddum = np.fmax(np.fmax(np.abs(fold), np.abs(f)), 1.0)
    stop |= (fold - f) <= (64 * _EPS) * ddum  # factr·epsmch with factr = ftol/eps
    st.done[i[stop]] = True
    i = i[~stop]
    if i.size == 0:
        return
    yv = st.g[i] - st.r[i]
    rr = np.sum(yv * yv, axis=-1)
    stp, gd, gdold = st.stp[i], st.gd[i], st.gdold[i]
    one = stp == 1.0
    dr = np.where(one, gd - gdold, (gd - gdold) * stp)
    sv = np.where(one[:, None], st.d[i], st.d[i] * stp[:, None])
    ddum = np.where(one, -gdold, -gdold * stp)
    upd = ~(dr <= _EPS * ddum)
    u = i[upd]
    if u.size:
        m = st.S.shape[1]
        full = st.col[u] == m
        sh = u[full]
        st.S[sh, :-1], st.Y[sh, :-1], st.sy[sh, :-1] = st.S[sh, 1:], st.Y[sh, 1:], st.sy[sh, 1:]
        slot = np.minimum(st.col[u], m - 1)
        st.S[u, slot], st.Y[u, slot], st.sy[u, slot] = sv[upd], yv[upd], dr[upd]
        st.iupdat[u] += 1
        st.col[u] = np.minimum(st.iupdat[u], m)
        st.theta[u] = rr[upd] / dr[upd]
    _restart(st, i)


def fit_logistic_lbfgs(
    x: np.ndarray,
    y: np.ndarray,
    *,
    C: float = 1.0,
    tol: float = 1e-4,
    max_iter: int = 100,
    maxls: int = 50,
    memory: int = 10,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``LogisticRegression(C=C, tol=tol, max_iter=max_iter).fit(x[p, :, None], y[p])`` for
    every problem ``p`` at once: scikit-learn's ``lbfgs`` path replayed (module docstring).

    All problems advance in lockstep, one objective evaluation per round for every problem
    that still needs one; each problem follows its own L-BFGS-B state machine.

    Args:
      x: ``[P, n]`` feature values, finite.
      y: ``[P, n]`` (or broadcastable) labels in {0, 1}; each problem must hold both.
      C, tol, max_iter: as in ``LogisticRegression`` (defaults are its defaults).
      maxls, memory: L-BFGS-B's ``maxls`` and ``maxcor`` (scikit-learn passes 50 and 10).

    Returns:
      ``(coef [P], intercept [P], n_iter [P])`` as ``coef_[0, 0]``, ``intercept_[0]`` and
      ``n_iter_[0]`` of the fitted estimators.
    """
    x, y = _check(x, y)
    p = x.shape[0]
    st = _new_state(p, memory)
    searching = np.zeros(p, bool)  # False: the next evaluation is the start point's
    while not st.done.all():
        i = np.flatnonzero(~st.done)
        f, gw, gb = _loss_grad_rows(x, y, i, st.x[i, 0], st.x[i, 1], C)
        st.f[i], st.g[i] = f, np.stack([gw, gb], axis=-1)
        first, ls = i[~searching[i]], i[searching[i]]
        if first.size:  # START: converged at x0, or the first search
            conv = _pg_norm(st.g[first]) <= tol
            st.done[first[conv]] = True
            go = first[~conv]
            searching[go] = True
            _restart(st, go)
        if ls.size:
            gd = np.sum(st.g[ls] * st.d[ls], axis=-1)
            st.gd[ls] = gd
            task, stp, srch = _dcsrch(st.f[ls], gd, st.stp[ls], st.search.take(ls), st.stpmx[ls])
            st.search.put(ls, srch)
            st.stp[ls] = stp
            more = ls[task == _FG]
            st.ifun[more] += 1
            over = more[st.ifun[more] - 1 >= maxls]  # iback >= maxls
            more = more[st.ifun[more] - 1 < maxls]
            st.x[more] = _trial(st, more)
            if over.size:
                again = _fail(st, over)
                if again.size:
                    _restart(st, again)
            _new_x(st, ls[task != _FG], tol, max_iter)
    return st.x[:, 0].copy(), st.x[:, 1].copy(), st.nit.copy()


# --------------------------------------------------------------------------- exact optimum


def fit_logistic_exact(
    x: np.ndarray, y: np.ndarray, *, C: float = 1.0, max_iter: int = 100, rtol: float = 1e-12
) -> tuple[np.ndarray, np.ndarray]:
    """The exact minimiser ``(w [P], b [P])`` of ``F`` by damped Newton from ``(0, 0)``.

    With ``p = σ(w x + b)``, ``s = p(1 − p)``, the Newton system of ``C n F`` is solved in
    closed form in centred variables (``S₀ = C Σ s``, ``x̄ = C Σ s x / S₀``,
    ``V = C Σ s (x − x̄)²``; ``g_w = w + C Σ (p − y) x``, ``g_b = C Σ (p − y)``)::

        d_w = (x̄ g_b − g_w) / (1 + V),      d_b = −g_b / S₀ − x̄ d_w,

    the step halved until ``F`` does not increase; a problem stops after a full step below
    ``rtol`` relative to the parameters, or when no step length decreases ``F``.
    """
    x, y = _check(x, y)
    w, b = np.zeros(x.shape[0]), np.zeros(x.shape[0])
    active = np.arange(x.shape[0])
    for _ in range(max_iter):
        if active.size == 0:
            break
        xa, ya, wa, ba = x[active], y[active], w[active], b[active]
        pr = 1.0 / (1.0 + np.exp(-(xa * wa[:, None] + ba[:, None])))
        s = pr * (1.0 - pr)
        g_w = wa + C * np.sum((pr - ya) * xa, axis=-1)
        g_b = C * np.sum(pr - ya, axis=-1)
        s0 = np.maximum(C * np.sum(s, axis=-1), np.finfo(np.float64).tiny)
        xbar = C * np.sum(s * xa, axis=-1) / s0
        v = C * np.sum(s * np.square(xa - xbar[:, None]), axis=-1)
        d_w = (xbar * g_b - g_w) / (1.0 + v)
        d_b = -g_b / s0 - xbar * d_w
        f_old = _loss_grad_rows(x, y, active, wa, ba, C)[0]
        t = np.ones_like(wa)
        ok = np.zeros(wa.shape, bool)
        for _ in range(60):  # halve until F does not increase
            f_new = _loss_grad_rows(x, y, active, wa + t * d_w, ba + t * d_b, C)[0]
            ok |= f_new <= f_old
            if ok.all():
                break
            t = np.where(ok, t, 0.5 * t)
        w[active] = np.where(ok, wa + t * d_w, wa)
        b[active] = np.where(ok, ba + t * d_b, ba)
        small = (np.abs(d_w) <= rtol * (1 + np.abs(wa))) & (np.abs(d_b) <= rtol * (1 + np.abs(ba)))
        active = active[~(small | ~ok)]
    return w, b
