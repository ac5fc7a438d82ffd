"""Score once, attack many (issue 14 item 7): every evaluated stack caches its logits beside its
checkpoint, later stages read them back, and ``jaxmu report --rescore`` recomputes every per-seed
metric from them without loading, evaluating or training a model.

One tiny run (MLP, 3 seeds, 2 epochs; ``train`` + ``unlearn``) in this process serves the module.
"""

from __future__ import annotations

import csv
import importlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from jaxmu.scores import SCORES_FILE, Scores, load_scores, save_scores

FLAGS = ["--set", "model.name=mlp", "--set", "train.epochs=2", "--seeds", "3", "--quiet"]
METHOD = "finetune(epochs=1, batch_size=64)"


def _main(module: str, argv: list[str]) -> None:
    assert importlib.import_module(module).main(argv) == 0


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rescore")
    _main("jaxmu.unlearn", ["--out", str(out), "--method", METHOD, *FLAGS])
    _main("jaxmu.train", ["--out", str(out), *FLAGS])
    return next(p for p in out.iterdir() if p.name.startswith("digits_mlp_"))


def _results(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("results.*"))}


def test_every_evaluated_stack_leaves_its_logits(run):
    caches = sorted(str(p.parent.relative_to(run)) for p in run.rglob(SCORES_FILE))
    assert caches[:2] == ["original/final", "retrain/final"] and caches[2].startswith("unlearn/finetune_"), caches
    sc = load_scores(run / "retrain" / "final" / SCORES_FILE)
    assert sc.num_models == 3 and sc.logits["forget"].shape[::2] == (3, 10)
    assert sc.logits["test"].shape[1] == sc.labels["test"].shape[0]


def test_rescore_without_any_checkpoint_gives_the_same_bytes(run, tmp_path, capsys):
    """Arrays deleted: nothing could be loaded or evaluated; every results file comes back identical."""
    copy = tmp_path / run.name
    shutil.copytree(run, copy)
    for arrays in copy.rglob("arrays"):
        shutil.rmtree(arrays)
    before = _results(copy)
    _main("jaxmu.report", ["--rescore", str(copy)])
    out = capsys.readouterr().out
    assert "3 cached stacks" in out and "largest change 0" in out and "new columns" not in out, out
    assert _results(copy) == before


def test_a_metric_missing_from_an_old_run_is_added(run, tmp_path):
    """A results.csv written before RMIA existed gets the column, with the numbers a fresh run gives."""
    copy = tmp_path / run.name
    shutil.copytree(run, copy)
    path = next(copy.rglob("results/unlearn/*/results.csv"))
    fresh = _csv(path)
    old = [{k: v for k, v in r.items() if k != "rmia_auc"} for r in fresh]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(old[0]))
        w.writeheader()
        w.writerows(old)
    from jaxmu.rescore import rescore_run

    done = rescore_run(copy)
    assert done.new_columns == ["rmia_auc"] and done.max_change == 0.0
    back = _csv(path)
    assert [r["rmia_auc"] for r in back] == [r["rmia_auc"] for r in fresh]
    rows = json.loads(path.with_name("results.json").read_text())["rows"]
    assert [r["rmia_auc"] for r in rows] == [float(r["rmia_auc"]) for r in fresh]


def test_a_later_stage_reads_the_cache_instead_of_evaluating(run, monkeypatch):
    import jaxmu.pipeline as P
    from jaxmu.config import load_config

    def no_eval(*a, **k):
        raise AssertionError("evaluated a stack whose logits are cached")

    cfg = load_config("digits_mlp_half", ["model.name=mlp", "train.epochs=2", "seeds=[0,1,2]", "engine.progress=false"])
    setting = P.prepare(cfg, run.parent)
    assert setting.run_dir == run
    refs = P.reference_stacks(setting)
    for k in ("original", "retrain"):
        (refs[k].path / SCORES_FILE).unlink()  # so the first scoring evaluates (and writes the cache again)
    fresh = P.scored_references(setting, refs)
    assert all((refs[k].path / SCORES_FILE).exists() for k in ("original", "retrain"))
    monkeypatch.setattr(P, "split_logits", no_eval)
    cached = P.scored_references(setting, refs)
    for k in ("original", "retrain"):
        for m, v in fresh.metrics[k].items():
            np.testing.assert_array_equal(v, cached.metrics[k][m], err_msg=f"{k} {m}")


def test_a_cache_for_other_weights_or_a_broken_file_is_ignored(tmp_path):
    rng = np.random.default_rng(0)
    splits = ("retain", "forget", "val", "test")
    sc = Scores({s: rng.normal(size=(2, 5, 3)).astype(np.float32) for s in splits},
                {s: rng.integers(0, 3, 5) for s in splits}, np.array([True, False]))
    path = tmp_path / SCORES_FILE
    save_scores(path, sc, "key-a")
    back = load_scores(path, "key-a")
    for s in splits:
        np.testing.assert_array_equal(back.logits[s], sc.logits[s])
        np.testing.assert_array_equal(back.labels[s], sc.labels[s])
    np.testing.assert_array_equal(back.params_ok, sc.params_ok)
    assert load_scores(path, "key-b") is None
    path.write_bytes(path.read_bytes()[:100])
    assert load_scores(path, "key-a") is None


def test_rescore_of_a_run_without_caches_is_one_line(tmp_path):
    import subprocess
    import sys

    d = tmp_path / "digits_mlp_0"
    (d / "results" / "train").mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"seeds": [0]}))
    (d / "results" / "train" / "results.csv").write_text("stage,dataset\ntrain,digits\n")
    proc = subprocess.run([sys.executable, "-m", "jaxmu.report", "--rescore", str(d)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "no cached scores of the retrained stack" in proc.stderr, proc.stderr
