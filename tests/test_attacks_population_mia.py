"""Population MIA (docs/protocol.md §6.2): golden replay and Gaussian oracles (§10.1); the vectorized
stack path against the scikit-learn path; the batched logistic-regression solvers."""

from pathlib import Path

import numpy as np
import pytest
from scipy.stats import norm

from jaxmu.attacks import model_mias, model_mias_stacked, population_mia
from jaxmu.attacks.logistic import fit_logistic_exact, fit_logistic_lbfgs, logistic_loss_grad
from jaxmu.attacks.population_mia import attack_accuracy_stacked, population_mia_stacked

GOLDEN = np.load(Path(__file__).parent / "fixtures" / "golden_metrics.npz")


@pytest.mark.parametrize("i", range(5))
def test_golden_exact_replay_fresh_seed_per_call(i):
    """The fixture values are one population_mia call on a fresh RandomState(123) each
    (i.e. the Val-MIA position of a model evaluation): exact to 1e-12."""
    f, h = GOLDEN[f"mia{i}_forget_losses"], GOLDEN[f"mia{i}_heldout_losses"]
    got = population_mia(f, h, rng=np.random.RandomState(123))
    assert got == pytest.approx(float(GOLDEN[f"mia{i}_expected_mia"]), abs=1e-12)


def test_golden_is_not_reproduced_by_a_continued_stream():
    """Chaining the fixtures on one stream (the Test-MIA position) draws differently, so the
    RNG order really is what the exact match depends on."""
    rng = np.random.RandomState(123)
    vals = [
        population_mia(GOLDEN[f"mia{i}_forget_losses"], GOLDEN[f"mia{i}_heldout_losses"], rng=rng)
        for i in range(3)
    ]
    assert vals[0] == pytest.approx(float(GOLDEN["mia0_expected_mia"]), abs=1e-12)
    assert any(
        abs(v - float(GOLDEN[f"mia{i}_expected_mia"])) > 1e-6 for i, v in enumerate(vals[1:], 1)
    )


def test_inputs_not_mutated_and_model_mias_stream_order():
    f, h = GOLDEN["mia1_forget_losses"], GOLDEN["mia1_heldout_losses"]
    f0, h0 = f.copy(), h.copy()
    val, test = model_mias(f, h, GOLDEN["mia0_heldout_losses"])
    np.testing.assert_array_equal(f, f0)
    np.testing.assert_array_equal(h, h0)
    assert val == pytest.approx(float(GOLDEN["mia1_expected_mia"]), abs=1e-12)
    rng = np.random.RandomState(123)
    population_mia(f, h, rng=rng)
    assert test == population_mia(f, GOLDEN["mia0_heldout_losses"], rng=rng)
    vs, ts = model_mias_stacked(np.stack([f, f]), np.stack([h, h]), np.stack([h, h]))
    np.testing.assert_allclose(vs, [val, val])
    assert ts.shape == (2,)


def test_gaussian_oracles():
    """Identical loss distributions → 0.5; Gaussians at distance d → Φ(d/2) (m = 2000; the
    spread over data draws measured by simulation is ~0.011, tolerances are ~3.5 sd)."""
    g = np.random.default_rng(7)
    same = population_mia(g.normal(size=2000), g.normal(size=2500), rng=np.random.RandomState(123))
    assert same == pytest.approx(0.5, abs=0.04)
    for d in (1.0, 2.0):
        mia = population_mia(
            g.normal(size=2000), g.normal(d, 1.0, size=2500), rng=np.random.RandomState(123)
        )
        assert mia == pytest.approx(norm.cdf(d / 2), abs=0.04)


def test_bad_inputs():
    rng = np.random.RandomState(0)
    with pytest.raises(ValueError, match="NaN"):
        population_mia(np.r_[np.ones(10), np.nan], np.ones(10), rng=rng)
    with pytest.raises(ValueError, match=">= 6"):
        population_mia(np.ones(5), np.ones(100), rng=rng)
    with pytest.raises(TypeError):
        population_mia(np.ones(10), np.ones(10), rng=123)
    with pytest.raises(ValueError, match="model axes"):
        model_mias_stacked(np.ones((2, 10)), np.ones((3, 10)), np.ones((2, 10)))


# --------------------------------------------------------------------------- vectorized path


def _sklearn_rows(f, h):
    return np.array(
        [population_mia(f[i], h[i], rng=np.random.RandomState(123)) for i in range(len(f))]
    )


