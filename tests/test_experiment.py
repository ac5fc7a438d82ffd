"""``jaxmu.Experiment``: the notebook's front door over the same stages as the command lines."""

from __future__ import annotations

import json

import numpy as np
import pytest

import jaxmu
import jaxmu.methods as M
from jaxmu.results_table import ResultTable

TINY = ["model.name=mlp", "train.epochs=3", "tune.seeds=[0]", "tune.batch=2", "engine.model_axis=loop"]


@pytest.fixture(scope="module")
def exp(tmp_path_factory):
    return jaxmu.Experiment("digits_cnn", seeds=2, out=tmp_path_factory.mktemp("exp"), overrides=TINY,
                            progress=False)


def test_references_are_the_sweeps_stacks(exp):
    t = exp.references()
    assert [r["stack"] for r in t.rows] == ["original", "original", "retrain", "retrain"]
    assert [r["seed"] for r in t.rows] == [0, 1, 0, 1]
    md = t._repr_markdown_()
    assert "| original | 2 |" in md and "±" in md and "tow" in md
    assert all(r["tow"] == 1.0 for r in t.rows if r["stack"] == "retrain")
    # the run directory is the CLI's: keyed by data/model/train/seeds
    assert (exp.run_dir / "config.json").exists() and exp.run_dir.parent == exp.out.resolve()


def test_a_grid_is_one_stack_and_equals_single_runs(exp):
    grid = exp.unlearn("ng_plus", alpha=[0.8, 0.95], epochs=1)
    stacks = {r["stack"] for r in grid.rows}
    assert stacks == {"ng_plus(alpha=0.8, epochs=1)", "ng_plus(epochs=1)", "retrain", "original"}
    single = exp.unlearn("ng_plus", alpha=0.95, epochs=1)
    pick = lambda t: [r for r in t.rows if r["stack"] == "ng_plus(epochs=1)"]  # noqa: E731
    for a, b in zip(pick(grid), pick(single)):  # loop model axis: each model independent, exact
        assert a == b
    assert [r["hp_alpha"] for r in grid.rows if r["stack"].startswith("ng_plus")] == [0.8, 0.8, 0.95, 0.95]
    (ckpt,) = (exp.run_dir / "grid").iterdir()
    assert json.loads((ckpt / "meta.json").read_text())["calls"] == ["ng_plus(alpha=0.8, epochs=1)", "ng_plus(epochs=1)"]
    again = exp.unlearn("ng_plus", alpha=[0.8, 0.95], epochs=1)  # loaded from the grid checkpoint
    assert again.rows == grid.rows


def test_a_ragged_grid_over_epochs(exp):
    t = exp.unlearn("finetune", epochs=[1, 2], batch_size=64)
    got = {r["stack"] for r in t.rows}
    assert {"finetune(batch_size=64, epochs=1)", "finetune(batch_size=64, epochs=2)"} <= got
    assert all(np.isfinite(r["forget_acc"]) for r in t.rows)


def test_tune_is_the_sweep(exp):
    best = exp.tune("ng_plus", trials=2)
    assert isinstance(best.method, M.Method) and best.method.name == "ng_plus"
    assert len(best.trials) == 2 and best.best_trial["number"] in {t["number"] for t in best.trials}
    (final,) = exp.run_dir.glob("sweep/ng_plus_*/final.json")
    assert json.loads(final.read_text())["call"] == best.method.call_string()
    assert best.method.call_string() in best._repr_markdown_()


def test_bad_inputs_fail_before_any_work(exp):
    with pytest.raises(M.MethodError, match="empty list"):
        exp.unlearn("ng_plus", alpha=[])
    with pytest.raises(M.MethodError):
        exp.unlearn("ng_plus", alpha=[0.9, 2.0])  # outside alpha's domain
    with pytest.raises(M.MethodError, match="unknown method"):
        exp.unlearn("nope")


def test_result_table_saves_converts_and_plots(tmp_path):
    rows = [{"stack": "a", "seed": 0, "status": "ok", "forget_acc": 0.9, "hp_alpha": 0.5},
            {"stack": "a", "seed": 1, "status": "ok", "forget_acc": 0.8, "hp_alpha": 0.5},
            {"stack": "b", "seed": 0, "status": "diverged", "forget_acc": float("nan")}]
    t = ResultTable(rows, title="demo")
    assert t.metric_columns() == ["forget_acc"]
    s = {x["stack"]: x for x in t.summary()}
    assert s["a"]["forget_acc"].mean == pytest.approx(0.85) and s["b"]["forget_acc"].n == 0
    assert "<caption>demo</caption>" in t._repr_html_() and "0.8500 ±" in str(t)
    csv_text = t.to_csv(tmp_path / "t.csv").read_text().splitlines()
    assert csv_text[0] == "stack,seed,status,forget_acc,hp_alpha" and len(csv_text) == 4
    back = json.loads(t.to_json(tmp_path / "t.json").read_text())
    assert back["rows"][2]["forget_acc"] is None and back["group_by"] == ["stack"]
    fig = t.plot()
    assert len(fig.axes) == 1
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install pandas"):
            t.to_pandas()
    else:
        assert t.to_pandas().shape == (3, 5)


@pytest.mark.slow
def test_ulira_rows(tmp_path):
    from test_attack_pipeline import METHOD, TINY as ATTACK_TINY

    e = jaxmu.Experiment("ulira_digits_cnn", out=tmp_path, overrides=ATTACK_TINY, progress=False)
    t = e.ulira(METHOD)
    pops = {r["population"] for r in t.rows}
    assert pops == {"finetune", "original", "retrain (perfect)"}
    assert {r["formulation"] for r in t.rows} == {"hayes", "deepunlearn"}
    perfect = [r for r in t.rows if r["population"] == "retrain (perfect)"]
    assert all(0.4 < r["auc"] < 0.6 for r in perfect)
    assert "klom_forget_p95" in t.metric_columns() and "| original | hayes |" in t.table()
