"""bench/compare.py cannot rot: its smoke run measures every side, each in its own process."""

from __future__ import annotations

import importlib.util

import pytest


@pytest.mark.slow
def test_compare_smoke(tmp_path, bench_smoke):
    res, table = bench_smoke("compare", tmp_path)
    rows = {r["side"]: r for r in table["rows"]}
    for side in ("jaxmu-vmap", "jaxmu-loop"):
        assert rows[side]["rate_median"] > 0 and rows[side]["rounds"] == 1
    if importlib.util.find_spec("torch") is not None:
        assert rows["torch-loop"]["vs_torch_loop"] == pytest.approx(1.0)
        assert rows["torch-func"]["rate_median"] > 0
    assert "| torch-func |" in res.stdout
