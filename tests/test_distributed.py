"""Multi-host start-up: the environment decision table and a real two-process initialisation."""

from __future__ import annotations

import subprocess
import sys

import pytest
from multihost_helpers import env_for, free_port

from jaxmu.distributed import init_kwargs

PROBE = """
import sys, jax
from jaxmu.distributed import maybe_initialize
assert maybe_initialize(sys.argv[1], 2, int(sys.argv[2]))
print(jax.process_index(), jax.process_count(), jax.device_count(), jax.local_device_count())
"""


def test_decision_table():
    assert init_kwargs(environ={}) is None
    assert init_kwargs("h:1", 4, 2, environ={}) == {"coordinator_address": "h:1", "num_processes": 4, "process_id": 2}
    env = {"JAX_COORDINATOR_ADDRESS": "c:9", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"}
    assert init_kwargs(environ=env) == {"coordinator_address": "c:9", "num_processes": 2, "process_id": 1}
    assert init_kwargs(environ={"SLURM_NTASKS": "8"}) == {}
    assert init_kwargs(environ={"SLURM_NTASKS": "1"}) is None
    assert init_kwargs(environ={"TPU_WORKER_HOSTNAMES": "a,b"}) == {}
    assert init_kwargs(environ={"TPU_WORKER_HOSTNAMES": "a"}) is None
    with pytest.raises(ValueError, match="together"):
        init_kwargs("h:1", None, None, environ={})
    with pytest.raises(ValueError, match="process-id 3"):
        init_kwargs("h:1", 2, 3, environ={})
    with pytest.raises(ValueError, match="JAX_NUM_PROCESSES"):
        init_kwargs(environ={"JAX_COORDINATOR_ADDRESS": "c:9"})


def test_two_processes_initialise_on_one_machine(repo_root):
    port, env = free_port(), env_for(repo_root, 1)  # maybe_initialize itself selects gloo on CPU
    procs = [subprocess.Popen([sys.executable, "-c", PROBE, f"127.0.0.1:{port}", str(i)], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    got = sorted(tuple(map(int, o.split())) for o, _ in outs)
    assert got == [(0, 2, 2, 1), (1, 2, 2, 1)]  # two processes, one local device each, two global


def test_cli_rejects_partial_multi_host_options(repo_root, tmp_path):
    res = subprocess.run([sys.executable, "-m", "jaxmu.train", "--out", str(tmp_path), "--coordinator", "h:1"],
                         capture_output=True, text=True, cwd=repo_root)
    assert res.returncode == 2 and "together" in res.stderr and "Traceback" not in res.stderr
