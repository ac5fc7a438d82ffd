"""U-LiRA formulations (docs/protocol.md §8.3 items 1–9) on a synthetic split/forget-set world."""

import numpy as np
import pytest
from scipy.stats import norm

from jaxmu.attacks import (
    FORGOTTEN,
    NEVER_SEEN,
    RETAINED,
    bootstrap_ci,
    holdout_folds,
    ulira_deepunlearn,
    ulira_hayes,
)

S, K, P = 16, 4, 240  # splits (8 complementary pairs), forget sets per split, pool size


def _world(d_forget, c_method, seed=0, n_aug=2):
    """Roles and φ [M, P, A] of U_{s,f} and R_{s,f}, model index m = s*K + f.

    Not trained on x: φ ~ N(μ(x), 1); trained and kept: μ(x) + 3. The unlearned models add
    ``c_method`` to every example (a method that lowers/raises all confidences) and
    ``d_forget`` to forgotten ones (imperfect forgetting).
    """
    g = np.random.default_rng(seed)
    mu = g.normal(0.0, 2.0, size=P)
    role = np.empty((S * K, P), dtype=np.int64)
    for i in range(S // 2):
        half = g.permutation(P)[: P // 2]
        in_a = np.zeros(P, bool)
        in_a[half] = True
        for s, train in ((2 * i, in_a), (2 * i + 1, ~in_a)):
            idx = g.permutation(np.flatnonzero(train))
            parts = np.array_split(idx, K)  # a partition: every x forgotten once per split
            for f in range(K):
                r = np.where(train, RETAINED, NEVER_SEEN)
                r[parts[f]] = FORGOTTEN
                role[s * K + f] = r
    shape = (S * K, P, n_aug)
    base = mu[None, :, None]
    phi_r = base + 3.0 * (role == RETAINED)[..., None] + g.normal(size=shape)
    phi_u = (
        base
        + c_method
        + 3.0 * (role == RETAINED)[..., None]
        + d_forget * (role == FORGOTTEN)[..., None]
        + g.normal(size=shape)
    )
    split_folds = holdout_folds(S, 4)
    folds = np.repeat(split_folds, K)
    return phi_u, role, phi_r, role.copy(), folds


def test_world_roles_are_as_specified():
    _, role, _, _, folds = _world(0.0, 0.0)
    assert (np.sum(role == FORGOTTEN, axis=0) == S // 2).all()  # forgotten in S/2 pairs
    assert (folds.reshape(S, K) == folds.reshape(S, K)[:, :1]).all()
    assert (folds[0 :: 2 * K] == folds[K :: 2 * K]).all()  # complementary splits share a fold


def test_hayes_pairs_labels_and_null():
    phi_u, ru, phi_r, rr, folds = _world(0.0, 0.0, seed=1)
    res = ulira_hayes(phi_u, ru, phi_r, rr, folds, folds)
    m_u = phi_u.shape[0]
    assert res.n_unscored == 0 and res.formulation == "hayes"
    assert (res.labels == (res.model_index < m_u)).all()
    u_rows = res.model_index[res.labels]
    r_rows = res.model_index[~res.labels] - m_u
    assert (ru[u_rows, res.example_index[res.labels]] == FORGOTTEN).all()
    assert (rr[r_rows, res.example_index[~res.labels]] == FORGOTTEN).all()
    assert res.summary["n_pos"] == res.summary["n_neg"] == P * S // 2  # balanced by construction
    assert res.summary["auc"] == pytest.approx(0.5, abs=0.04)
    assert res.summary["accuracy"] < 0.54
    # small populations → fixed variance chosen automatically; fits never see their fold
    assert res.fits.fixed_variance_in.all()
    # x is IN for one split of every pair (8 U models); each fold holds 2 pairs → fits use 6
    assert (res.fits.in_count == S // 2 - 2).all()


def test_hayes_detects_imperfect_forgetting():
    d = 1.5
    phi_u, ru, phi_r, rr, folds = _world(d, 0.0, seed=2)
    res = ulira_hayes(phi_u, ru, phi_r, rr, folds, folds)
    # A = 2 independent queries average the noise: effective separation d·√2
    assert res.summary["auc"] == pytest.approx(norm.cdf(d), abs=0.05)
    off = ulira_hayes(phi_u, ru, phi_r, rr, folds, folds, mode="offline")
    assert 0.55 < off.summary["auc"] < res.summary["auc"]
    ci = bootstrap_ci(res.scores, res.labels, res.model_index, 50, np.random.default_rng(0))
    assert ci["auc"][0] < res.summary["auc"] < ci["auc"][1]


def test_formulations_differ_as_specified():
    """A method that shifts all confidences by c but forgets perfectly: Hayes (OUT = retrained)
    sees the shift, Deep-Unlearn style (OUT = same method, never seen) does not."""
    c = 1.5
    phi_u, ru, phi_r, rr, folds = _world(0.0, c, seed=3)
    hayes = ulira_hayes(phi_u, ru, phi_r, rr, folds, folds)
    du = ulira_deepunlearn(phi_u, ru, folds, rng=np.random.RandomState(0))
    assert hayes.summary["auc"] > 0.8
    assert du.summary["auc"] == pytest.approx(0.5, abs=0.04)
    assert du.summary["n_pos"] == du.summary["n_neg"]
    assert (
        ru[du.model_index, du.example_index] == np.where(du.labels, FORGOTTEN, NEVER_SEEN)
    ).all()
    # imperfect forgetting is visible to both
    phi_u2, *_ = _world(1.5, c, seed=3)
    du2 = ulira_deepunlearn(phi_u2, ru, folds, rng=np.random.RandomState(0))
    assert du2.summary["auc"] > 0.8
    again = ulira_deepunlearn(phi_u2, ru, folds, rng=np.random.RandomState(0))
    np.testing.assert_array_equal(again.scores, du2.scores)


def test_bad_inputs():
    phi_u, ru, phi_r, rr, folds = _world(0.0, 0.0)
    with pytest.raises(ValueError, match="role_u"):
        ulira_hayes(phi_u, ru[:, :-1], phi_r, rr, folds, folds)
    with pytest.raises(ValueError, match="ints in"):
        ulira_hayes(phi_u, ru + 1, phi_r, rr, folds, folds)
    with pytest.raises(ValueError, match="folds_r"):
        ulira_hayes(phi_u, ru, phi_r, rr, folds, folds[:-1])
    with pytest.raises(ValueError, match="both"):
        ulira_deepunlearn(phi_u, np.full_like(ru, RETAINED), folds, rng=np.random.RandomState(0))
