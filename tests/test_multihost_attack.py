"""U-LiRA (shadow stacks, unlearning, attack statistics) as two processes equals one device."""

from __future__ import annotations

import numpy as np
import pytest
from multihost_helpers import one_process, two_processes

ATTACK = ["--config", "configs/ulira_digits_cnn.yaml", "--method", "finetune(epochs=1)", "--quiet",
          "--set", "model.name=mlp", "--set", "train.epochs=1", "--set", "attack.num_splits=4",
          "--set", "attack.forget_sets=2", "--set", "attack.forget_fraction=0.5", "--set", "attack.folds=2",
          "--set", "attack.queries=1"]


@pytest.mark.slow
def test_two_process_ulira_equals_single_device(repo_root, tmp_path):
    multi = two_processes(repo_root, "jaxmu.attack", [*ATTACK, "--out", str(tmp_path / "multi")])
    for r in multi:
        assert r.returncode == 0, r.stderr[-3000:]
    one_process(repo_root, "jaxmu.attack", [*ATTACK, "--out", str(tmp_path / "single")])
    (a,), (b,) = ((tmp_path / d).glob("*/ulira_*/ulira_finetune.npz") for d in ("multi", "single"))
    got, want = np.load(a), np.load(b)
    assert sorted(got.files) == sorted(want.files)
    for k in want.files:
        if want[k].dtype.kind == "f":
            np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-5, err_msg=k)
        else:
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)
