"""NeurIPS 2023 forgetting score (docs/protocol.md §9): golden fixtures and §10.2 oracles."""

import itertools
import time
from pathlib import Path

import numpy as np
import pytest

from jaxmu.attacks import (
    bucket_points,
    final_score,
    forget_score,
    logit_scaled_confidence_reference,
    neurips_forget_score,
    per_example_epsilon,
)
from jaxmu.attacks.neurips_score import _torch_linspace_f32

GOLDEN = np.load(Path(__file__).parent / "fixtures" / "golden_metrics.npz")


@pytest.mark.parametrize("n", [16, 64, 512])
def test_golden_eps_and_forget_score(n):
    t0 = time.perf_counter()
    res = neurips_forget_score(GOLDEN[f"eps_N{n}_phi_unlearned"], GOLDEN[f"eps_N{n}_phi_retrained"])
    assert time.perf_counter() - t0 < 5.0
    np.testing.assert_allclose(res.eps, GOLDEN[f"eps_N{n}_expected_eps"], rtol=0, atol=1e-6)
    # In fact bit-exact (float32 rates and ε, as in the reference):
    np.testing.assert_array_equal(res.eps, GOLDEN[f"eps_N{n}_expected_eps"])
    assert res.forget_score == pytest.approx(float(GOLDEN[f"eps_N{n}_expected_forget_score"]))
    assert res.n_models == n and res.epsilon_max == int(np.ceil(np.log(n - 1)))
    assert res.eps[23] == 50.0  # the point-mass column


def test_bucket_points_and_forget_score():
    assert bucket_points(16).tolist() == [1, 0.5, 0.25, 0.125, 0.0625, 0.03125]  # ε_max = 3
    assert len(bucket_points(64)) == 10 and len(bucket_points(512)) == 14
    eps = np.array([0.0, 0.49, 0.5, 2.99, 3.0, 50.0, np.nan])
    want = (1 + 1 + 0.5 + 0.03125 + 0 + 0 + 0) / 7
    assert forget_score(eps, 16) == pytest.approx(want)
    assert final_score(0.5, [0.8, 0.9], [1.0, 0.7], [0.6], [0.8]) == pytest.approx(
        0.5 * (0.85 / 0.85) * 0.75
    )


def test_point_mass_and_perfect_separation_give_cap():
    g = np.random.default_rng(0)
    r = g.normal(size=(64, 3))
    u = np.stack([np.full(64, 0.3), r[:, 1] + 100.0, r[:, 2]], axis=1)
    eps = per_example_epsilon(u, r)
    assert eps[0] == 50.0 and eps[1] == 50.0 and eps[2] < 50.0
    assert forget_score(eps[:2], 64) == 0.0


def test_null_level_and_monotonicity():
    """Identical N(0,1) populations at N = 512: median ε ≈ 1.4–1.7 (never ~0) and F ≈ 0.1–0.35;
    mean ε grows with the separation of the means."""
    g = np.random.default_rng(1)
    res = neurips_forget_score(g.normal(size=(512, 16)), g.normal(size=(512, 16)))
    assert np.log(2) <= np.median(res.eps) <= 2.5
    assert 0.05 <= res.forget_score <= 0.45
    base, other = g.normal(size=(64, 24)), g.normal(size=(64, 24))
    means = [per_example_epsilon(base + d, other).mean() for d in (0.0, 1.0, 2.0, 3.0)]
    assert all(a < b for a, b in itertools.pairwise(means))


def test_nan_only_when_no_rule_survives():
    same = np.full((16, 1), 1.0)  # both point masses at one value: every rule is discarded
    assert np.isnan(per_example_epsilon(same, same.copy())[0])


def test_reference_phi():
    logits = np.array([[[2.0, 0.0, -1.0], [0.0, 300.0, 0.0]]])
    phi = logit_scaled_confidence_reference(logits, np.array([0, 0]))
    p = np.exp(logits[0, 0]) / np.exp(logits[0, 0]).sum()
    assert phi[0, 0] == pytest.approx(np.log(p[0] / (1 - p[0])), rel=1e-12)
    assert phi[0, 1] == pytest.approx(np.log(1e-45) - 0.0)  # floored at −103.6
    with pytest.raises(ValueError, match="labels must lie"):
        logit_scaled_confidence_reference(logits, np.array([0, 3]))


def test_torch_linspace_emulation():
    np.testing.assert_array_equal(_torch_linspace_f32(1.5, 2.5, 3), [1.5, 2.0, 2.5])
    assert _torch_linspace_f32(0.0, 1.0, 0).size == 0
    torch = pytest.importorskip("torch")
    g = np.random.default_rng(0)
    for _ in range(50):
        a = g.normal() * 5
        b = a + abs(g.normal()) * 20 + 0.01
        n = int(np.ceil((b - a) * 100))
        want = torch.linspace(a, b, n).numpy().astype(np.float64)
        np.testing.assert_array_equal(_torch_linspace_f32(a, b, n), want)


