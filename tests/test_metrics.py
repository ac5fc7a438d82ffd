"""Tests for jaxmu.metrics (docs/protocol.md §6.1, §6.3–6.5, §7.1–7.2), values checked by hand."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmu import metrics as M


def test_accuracy_stacked_and_single():
    logits = np.array(
        [
            [[2.0, 1.0], [0.0, 3.0], [1.0, 0.0], [0.0, 1.0]],  # preds 0 1 0 1
            [[0.0, 1.0], [0.0, 3.0], [0.0, 1.0], [0.0, 1.0]],  # preds 1 1 1 1
        ]
    )
    labels = np.array([0, 1, 1, 1])
    np.testing.assert_allclose(M.accuracy(logits, labels), [0.75, 0.75])
    assert M.accuracy(logits[0], labels) == pytest.approx(0.75)
    per_model = np.array([[0, 1, 0, 1], [0, 0, 0, 0]])
    np.testing.assert_allclose(M.accuracy(logits, per_model), [1.0, 0.0])
    # JAX input, under jit and vmap over the model axis
    acc_j = jax.jit(M.accuracy)(jnp.asarray(logits), jnp.asarray(labels))
    np.testing.assert_allclose(np.asarray(acc_j), [0.75, 0.75])
    acc_v = jax.vmap(M.accuracy, in_axes=(0, None))(jnp.asarray(logits), jnp.asarray(labels))
    np.testing.assert_allclose(np.asarray(acc_v), [0.75, 0.75])


def test_accuracy_bad_inputs():
    with pytest.raises(ValueError, match="labels shape"):
        M.accuracy(np.zeros((2, 4, 3)), np.zeros(5, int))
    with pytest.raises(ValueError, match="labels must lie"):
        M.accuracy(np.zeros((4, 3)), np.array([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="logits must be"):
        M.accuracy(np.zeros(3), np.zeros(3, int))


def test_per_example_ce_matches_definition_and_is_stable():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(3, 5, 4))
    y = rng.integers(0, 4, size=5)
    want = -np.log(np.exp(z) / np.exp(z).sum(-1, keepdims=True))[:, np.arange(5), y]
    np.testing.assert_allclose(M.per_example_ce(z, y), want, rtol=1e-12)
    got_j = jax.jit(M.per_example_ce)(jnp.asarray(z, jnp.float32), jnp.asarray(y))
    np.testing.assert_allclose(np.asarray(got_j), want, rtol=1e-5, atol=1e-6)
    # confident and huge logits: no overflow, loss = logit gap
    big = np.array([[1000.0, 0.0], [0.0, 1000.0]])
    np.testing.assert_allclose(M.per_example_ce(big, np.array([1, 1])), [1000.0, 0.0], atol=1e-12)
    jbig = M.per_example_ce(jnp.asarray(big, jnp.float32), jnp.array([1, 1]))
    assert np.isfinite(np.asarray(jbig)).all()
    assert M.per_example_ce(z, rng.integers(0, 4, size=(3, 5))).shape == (3, 5)


def test_indiscernibility_by_hand():
    np.testing.assert_allclose(
        M.indiscernibility([0.5, 0.0, 1.0, 0.75, 0.4]), [1.0, 0.0, 0.0, 0.5, 0.8]
    )
    with pytest.raises(ValueError, match="lie in"):
        M.indiscernibility(1.2)
    with pytest.raises(ValueError, match="NaN"):
        M.indiscernibility(np.nan)


def test_retention_and_retdev_by_hand():
    np.testing.assert_allclose(M.retention([0.9, 0.45], [0.9, 0.9]), [1.0, 0.5])
    # RR = 0.99/0.9 = 1.1, FR = 0.6/0.8 = 0.75, TR = 0.8/0.8 = 1
    rd = M.retdev(0.99, 0.6, 0.8, 0.9, 0.8, 0.8)
    assert rd == pytest.approx(0.1 + 0.25 + 0.0)
    rd2 = M.retdev([0.9, 0.99], [0.8, 0.6], [0.8, 0.8], [0.9, 0.9], [0.8, 0.8], [0.8, 0.8])
    np.testing.assert_allclose(rd2, [0.0, 0.35])
    with pytest.raises(ValueError, match="> 0"):
        M.retention(0.5, 0.0)
    with pytest.raises(ValueError, match="fractions"):
        M.retention(95.0, 0.9)


def test_run_time_efficiency():
    np.testing.assert_allclose(M.run_time_efficiency([100.0, 10.0], [10.0, 20.0]), [10.0, 0.5])
    with pytest.raises(ValueError, match="t_method"):
        M.run_time_efficiency(10.0, 0.0)


def test_summarize_ddof_and_single_seed_flag():
    s = M.summarize([1.0, 2.0, 3.0, 4.0])
    mean, std = s
    assert mean == pytest.approx(2.5)
    assert std == pytest.approx(np.std([1, 2, 3, 4], ddof=1))  # 1.2910, not 1.1180
    assert not s.single_seed and s.ddof == 1 and s.n == 4
    one = M.summarize([0.7])
    assert tuple(one) == (0.7, 0.0) and one.single_seed
    multi = M.summarize(np.array([[1.0, 10.0], [3.0, 30.0]]))
    np.testing.assert_allclose(multi.mean, [2.0, 20.0])
    np.testing.assert_allclose(multi.std, [math.sqrt(2), math.sqrt(200)])
    with pytest.raises(ValueError, match="empty"):
        M.summarize([])


def test_hpo_objectives_and_score_by_hand():
    objs = M.hpo_objectives(0.9, 0.3, 0.6, 0.7, 0.96, 0.6, 0.66)
    np.testing.assert_allclose(objs, [0.02, 0.1, 0.02, 0.4])
    assert M.objective_score(objs) == pytest.approx(math.sqrt(0.02**2 + 0.1**2 + 0.02**2 + 0.16))
    stacked = M.hpo_objectives([0.9, 0.96], 0.3, 0.6, [0.7, 0.5], 0.96, 0.6, 0.66)
    assert stacked.shape == (2, 4)
    np.testing.assert_allclose(stacked[1], [0.0, 0.1, 0.02, 0.0])
    scores = M.objective_score(np.array([[3.0, 4.0, 0.0, 0.0], [np.inf] * 4]))
    np.testing.assert_allclose(scores, [5.0, np.inf])
    with pytest.raises(ValueError, match="last axis"):
        M.objective_score([1.0, 2.0, 3.0])


def test_class_wise_retrain_with_zero_forget_accuracy_leaves_retdev_undefined_not_a_crash():
    """Class-wise forgetting: R never saw the class, FA_R = 0; RetDev divides by it (NaN for that
    seed), ToW stays defined; a seed whose R scores > 0 keeps its RetDev."""
    from jaxmu.pipeline import with_retention

    m = {"retain_acc": np.array([0.99, 0.98]), "forget_acc": np.array([0.2, 0.3]), "test_acc": np.array([0.9, 0.9])}
    r = {"retain_acc": np.array([0.99, 0.97]), "forget_acc": np.array([0.0, 0.1]), "test_acc": np.array([0.88, 0.9])}
    out = with_retention(m, r)
    assert np.isnan(out["retdev"][0]) and np.isfinite(out["retdev"][1])
    np.testing.assert_allclose(out["tow"], [1.0 * 0.8 * (1 - 0.02), (1 - 0.01) * 0.8 * 1.0])
