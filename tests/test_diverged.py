"""A diverged model costs only itself (issue #10 item 6).

Unit level: the per-model finiteness check, the population MIA and the summaries with NaN
rows, U-LiRA statistics with a NaN φ row, the sweep's outputs with a diverged seed, and a
training stage that diverges mid-way. Acceptance: a 4-model unlearning stack where one model
gets a divergent learning rate leaves the other three bit-identical (parameters and metrics)
to a 3-model run without it. Command line: ``jaxmu.unlearn`` exits 3 and marks the rows,
``jaxmu.train`` stops with one ``error:`` line and exit 2.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmu.engine.finite import DivergedError, finite_loss_rows, finite_rows


def _leaves_equal(a, b) -> bool:
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


def _take(tree, rows):
    return jax.tree_util.tree_map(lambda x: x[np.asarray(rows)], tree)


# --------------------------------------------------------------------------- finiteness


def test_finite_rows_flags_nan_and_inf_per_model():
    tree = {"w": jnp.ones((4, 3, 2)), "b": jnp.zeros((4, 5)), "count": jnp.arange(4, dtype=jnp.int32)}
    tree["w"] = tree["w"].at[1, 2, 0].set(jnp.nan)
    tree["b"] = tree["b"].at[3, 4].set(-jnp.inf)
    np.testing.assert_array_equal(finite_rows(tree), [True, False, True, False])  # CPU: the NumPy path
    from jaxmu.engine.finite import _finite_rows

    np.testing.assert_array_equal(np.asarray(_finite_rows(tree)), [True, False, True, False])  # the jitted path
    np.testing.assert_array_equal(finite_rows({"w": jnp.ones((2, 3))}), [True, True])
    np.testing.assert_array_equal(finite_loss_rows(np.ones((3, 4)), np.r_[[[1.0, np.inf]] * 2, [[1.0, 2.0]]]),
                                  [False, False, True])
    with pytest.raises(ValueError, match="models axis"):
        finite_rows({"a": jnp.ones((3, 2)), "b": jnp.ones((2,))})


# --------------------------------------------------------------------------- population MIA, summaries


def test_population_mia_fills_nan_for_diverged_rows_only():
    from jaxmu.attacks.population_mia import model_mias_stacked

    rng = np.random.default_rng(0)
    f, v, t = rng.gamma(1.0, size=(4, 40)), rng.gamma(1.5, size=(4, 50)), rng.gamma(1.5, size=(4, 45))
    f[1, 3] = np.nan
    t[2, 0] = np.inf
    val, test = model_mias_stacked(f, v, t)
    assert np.isnan(val[[1, 2]]).all() and np.isnan(test[[1, 2]]).all()
    val_ok, test_ok = model_mias_stacked(f[[0, 3]], v[[0, 3]], t[[0, 3]])
    np.testing.assert_array_equal(val[[0, 3]], val_ok)  # bit-identical to a stack without them
    np.testing.assert_array_equal(test[[0, 3]], test_ok)
    assert np.isfinite(val_ok).all()


def test_summaries_leave_diverged_seeds_out_and_count_them():
    from jaxmu.metrics import summarize
    from jaxmu.train import metric_rows

    s = summarize([0.5, np.nan, 0.7])
    ref = summarize([0.5, 0.7])
    assert (s.mean, s.std, s.n, s.n_excluded) == (ref.mean, ref.std, 2, 1)
    assert s.count_note() == "2 of 3; 1 diverged"
    none = summarize([np.nan, np.nan])
    assert np.isnan(none.mean) and none.n == 0 and none.n_excluded == 2
    with pytest.raises(ValueError, match="inf"):
        summarize([1.0, np.inf])
    res = {"m": {"a": np.array([0.5, np.nan, 0.7]), "diverged": np.array([False, True, False])}}
    rows = metric_rows([0, 1, 2], res, ["a"])
    assert [r[2] for r in rows[:3]] == ["ok", "diverged", "ok"] and np.isnan(rows[1][3])
    assert rows[3][1] == "mean±std (2 of 3; 1 diverged)"
    assert rows[3][3] == f"{ref.mean:.4f}±{ref.std:.4f}"


# --------------------------------------------------------------------------- U-LiRA statistics


def _ulira_inputs(m: int = 8, n: int = 30, seed: int = 0):
    from jaxmu.attacks.ulira import FORGOTTEN, NEVER_SEEN, RETAINED

    rng = np.random.default_rng(seed)
    roles = rng.choice([NEVER_SEEN, RETAINED, FORGOTTEN], size=(m, n)).astype(np.int64)
    phi_u = rng.normal(size=(m, n, 2)) + (roles == FORGOTTEN)[..., None]
    phi_r = rng.normal(size=(m, n, 2))
    folds = np.repeat(np.arange(m // 2) % 2, 2)
    return phi_u, roles, phi_r, folds


def test_ulira_hayes_excludes_a_diverged_model_and_counts_it():
    from jaxmu.attacks.ulira import ulira_hayes

    phi_u, roles, phi_r, folds = _ulira_inputs()
    bad = phi_u.copy()
    bad[3] = np.nan  # unlearned model 3 diverged
    res = ulira_hayes(bad, roles, phi_r, roles, folds, folds, fixed_variance=True)
    keep = np.delete(np.arange(8), 3)
    ref = ulira_hayes(phi_u[keep], roles[keep], phi_r, roles, folds[keep], folds, fixed_variance=True)
    assert res.n_diverged == 1 and ref.n_diverged == 0
    assert 3 not in res.model_index and np.isfinite(res.scores).all()
    # every other model's pairs get the same scores as in a population without model 3
    old_index = np.r_[keep, np.arange(8, 16)][ref.model_index]
    np.testing.assert_array_equal(res.model_index, old_index)
    np.testing.assert_array_equal(res.scores, ref.scores)
    np.testing.assert_array_equal(res.labels, ref.labels)


def test_ulira_deepunlearn_and_crossfit_with_a_diverged_model():
    from jaxmu.attacks.crossfit import cross_fitted_scores
    from jaxmu.attacks.ulira import FORGOTTEN, NEVER_SEEN, ulira_deepunlearn

    phi_u, roles, _, folds = _ulira_inputs(seed=1)
    phi_u[5, 2, 1] = np.inf
    res = ulira_deepunlearn(phi_u, roles, folds, rng=np.random.RandomState(0), fixed_variance=True)
    assert res.n_diverged == 1 and 5 not in res.model_index and np.isfinite(res.scores).all()
    keep = np.delete(np.arange(8), 5)  # the same population without model 5: the same pairs and scores
    ref = ulira_deepunlearn(phi_u[keep], roles[keep], folds[keep], rng=np.random.RandomState(0), fixed_variance=True)
    np.testing.assert_array_equal(res.model_index, keep[ref.model_index])
    np.testing.assert_array_equal(res.scores, ref.scores)
    assert res.n_unscored == ref.n_unscored
    args = (roles == FORGOTTEN, roles == NEVER_SEEN, roles != 1)
    fits = cross_fitted_scores(phi_u, *args, folds, fixed_variance=True)
    alone = cross_fitted_scores(phi_u[keep], *(a[keep] for a in args), folds[keep], fixed_variance=True)
    assert fits.diverged.tolist() == [i == 5 for i in range(8)] and not alone.diverged.any()
    assert np.isnan(fits.scores[5]).all()
    np.testing.assert_array_equal(fits.scores[keep], alone.scores)  # NaN (unscored) in the same places
    assert np.isfinite(alone.scores).sum() > 50


# --------------------------------------------------------------------------- sweep outputs


def _fake_sweep(seeds, metrics, tmp: Path):
    from jaxmu.config import load_config

    cfg = load_config(None, ["model.name=mlp", f"seeds=[{','.join(map(str, seeds))}]", "engine.progress=false"])
    from jaxmu.results import run_hash

    setting = SimpleNamespace(cfg=cfg, run_dir=tmp / f"digits_mlp_{run_hash(cfg)}")
    ref = {k: np.full(len(seeds), 0.8) for k in ("retain_acc", "forget_acc", "val_acc", "test_acc")}
    ref.update(val_mia=np.full(len(seeds), 0.5), test_mia=np.full(len(seeds), 0.5),
               indiscernibility=np.ones(len(seeds)), retdev=np.zeros(len(seeds)))
    result = {"method": "finetune", "call": "finetune(learning_rate=1e+30)", "hparams": {"learning_rate": 1e30},
              "best_trial": {"seed": 0, "number": 0, "params": {}, "objectives": [0, 0, 0, 0], "score": 0.0},
              "trials": [], "metrics": metrics, "unlearn_s": 1.0, "compile_s": 2.0, "rte": 3.0,
              "tuning_compile_s": 0.0, "tuning_run_s": 0.0}
    return setting, [result], {"retrain": ref, "original": ref}, {"retrain": SimpleNamespace(run_s=3.0)}


def test_write_outputs_marks_diverged_seed_and_keeps_the_others(tmp_path):
    from jaxmu.report import CSV_METRICS
    from jaxmu.sweep import write_outputs

    rng = np.random.default_rng(0)
    three = {k: rng.uniform(0.3, 0.9, 3).tolist() for k in CSV_METRICS}
    for k in CSV_METRICS:
        three[k][1] = float("nan")  # seed 1 diverged
    three["diverged"] = [False, True, False]
    two = {k: [v[0], v[2]] for k, v in three.items() if k != "diverged"}  # no diverged key: inferred
    out3 = write_outputs(tmp_path / "three", *_fake_sweep([0, 1, 2], three, tmp_path))
    setting2, res2, refm2, refs2 = _fake_sweep([0, 2], two, tmp_path)
    out2 = write_outputs(tmp_path / "two", setting2, res2, refm2, refs2)
    rows3 = list(csv.DictReader((out3.parent / "results.csv").open()))
    rows2 = list(csv.DictReader((out2.parent / "results.csv").open()))
    assert [r["status"] for r in rows3] == ["ok", "diverged", "ok"] and [r["status"] for r in rows2] == ["ok", "ok"]
    assert rows3[1]["retdev"] == "nan"
    # the other seeds are saved exactly as without it; only the run hash differs (it covers the seed list)
    assert rows3[0]["config_hash"] != rows2[0]["config_hash"]
    same = lambda r: {k: v for k, v in r.items() if k != "config_hash"}  # noqa: E731
    assert [same(rows3[0]), same(rows3[2])] == [same(r) for r in rows2]
    rep3, rep2 = out3.read_text(), out2.read_text()
    line3 = next(ln for ln in rep3.splitlines() if ln.startswith("| finetune |"))
    line2 = next(ln for ln in rep2.splitlines() if ln.startswith("| finetune |"))
    assert line3 == line2.replace(" |", " (2 of 3; 1 diverged) |").replace("| finetune (2 of 3; 1 diverged) |",
                                                                             "| finetune |")


# --------------------------------------------------------------------------- training stage


class _DivergingTrainer:
    """A stand-in trainer: each epoch adds 1 to the parameters; model 1 becomes NaN at epoch 3."""

    num_epochs = 4

    def compile(self, state, subset, data_key, data, logged=False):
        assert logged  # the stage runner records the learning curves
        def exe(st, subset, key, stop, data):
            e = int(stop)
            p = jax.tree_util.tree_map(lambda x: x + (e - int(st.epoch[0])), st.params)
            if e >= 3:
                p = jax.tree_util.tree_map(lambda x: x.at[1].set(jnp.nan), p)
            history = jnp.zeros((st.epoch.shape[0], self.num_epochs, 2))  # the stage keeps its learning curves
            return st._replace(state=st.state.replace(params=p), epoch=jnp.full_like(st.epoch, e)), history
        return exe, 0.0


def test_training_stage_stops_on_divergence_and_keeps_the_last_good_epoch(tmp_path):
    from jaxmu.engine.state import TrainState
    from jaxmu.engine.state import TrainProgress
    from jaxmu.stages import run_training_stage

    init = TrainProgress(TrainState({"w": jnp.zeros((3, 2))}, {}, {}), jnp.ones(3), jnp.zeros(3, jnp.int32))
    with pytest.raises(DivergedError) as e:
        run_training_stage(tmp_path / "original", _DivergingTrainer(), init, np.arange(4), jax.random.PRNGKey(0),
                           None, checkpoint_every=1, metadata={}, progress=False, label="original",
                           model_names=[10, 11, 12])
    msg = str(e.value)
    assert "'original'" in msg and "seeds 11 " in msg and "epoch_0002 is kept" in msg and "\n" not in msg
    assert not (tmp_path / "original" / "final").exists()
    assert sorted(p.name for p in (tmp_path / "original").glob("epoch_*")) == ["epoch_0002"]


# --------------------------------------------------------------------------- acceptance: 4 vs 3 models


@pytest.mark.parametrize("model_axis", ["loop", "vmap"])
def test_diverged_model_leaves_the_others_bit_identical(tiny, model_axis):
    """finetune with learning rates [0.1, 1e30, 0.1, 0.05] over 4 models vs the 3 finite ones alone.

    Loop axis: the 3 finite models' parameters and every metric are bit-identical to a 3-model
    run. Vmap: a program with another M may round the last bits differently (measured: max
    |Δ| ≈ 1.5e-8), so parameters are compared bit for bit with a 4-model vmapped run whose
    second learning rate is finite (same program, rows independent) and with allclose to the
    3-model loop run.
    """
    import jaxmu.methods as M
    from jaxmu.engine.evaluate import Evaluator, split_logits
    from jaxmu.types import DeviceData
    from jaxmu.methods.stack import unlearn_stack, unlearning_key
    from jaxmu.scores import Scores, split_metrics, with_retention

    method = M.get("finetune(epochs=2)")  # two steps: the 1e30 model's parameters overflow
    rows4 = np.array([0, 1, 0, 1])  # the tiny stack has 2 trained models; model 1 is the diverging one

    def run(rows, lrs, axis):
        arrays = {**method.arrays, "learning_rate": np.array(lrs, np.float32)}
        return unlearn_stack(method.spec, method.static, arrays, tiny.ctx, tiny.data, _take(tiny.params, rows),
                             _take(tiny.batch_stats, rows), unlearning_key(), model_axis=axis)

    def metrics(res):
        ev = Evaluator(tiny.model, tiny.ctx.mean, tiny.ctx.std, batch_size=256, model_axis="loop")
        idx = {"retain": np.asarray(tiny.data.retain), "forget": np.asarray(tiny.data.forget),
               "val": np.asarray(tiny.data.val), "test": np.asarray(tiny.test_idx)}
        logits = split_logits(ev, res.params, res.batch_stats, idx, DeviceData(tiny.data.images, tiny.data.labels))
        labels = np.asarray(tiny.data.labels)
        out = split_metrics(Scores(logits, {k: labels[v] for k, v in idx.items()},
                                   finite_rows((res.params, res.batch_stats))))
        ref = {k: np.full_like(out["retain_acc"], 0.8) for k in ("retain_acc", "forget_acc", "test_acc")}
        return with_retention(out, ref)

    four = run(rows4, [0.1, 1e30, 0.1, 0.05], model_axis)
    np.testing.assert_array_equal(finite_rows((four.params, four.batch_stats)), [True, False, True, True])
    m4 = metrics(four)
    assert m4["diverged"].tolist() == [False, True, False, False]
    assert all(np.isnan(v[1]) for k, v in m4.items() if k != "diverged")
    keep = [0, 2, 3]
    if model_axis == "loop":
        three = run(rows4[keep], [0.1, 0.1, 0.05], "loop")
        assert _leaves_equal(_take(four.params, keep), three.params)
        assert _leaves_equal(_take(four.batch_stats, keep), three.batch_stats)
        m3 = metrics(three)
        assert not m3["diverged"].any()
        for k, v in m3.items():
            np.testing.assert_array_equal(m4[k][keep], v, err_msg=k)
            assert k == "diverged" or np.isfinite(v).all()
    else:
        finite4 = run(rows4, [0.1, 0.1, 0.1, 0.05], "vmap")
        assert _leaves_equal(_take(four.params, keep), _take(finite4.params, keep))
        three = run(rows4[keep], [0.1, 0.1, 0.05], "loop")
        for a, b in zip(jax.tree_util.tree_leaves(_take(four.params, keep)), jax.tree_util.tree_leaves(three.params)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
        assert np.isfinite(m4["val_mia"][keep]).all()


# --------------------------------------------------------------------------- command line


def _cli(repo_root, *args, timeout=900):
    env = dict(os.environ)
    env.pop("JAXMU_DIE_AT", None)
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=repo_root, env=env,
                          timeout=timeout)


@pytest.mark.entry
def test_unlearn_cli_reports_diverged_seeds_and_exits_3(repo_root, tmp_path):
    res = _cli(repo_root, "jaxmu.unlearn", "--method", "finetune(learning_rate=1e30)", "--seeds", "2",
               "--set", "model.name=mlp", "--set", "train.epochs=1", "--quiet", "--out", str(tmp_path))
    assert res.returncode == 3, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    rows = [ln.split() for ln in res.stdout.splitlines() if ln.strip().startswith("finetune ")]
    assert [r[1:3] for r in rows if r[1] in ("0", "1")] == [["0", "diverged"], ["1", "diverged"]]
    assert any("(0 of 2; 2 diverged)" in ln for ln in res.stdout.splitlines())
    retrain = [ln.split() for ln in res.stdout.splitlines() if ln.strip().startswith("retrain ")]
    assert [r[2] for r in retrain[:2]] == ["ok", "ok"]
    warn = [ln for ln in res.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warn) == 1 and "seeds 0, 1" in warn[0] and "exit code 3" in warn[0]


@pytest.mark.entry
def test_diverged_training_stage_is_one_error_line_exit_2(repo_root, tmp_path):
    res = _cli(repo_root, "jaxmu.train", "--seeds", "2", "--set", "model.name=mlp", "--set", "train.epochs=1",
               "--set", "train.learning_rate=1e30", "--quiet", "--out", str(tmp_path))
    assert res.returncode == 2, res.stderr[-3000:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: training stage 'original' diverged: seeds 0, 1 ")
    assert not list(tmp_path.rglob("final"))


def test_ulira_population_leaves_a_diverged_unlearned_model_out():
    """The attack pipeline's population statistics with one NaN φ row: scored without it, counted."""
    from jaxmu.attack import attack_rows
    from jaxmu.ulira_stage import _population
    from jaxmu.attacks.ulira import FORGOTTEN, NEVER_SEEN, RETAINED

    m, n = 8, 24
    roles = np.full((m, n), NEVER_SEEN)
    for j in range(n):  # every example is forgotten by 2 models, retained by 2, never seen by the rest
        a = 2 * (j % 4)
        roles[[a, a + 1], j] = FORGOTTEN
        roles[[(a + 2) % m, (a + 3) % m], j] = RETAINED
    rng = np.random.default_rng(0)
    phi = rng.normal(size=(m, n, 1)) + (roles == FORGOTTEN)[..., None]
    phi_r = rng.normal(size=(m, n, 1))
    folds = np.arange(m)  # leave one model out
    cfg = SimpleNamespace(fixed_variance="on", mode="online")
    bad = phi.copy()
    bad[0] = np.nan
    pop = _population("finetune", bad, roles, phi_r, folds, cfg, (0.9, 0.5, 0.8))
    assert pop.n_diverged == 1 and pop.hayes.n_diverged == 1 and pop.deepunlearn.n_diverged == 1
    assert 0 not in pop.hayes.model_index and np.isfinite(pop.hayes.scores).all()
    forgot_by_0 = roles[0] == FORGOTTEN
    assert pop.eps.shape == (int((~forgot_by_0).sum()),)  # ε over the examples model 0 did not forget
    clean = _population("finetune", phi, roles, phi_r, folds, cfg, (0.9, 0.5, 0.8))
    np.testing.assert_array_equal(pop.eps, clean.eps[~forgot_by_0])
    assert clean.n_diverged == 0 and pop.n_models_eps == clean.n_models_eps == 2
    rows = attack_rows(SimpleNamespace(populations=[pop, clean]))
    assert rows[0][0] == "finetune (1 of 8 diverged)" and rows[2][0] == "finetune"
    gone = _population("finetune", np.full_like(phi, np.nan), roles, phi_r, folds, cfg, (np.nan,) * 3)
    assert gone.hayes is None and gone.n_diverged == m
    assert attack_rows(SimpleNamespace(populations=[gone]))[0][:2] == ["finetune (8 of 8 diverged)", "none scored"]
