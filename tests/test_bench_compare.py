"""bench/compare.py cannot rot: its smoke run measures every side, each in its own process."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_compare_smoke(tmp_path, repo_root):
    out = tmp_path / "table.json"
    res = subprocess.run([sys.executable, "bench/compare.py", "--smoke", "--json", str(out)], cwd=repo_root,
                         capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONPATH": str(repo_root)})
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    rows = {r["side"]: r for r in json.loads(out.read_text())["rows"]}
    for side in ("jaxmu-vmap", "jaxmu-loop"):
        assert rows[side]["rate_median"] > 0 and rows[side]["rounds"] == 1
    if importlib.util.find_spec("torch") is not None:
        assert rows["torch-loop"]["vs_torch_loop"] == pytest.approx(1.0)
        assert rows["torch-func"]["rate_median"] > 0
    assert "| torch-func |" in res.stdout
