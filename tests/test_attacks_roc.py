"""ROC statistics (docs/protocol.md §8.3 item 10) against §10.1's analytic Gaussian oracles."""

import numpy as np
import pytest
from scipy.stats import norm

from jaxmu.attacks import (
    attack_summary,
    auc,
    balanced_accuracy,
    bootstrap_ci,
    roc_curve,
    tpr_at_fpr,
)


def test_roc_small_by_hand_with_ties():
    s = np.array([0.9, 0.8, 0.8, 0.3, 0.1])
    y = np.array([1, 1, 0, 1, 0])
    fpr, tpr, thr = roc_curve(s, y)
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 1.0])
    np.testing.assert_allclose(tpr, [0, 1 / 3, 2 / 3, 1.0, 1.0])
    np.testing.assert_allclose(thr, [np.inf, 0.9, 0.8, 0.3, 0.1])
    # Mann–Whitney with ties as 1/2: pairs (pos, neg): (0.9,0.8)=1 (0.9,0.1)=1 (0.8,0.8)=.5
    # (0.8,0.1)=1 (0.3,0.8)=0 (0.3,0.1)=1 → 4.5/6
    assert auc(s, y) == pytest.approx(4.5 / 6)
    assert balanced_accuracy(s, y) == pytest.approx(1 - (0.5 + 0.0) / 2)
    assert tpr_at_fpr(s, y, 0.5) == pytest.approx(1 / 3)  # strictly below 0.5
    assert tpr_at_fpr(s, y, 0.51) == pytest.approx(1.0)


def test_auc_matches_sklearn_on_tied_scores():
    from sklearn.metrics import roc_auc_score

    g = np.random.default_rng(3)
    s = g.integers(0, 5, size=400).astype(float)
    y = g.random(400) < 0.4
    assert auc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


@pytest.mark.parametrize(
    "d, ref",
    [
        (0.5, (0.6382, 0.5987, 0.0339, 0.0048)),
        (1.0, (0.7602, 0.6915, 0.0924, 0.0183)),
        (2.0, (0.9214, 0.8413, 0.3721, 0.1378)),
    ],
)
def test_gaussian_oracles(d, ref):
    """IN ~ N(d,1) vs OUT ~ N(0,1), 200k per class: AUC → Φ(d/√2), accuracy → Φ(d/2),
    TPR@α → 1 − Φ(Φ⁻¹(1−α) − d)."""
    assert norm.cdf(d / np.sqrt(2)) == pytest.approx(ref[0], abs=1e-4)
    assert 1 - norm.cdf(norm.ppf(0.999) - d) == pytest.approx(ref[3], abs=1e-4)
    g = np.random.default_rng(int(d * 10))
    n = 200_000
    s = np.r_[g.normal(d, 1, n), g.normal(0, 1, n)]
    y = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    out = attack_summary(s, y)
    # sampling sd measured over 15 draws: AUC ≤ 7e-4, acc ≤ 6e-4, TPR@1% ≤ 2.3e-3,
    # TPR@0.1% ≤ 4.2e-3 (d = 2); the tolerances below are ≈ 4–5 sd (reference values are
    # rounded to 1e-4).
    assert out["auc"] == pytest.approx(ref[0], abs=0.003)
    assert out["accuracy"] == pytest.approx(ref[1], abs=0.003)
    assert out["tpr_at_1pct"] == pytest.approx(ref[2], abs=0.006 if d < 2 else 0.011)
    assert out["tpr_at_0.1pct"] == pytest.approx(ref[3], abs=0.004 if d < 2 else 0.02)
    assert out["n_pos"] == n and out["n_neg"] == n


def test_null_gives_chance_and_tpr_alpha():
    g = np.random.default_rng(0)
    n = 100_000
    out = attack_summary(g.normal(size=2 * n), np.r_[np.ones(n), np.zeros(n)])
    assert out["auc"] == pytest.approx(0.5, abs=0.005)
    assert 0.5 <= out["accuracy"] <= 0.51
    assert out["tpr_at_1pct"] == pytest.approx(0.01, abs=0.003)


def test_bootstrap_ci_covers_and_is_deterministic():
    g = np.random.default_rng(0)
    groups = np.repeat(np.arange(40), 50)
    y = np.tile(np.r_[np.ones(25, bool), np.zeros(25, bool)], 40)
    s = g.normal(size=y.size) + y * 1.0
    ci = bootstrap_ci(s, y, groups, 100, np.random.default_rng(1))
    ci2 = bootstrap_ci(s, y, groups, 100, np.random.default_rng(1))
    assert ci == ci2
    lo, hi = ci["auc"]
    point = auc(s, y)
    assert lo < point < hi and hi - lo < 0.1
    assert lo < 0.7602 < hi
    assert set(ci) == {"accuracy", "auc", "tpr_at_1pct", "tpr_at_0.1pct"}
    ci_rs = bootstrap_ci(s, y, groups, 20, np.random.RandomState(0))
    assert ci_rs["auc"][0] < point


def test_bootstrap_fast_path_equals_pooling_the_drawn_groups():
    """The default statistic's weighted replicates (one sort) equal pooling the drawn groups'
    pairs and recomputing the summary (any other statistic takes that path), ties included."""
    g = np.random.default_rng(3)
    groups = np.repeat(np.arange(12), 30)
    y = g.random(groups.size) < 0.3
    s = np.round(g.normal(size=y.size) + y * 0.8, 1)  # rounded: many ties, across groups too
    fast = bootstrap_ci(s, y, groups, 200, np.random.default_rng(7))
    pooled = bootstrap_ci(s, y, groups, 200, np.random.default_rng(7),
                          statistic=lambda a, b: attack_summary(a, b))
    assert set(fast) == set(pooled) == {"accuracy", "auc", "tpr_at_1pct", "tpr_at_0.1pct"}
    for k in fast:
        np.testing.assert_allclose(fast[k], pooled[k], rtol=0, atol=1e-12, err_msg=k)
    few = np.repeat(np.arange(3), 2)  # resamples missing a class are redrawn the same way on both paths
    y3, s3 = np.array([1, 1, 0, 0, 1, 0], bool), np.array([0.9, 0.8, 0.2, 0.1, 0.7, 0.3])
    assert bootstrap_ci(s3, y3, few, 30, np.random.RandomState(0)) == bootstrap_ci(
        s3, y3, few, 30, np.random.RandomState(0), statistic=lambda a, b: attack_summary(a, b))


def test_bad_inputs():
    with pytest.raises(ValueError, match="both classes"):
        roc_curve([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="NaN"):
        auc([np.nan, 0.2], [1, 0])
    with pytest.raises(ValueError, match="same length"):
        auc([0.1, 0.2, 0.3], [1, 0])
    with pytest.raises(ValueError, match="fpr_level"):
        tpr_at_fpr([0.1, 0.2], [1, 0], 0.0)
    with pytest.raises(ValueError, match="groups"):
        bootstrap_ci([0.1, 0.2], [1, 0], [0], 10, np.random.default_rng(0))
