"""The sweep end to end: files and columns, kill-and-resume equality, batched trials = one by one."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

TINY = ["model.name=mlp", "train.epochs=3", "seeds=[0,1]", "tune.seeds=[0,1]", "tune.trials=3", "tune.batch=2",
        "engine.checkpoint_every=1"]
METHOD = "finetune"


def _cmd(out: Path, *extra: str) -> list[str]:
    cmd = [sys.executable, "-m", "jaxmu.sweep", "--method", METHOD, "--out", str(out), "--quiet"]
    for o in TINY:
        cmd += ["--set", o]
    return cmd + list(extra)


def _run(cmd, repo_root, die_at: str | None = None):
    env = dict(os.environ)
    env.pop("JAXMU_DIE_AT", None)
    if die_at:
        env["JAXMU_DIE_AT"] = die_at
    return subprocess.run(cmd, capture_output=True, text=True, cwd=repo_root, env=env, timeout=900)


def _results(out: Path) -> list[dict]:
    path = next(out.rglob("sweep_finetune/results.csv"))
    with path.open() as f:
        return list(csv.DictReader(f))


def _stable(rows: list[dict]) -> list[dict]:
    """Everything but wall-clock columns."""
    return [{k: v for k, v in r.items() if k not in ("unlearn_s", "compile_s", "rte")} for r in rows]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, repo_root):
    out = tmp_path_factory.mktemp("sweep")
    res = _run(_cmd(out), repo_root)
    assert res.returncode == 0, res.stderr[-3000:]
    return out, res


@pytest.mark.slow
def test_sweep_writes_results_report_and_plots(uninterrupted):
    out, res = uninterrupted
    rows = _results(out)
    assert len(rows) == 2
    for col in ("method", "seed", "retain_acc", "forget_acc", "val_acc", "test_acc", "val_mia", "test_mia",
                "indiscernibility", "retdev", "unlearn_s", "compile_s", "rte", "hp_learning_rate", "hp_epochs"):
        assert col in rows[0], col
    assert {r["seed"] for r in rows} == {"0", "1"} and all(r["method"] == METHOD for r in rows)
    from jaxmu.results import ID_COLUMNS

    assert list(rows[0])[: len(ID_COLUMNS)] == list(ID_COLUMNS)  # the identifying columns of every stage
    assert all(r["stage"] == "sweep" and r["dataset"] == "digits" and r["model"] == "mlp" and
               r["call"].startswith(f"{METHOD}(") for r in rows)
    assert all(0 <= float(r["retain_acc"]) <= 1 and float(r["rte"]) > 0 for r in rows)
    sdir = next(out.rglob("sweep_finetune"))
    meta = json.loads((sdir / "results.json").read_text())
    best = meta["methods"][METHOD]["best_trial"]
    assert len(best["objectives"]) == 4 and best["score"] == pytest.approx(np.linalg.norm(best["objectives"]))
    assert meta["config"]["tune"]["trials"] == 3
    report = (sdir / "report.md").read_text()
    assert "| retrain |" in report and "| original |" in report and "RTE" in report
    for png in ("gaps_finetune.png", "pareto_finetune.png", "rte.png", "optuna_history_finetune.png",
                "optuna_importances_finetune.png", "optuna_pareto_finetune.png"):
        assert (sdir / png).stat().st_size > 1000
        assert f"({png})" in report or png in ("gaps_finetune.png", "pareto_finetune.png", "rte.png")
    assert "## KLOM" in report and "| original |" in report.split("## KLOM")[1]
    assert "tow" in rows[0] and 0 <= float(rows[0]["tow"]) <= 1
    trials = json.loads(next(out.rglob("final.json")).read_text())["trials"]
    assert len(trials) == 6 and len({(t["seed"], t["number"]) for t in trials}) == 6


@pytest.mark.slow
def test_finished_sweep_rerun_does_nothing(uninterrupted, repo_root):
    out, _ = uninterrupted
    final = next(out.rglob("final.json"))
    before = final.stat().st_mtime_ns
    res = _run(_cmd(out), repo_root)
    assert res.returncode == 0 and "| retrain |" in res.stdout
    assert "original: trained" not in res.stdout
    assert final.stat().st_mtime_ns == before


@pytest.mark.slow
@pytest.mark.parametrize("die_at", ["stage:retrain:epoch", "tune:round", "unlearn:saved"])
def test_killed_sweep_resumes_to_identical_results(uninterrupted, tmp_path, repo_root, die_at):
    ref_out, _ = uninterrupted
    killed = _run(_cmd(tmp_path), repo_root, die_at=die_at)
    assert killed.returncode == 137, killed.stderr[-2000:]
    assert not list(tmp_path.rglob("sweep_finetune/results.csv"))
    resumed = _run(_cmd(tmp_path), repo_root)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _stable(_results(tmp_path)) == _stable(_results(ref_out))
    trials = json.loads(next(tmp_path.rglob("final.json")).read_text())["trials"]
    ref_trials = json.loads(next(ref_out.rglob("final.json")).read_text())["trials"]
    assert trials == ref_trials  # no trial lost, none run twice, same parameters and objectives


def test_bad_inputs_exit_2_with_one_line(repo_root, tmp_path):
    for extra, needle in ((["--method", "nope"], "unknown method 'nope'"),
                          (["--set", "train.epochz=1"], "unknown config key 'train.epochz'"),
                          (["--set", "method.alpha=3"], "no hyperparameter 'alpha'")):
        cmd = _cmd(tmp_path)
        if extra[0] == "--method":
            cmd[cmd.index("--method") + 1] = extra[1]
        else:
            cmd += extra
        res = _run(cmd, repo_root)
        assert res.returncode == 2, res.stderr
        assert needle in res.stderr and "Traceback" not in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.rglob("*.json"))  # nothing written for bad input


def test_batched_trials_equal_one_by_one(tmp_path):
    import jaxmu.methods as M
    from jaxmu.config import load_config
    from jaxmu.pipeline import prepare, reference_stacks, stack_metrics
    from jaxmu.tuning import TrialEvaluator

    cfg = load_config(None, TINY + ["engine.progress=false", "train.epochs=6"])  # E_max = 2
    setting = prepare(cfg, tmp_path)
    refs = reference_stacks(setting)
    retrain = stack_metrics(setting, refs["retrain"].state)
    method = M.get(METHOD)
    trials = [(0, {"learning_rate": 0.01, "epochs": 1, "batch_size": 64, "weight_decay": 1e-3}),
              (1, {"learning_rate": 0.05, "epochs": 2, "batch_size": 64, "weight_decay": 1e-4}),
              (0, {"learning_rate": 0.002, "epochs": 2, "batch_size": 128, "weight_decay": 1e-2})]
    ev = TrialEvaluator(setting, method, refs["original"].state, retrain, group_size=4)
    batched = ev.evaluate(trials)
    single = TrialEvaluator(setting, method, refs["original"].state, retrain, group_size=1)
    one_by_one = [single.evaluate([t])[0] for t in trials]
    np.testing.assert_allclose(np.array(batched), np.array(one_by_one), atol=1e-5)
    assert len({tuple(o) for o in batched}) == 3  # the trials really differ
    # no padded model is unlearned or evaluated; one program per batch size (ragged epochs)
    assert ev.counters.evaluated == ev.counters.trials == 3 and ev.counters.programs == 2
    per_count = load_config(None, TINY + ["engine.progress=false", "train.epochs=6", "engine.ragged_epochs=false"])
    flat = TrialEvaluator(prepare(per_count, tmp_path), method, refs["original"].state, retrain, group_size=4)
    np.testing.assert_allclose(np.array(flat.evaluate(trials)), np.array(batched), atol=1e-6)
    assert flat.counters.programs == 3


def test_prmq_float_epochs_share_one_program_per_batch_size(tmp_path):
    """PRMQ's searched float ``num_epochs`` is ragged (a per-model step budget): trials that
    differ in it compile one program, with the objectives of one program per value. Before, each
    sampled float was a new static signature: 300 programs for the study's budget, kept until
    LLVM ran out of memory maps in ``sweep --method all``."""
    import jaxmu.methods as M
    from jaxmu.config import load_config
    from jaxmu.pipeline import prepare, reference_stacks, stack_metrics
    from jaxmu.tuning import TrialEvaluator

    over = TINY + ["engine.progress=false", "train.epochs=6"]
    setting = prepare(load_config(None, over), tmp_path)
    refs = reference_stacks(setting)
    retrain = stack_metrics(setting, refs["retrain"].state)
    method = M.get("prmq")
    trials = [(0, {"learning_rate": 0.01, "epochs": e, "batch_size": 128, "weight_decay": 1e-3,
                   "momentum": 0.9, "prune_amount": 0.5}) for e in (1.0, 1.45, 2.0)]
    ev = TrialEvaluator(setting, method, refs["original"].state, retrain, group_size=4)
    ragged = ev.evaluate(trials)
    assert ev.counters.programs == 1 and len({tuple(o) for o in ragged}) == 3
    flat = TrialEvaluator(prepare(load_config(None, over + ["engine.ragged_epochs=false"]), tmp_path), method,
                          refs["original"].state, retrain, group_size=4)
    np.testing.assert_allclose(np.array(flat.evaluate(trials)), np.array(ragged), atol=1e-6)
    assert flat.counters.programs == 3


def test_program_cache_keeps_the_most_recently_used():
    from jaxmu.methods.stack import ProgramCache

    c = ProgramCache(capacity=2)
    c["a"], c["b"] = 1, 2
    assert c["a"] == 1  # a is now the most recent
    c["c"] = 3
    assert list(c) == ["a", "c"] and "b" not in c and c.compiled == 3
    with pytest.raises(ValueError, match="capacity"):
        ProgramCache(0)


@pytest.mark.slow
def test_two_workers_share_one_study(tmp_path, repo_root):
    """A helper worker and the main worker fill one journal-file study: no trial lost or doubled."""
    import optuna

    train = [sys.executable, "-m", "jaxmu.train", "--out", str(tmp_path), "--quiet"]
    for o in TINY:
        train += ["--set", o]
    assert _run(train, repo_root).returncode == 0  # reference stacks first, shared by both
    journal = tmp_path / "study.journal"
    cmd = _cmd(tmp_path, "--storage", f"journal://{journal}", "--set", "tune.trials=4", "--set", "tune.batch=1")
    env = dict(os.environ)
    env.pop("JAXMU_DIE_AT", None)
    helper = subprocess.Popen(cmd + ["--worker", "w2"], cwd=repo_root, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    main = _run(cmd, repo_root)
    h_out, h_err = helper.communicate(timeout=900)
    assert main.returncode == 0, main.stderr[-2000:]
    assert helper.returncode == 0, h_err[-2000:]
    trials = json.loads(next(tmp_path.rglob("final.json")).read_text())["trials"]
    assert len(trials) == 8 and len({(t["seed"], t["number"]) for t in trials}) == 8
    from jaxmu.tuning import open_storage

    storage = open_storage(f"journal://{journal}")
    states = [t.state for s in optuna.get_all_study_summaries(storage)
              for t in optuna.load_study(study_name=s.study_name, storage=storage).trials]
    assert optuna.trial.TrialState.RUNNING not in states
    complete = states.count(optuna.trial.TrialState.COMPLETE)
    assert 8 <= complete <= 10, complete  # a race may add at most one extra trial per worker


@pytest.mark.slow
def test_sweep_with_ulira_adds_the_attack_to_the_report(uninterrupted, repo_root):
    """--ulira reuses the finished sweep and appends the U-LiRA table to report.md."""
    out, _ = uninterrupted
    extra = []
    for o in ("attack.num_splits=4", "attack.forget_sets=2", "attack.forget_fraction=0.5", "attack.folds=2",
              "attack.queries=1"):
        extra += ["--set", o]
    res = _run(_cmd(out, "--ulira", *extra), repo_root)
    assert res.returncode == 0, res.stderr[-3000:]
    report = (next(out.rglob("sweep_finetune")) / "report.md").read_text()
    assert "## U-LiRA" in report and "retrain (perfect)" in report and "hayes" in report
    assert "bootstrap over target models" in report  # AUC and TPRs with their intervals
    assert list(out.rglob("ulira_*/results_finetune/results.csv"))


def test_methods_that_cannot_apply_are_named_before_any_training(tmp_path):
    """CT and MSG need convolutions: on the MLP they are refused by an abstract trace (nothing
    compiled or trained); every other method applies. ``--method all`` skips them with a line."""
    import jaxmu.methods as M
    from jaxmu.config import load_config
    from jaxmu.pipeline import applicability_error, prepare

    setting = prepare(load_config("digits_mlp_half", ["seeds=1", "engine.progress=false"]), tmp_path)
    refused = {n: applicability_error(setting, M.get(n)) for n in M.names()}
    assert {n for n, why in refused.items() if why} == {"ct", "msg"}
    assert "cannot apply to architecture 'mlp'" in refused["ct"]
    assert not list(setting.run_dir.glob("*/final"))  # nothing trained
