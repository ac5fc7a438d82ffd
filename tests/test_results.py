"""Every stage leaves results.csv/json/report.md with the identifying columns; ``jaxmu report`` merges
runs; the trainer's learning curves (issue 14 item 4).

The stage tests run ``jaxmu.train`` and ``jaxmu.unlearn`` in this process on a tiny MLP (2 seeds,
2 epochs) for two run directories that differ only in their seeds. The attack's table is tested
in ``tests/test_attack_pipeline.py`` (on its fixture), the sweep's in ``tests/test_sweep.py``.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmu.results import ID_COLUMNS

FLAGS = ["--set", "model.name=mlp", "--set", "train.epochs=2", "--quiet"]
METHOD = "finetune(epochs=1, batch_size=64)"


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _main(module: str, argv: list[str]) -> None:
    import importlib

    assert importlib.import_module(module).main(argv) == 0


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Run a: train + unlearn on seeds 0, 1; run b: train on seeds 2, 3 (another run hash)."""
    out = tmp_path_factory.mktemp("results")
    _main("jaxmu.train", ["--out", str(out), "--seeds", "2", *FLAGS])
    _main("jaxmu.unlearn", ["--out", str(out), "--seeds", "2", "--method", METHOD, *FLAGS])
    _main("jaxmu.train", ["--out", str(out), "--set", "seeds=[2,3]", *FLAGS])
    dirs = sorted(p for p in out.iterdir() if p.name.startswith("digits_mlp_"))
    assert len(dirs) == 2
    a = next(d for d in dirs if (d / "results" / "unlearn").exists())
    return {"out": out, "a": a, "b": next(d for d in dirs if d != a)}


def _check_files(folder: Path, stage: str) -> list[dict[str, str]]:
    """The three files exist; every CSV row starts with the identifying columns, filled."""
    for name in ("results.csv", "results.json", "report.md"):
        assert (folder / name).stat().st_size > 0, name
    rows = _csv(folder / "results.csv")
    assert rows and list(rows[0])[: len(ID_COLUMNS)] == list(ID_COLUMNS)
    for r in rows:
        assert r["stage"] == stage and r["dataset"] == "digits" and r["model"] == "mlp"
        assert r["jaxmu_version"] and all(r[c] for c in ID_COLUMNS), r
        assert folder.as_posix().count(f"digits_mlp_{r['config_hash']}") == 1  # the run directory's hash
    meta = json.loads((folder / "results.json").read_text())
    assert len(meta["rows"]) == len(rows)
    return rows


def test_train_writes_rows_learning_curves_and_plot(runs):
    folder = runs["a"] / "results" / "train"
    rows = _check_files(folder, "train")
    assert [(r["method"], r["call"], r["seed"]) for r in rows] == [
        ("original", "-", "0"), ("original", "-", "1"), ("retrain", "-", "0"), ("retrain", "-", "1")]
    for r in rows:
        assert r["status"] == "ok" and 0 < float(r["test_acc"]) <= 1 and float(r["train_loss"]) > 0
    curves = _csv(folder / "learning_curves.csv")
    assert len(curves) == 2 * 2 * 2 and {c["epoch"] for c in curves} == {"1", "2"}
    last = {(c["method"], c["seed"]): c for c in curves if c["epoch"] == "2"}
    for r in rows:  # results.csv's training loss/accuracy are the last epoch's
        assert r["train_loss"] == last[(r["method"], r["seed"])]["train_loss"]
        assert r["train_acc"] == last[(r["method"], r["seed"])]["train_acc"]
    first = {(c["method"], c["seed"]): float(c["train_loss"]) for c in curves if c["epoch"] == "1"}
    assert all(float(last[k]["train_loss"]) < first[k] for k in first)  # 2 epochs of SGD lower the loss
    assert (folder / "learning_curves.png").stat().st_size > 1000
    report = (folder / "report.md").read_text()
    assert "| original |" in report and "| retrain |" in report and " ± " in report


