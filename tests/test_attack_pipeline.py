"""System-level U-LiRA oracles on tiny shadow stacks (protocol §10.3) and the attack CLI."""

from __future__ import annotations

import numpy as np
import pytest

from jaxmu.config import load_config

TINY = ["model.name=mlp", "train.epochs=4", "train.batch_size=64", "attack.num_splits=8", "attack.forget_sets=2",
        "attack.forget_fraction=0.5", "attack.folds=2", "attack.queries=1", "engine.progress=false", "seeds=1"]


METHOD = "finetune(epochs=1, batch_size=64, learning_rate=0.01)"


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("ulira")


@pytest.fixture(scope="module")
def report(out_dir):
    import jaxmu.methods as M
    from jaxmu.ulira_stage import run_ulira
    from jaxmu.pipeline import prepare

    setting = prepare(load_config(None, TINY), out_dir)
    rep = run_ulira(setting, M.get(METHOD))
    return {p.name: p for p in rep.populations}, rep


def test_splits_are_complementary_and_forget_sets_partition(report):
    _, rep = report
    sp = rep.splits
    pool = set(sp.pool.tolist())
    for i in range(0, sp.num_splits, 2):
        a, b = set(sp.halves[i].tolist()), set(sp.halves[i + 1].tolist())
        assert not a & b and a | b == pool
        for s in (i, i + 1):
            fs = [set(x.tolist()) for x in sp.forget[s]]
            assert not fs[0] & fs[1] and fs[0] | fs[1] <= set(sp.halves[s].tolist())
    # every example forgotten by the same number of models up to the odd leftover
    counts = (rep.roles == 2).sum(0)
    assert np.bincount(counts).argmax() == sp.num_splits // 2


def test_retrain_vs_retrain_is_near_chance_and_original_is_separable(report):
    pops, _ = report
    perfect, original = pops["retrain (perfect)"], pops["original"]
    for res in (perfect.hayes, perfect.deepunlearn):
        assert 0.44 < res.summary["auc"] < 0.56, res.summary
    assert original.hayes.summary["auc"] > perfect.hayes.summary["auc"] + 0.05
    assert original.hayes.summary["accuracy"] > 0.55
    # no unlearning scores worse on the NeurIPS metric than perfect unlearning
    assert original.forget_score < perfect.forget_score
    assert np.all((perfect.eps >= 0) & (perfect.eps <= 50))


def test_originals_evaluated_once_give_the_repeated_stack(report, out_dir):
    """The original population evaluates its S distinct models once and repeats their rows K
    times (model m = s·K + f): φ equal, bit for bit, to evaluating the repeated S·K stack."""
    from jaxmu.pipeline import prepare
    from jaxmu.ulira_stage import phi_stack, repeat_models, shadow_stacks

    pops, rep = report
    setting = prepare(load_config(None, TINY), out_dir)
    st = shadow_stacks(setting, rep.splits, rep.out_dir)["original"].state  # loaded, not retrained
    k = rep.splits.forget_sets
    phi = phi_stack(setting.evaluator(), repeat_models(st.params, k), repeat_models(st.batch_stats, k),
                    rep.splits.pool, setting.data, setting.cfg.attack.queries)
    np.testing.assert_array_equal(pops["original"].phi, phi)


