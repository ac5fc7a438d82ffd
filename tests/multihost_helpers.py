"""Launch a CLI as two processes of one JAX run on this machine (2 CPU devices each), or as one;
the environment of a subprocess with a given number of forced CPU devices."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path


def env_for(repo_root: Path, devices: int, **extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(repo_root), **extra}
    flags = " ".join(f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f)
    env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices}".strip()
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_processes(repo_root: Path, module: str, args: list[str], **extra: str) -> list[subprocess.CompletedProcess]:
    port = free_port()
    procs = [subprocess.Popen([sys.executable, "-m", module, *args, "--coordinator", f"127.0.0.1:{port}",
                               "--num-processes", "2", "--process-id", str(i)],
                              cwd=repo_root, env=env_for(repo_root, 2, **extra), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(2)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        outs.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return outs


def one_process(repo_root: Path, module: str, args: list[str]) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-m", module, *args], cwd=repo_root, env=env_for(repo_root, 1),
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return res