def test_bad_inputs():
    with pytest.raises(ValueError, match="example axes"):
        per_example_epsilon(np.zeros((4, 3)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="NaN"):
        per_example_epsilon(np.full((4, 1), np.nan), np.zeros((4, 1)))


def test_two_models_leave_no_bucket():
    """N = 2: eps_max = ceil(ln 1) = 0, no bucket, F = 0 (and no crash)."""
    from jaxmu.attacks.neurips_score import bucket_points, forget_score

    assert bucket_points(2).size == 0
    assert forget_score(np.array([0.0, 0.3, 5.0]), 2) == 0.0
    assert forget_score(np.array([0.0, 0.3, 5.0]), 3) == pytest.approx((1.0 + 1.0 + 0.0) / 3)


# ----------------------------------------------------------------------------- fast path = reference


def _hard_populations(seed, n_u, n_r, n=48):
    """φ with what trips a fast ε: ties and values on the threshold grids (φ on a 0.01 or 0.1
    grid, float32-rounded), point masses, identical and perfectly separated populations,
    one population inside the other, large ranges."""
    g = np.random.default_rng(seed)
    scale = g.choice([0.05, 0.5, 1.0, 3.0, 10.0], size=n)
    shift = g.choice([0.0, 0.3, 1.0, 5.0], size=n)
    u = g.normal(size=(n_u, n)) * scale + shift
    r = g.normal(size=(n_r, n)) * scale
    u[:, :6], r[:, :6] = np.round(u[:, :6], 2), np.round(r[:, :6], 2)  # on the 0.01 grid
    u[:, 6:10], r[:, 6:10] = np.round(u[:, 6:10], 1), np.round(r[:, 6:10], 1)
    u[:, 10] = 0.3  # point mass (degenerate)
    u[:, 11], r[:, 11] = 1.0, 1.0  # both point masses at one value: no rule survives
    u[:, 12] = r[: min(n_u, n_r), 12].mean() + 0.0 * u[:, 12]  # point mass inside the other
    u[:, 13] += 100.0  # perfectly separated
    m = min(n_u, n_r)
    u[:m, 14] = r[:m, 14]  # identical samples
    u[:, 15] *= 40.0  # a range of hundreds: thousands of single thresholds
    u[:, 16:20] = u[:, 16:20].astype(np.float32)
    r[:, 16:20] = r[:, 16:20].astype(np.float32)
    return u, r


@pytest.mark.parametrize("n_u,n_r", [(16, 16), (32, 32), (8, 24), (33, 17), (128, 128)])
def test_fast_epsilon_equals_reference(n_u, n_r):
    from jaxmu.attacks.neurips_score import _per_example_epsilon_reference

    for seed in range(2):
        u, r = _hard_populations(seed, n_u, n_r)
        got = per_example_epsilon(u, r)
        np.testing.assert_array_equal(got, _per_example_epsilon_reference(u, r))
    assert got[10] == 50.0 and np.isnan(got[11]) and got[13] == 50.0


def test_fast_epsilon_paths_agree(monkeypatch):
    """The gap method, the direct rule-by-rule method (large populations) and the reference
    fallback (an example the gap method cannot certify) give the same ε."""
    import jaxmu.attacks.neurips_score as ns

    u, r = _hard_populations(3, 24, 24)
    want = ns._per_example_epsilon_reference(u, r)
    np.testing.assert_array_equal(ns.per_example_epsilon(u, r), want)
    monkeypatch.setattr(ns, "_GAP_METHOD_MAX_K", 0)  # every example rule by rule
    np.testing.assert_array_equal(ns.per_example_epsilon(u, r), want)
    monkeypatch.setattr(ns, "_GAP_METHOD_MAX_K", 10**6)
    monkeypatch.setattr(ns, "_MAX_ABS", 1.0)  # nothing certified: every example falls back
    np.testing.assert_array_equal(ns.per_example_epsilon(u, r), want)
    monkeypatch.setattr(ns, "_MAX_ABS", 1e6)
    monkeypatch.setattr(ns, "_ELEMENTS", 1)  # one example per chunk
    np.testing.assert_array_equal(ns.per_example_epsilon(u, r), want)


def test_epsilon_table_is_the_rule_formula():
    from jaxmu.attacks.neurips_score import DELTA, _epsilon_table, _rule_eps

    for n_pos, n_neg in ((16, 16), (8, 24), (33, 5)):
        table = _epsilon_table(n_pos, n_neg, DELTA)
        for tp in range(n_pos + 1):
            for fp in range(n_neg + 1):
                perfect, eps = _rule_eps(np.array([tp]), np.array([fp]), n_pos, n_neg, DELTA)
                v = table[tp, fp]
                if perfect:
                    assert v == np.inf
                elif np.isnan(eps):
                    assert np.isnan(v)
                else:  # the reference clips each rule's ε at 0 after its max
                    assert max(float(v), 0.0) == eps
