"""Offline RMIA (Zarifzadeh et al. 2024; ``jaxmu/attacks/rmia.py``) against the definition written
out naively, hand-computed cases, and the unlearning audit's leave-one-out references."""

from __future__ import annotations

import numpy as np
import pytest

from jaxmu.attacks.rmia import offline_marginal, rmia_scores, stack_rmia_auc, true_class_probability


def _naive(p_x, refs_x, p_z, refs_z, a, gamma):
    """score(x) = (1/|Z|) Σ_z 1[ (p_x / Pr(x)) / (p_z / Pr(z)) > γ ], Pr(·) = ½((1+a)·mean OUT + 1 − a)."""
    out = []
    for i in range(len(p_x)):
        pr_x = 0.5 * ((1 + a) * np.mean(refs_x[:, i]) + (1 - a))
        hits = 0
        for j in range(len(p_z)):
            pr_z = 0.5 * ((1 + a) * np.mean(refs_z[:, j]) + (1 - a))
            hits += (p_x[i] / pr_x) / (p_z[j] / pr_z) > gamma
        out.append(hits / len(p_z))
    return np.array(out)


@pytest.mark.parametrize("a,gamma", [(0.3, 1.0), (0.0, 1.0), (1.0, 2.0), (0.6, 0.5)])
def test_equals_the_definition_written_naively(a, gamma):
    rng = np.random.default_rng(7)
    p_x, p_z = rng.uniform(0.01, 1, 40), rng.uniform(0.01, 1, 30)
    refs_x, refs_z = rng.uniform(0.01, 1, (4, 40)), rng.uniform(0.01, 1, (4, 30))
    np.testing.assert_allclose(rmia_scores(p_x, refs_x, p_z, refs_z, a=a, gamma=gamma),
                               _naive(p_x, refs_x, p_z, refs_z, a, gamma), atol=0)


def test_hand_computed_case():
    # a = 1: Pr(x) = mean of the references. x: 0.8 / 0.4 = 2; z: 0.5/0.5 = 1, 0.9/0.3 = 3, 0.2/0.4 = 0.5
    s = rmia_scores([0.8], [[0.4]], [0.5, 0.9, 0.2], [[0.5, 0.3, 0.4]], a=1.0)
    assert s.tolist() == [2 / 3]  # LR = 2, 2/3, 4: two of three exceed 1
    # a = 0: Pr(x) = ½(mean + 1); ties (LR == γ) do not count
    assert rmia_scores([0.5], [[0.5]], [0.5], [[0.5]], a=0.0).tolist() == [0.0]
    np.testing.assert_allclose(offline_marginal([[0.2, 0.6], [0.4, 0.0]], a=0.3), [0.5 * (1.3 * 0.3 + 0.7),
                                                                                 0.5 * (1.3 * 0.3 + 0.7)])


def test_true_class_probability_is_the_softmax_entry():
    rng = np.random.default_rng(1)
    z, y = rng.normal(size=(2, 6, 4)) * 30, rng.integers(0, 4, 6)
    e = np.exp(z - z.max(-1, keepdims=True))
    np.testing.assert_allclose(true_class_probability(z, y), (e / e.sum(-1, keepdims=True))[..., np.arange(6), y],
                               rtol=1e-12)


def _stack(rng, models, n, shift=0.0):
    return {"forget": np.clip(rng.beta(2, 2, (models, n)) + shift, 1e-3, 1.0),
            "val": rng.beta(2, 2, (models, n)), "test": rng.beta(2, 2, (models, n))}


def test_audit_separates_memorised_forget_points_and_not_exchangeable_ones():
    rng = np.random.default_rng(3)
    refs = _stack(rng, 6, 200)
    like_refs = _stack(rng, 6, 200)  # forget points treated as the references treat them
    memorised = {**like_refs, "forget": np.full((6, 200), 0.999)}  # high confidence on every forget point
    auc_same, auc_mem = stack_rmia_auc(like_refs, refs), stack_rmia_auc(memorised, refs)
    assert np.all(np.abs(auc_same - 0.5) < 0.1), auc_same
    assert np.all(auc_mem > 0.8), auc_mem


def test_leave_one_out_references_and_nan_rows():
    rng = np.random.default_rng(4)
    refs = _stack(rng, 3, 50)
    target = _stack(rng, 3, 50)
    base = stack_rmia_auc(target, refs)
    # changing reference 0 must not move target 0's AUC (it is left out), but moves the others'
    moved = {k: v.copy() for k, v in refs.items()}
    moved["forget"][0] = 1e-3
    moved["test"][0] = 0.99
    again = stack_rmia_auc(target, moved)
    assert again[0] == base[0] and np.all(again[1:] != base[1:])
    # a diverged reference is never used; a diverged target is NaN
    refs_nan = {k: v.copy() for k, v in refs.items()}
    refs_nan["val"][1, 3] = np.nan
    target_nan = {k: v.copy() for k, v in target.items()}
    target_nan["test"][2, 0] = np.nan
    out = stack_rmia_auc(target_nan, refs_nan)
    assert np.isnan(out[2]) and np.isfinite(out[:2]).all()
    only_ref2 = stack_rmia_auc({k: v[[0, 0]] for k, v in target.items()}, {k: v[[0, 2]] for k, v in refs.items()})
    assert out[0] == only_ref2[0]  # target 0 against reference 2 alone (0 is itself, 1 diverged)
    # one model: no reference left
    assert np.isnan(stack_rmia_auc({k: v[:1] for k, v in target.items()}, {k: v[:1] for k, v in refs.items()})).all()


def test_bad_arguments_name_the_problem():
    with pytest.raises(ValueError, match="offline a must lie in"):
        offline_marginal([[0.5]], a=1.5)
    with pytest.raises(ValueError, match="population is empty"):
        rmia_scores([0.5], [[0.5]], [], np.zeros((1, 0)))
    with pytest.raises(ValueError, match=r"\[K >= 1, n\]"):
        offline_marginal([0.5, 0.2])
