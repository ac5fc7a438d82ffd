"""The example notebook (a percent-format script) runs start to finish and leaves its outputs."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_example_notebook_runs(tmp_path, repo_root):
    env = {**os.environ, "JAXMU_EXAMPLE_OUT": str(tmp_path), "JAXMU_EXAMPLE_TRIALS": "4"}
    res = subprocess.run([sys.executable, "examples/notebook.py"], cwd=repo_root, env=env, capture_output=True,
                         text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "ga_anchor passes the method contract" in res.stdout
    assert (tmp_path / "ga_anchor_vs_ng_plus.png").stat().st_size > 1000
    with (tmp_path / "ga_anchor_vs_ng_plus.csv").open() as f:
        stacks = {r["stack"] for r in csv.DictReader(f)}
    assert {"retrain", "original"} < stacks and any(s.startswith("ga_anchor") for s in stacks) \
        and any(s.startswith("ng_plus") for s in stacks)
