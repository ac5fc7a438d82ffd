"""LiRA pieces (docs/protocol.md §8.2, §8.3 items 4, 6–8) and the per-example oracles of §10.1."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

from jaxmu.attacks import (
    attack_summary,
    choose_fixed_variance,
    cross_fitted_scores,
    fit_gaussians,
    holdout_folds,
    lira_offline_score,
    lira_online_score,
    logit_scaled_confidence,
    logit_scaled_confidence_reference,
)

# ----------------------------------------------------------------------------- φ (JAX)


def test_phi_matches_float64_reference_and_is_stable():
    g = np.random.default_rng(0)
    z = g.normal(scale=4.0, size=(3, 50, 10)).astype(np.float32)
    y = g.integers(0, 10, size=50)
    ref = logit_scaled_confidence_reference(z, y)
    got = np.asarray(jax.jit(logit_scaled_confidence)(jnp.asarray(z), jnp.asarray(y)))
    assert got.dtype == np.float32 and got.shape == (3, 50)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=2e-5)
    # confident logits: φ = 40 exactly, where log(p/(1−p)) of a float32 softmax is inf
    conf = logit_scaled_confidence(jnp.array([[0.0, 40.0]]), jnp.array([1]))
    assert float(conf[0]) == pytest.approx(40.0, abs=1e-5)
    p = jax.nn.softmax(jnp.array([0.0, 40.0]))
    assert not np.isfinite(float(jnp.log(p[1] / (1 - p[1]))))  # why the masked form is needed
    wrong = logit_scaled_confidence(jnp.array([[0.0, 40.0, 1.0]]), jnp.array([0]))
    assert float(wrong[0]) == pytest.approx(-float(jax.nn.logsumexp(jnp.array([40.0, 1.0]))))
    # beyond the float64 reference's ±103.6 floor, φ keeps growing
    assert float(logit_scaled_confidence(jnp.array([0.0, 500.0]), jnp.array(1))) == 500.0


def test_phi_under_vmap_with_per_model_labels():
    g = np.random.default_rng(1)
    z = jnp.asarray(g.normal(size=(4, 6, 5)), jnp.float32)
    y = jnp.asarray(g.integers(0, 5, size=(4, 6)))
    v = jax.vmap(logit_scaled_confidence)(z, y)
    np.testing.assert_allclose(np.asarray(v), np.asarray(logit_scaled_confidence(z, y)), rtol=1e-6)
    with pytest.raises(ValueError, match="C >= 2"):
        logit_scaled_confidence(jnp.zeros((3, 1)), jnp.zeros(3, int))


# ----------------------------------------------------------------------------- fits


def test_fit_gaussians_masked_median_and_std():
    phi = np.array([[1.0, 5.0], [2.0, 6.0], [10.0, 7.0], [4.0, 100.0]])[..., None]  # [4, 2, 1]
    mask = np.array([[1, 1], [1, 1], [0, 1], [1, 0]], bool)
    fit = fit_gaussians(phi, mask)
    np.testing.assert_allclose(fit.mu[:, 0], [2.0, 6.0])  # medians of {1,2,4}, {5,6,7}
    np.testing.assert_allclose(fit.sigma[:, 0], [np.std([1, 2, 4]), np.std([5, 6, 7])])
    assert fit.count.tolist() == [3, 3] and not fit.fixed_variance
    fit4 = fit_gaussians(phi[:, :1], np.array([[1], [1], [1], [1]], bool))
    assert fit4.mu[0, 0] == 3.0  # even count: mean of the two middle values
    empty = fit_gaussians(phi, np.zeros((4, 2), bool))
    assert np.isnan(empty.mu).all() and (empty.count == 0).all()
    # NaN outside the mask is ignored; inside it is an error
    phi_nan = phi.copy()
    phi_nan[2, 0, 0] = np.nan
    np.testing.assert_allclose(fit_gaussians(phi_nan, mask).mu, fit.mu)
    with pytest.raises(ValueError, match="member positions"):
        fit_gaussians(phi_nan, np.ones((4, 2), bool))


def test_fixed_variance_uses_pooled_residuals():
    phi = np.array([[1.0, 10.0], [3.0, 14.0], [2.0, 12.0]])[..., None]
    mask = np.ones((3, 2), bool)
    fit = fit_gaussians(phi, mask, fixed_variance=True)
    resid = np.array([-1.0, 1.0, 0.0, -2.0, 2.0, 0.0])  # φ − per-example median
    np.testing.assert_allclose(fit.sigma, np.full((2, 1), np.std(resid) + 1e-30))
    assert fit.fixed_variance
    assert choose_fixed_variance(np.array([16, 20, 0])) is True
    assert choose_fixed_variance(np.array([64, 128])) is False
    assert fit_gaussians(phi, mask, fixed_variance="auto").fixed_variance  # 3 members < 64


def test_scores_formulas():
    fit_in = (np.array([[1.0, 1.0]]), np.array([[1.0, 2.0]]))
    fit_out = (np.array([[0.0, 0.0]]), np.array([[1.0, 1.0]]))
    t = np.array([[[0.5, 2.0]]])  # one model, one example, A = 2
    want = np.mean(norm.logpdf([0.5, 2.0], [1, 1], [1, 2]) - norm.logpdf([0.5, 2.0], 0, 1))
    assert lira_online_score(t, fit_in, fit_out)[0, 0] == pytest.approx(want)
    off = lira_offline_score(t, fit_out)
    assert off[0, 0] == pytest.approx(-np.mean(norm.logpdf([0.5, 2.0])))
    assert lira_offline_score(t, fit_out, method="abs_z")[0, 0] == pytest.approx(1.25)
    # two-sided: far below μ_out is as suspicious as far above
    lo_hi = lira_offline_score(np.array([[[-3.0, -3.0]], [[3.0, 3.0]], [[0.0, 0.0]]]), fit_out)
    assert lo_hi[0, 0] == pytest.approx(lo_hi[1, 0]) and lo_hi[0, 0] > lo_hi[2, 0]
    # degenerate σ = 1e-30 (all members equal) stays finite
    deg = fit_gaussians(np.ones((3, 1, 1)), np.ones((3, 1), bool))
    one_out = (np.array([[0.0]]), np.array([[1.0]]))
    for x in (1.0, 1.5):
        assert np.isfinite(lira_online_score(np.full((1, 1, 1), x), deg, one_out)).all()
    with pytest.raises(ValueError, match="must end in"):
        lira_online_score(np.zeros((2, 3, 2)), fit_in, fit_out)


# ----------------------------------------------------------------------------- folds


def test_holdout_folds_keep_pairs_together():
    f = holdout_folds(12, 3)
    assert (f[0::2] == f[1::2]).all()
    assert np.bincount(f).tolist() == [4, 4, 4]
    fr = holdout_folds(12, 3, rng=np.random.default_rng(0))
    assert (fr[0::2] == fr[1::2]).all() and np.bincount(fr).tolist() == [4, 4, 4]
    assert holdout_folds(5, 5, pair=False).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="even"):
        holdout_folds(5, 2)
    with pytest.raises(ValueError, match="n_folds"):
        holdout_folds(4, 3)


def _gaussian_world(m, n, d, seed):
    g = np.random.default_rng(seed)
    mu_out = g.normal(0.0, 2.0, size=n)
    keep = g.random((m, n)) < 0.5
    phi = mu_out[None] + d * keep + g.normal(size=(m, n))
    return phi[..., None], keep


def test_cross_fit_excludes_the_scored_fold():
    """By construction: an extreme outlier in model 0's φ changes the scores of models in
    other folds (its value is in their fit) but not those of its own fold, and its own score
    equals a direct fit on the other folds."""
    phi, keep = _gaussian_world(12, 30, 1.0, 0)
    folds = holdout_folds(12, 3)
    ev = np.ones(keep.shape, bool)
    base = cross_fitted_scores(phi, keep, ~keep, ev, folds, fixed_variance=False).scores
    phi2 = phi.copy()
    phi2[0] += 1e3
    pert = cross_fitted_scores(phi2, keep, ~keep, ev, folds, fixed_variance=False).scores
    same = folds == folds[0]
    np.testing.assert_array_equal(base[same][1:], pert[same][1:])
    assert not np.allclose(base[~same], pert[~same])
    train = folds != folds[0]
    direct = lira_online_score(
        phi2[0], fit_gaussians(phi2[train], keep[train]), fit_gaussians(phi2[train], ~keep[train])
    )
    np.testing.assert_allclose(pert[0], direct)
    loo = cross_fitted_scores(phi, keep, ~keep, ev, "loo", fixed_variance=False)
    assert len(loo.fold_ids) == 12 and loo.in_count.max() <= 11
    with pytest.raises(ValueError, match="fit-only"):
        cross_fitted_scores(phi, keep, ~keep, ev, np.full(12, -1))


def test_many_shadows_approach_analytic_roc():
    """μ_IN(x) = μ_OUT(x) + d, σ = 1, 256 models in 4 folds (≈96 per population per fit):
    the pooled online ROC approaches Φ(d/√2), Φ(d/2)."""
    d = 1.0
    phi, keep = _gaussian_world(256, 400, d, 1)
    r = cross_fitted_scores(
        phi, keep, ~keep, np.ones(keep.shape, bool), holdout_folds(256, 4), fixed_variance=False
    )
    out = attack_summary(r.scores.ravel(), keep.ravel())
    assert out["auc"] == pytest.approx(norm.cdf(d / np.sqrt(2)), abs=0.015)
    assert out["accuracy"] == pytest.approx(norm.cdf(d / 2), abs=0.015)
    assert out["tpr_at_1pct"] == pytest.approx(1 - norm.cdf(norm.ppf(0.99) - d), abs=0.03)
    assert not r.fixed_variance_in.any()


def test_fixed_variance_not_worse_at_16_shadows():
    """16 shadows per fit (leave-one-out on 17 models): fixed variance beats per-example σ
    (measured: AUC +0.03, accuracy +0.02 over six seeds)."""
    phi, keep = _gaussian_world(17, 1000, 1.0, 2)
    ev = np.ones(keep.shape, bool)
    res = {}
    for fv in (False, True):
        s = cross_fitted_scores(phi, keep, ~keep, ev, "loo", fixed_variance=fv).scores.ravel()
        ok = ~np.isnan(s)
        res[fv] = attack_summary(s[ok], keep.ravel()[ok])
    assert res[True]["auc"] > res[False]["auc"] + 0.01
    assert res[True]["accuracy"] >= res[False]["accuracy"]
    auto = cross_fitted_scores(phi, keep, ~keep, ev, "loo")
    assert auto.fixed_variance_in.all() and auto.fixed_variance_out.all()


def test_offline_is_weaker_than_online_but_above_chance():
    phi, keep = _gaussian_world(64, 300, 1.0, 3)
    ev = np.ones(keep.shape, bool)
    folds = holdout_folds(64, 4)
    on = cross_fitted_scores(phi, keep, ~keep, ev, folds).scores.ravel()
    off = cross_fitted_scores(phi, None, ~keep, ev, folds, mode="offline").scores.ravel()
    a_on, a_off = attack_summary(on, keep.ravel()), attack_summary(off, keep.ravel())
    assert 0.55 < a_off["auc"] < a_on["auc"]


# ----------------------------------------------------------------------------- fast path = reference
#
# The implementation before the statistics were streamlined (issue 13 item 6): a float64 copy of
# φ, a NaN-masked float64 [M, N, A] array per fit, nansum moments, a fit per fold on p[train].
# The packed float32-or-float64 path must give the same numbers.


def _reference_fit(phi, member_mask, fixed_variance=False):
    p = np.asarray(phi, dtype=np.float64)
    p = p[..., None] if p.ndim == 2 else p
    m = np.asarray(member_mask)
    count = m.sum(axis=0)
    if fixed_variance == "auto":
        fixed_variance = choose_fixed_variance(count)
    masked = np.where(m[..., None], p, np.nan)
    s = np.sort(masked, axis=0)
    c = np.broadcast_to(count[:, None], s.shape[1:])
    lo = np.take_along_axis(s, np.maximum((c - 1) // 2, 0)[None], axis=0)[0]
    hi = np.take_along_axis(s, np.minimum(c // 2, max(s.shape[0] - 1, 0))[None], axis=0)[0]
    has = c > 0
    mu = np.where(has, 0.5 * (lo + hi), np.nan)
    resid = masked - mu[None]
    if fixed_variance:
        r = resid[np.broadcast_to(m[..., None], resid.shape)]
        sd = float(np.std(r)) if r.size else np.nan
        sigma = np.where(has, sd + 1e-30, np.nan)
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.nansum(masked, axis=0) / c
            var = np.nansum((masked - mean[None]) ** 2, axis=0) / c
        sigma = np.where(has, np.sqrt(var) + 1e-30, np.nan)
    return mu, sigma, count, bool(fixed_variance)


def _reference_cross_fit(
    phi, in_mask, out_mask, eval_mask, folds, mode="online", fixed_variance="auto"
):
    p = np.asarray(phi, dtype=np.float64)
    p = p[..., None] if p.ndim == 2 else p
    finite = np.isfinite(p).all(axis=(1, 2))
    keep = finite[:, None]
    p = np.where(keep[..., None], p, 0.0)
    inm = in_mask & keep if mode == "online" else None
    outm, ev = out_mask & keep, eval_mask & keep
    f = np.arange(p.shape[0]) if isinstance(folds, str) else np.asarray(folds)
    scores = np.full(p.shape[:2], np.nan)
    for k in np.unique(f[ev.any(axis=1)]):
        train, test = f != k, f == k
        out = _reference_fit(p[train], outm[train], fixed_variance)
        with np.errstate(invalid="ignore"):
            if mode == "online":
                fin = _reference_fit(p[train], inm[train], fixed_variance)
                s = lira_online_score(p[test], fin[:2], out[:2])
            else:
                s = lira_offline_score(p[test], out[:2])
        scores[test] = np.where(ev[test], s, np.nan)
    return scores


def _awkward_world(seed, m=24, n=40, a=2, dtype=np.float32, nan_outside=False):
    """φ with the cases that break fast paths: constant (σ = 0) and one-member populations,
    examples with no member, a diverged model, values on a 0.1 grid (and, for the fits, NaN
    outside the populations)."""
    g = np.random.default_rng(seed)
    phi = g.normal(0.0, 3.0, size=(m, n, a))
    phi[:, :5] = np.round(phi[:, :5], 1)  # ties
    keep = g.random((m, n)) < 0.4
    out = ~keep & (g.random((m, n)) < 0.8)
    phi[:, 5] = 0.1  # a constant population: σ = 0 + 1e-30
    keep[:, 6], keep[3, 6] = False, True  # one IN member
    keep[:, 7] = False  # no IN member: NaN fits, unscored
    if nan_outside:
        phi[~(keep | out)] = np.nan  # outside both populations
    phi[5] = np.nan  # a diverged model
    return phi.astype(dtype), keep, out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("fixed", [False, True, "auto"])
def test_fit_gaussians_equals_reference(dtype, fixed):
    for seed in range(3):
        phi, keep, _ = _awkward_world(seed, dtype=dtype, nan_outside=True)
        ok = np.arange(phi.shape[0]) != 5  # the diverged model (NaN outside the masks is fine)
        got = fit_gaussians(phi[ok], keep[ok], fixed_variance=fixed)
        mu, sigma, count, fv = _reference_fit(phi[ok], keep[ok], fixed)
        np.testing.assert_array_equal(got.mu, mu)
        np.testing.assert_array_equal(
            got.sigma, sigma
        )  # bit for bit, degenerate σ = 1e-30 included
        assert (got.count == count).all() and got.fixed_variance == fv
    assert fit_gaussians(phi[ok], keep[ok]).sigma[5, 0] == 1e-30  # the constant column


@pytest.mark.parametrize("mode", ["online", "offline"])
@pytest.mark.parametrize("fixed", [False, True, "auto"])
def test_cross_fitted_scores_equal_reference(mode, fixed):
    for seed, folds in (
        (0, holdout_folds(24, 3)),
        (1, "loo"),
        (2, np.r_[np.full(4, -1), np.arange(20) % 4]),
    ):
        phi, keep, out = _awkward_world(seed)
        ev = np.ones(keep.shape, bool)
        if not isinstance(folds, str):
            ev &= (folds >= 0)[:, None]
        got = cross_fitted_scores(phi, keep, out, ev, folds, mode=mode, fixed_variance=fixed)
        want = _reference_cross_fit(phi, keep, out, ev, folds, mode, fixed)
        np.testing.assert_array_equal(got.scores, want)
        assert np.isnan(got.scores[5]).all() and got.diverged.tolist() == [
            i == 5 for i in range(24)
        ]
        assert np.isfinite(got.scores).sum() > 300  # most pairs scored
        # float32 φ is kept as float32 and gives the scores of its float64 copy
        again = cross_fitted_scores(
            phi.astype(np.float64), keep, out, ev, folds, mode=mode, fixed_variance=fixed
        )
        np.testing.assert_array_equal(again.scores, got.scores)