def test_stacked_matches_golden():
    """population_mia_stacked reproduces the fixture MIAs (mia0 and mia1 share a shape, so
    they also run as one two-row stack)."""
    for i in range(5):
        f, h = GOLDEN[f"mia{i}_forget_losses"], GOLDEN[f"mia{i}_heldout_losses"]
        got = population_mia_stacked(f[None], h[None])
        assert got.shape == (1,)
        assert got[0] == pytest.approx(float(GOLDEN[f"mia{i}_expected_mia"]), abs=1e-6)
    pair = population_mia_stacked(
        np.stack([GOLDEN["mia0_forget_losses"], GOLDEN["mia1_forget_losses"]]),
        np.stack([GOLDEN["mia0_heldout_losses"], GOLDEN["mia1_heldout_losses"]]),
    )
    np.testing.assert_allclose(
        pair, [float(GOLDEN["mia0_expected_mia"]), float(GOLDEN["mia1_expected_mia"])], atol=1e-6
    )


def _case(kind, n_f, n_h, rows, seed):
    g = np.random.default_rng(seed)
    f, h = g.gamma(1.0, size=(rows, n_f)), g.gamma(1.0, size=(rows, n_h))
    if kind == "shifted":
        h = h + g.uniform(0.2, 2.0, size=(rows, 1))
    elif kind == "ties":  # few distinct values: many exact ties in the feature
        f, h = np.round(f, 1), np.round(1.3 * h, 1)
    elif kind == "separable":  # disjoint ranges
        f, h = 0.01 * f, 0.01 * h + 0.2
    elif kind == "tiny":  # near-chance and tiny scale: lbfgs stops at iteration 0-2
        f, h = 1e-3 * g.normal(size=(rows, n_f)), 1e-3 * g.normal(size=(rows, n_h))
    elif kind == "wide":  # large unscaled losses: long lbfgs runs (memory wraps)
        f, h = 20.0 * f, 20.0 * h + 3.0
    return f, h


@pytest.mark.parametrize(
    "kind,n_f,n_h",
    [("same", 6, 6), ("same", 6, 40), ("shifted", 25, 7), ("ties", 60, 90),
     ("separable", 30, 30), ("tiny", 180, 180), ("wide", 100, 150), ("same", 180, 120)],
)
def test_stacked_matches_sklearn(kind, n_f, n_h):
    """Random stacks, including m = 6 (the minimum), unequal n_f/n_h, ties, separable data and
    near-chance data (where lbfgs stops far from the optimum): equal to the scikit-learn
    path to 1e-6."""
    f, h = _case(kind, n_f, n_h, rows=2, seed=n_f * 1000 + n_h)
    np.testing.assert_allclose(population_mia_stacked(f, h), _sklearn_rows(f, h), atol=1e-6)


def test_model_mias_stacked_matches_model_mias():
    """Val then Test MIA continue one stream per model, as model_mias (unequal n_v, n_t)."""
    g = np.random.default_rng(11)
    f, v, t = g.gamma(1.0, size=(2, 50)), g.gamma(1.2, size=(2, 70)), g.gamma(1.2, size=(2, 35))
    vs, ts = model_mias_stacked(f, v, t)
    ref = np.array([model_mias(f[i], v[i], t[i]) for i in range(2)])
    np.testing.assert_allclose(vs, ref[:, 0], atol=1e-6)
    np.testing.assert_allclose(ts, ref[:, 1], atol=1e-6)


def test_rows_are_independent():
    """Row i of a stack equals the one-row call, bit for bit, whatever the other rows are."""
    g = np.random.default_rng(3)
    f = np.concatenate([g.gamma(1.0, size=(3, 80)), 1e-3 * g.normal(size=(2, 80))])
    h = np.concatenate([g.gamma(1.5, size=(3, 60)), 1e-3 * g.normal(size=(2, 60))])
    stack = population_mia_stacked(f, h)
    for i in range(len(f)):
        np.testing.assert_array_equal(stack[i], population_mia_stacked(f[i:i + 1], h[i:i + 1])[0])
    order = np.array([4, 2, 0, 3, 1])
    np.testing.assert_array_equal(population_mia_stacked(f[order], h[order]), stack[order])


