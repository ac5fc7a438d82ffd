"""Intervals over seeds and paired comparisons (jaxmu.stats, issue 14 items 1-2)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as S

from jaxmu import stats


def test_t_interval_matches_scipy():
    v = np.random.default_rng(0).normal(0.9, 0.02, 10)
    got = stats.interval(v)
    lo, hi = S.t.interval(0.95, 9, loc=v.mean(), scale=S.sem(v))
    assert got.n == 10 and got.mean == pytest.approx(v.mean())
    assert (got.low, got.high) == pytest.approx((lo, hi), rel=1e-12)


def test_diverged_seeds_are_left_out_and_counted():
    got = stats.interval([0.8, np.nan, 0.9])
    assert (got.n, got.excluded) == (2, 1) and got.format().endswith("(2 of 3; 1 diverged)")
    one = stats.interval([0.5])
    assert math.isnan(one.half_width) and one.format() == "0.5000 ± n/a (1 seed)"
    assert stats.interval([np.nan, np.nan]).format() == "nan (0 of 2; 2 diverged)"


def test_paired_test_matches_scipy_and_uses_only_seeds_finite_on_both_sides():
    g = np.random.default_rng(1)
    a, b = g.normal(0.5, 0.05, 8), g.normal(0.45, 0.05, 8)
    p = stats.paired(a, b)
    assert p.p_value == pytest.approx(S.ttest_rel(a, b).pvalue, rel=1e-12)
    assert p.diff.mean == pytest.approx(np.mean(a - b))
    a2 = a.copy()
    a2[3] = np.nan
    keep = np.arange(8) != 3
    assert stats.paired(a2, b).p_value == pytest.approx(S.ttest_rel(a[keep], b[keep]).pvalue, rel=1e-12)
    with pytest.raises(ValueError, match="one value per seed"):
        stats.paired(a, b[:3])


def test_a_shift_every_seed_shares_is_significant_and_noise_is_not():
    base = np.random.default_rng(2).normal(0.5, 0.1, 10)
    shifted = stats.paired(base + 0.05, base)  # the pairing removes the seeds' spread
    assert shifted.significant and shifted.p_value < 1e-12
    assert not stats.paired(base, base + 0.05).p_value > 1e-12
    zero_mean = np.tile([0.01, -0.01], 5)  # differences averaging 0: nothing to tell apart
    assert stats.paired(base + zero_mean, base).p_value == pytest.approx(1.0)
    assert not stats.paired(base + zero_mean, base).significant
    same = stats.paired(base, base)
    assert same.p_value == 1.0 and not same.significant


def test_separation_warns_once_per_objective_within_noise():
    orig = {"forget_acc": np.ones(10), "val_mia": np.full(10, 0.48) + np.linspace(-0.01, 0.01, 10),
            "test_acc": np.full(10, 0.98)}
    retr = {"forget_acc": np.full(10, 0.97) + np.linspace(-0.005, 0.005, 10),
            "val_mia": np.full(10, 0.48) + np.linspace(0.01, -0.01, 10), "test_acc": np.full(10, 0.98)}
    gaps = stats.separation(orig, retr, ["forget_acc", "val_mia", "test_acc"])
    assert gaps["forget_acc"].significant and not gaps["val_mia"].significant
    warnings = stats.separation_warnings(gaps)
    assert len(warnings) == 1 and "val_mia" in warnings[0] and "|2 ValMIA_u - 1|" in warnings[0]
    table = stats.separation_table(gaps)
    assert "| forget_acc | \\|FA_u - FA_R\\| |" in table and "**no**" in table


def test_leaderboard_marks_significant_paired_differences():
    from jaxmu.report import leaderboard

    g = np.random.default_rng(4)
    base = g.uniform(0.02, 0.05, 10)
    good = {"retdev": base, "indiscernibility": np.full(10, 0.9) + g.normal(0, 0.01, 10)}
    close = {"retdev": base + g.normal(0, 1e-4, 10), "indiscernibility": good["indiscernibility"] - 1e-4}
    bad = {"retdev": base + 0.05, "indiscernibility": good["indiscernibility"] - 0.2}
    table = leaderboard({"close": close, "good": good, "bad": bad}, {"good": 2.0})
    rows = {ln.split(" | ")[1]: ln for ln in table.splitlines()[2:]}
    assert rows["bad"].count(" *") == 2  # both differences to #1 significant
    top = table.splitlines()[2].split(" | ")[1]
    assert "— | —" in rows[top]


def test_nan_seeds_are_named_by_why_they_are_nan():
    """RetDev is undefined (not diverged) for class-wise forgetting, where the retrain's FA is 0."""
    vals = [np.nan, 0.5, np.nan]
    assert stats.interval(vals, diverged=[True, False, True]).format().endswith("(1 of 3; 2 diverged)")
    assert stats.interval(vals, diverged=[False, False, False]).format().endswith("(1 of 3; 2 undefined)")
    assert stats.interval(vals, diverged=[True, False, False]).format().endswith("(1 of 3; 2 NaN)")
    assert stats.interval([np.nan] * 2, diverged=[False, False]).format() == "nan (0 of 2; 2 undefined)"
