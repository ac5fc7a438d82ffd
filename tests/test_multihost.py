"""Two processes on one machine (gloo CPU collectives) train and unlearn one stack together.

Each process has 2 forced CPU devices, so the 4-model stack is split over 4 devices on 2
processes: each process trains its 2 models and writes its shards through Orbax. The run is
killed after its first epoch checkpoint and resumed (multi-host restore), and its checkpoints
must equal a single-device run's (loaded here, in a third layout). Only process 0 prints.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxmu.checkpoint import load_tree, read_metadata

ARGS = ["--config", "configs/digits_mlp.yaml", "--seeds", "4", "--set", "train.epochs=3",
        "--set", "engine.checkpoint_every=1", "--quiet"]
UNLEARN = ["--method", "finetune(epochs=1)"]


def _env(repo_root: Path, devices: int, **extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(repo_root), **extra}
    flags = " ".join(f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f)
    env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices}".strip()
    return env


def _two_processes(repo_root: Path, module: str, args: list[str], **extra: str) -> list[subprocess.CompletedProcess]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [subprocess.Popen([sys.executable, "-m", module, *args, "--coordinator", f"127.0.0.1:{port}",
                               "--num-processes", "2", "--process-id", str(i)],
                              cwd=repo_root, env=_env(repo_root, 2, **extra), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(2)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        outs.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return outs


def _one_process(repo_root: Path, module: str, args: list[str]) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-m", module, *args], cwd=repo_root, env=_env(repo_root, 1),
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


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
    killed = _two_processes(repo_root, "jaxmu.train", [*ARGS, "--out", str(multi)],
                            JAXMU_DIE_AT="stage:original:epoch")
    assert [r.returncode for r in killed] == [137, 137], [r.stderr[-2000:] for r in killed]
    (run,) = multi.glob("digits_mlp_*")
    assert [p.name for p in (run / "original").iterdir()] == ["epoch_0001"]
    written = {p.name for p in (run / "original" / "epoch_0001" / "arrays").rglob("*process_*")}
    assert {"ocdbt.process_0", "ocdbt.process_1"} <= written  # each process wrote its own shards

    resumed = _two_processes(repo_root, "jaxmu.train", [*ARGS, "--out", str(multi)])
    for r in resumed:
        assert r.returncode == 0, r.stderr[-3000:]
    assert "original: resumed at epoch 1" in resumed[0].stdout
    assert resumed[1].stdout == ""  # process 1 computes, process 0 reports
    unlearned = _two_processes(repo_root, "jaxmu.unlearn", [*ARGS, *UNLEARN, "--out", str(multi)])
    for r in unlearned:
        assert r.returncode == 0, r.stderr[-3000:]
    assert "finetune" in unlearned[0].stdout

    _one_process(repo_root, "jaxmu.train", [*ARGS, "--out", str(single)])
    _one_process(repo_root, "jaxmu.unlearn", [*ARGS, *UNLEARN, "--out", str(single)])

    got, want = _checkpoints(multi), _checkpoints(single)
    assert got["unlearn"].name == want["unlearn"].name
    for stage in ("original", "retrain", "unlearn"):
        a, b = _arrays(got[stage]), _arrays(want[stage])
        assert len(a) == len(b)
        for x, y in zip(a, b):
            np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5, err_msg=stage)


def test_sweep_refuses_multi_process_launch(repo_root, tmp_path):
    res = subprocess.run([sys.executable, "-m", "jaxmu.sweep", "--method", "finetune", "--out", str(tmp_path),
                          "--coordinator", "127.0.0.1:1", "--num-processes", "2", "--process-id", "0"],
                         cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "--worker" in res.stderr and "Traceback" not in res.stderr
