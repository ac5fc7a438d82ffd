"""Bad input at the command line: one `error:` line naming the problem, exit code 2, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

TINY = ["--set", "model.name=mlp", "--set", "train.epochs=1", "--seeds", "1", "--quiet"]


def _train(repo_root, out, *extra):
    return subprocess.run([sys.executable, "-m", "jaxmu.train", "--out", str(out), *TINY, *extra],
                          capture_output=True, text=True, cwd=repo_root, timeout=300)


def _one_line_error(res, needle):
    assert res.returncode == 2, res.stderr[-1500:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize("extra,needle", [
    (["--set", "data.name=nope"], "unknown dataset 'nope'"),
    (["--set", "model.name=vgg"], "unknown model 'vgg'"),
    (["--set", "model.name=tinyvit_11m"], "divisible by 32"),
    (["--set", "data.name=mnist", "--set", "data.data_dir=EMPTY"], "jaxmu.data.prepare"),
    (["--set", "data.forget_mode=class"], "forget_class must be set"),
])
def test_bad_inputs(repo_root, tmp_path, extra, needle):
    extra = [f"data.data_dir={tmp_path / 'empty'}" if e.endswith("EMPTY") else e for e in extra]
    _one_line_error(_train(repo_root, tmp_path, *extra), needle)


def test_corrupt_checkpoint_is_reported_and_nothing_else_lost(repo_root, tmp_path):
    assert _train(repo_root, tmp_path).returncode == 0
    final = next(tmp_path.rglob("retrain/final"))
    data = max((p for p in (final / "arrays").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    _one_line_error(_train(repo_root, tmp_path), "retrain/final")
    assert (next(tmp_path.rglob("original/final")) / "meta.json").exists()  # the other stage is kept
