"""The models axis sharded over 4 forced CPU devices equals the single-device run (issue 6).

Each configuration runs in a subprocess (XLA's device count is fixed at start-up); 3 models on
4 devices also exercises the padding of a model count the device count does not divide.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from multihost_helpers import env_for


def _probe(tmp_path, repo_root, devices: int, mode: str) -> dict:
    env = env_for(repo_root, devices)
    out = tmp_path / f"probe_{devices}_{mode}.npz"
    res = subprocess.run([sys.executable, str(repo_root / "tests" / "sharding_probe.py"), str(out), mode],
                         capture_output=True, text=True, env=env, cwd=repo_root, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return dict(np.load(out))


@pytest.mark.parametrize("mode", ["vmap", "loop"])
def test_sharded_stack_equals_single_device(tmp_path, repo_root, mode):
    one = _probe(tmp_path, repo_root, 1, mode)
    four = _probe(tmp_path, repo_root, 4, mode)
    assert int(one["devices"]) == 1 and int(four["devices"]) == 4
    assert one["logits"].shape == four["logits"].shape == (3, 150, 10)
    for k in one:
        if k != "devices":
            np.testing.assert_allclose(four[k], one[k], rtol=1e-4, atol=1e-4, err_msg=k)