def test_stacked_nan_rows():
    g = np.random.default_rng(4)
    f, h = g.gamma(1.0, size=(4, 30)), g.gamma(1.4, size=(4, 40))
    f[1, 5], h[3, 0] = np.nan, -np.inf
    got = population_mia_stacked(f, h)
    assert np.isnan(got[[1, 3]]).all()
    np.testing.assert_array_equal(got[[0, 2]], population_mia_stacked(f[[0, 2]], h[[0, 2]]))
    assert np.isnan(population_mia_stacked(np.full((2, 10), np.nan), np.ones((2, 10)))).all()
    assert np.isnan(attack_accuracy_stacked(np.full((1, 12), np.inf))).all()


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: population_mia_stacked(np.ones(10), np.ones((1, 10))), "forget_losses must"),
        (lambda: population_mia_stacked(np.ones((1, 10)), np.ones((1, 2, 10))), "heldout_losses"),
        (lambda: population_mia_stacked(np.ones((2, 10)), np.ones((3, 10))), "model axes differ"),
        (lambda: population_mia_stacked(np.ones((2, 5)), np.ones((2, 10))), ">= 6"),
        (lambda: model_mias_stacked(np.ones((2, 10)), np.ones((2, 10)), np.ones((2, 4))), ">= 6"),
        (lambda: attack_accuracy_stacked(np.ones((2, 13))), r"\[models, 2m\]"),
        (lambda: attack_accuracy_stacked(np.ones((2, 10))), "m >= 6"),
    ],
)
def test_stacked_bad_shapes(call, match):
    with pytest.raises(ValueError, match=match) as e:
        call()
    assert "\n" not in str(e.value)


# --------------------------------------------------------------------------- logistic solvers


def _sklearn_fit(x, y):
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression().fit(x[:, None], y)
    return lr.coef_[0, 0], lr.intercept_[0], lr.n_iter_[0]


def test_lbfgs_replay_matches_sklearn_coefficients():
    """Coefficients and iteration counts of scikit-learn's lbfgs fit, from 0 iterations
    (gradient at the start already below tol) to runs long enough to wrap the 10-pair memory."""
    g = np.random.default_rng(0)
    n = 200
    y = (np.arange(n) % 2).astype(float)
    xs = [
        1e-3 * g.normal(size=n),  # converged at (0, 0)
        g.normal(size=n) * 0.3 + 0.02 * y,  # stops after 1-3 iterations
        g.gamma(1.0, size=n) + 1.5 * y,
        20.0 * g.gamma(1.0, size=n) + 6.0 * y,  # unscaled: many iterations
        np.round(3 * g.gamma(1.0, size=n) + 8 * y, 1),  # ties, nearly separable
        np.where(y == 1, 1.0, 0.0) + 0.01 * g.normal(size=n),  # separable
    ]
    x = np.stack(xs)
    w, b, nit = fit_logistic_lbfgs(x, np.tile(y, (len(xs), 1)))
    ref = np.array([_sklearn_fit(xi, y) for xi in xs])
    np.testing.assert_allclose(w, ref[:, 0], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(b, ref[:, 1], rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(nit, ref[:, 2])
    assert nit[0] == 0 and nit.max() > 10


def test_exact_optimum_and_why_the_replay():
    """fit_logistic_exact has zero gradient. On weakly informative data lbfgs stops (tol 1e-4
    on the gradient) before that optimum, here already at (0, 0), and the two predict
    differently, so the MIA replays lbfgs rather than solving exactly."""
    g = np.random.default_rng(1)
    n = 324
    y = (np.arange(n) % 2).astype(float)
    x = np.stack([1e-4 * (g.normal(size=n) + y), g.gamma(1.0, size=n) + 2.0 * y])
    yy = np.tile(y, (2, 1))
    we, be = fit_logistic_exact(x, yy)
    _, gw, gb = logistic_loss_grad(we, be, x, yy)
    assert np.abs(gw).max() < 1e-12 and np.abs(gb).max() < 1e-12
    wl, bl, nit = fit_logistic_lbfgs(x, yy)
    assert nit[0] == 0 and wl[0] == 0.0 and bl[0] == 0.0
    exact_pred = x[0] * we[0] + be[0] > 0
    assert 0 < exact_pred.sum() < n  # lbfgs predicts class 0 everywhere
    assert abs(we[1] - wl[1]) < 1e-2 * abs(we[1])  # informative data: close to the optimum


def test_logistic_bad_inputs():
    with pytest.raises(ValueError, match="problems, n"):
        fit_logistic_lbfgs(np.ones(5), np.ones(5))
    with pytest.raises(ValueError, match="labels 0 and 1"):
        fit_logistic_lbfgs(np.ones((1, 4)), np.array([0.0, 1.0, 2.0, 1.0]))
    with pytest.raises(ValueError, match="NaN"):
        fit_logistic_exact(np.array([[0.0, np.nan]]), np.array([0.0, 1.0]))