def test_loaded_stage_keeps_its_history(runs):
    """A finished stage loaded from its checkpoint returns the learning curves it recorded."""
    from jaxmu.config import load_config
    from jaxmu.pipeline import prepare, reference_stacks

    from jaxmu.cli import add_config_args
    import argparse

    p = argparse.ArgumentParser()
    add_config_args(p)  # the CLI's default config, as the fixture's runs used
    cfg = load_config(p.get_default("config"), ["model.name=mlp", "train.epochs=2", "seeds=[0,1]",
                                                "engine.progress=false"])
    stages = reference_stacks(prepare(cfg, runs["out"]))
    rows = _csv(runs["a"] / "results" / "train" / "learning_curves.csv")
    for name, st in stages.items():
        assert st.skipped and st.history["loss"].shape == st.history["accuracy"].shape == (2, 2)
        want = [float(r["train_loss"]) for r in rows if r["method"] == name]
        np.testing.assert_allclose(st.history["loss"].reshape(-1), want, rtol=1e-6)


def test_unlearn_writes_rows_beside_the_references(runs):
    (folder,) = (runs["a"] / "results" / "unlearn").iterdir()
    rows = _check_files(folder, "unlearn")
    by = {}
    for r in rows:
        by.setdefault(r["method"], []).append(r)
    assert sorted(by) == ["finetune", "original", "retrain"] and all(len(v) == 2 for v in by.values())
    import jaxmu.methods as M

    assert all(r["call"] == M.get(METHOD).call_string() for r in by["finetune"])
    assert all(r["call"] == "-" for r in by["retrain"] + by["original"])
    assert all(float(r["retdev"]) == 0.0 for r in by["retrain"])
    assert all(float(r["rte"]) > 0 and r["hp_epochs"] == "1" for r in by["finetune"])
    train = {(r["method"], r["seed"]): r for r in _csv(runs["a"] / "results" / "train" / "results.csv")}
    for r in by["retrain"] + by["original"]:  # the same evaluation of the same stacks
        assert r["test_acc"] == train[(r["method"], r["seed"])]["test_acc"]
    report = (folder / "report.md").read_text()
    assert "| finetune |" in report and "| retrain |" in report and "RTE" in report


