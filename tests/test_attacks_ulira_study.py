"""The study's own U-LiRA variant (docs/protocol.md §8.1) and the ToW score, on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from jaxmu.attacks.ulira import FORGOTTEN, NEVER_SEEN, RETAINED
from jaxmu.attacks.ulira_study import ulira_study
from jaxmu.metrics import tug_of_war


def _pdf(z, mu, sd):
    return math.exp(-0.5 * ((z - mu) / sd) ** 2) / (sd * math.sqrt(2 * math.pi))


def test_hand_computed_example():
    # example 0: forgotten by models 0-3 (z = 1,1,1,0), never seen by 4-7 (z = 1,0,0,0)
    # example 1: every forgotten model correct -> sigma_f = 0 -> degenerate
    # example 2: retained everywhere -> never scored, not counted as degenerate
    z = np.array([[1, 1, 1], [1, 1, 1], [1, 1, 1], [0, 1, 1], [1, 0, 1], [0, 1, 1], [0, 0, 1], [0, 1, 1]])
    roles = np.array([[FORGOTTEN, FORGOTTEN, RETAINED]] * 4 + [[NEVER_SEEN, NEVER_SEEN, RETAINED]] * 4)
    r = ulira_study(z, roles)
    mu_f, sd_f = 0.75, math.sqrt(0.75 * 0.25)
    mu_n, sd_n = 0.25, math.sqrt(0.25 * 0.75)
    p1 = _pdf(1, mu_f, sd_f) / (_pdf(1, mu_f, sd_f) + _pdf(1, mu_n, sd_n))
    p0 = _pdf(0, mu_f, sd_f) / (_pdf(0, mu_f, sd_f) + _pdf(0, mu_n, sd_n))
    np.testing.assert_allclose(r.p_member[:4, 0], [p1, p1, p1, p0], rtol=1e-12)
    assert np.isnan(r.p_member[4:, 0]).all() and np.isnan(r.p_member[:, 1:]).all()
    assert r.n_instances == 4 and r.n_degenerate == 1
    assert r.mean_p == pytest.approx((3 * p1 + p0) / 4)
    assert r.frac_above_half == pytest.approx(0.75)  # p1 > 0.5 > p0
    assert set(r.summary()) >= {"study_mean_p", "study_frac_p_gt_half", "study_degenerate_examples"}


def test_indistinguishable_sides_give_one_half():
    rng = np.random.default_rng(0)
    z = rng.integers(0, 2, (40, 30))
    z = np.concatenate([z, z])  # the never-seen side is a copy of the forgotten side
    roles = np.concatenate([np.full((40, 30), FORGOTTEN), np.full((40, 30), NEVER_SEEN)])
    r = ulira_study(z, roles)
    ok = ~np.isnan(r.p_member[:40])
    np.testing.assert_allclose(r.p_member[:40][ok], 0.5, atol=1e-12)
    assert r.n_instances == ok.sum() > 0


def test_bad_inputs():
    with pytest.raises(ValueError, match="0/1 correctness"):
        ulira_study(np.full((2, 2), 0.3), np.zeros((2, 2), int))
    with pytest.raises(ValueError, match="both be"):
        ulira_study(np.zeros((2, 2)), np.zeros((2, 3), int))


def test_tug_of_war():
    ra, fa, ta = np.array([0.9, 1.0]), np.array([0.8, 1.0]), np.array([0.85, 0.97])
    ra_r, fa_r, ta_r = np.array([0.95, 1.0]), np.array([0.7, 0.9]), np.array([0.85, 0.97])
    want = [(1 - 0.05) * (1 - 0.1) * 1.0, 1.0 * (1 - 0.1) * 1.0]
    np.testing.assert_allclose(tug_of_war(ra, fa, ta, ra_r, fa_r, ta_r), want, rtol=1e-12)
    assert tug_of_war(1.0, 1.0, 1.0, 1.0, 1.0, 1.0) == 1.0
    with pytest.raises(ValueError):
        tug_of_war(1.5, 1.0, 1.0, 1.0, 1.0, 1.0)