def test_attack_cli_reuses_shadows_and_writes_scores_and_plot(report, out_dir, repo_root):
    """The CLI on the fixture's run directory: every stack is loaded, only the attack reruns."""
    import subprocess
    import sys

    tmp_path = out_dir
    cmd = [sys.executable, "-m", "jaxmu.attack", "--config", "configs/ulira_digits_cnn.yaml", "--method",
           METHOD, "--out", str(tmp_path), "--quiet", "--bootstrap", "200"]
    for o in TINY:
        cmd += ["--set", o]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=repo_root)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "retrain (perfect)" in out.stdout and "hayes" in out.stdout and "deepunlearn" in out.stdout
    npz = list(tmp_path.rglob("ulira_finetune.npz"))
    png = list(tmp_path.rglob("ulira_finetune_roc.png"))
    assert npz and png and png[0].stat().st_size > 1000
    data = np.load(npz[0])
    assert data["finetune_hayes_scores"].shape == data["finetune_hayes_labels"].shape
    import csv
    import json

    import jaxmu.methods as M
    from jaxmu.results import ID_COLUMNS

    folder = npz[0].parent / "results_finetune"  # the per-population table, beside the npz
    with (folder / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[: len(ID_COLUMNS)] == list(ID_COLUMNS) and len(rows) == 6
    assert {r["stage"] for r in rows} == {"attack"} and {r["seed"] for r in rows} == {"-"}
    assert {r["population"] for r in rows} == {"finetune", "original", "retrain (perfect)"}
    assert {r["call"] for r in rows if r["population"] == "finetune"} == {M.get(METHOD).call_string()}
    assert all(r["bootstrap_resamples"] == "200" and float(r["auc_lo"]) <= float(r["auc"]) <= float(r["auc_hi"])
               for r in rows)
    report_md = (folder / "report.md").read_text()
    assert "200 resamples" in report_md and "bootstrap over target models" in report_md
    assert len(json.loads((folder / "results.json").read_text())["rows"]) == 6
    bad = subprocess.run(cmd + ["--set", "attack.num_splits=5"], capture_output=True, text=True, cwd=repo_root)
    assert bad.returncode == 2 and "num_splits" in bad.stderr and "Traceback" not in bad.stderr


def test_population_rows_have_grouped_bootstrap_intervals(report):
    """Each (population, formulation) row: the statistics of its summary and the percentile
    bootstrap interval over target models (``bootstrap_ci`` grouped by ``model_index``), the
    same on every call (fixed seed)."""
    from jaxmu.attack import BOOTSTRAP_SEED, STATISTICS, population_rows
    from jaxmu.attacks.roc import bootstrap_ci

    pops, rep = report
    rows = population_rows(rep, "finetune", "finetune(...)", {"stage": "attack"}, n_boot=50)
    assert rows == population_rows(rep, "finetune", "finetune(...)", {"stage": "attack"}, n_boot=50)
    assert [(r["population"], r["formulation"]) for r in rows] == [
        (p, f) for p in ("finetune", "original", "retrain (perfect)") for f in ("hayes", "deepunlearn")]
    res = pops["original"].deepunlearn
    ci = bootstrap_ci(res.scores, res.labels, res.model_index, 50, np.random.default_rng(BOOTSTRAP_SEED))
    row = rows[3]
    for k in STATISTICS:
        assert row[k] == res.summary[k] and (row[f"{k}_lo"], row[f"{k}_hi"]) == ci[k]
    assert row["call"] == "-" and rows[0]["call"] == "finetune(...)"


@pytest.mark.slow
def test_two_processes_give_the_fixture_attack(report, tmp_path, repo_root):
    """The attack CLI as 2 processes x 2 CPU devices (each trains its share of every shadow stack)
    gives the per-example scores of the fixture's single-process, single-device run."""
    from multihost_helpers import two_processes

    from jaxmu.attack import save_outputs

    _, rep = report
    want = np.load(save_outputs(rep, "finetune")[0])
    args = ["--config", "configs/ulira_digits_cnn.yaml", "--method", METHOD, "--quiet", "--out", str(tmp_path)]
    for o in TINY:
        args += ["--set", o]
    for r in two_processes(repo_root, "jaxmu.attack", args):
        assert r.returncode == 0, r.stderr[-3000:]
    (npz,) = tmp_path.glob("*/ulira_*/ulira_finetune.npz")
    got = np.load(npz)
    assert sorted(got.files) == sorted(want.files)
    for k in want.files:
        if want[k].dtype.kind == "f":
            np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-5, err_msg=k)
        else:
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_klom_and_the_study_variant_see_the_original(report):
    """KLOM on forgotten examples and the study's own variant (§8.1): the original (nothing
    unlearned) is further from retraining than the retrained reference population."""
    pops, _ = report
    perfect, original = pops["retrain (perfect)"], pops["original"]
    assert np.isfinite(perfect.klom_forget) and original.klom_forget > perfect.klom_forget
    assert np.nanmean(original.klom) > np.nanmean(perfect.klom) + 0.5
    for p in (perfect, original):
        assert p.study.n_instances > 0 and 0.0 <= p.study.mean_p <= 1.0
    assert original.study.mean_p > perfect.study.mean_p


def test_running_the_attack_again_evaluates_no_model(report, out_dir, monkeypatch):
    """Score once: every candidate's φ, pool and test logits come back from ulira_scores.npz."""
    import jaxmu.methods as M
    from jaxmu.engine.evaluate import Evaluator
    from jaxmu.pipeline import prepare
    from jaxmu.ulira_stage import ULIRA_SCORES, run_ulira

    pops, rep = report
    assert len(list(rep.out_dir.rglob(ULIRA_SCORES))) == 4  # the retrains, and the three candidates

    def no_eval(*a, **k):
        raise AssertionError("evaluated a stack whose U-LiRA scores are cached")

    monkeypatch.setattr(Evaluator, "logits", no_eval)
    again = run_ulira(prepare(load_config(None, TINY), out_dir), M.get(METHOD))
    for p in again.populations:
        np.testing.assert_array_equal(p.phi, pops[p.name].phi)
        assert p.hayes.summary == pops[p.name].hayes.summary and p.forget_score == pops[p.name].forget_score
        assert (p.retain_acc, p.forget_acc, p.test_acc) == (pops[p.name].retain_acc, pops[p.name].forget_acc,
                                                             pops[p.name].test_acc)
