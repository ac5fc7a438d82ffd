"""KLOM (Georgiev et al. 2024): the vectorized estimator against a per-example oracle written from
the published definition, and analytic cases (identical populations, shifted Gaussians)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from jaxmu.attacks.klom import klom, klom_summary


def _oracle_one(u: np.ndarray, o: np.ndarray) -> float:
    """One example, the published recipe step by step: clip, 20 shared bins over the joint
    range (np.linspace + np.digitize), frequencies, q floored at 1e-5 where p > 0, scipy entropy."""
    u, o = np.clip(u, -100, 100), np.clip(o, -100, 100)
    lo, hi = min(u.min(), o.min()), max(u.max(), o.max())
    if lo >= hi:
        hi = lo + 1
    edges = np.linspace(lo, hi, 21)
    pc = np.array([np.sum(np.digitize(u, edges) == i) for i in range(1, 21)])
    qc = np.array([np.sum(np.digitize(o, edges) == i) for i in range(1, 21)])
    p = pc / pc.sum() if pc.sum() > 0 else np.zeros(20)
    q = qc / qc.sum() if qc.sum() > 0 else np.zeros(20)
    q = np.where(p > 0, np.maximum(q, 1e-5), q)
    return float(sps.entropy(pk=p, qk=q))


def test_equals_the_per_example_recipe():
    rng = np.random.default_rng(0)
    n = 300
    u = rng.normal(1.0, 2.0, (16, n))
    o = rng.normal(0.0, 1.5, (24, n))
    u[:, :20] = np.round(u[:, :20])           # ties, values on bin edges
    o[:, 20:30] = u[:8, 20:30].repeat(3, 0)    # overlapping supports
    u[:, 40] = 3.0                             # one side constant
    u[:, 41], o[:, 41] = 2.0, 2.0              # both constant: range [2, 3]
    u[:, 42] = rng.normal(0, 500, 16)          # clipped at ±100
    want = np.array([_oracle_one(u[:, j], o[:, j]) for j in range(n)])
    got = klom(u, o, chunk=64)                 # several chunks
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert got[41] == 0.0


def test_the_maximum_sample_is_not_counted_as_published():
    # u's only samples sit at the joint maximum: no counted sample, NaN (0/0 in the reference)
    u = np.full((4, 1), 5.0)
    o = np.array([[0.0], [1.0], [2.0], [3.0]])
    assert np.isnan(klom(u, o)[0])
    # one sample of u at the maximum, the rest in the first bin: counted as 3 of 3, not 3 of 4
    u = np.array([[0.0], [0.0], [0.0], [5.0]])
    np.testing.assert_allclose(klom(u, o)[0], _oracle_one(u[:, 0], o[:, 0]), rtol=1e-12)


def test_identical_populations_score_zero():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(50, 40))
    np.testing.assert_array_equal(klom(a, a), np.zeros(40))


def test_shifted_gaussians_approach_the_closed_form():
    """KL(N(δ,1) ‖ N(0,1)) = δ²/2; histogram bias shrinks with many samples."""
    rng = np.random.default_rng(2)
    m, n, delta = 20000, 8, 0.5
    u = rng.normal(delta, 1.0, (m, n))
    o = rng.normal(0.0, 1.0, (m, n))
    got = klom(u, o)
    assert abs(np.median(got) - delta ** 2 / 2) < 0.03
    assert (klom(rng.normal(1.0, 1, (m, 2)), o[:, :2]) > got[:2]).all()  # larger shift, larger KL


def test_summary_is_the_95th_percentile_per_group():
    per = np.array([0.0, 1.0, 2.0, np.nan, 4.0])
    s = klom_summary(per, {"forget": [0, 1, 2, 3], "val": np.array([False] * 4 + [True]), "none": []})
    assert s["forget"] == pytest.approx(np.percentile([0.0, 1.0, 2.0], 95))
    assert s["val"] == 4.0 and np.isnan(s["none"])


@pytest.mark.parametrize("bad", [np.zeros((0, 3)), np.zeros(3), np.array([[np.inf, 0.0, 0.0]])])
def test_bad_inputs(bad):
    with pytest.raises(ValueError, match="margins_unlearned"):
        klom(bad, np.zeros((2, 3)))
    with pytest.raises(ValueError, match="same examples"):
        klom(np.zeros((2, 3)), np.zeros((2, 4)))
