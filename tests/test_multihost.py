"""Two processes on one machine (gloo CPU collectives) train and unlearn one stack together.

Each process has 2 forced CPU devices, so the 4-model stack is split over 4 devices on 2
processes: each process trains its 2 models and writes its shards through Orbax. The run is
killed after its first epoch checkpoint and resumed by the unlearn command (multi-host
restore), and every checkpoint must equal a single-device run's; they are loaded and verified
here, on this process's device, a layout other than the one that wrote them. Only process 0 prints.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from multihost_helpers import one_process, two_processes

from jaxmu.checkpoint import load_tree, read_metadata

ARGS = ["--config", "configs/digits_mlp.yaml", "--seeds", "4", "--set", "train.epochs=2",
        "--set", "engine.checkpoint_every=1", "--quiet"]
UNLEARN = ["--method", "finetune(epochs=1)"]


def _arrays(path: Path) -> list[np.ndarray]:
    template = [jax.ShapeDtypeStruct(tuple(s), np.dtype(d)) for s, d in read_metadata(path)["leaves"]]
    tree, _ = load_tree(path, template)  # verifies the row-wise checksum in this process's layout
    return [np.asarray(x) for x in tree]


def _checkpoints(out: Path) -> dict[str, Path]:
    (run,) = out.glob("digits_mlp_*")
    found = {s: run / s / "final" for s in ("original", "retrain")}
    (un,) = (run / "unlearn").iterdir()
    found["unlearn"] = un
    return found


@pytest.mark.slow
def test_two_process_stack_equals_single_device_and_resumes(repo_root, tmp_path):
    multi, single = tmp_path / "multi", tmp_path / "single"
    killed = two_processes(repo_root, "jaxmu.train", [*ARGS, "--out", str(multi)],
                            JAXMU_DIE_AT="stage:original:epoch")
    assert [r.returncode for r in killed] == [137, 137], [r.stderr[-2000:] for r in killed]
    (run,) = multi.glob("digits_mlp_*")
    assert [p.name for p in (run / "original").iterdir()] == ["epoch_0001"]
    written = {p.name for p in (run / "original" / "epoch_0001" / "arrays").rglob("*process_*")}
    assert {"ocdbt.process_0", "ocdbt.process_1"} <= written  # each process wrote its own shards

    # the unlearn command resumes the killed training, trains the retrained stack, unlearns
    resumed = two_processes(repo_root, "jaxmu.unlearn", [*ARGS, *UNLEARN, "--out", str(multi)])
    for r in resumed:
        assert r.returncode == 0, r.stderr[-3000:]
    assert "original: resumed at epoch 1" in resumed[0].stdout and "finetune" in resumed[0].stdout
    assert resumed[1].stdout == ""  # process 1 computes, process 0 reports

    one_process(repo_root, "jaxmu.unlearn", [*ARGS, *UNLEARN, "--out", str(single)])

    got, want = _checkpoints(multi), _checkpoints(single)
    assert got["unlearn"].name == want["unlearn"].name
    for stage in ("original", "retrain", "unlearn"):
        a, b = _arrays(got[stage]), _arrays(want[stage])
        assert len(a) == len(b)
        for x, y in zip(a, b):
            np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5, err_msg=stage)
    for stage in ("original", "retrain"):  # learning curves: gathered from both processes, kept across the kill
        for k in ("loss", "accuracy"):
            h, w = (np.asarray(read_metadata(c[stage])["history"][k], np.float64) for c in (got, want))
            assert h.shape == (4, 2) and np.isfinite(h).all(), (stage, k, h)
            np.testing.assert_allclose(h, w, rtol=1e-4, atol=1e-6, err_msg=f"{stage} {k}")


def test_sweep_refuses_multi_process_launch(repo_root, tmp_path):
    res = subprocess.run([sys.executable, "-m", "jaxmu.sweep", "--method", "finetune", "--out", str(tmp_path),
                          "--coordinator", "127.0.0.1:1", "--num-processes", "2", "--process-id", "0"],
                         cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "--worker" in res.stderr and "Traceback" not in res.stderr