def test_report_merges_two_run_directories(runs, tmp_path, capsys):
    from jaxmu.report import main
    from jaxmu.stats import interval

    out = tmp_path / "board.csv"
    assert main([str(runs["a"]), str(runs["b"]), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "## Leaderboard" in text and "`finetune(" in text
    board = {r["method"]: r for r in _csv(out)}
    assert board["original"]["runs"] == "2" and board["original"]["seeds"] == "4"
    assert board["retrain"]["seeds"] == "4"  # train's and unlearn's rows of a seed counted once
    assert board[next(k for k in board if k.startswith("finetune("))]["seeds"] == "2"
    seeds = [float(r["test_acc"]) for d in ("a", "b") for r in _csv(runs[d] / "results" / "train" / "results.csv")
             if r["method"] == "original"]
    want = interval(seeds)
    assert float(board["original"]["test_acc"]) == pytest.approx(want.mean, abs=1e-12)
    assert float(board["original"]["test_acc_half_width"]) == pytest.approx(want.half_width, abs=1e-12)
    assert board["original"]["test_acc_n"] == "4"


@pytest.mark.parametrize("case", ["missing", "empty", "file"])
def test_report_bad_input_is_one_line(case, runs, tmp_path, capsys):
    from jaxmu.cli import run_cli
    from jaxmu.report import main

    bad = {"missing": tmp_path / "nope", "empty": tmp_path, "file": tmp_path / "x.txt"}[case]
    if case == "file":
        bad.write_text("x")
    with pytest.raises(SystemExit) as e:
        run_cli(main, [str(runs["a"]), str(bad)])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith("error: ") and str(bad) in err[0]


@pytest.mark.entry
def test_report_runs_as_a_console_subcommand(repo_root, tmp_path):
    res = subprocess.run([sys.executable, "-m", "jaxmu.console", "report", str(tmp_path / "nope")],
                         capture_output=True, text=True, cwd=repo_root, timeout=300)
    assert res.returncode == 2 and res.stderr.startswith("error: ") and "Traceback" not in res.stderr


# --------------------------------------------------------------------------- learning curves


@pytest.fixture(scope="module")
def mlp_setup(digits, digits_splits):
    from jaxmu.types import DeviceData
    from jaxmu.models import build_model

    model = build_model("mlp", digits.num_classes, digits.images.shape[1:])
    data = DeviceData(jnp.asarray(digits.images), jnp.asarray(digits.labels))
    return model, data, jnp.asarray(digits_splits.retain[:300]), digits  # 300 = 4 * 64 + 44: a partial batch


def test_logged_training_is_run_epochs_bit_for_bit(mlp_setup):
    """Chunks of ``run_epochs_logged`` give ``run_epochs``'s parameters exactly; each chunk logs its own epochs."""
    from jaxmu.training import Trainer

    model, data, subset, ds = mlp_setup
    tr = Trainer(model, 64, 3, "flip", ds.mean, ds.std)
    keys = jnp.stack([jax.random.PRNGKey(s) for s in range(2)])
    plain = tr.run_epochs(tr.init(keys, 0.1, 0.9, 5e-4), subset, jax.random.PRNGKey(1), jnp.int32(3), data)
    st, first = tr.run_epochs_logged(tr.init(keys, 0.1, 0.9, 5e-4), subset, jax.random.PRNGKey(1), jnp.int32(2),
                                     data)
    first = np.asarray(first)
    assert np.isnan(first[:, 2]).all() and np.isfinite(first[:, :2]).all()
    st, second = tr.run_epochs_logged(st, subset, jax.random.PRNGKey(1), jnp.int32(3), data)
    second = np.asarray(second)
    assert np.isnan(second[:, :2]).all() and np.isfinite(second[:, 2]).all()  # only the epoch it ran
    for a, b in zip(jax.tree_util.tree_leaves(plain), jax.tree_util.tree_leaves(st)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    h = np.concatenate([first[:, :2], second[:, 2:]], axis=1)
    assert h.shape == (2, 3, 2) and np.isfinite(h).all()
    assert ((h[..., 1] >= 0) & (h[..., 1] <= 1)).all() and (h[:, -1, 0] < h[:, 0, 0]).all()


def test_epoch_loss_and_accuracy_match_an_independent_evaluation(mlp_setup):
    """With learning rate 0 the parameters never move, so every epoch's logged loss and accuracy
    (train mode, no augmentation; the MLP has no dropout or BatchNorm) equal the evaluator's mean
    cross-entropy and accuracy of the initial parameters on the subset, partial batch included."""
    from jaxmu.engine.evaluate import Evaluator
    from jaxmu.training import Trainer
    from jaxmu.metrics import accuracy, per_example_ce

    model, data, subset, ds = mlp_setup
    tr = Trainer(model, 64, 2, "none", ds.mean, ds.std)
    init = tr.init(jnp.stack([jax.random.PRNGKey(s) for s in range(2)]), 0.0, 0.9, 5e-4)
    params, bs = jax.tree_util.tree_map(np.array, (init.params, init.batch_stats))  # init is donated
    _, hist = tr.run_epochs_logged(init, subset, jax.random.PRNGKey(1), jnp.int32(2), data)
    ev = Evaluator(model, ds.mean, ds.std, batch_size=128)
    logits = ev.logits(params, bs, np.asarray(subset), data)
    y = data.labels[subset]
    want_loss = np.asarray(per_example_ce(logits, y)).mean(axis=1)
    want_acc = np.asarray(accuracy(logits, y))
    h = np.asarray(hist)
    for e in range(2):
        np.testing.assert_allclose(h[:, e, 0], want_loss, rtol=1e-5)
        np.testing.assert_allclose(h[:, e, 1], want_acc, atol=1e-6)
