"""Orbax checkpoints with checksums, resumable stages, run directories."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import pytest

from jaxmu.checkpoint import CheckpointError, load_tree, save_tree
from jaxmu.config import load_config
from jaxmu.pipeline import prepare, train_stage
from jaxmu.stages import RunDirError, run_dir_for, run_training_stage


def _tree():
    return {"a": jnp.arange(6.0).reshape(2, 3), "b": (jnp.ones((2,), jnp.int32), jax.random.PRNGKey(3))}


def test_roundtrip_is_exact(tmp_path):
    t = _tree()
    save_tree(tmp_path / "ck", t, {"note": "x"})
    back, meta = load_tree(tmp_path / "ck", jax.eval_shape(lambda: t))
    assert meta["note"] == "x"
    chex.assert_trees_all_equal(t, back)  # structure, values and dtypes
    chex.assert_trees_all_equal_dtypes(t, back)


def _data_files(ck: Path):
    return [p for p in (ck / "arrays").rglob("*") if p.is_file() and p.stat().st_size > 64
            and "meta" not in p.name and p.suffix != ".json"]


def _flip_middle_byte(ck: Path) -> None:
    biggest = max(_data_files(ck), key=lambda p: p.stat().st_size)
    raw = bytearray(biggest.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    biggest.write_bytes(bytes(raw))


def test_flipped_bytes_are_detected_before_orbax_reads(tmp_path):
    t = {"w": jnp.arange(4096.0)}
    save_tree(tmp_path / "ck", t)
    _flip_middle_byte(tmp_path / "ck")
    with pytest.raises(CheckpointError, match=r"is corrupt \(arrays/.* changed\)"):
        load_tree(tmp_path / "ck", jax.eval_shape(lambda: t))


def test_without_file_digests_the_leaf_checksum_still_catches_flips(tmp_path):
    """A checkpoint written before file digests existed: Orbax reads it, the row checksum checks."""
    t = {"w": jnp.arange(4096.0)}
    save_tree(tmp_path / "ck", t)
    meta_file = tmp_path / "ck" / "meta.json"
    meta = json.loads(meta_file.read_text())
    del meta["files"]
    meta_file.write_text(json.dumps(meta))
    _flip_middle_byte(tmp_path / "ck")
    with pytest.raises(CheckpointError, match="corrupt|cannot be read"):
        load_tree(tmp_path / "ck", jax.eval_shape(lambda: t))


def test_a_missing_array_file_is_named(tmp_path):
    t = _tree()
    save_tree(tmp_path / "ck", t)
    next((tmp_path / "ck" / "arrays").rglob("_sharding")).unlink()
    with pytest.raises(CheckpointError, match=r"incomplete \(arrays/_sharding is missing\)"):
        load_tree(tmp_path / "ck", jax.eval_shape(lambda: t))


def test_corrupt_compressed_chunk_is_one_line_at_the_cli(tmp_path):
    """Regression: a flipped byte inside a zstd chunk made Orbax's asyncio tasks print
    tracebacks at interpreter exit, after the CLI's one-line error (seen in CI)."""
    t = {"w": jnp.round(jnp.sin(jnp.arange(4096.0)), 1)}  # compressible, so the chunk is zstd
    save_tree(tmp_path / "ck", t)
    _flip_middle_byte(tmp_path / "ck")
    script = (
        "import sys, jax, numpy as np\n"
        "from jaxmu.checkpoint import load_tree\n"
        "from jaxmu.cli import run_cli\n"
        "tpl = {'w': jax.ShapeDtypeStruct((4096,), np.float32)}\n"
        "run_cli(lambda argv: load_tree(sys.argv[1], tpl) and 0, [])\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "ck")], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: checkpoint"), proc.stderr[-2000:]


def test_incomplete_and_mismatched(tmp_path):
    t = _tree()
    save_tree(tmp_path / "ck", t)
    with pytest.raises(CheckpointError, match="does not match"):
        load_tree(tmp_path / "ck", {"a": jnp.zeros((3, 3)), "b": t["b"]})
    (tmp_path / "ck" / "meta.json").unlink()
    with pytest.raises(CheckpointError, match="incomplete"):
        load_tree(tmp_path / "ck", t)


TINY = ["train.epochs=4", "train.batch_size=128", "seeds=[0,1]", "engine.checkpoint_every=2",
        "engine.progress=false"]


def test_stage_resume_after_kill_equals_uninterrupted(tmp_path):
    cfg = load_config(None, TINY)
    full = train_stage(prepare(cfg, tmp_path / "a"), "retrain")

    setting = prepare(cfg, tmp_path / "b")

    class Killed(Exception):
        pass

    def kill(epoch):
        raise Killed(epoch)

    from jaxmu import pipeline

    t = cfg.train
    trainer = setting.trainer()
    init = trainer.init(setting.init_keys(), t.learning_rate, t.momentum, t.weight_decay)
    with pytest.raises(Killed):
        run_training_stage(setting.run_dir / "retrain", trainer, init, pipeline._subset_for(setting, "retrain"),
                           setting.data_key(), setting.data, checkpoint_every=2, metadata={}, progress=False,
                           on_checkpoint=kill)
    assert (setting.run_dir / "retrain" / "epoch_0002" / "meta.json").exists()
    resumed = train_stage(setting, "retrain")
    assert resumed.resumed_from == 2 and not resumed.skipped
    chex.assert_trees_all_equal(full.state, resumed.state)
    again = train_stage(setting, "retrain")
    assert again.skipped
    meta = json.loads((setting.run_dir / "retrain" / "final" / "meta.json").read_text())
    assert meta["done"] and "compile_s" in meta and "run_s" in meta and meta["environment"]["jax"]
    assert not list((setting.run_dir / "retrain").glob("epoch_*"))


def test_run_dir_keyed_by_config_and_checked(tmp_path):
    a = load_config(None, TINY)
    b = load_config(None, TINY + ["train.epochs=5"])
    c = load_config(None, TINY + ["engine.model_axis=loop"])
    assert run_dir_for(tmp_path, a) != run_dir_for(tmp_path, b)
    assert run_dir_for(tmp_path, a) == run_dir_for(tmp_path, c)  # perf flags are not hashed
    d = run_dir_for(tmp_path, a)
    cfgfile = d / "config.json"
    data = json.loads(cfgfile.read_text())
    data["train"]["epochs"] = 99
    cfgfile.write_text(json.dumps(data))
    with pytest.raises(RunDirError, match="another configuration"):
        run_dir_for(tmp_path, a)
