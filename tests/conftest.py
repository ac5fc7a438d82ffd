"""Shared test set-up: the persistent compile cache and small shared fixtures.

Compilation dominates the suite's time on 2 CPU cores, so the persistent XLA cache is on
(``~/.cache/jaxmu/xla-tests`` unless ``JAXMU_TEST_CACHE`` says otherwise) for the test processes
and every process they start, and expensive objects (the digits dataset, its split, trained tiny
stacks) are session-scoped fixtures. The tiny method setting (``TinySetting``) is ``jaxmu.testing``'s, shared with ``check_method``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest

_CACHE = os.environ.get("JAXMU_TEST_CACHE", str(Path.home() / ".cache" / "jaxmu" / "xla-tests"))
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
# Every process a test starts compiles into the same cache, so a program compiled once is reused
# suite-wide (and the user's own ~/.cache/jaxmu/xla is left alone): the command lines read
# JAXMU_COMPILE_CACHE (jaxmu.cli.enable_compile_cache); plain scripts (the example notebook, the
# sharding probe, the benches' smoke runs) read JAX's own variables.
for _var, _value in (("JAXMU_COMPILE_CACHE", _CACHE), ("JAX_COMPILATION_CACHE_DIR", _CACHE),
                     ("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0"),
                     ("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")):
    os.environ.setdefault(_var, _value)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def digits():
    from jaxmu.data import load_dataset

    return load_dataset("digits")


@pytest.fixture(scope="session")
def digits_splits(digits):
    from jaxmu.data import make_splits

    return make_splits(digits)


@pytest.fixture(scope="session")
def tiny(digits, digits_splits):
    """``jaxmu.testing.TinySetting``: the digits CNN stack (2 models) of the method tests."""
    from jaxmu.testing import TinySetting

    return TinySetting(digits, digits_splits)


@pytest.fixture(scope="session")
def bench_smoke(repo_root):
    """``run(name, tmp_path)``: ``bench/<name>.py --smoke --json TABLE`` in a fresh process, which
    must exit 0; returns the finished process and the table it wrote."""

    def run(name: str, tmp_path: Path) -> tuple[subprocess.CompletedProcess, dict]:
        out = tmp_path / "table.json"
        res = subprocess.run([sys.executable, f"bench/{name}.py", "--smoke", "--json", str(out)], cwd=repo_root,
                             capture_output=True, text=True, timeout=900,
                             env={**os.environ, "PYTHONPATH": str(repo_root)})
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
        return res, json.loads(out.read_text())

    return run
