"""User paths relative to the current directory, and configs shipped with the package."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jaxmu.config import ConfigError, load_config
from jaxmu.paths import absolute_storage_url, shipped_config, shipped_configs, with_absolute_paths

REPO = Path(__file__).resolve().parents[1]
TINY = ["--set", "model.name=mlp", "--set", "train.epochs=1", "--seeds", "1", "--quiet"]


def _env() -> dict[str, str]:
    """The environment of a CLI run from another directory: this checkout's jaxmu first."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    return env


def test_top_level_configs_are_the_package_data():
    top = REPO / "configs"
    assert top.is_symlink() and top.resolve() == (REPO / "jaxmu" / "configs").resolve()
    names = sorted(p.stem for p in top.glob("*.yaml"))
    assert names == shipped_configs() and "digits_cnn" in names
    for name in names:
        assert shipped_config(name).read_text() == (top / f"{name}.yaml").read_text()


@pytest.mark.parametrize("name", shipped_configs())
def test_every_shipped_config_loads_by_name(name):
    cfg = load_config(name)
    assert cfg == load_config(f"{name}.yaml") == load_config(REPO / "configs" / f"{name}.yaml")
    assert cfg.seeds and cfg.train.epochs >= 1


def test_config_lookup(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "digits_cnn.yaml").write_text("train:\n  epochs: 2\n")
    assert load_config("digits_cnn.yaml").train.epochs == 2  # an existing path wins
    assert load_config("digits_cnn").train.epochs == 20      # a bare name is the shipped one
    with pytest.raises(ConfigError) as e:
        load_config("xyz")
    assert str(e.value) == ("unknown config 'xyz': pass a YAML path or one of the shipped configs: "
                            + ", ".join(shipped_configs()))
    with pytest.raises(ConfigError, match="config file 'sub/xyz.yaml' not found"):
        load_config("sub/xyz.yaml")


@pytest.mark.parametrize("url,want", [
    ("sqlite:///rel.db", "sqlite:///{cwd}/rel.db"),
    ("sqlite:///a/../b.db?timeout=5", "sqlite:///{cwd}/b.db?timeout=5"),
    ("sqlite:////abs/x.db", "sqlite:////abs/x.db"),
    ("sqlite+pysqlite:///rel.db", "sqlite+pysqlite:///{cwd}/rel.db"),
    ("sqlite:///:memory:", "sqlite:///:memory:"),
    ("sqlite://", "sqlite://"),
    ("journal://rel/study.journal", "journal://{cwd}/rel/study.journal"),
    ("journal:///abs/study.journal", "journal:///abs/study.journal"),
    ("postgresql://user@host:5432/db", "postgresql://user@host:5432/db"),
    ("", ""),
])
def test_storage_urls(tmp_path, monkeypatch, url, want):
    monkeypatch.chdir(tmp_path)
    assert absolute_storage_url(url) == want.format(cwd=os.getcwd())


def test_config_from_args_makes_paths_absolute(tmp_path, monkeypatch):
    from jaxmu.cli import add_config_args, config_from_args

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))  # config_from_args may set it
    p = argparse.ArgumentParser()
    add_config_args(p)
    args = p.parse_args(["--set", "data.data_dir=tfds", "--set", "data.path=faces/../utk",
                         "--set", "tune.storage=sqlite:///s.db", "--set", "engine.host_devices=1"])
    cfg = config_from_args(args)
    cwd = os.getcwd()
    assert args.out == Path(cwd, "runs")
    assert (cfg.data.data_dir, cfg.data.path) == (f"{cwd}/tfds", f"{cwd}/utk")
    assert cfg.tune.storage == f"sqlite:///{cwd}/s.db"
    assert (cfg.model.name, cfg.data.val_ratio) == ("mlp", 0.5)  # the default is the shipped digits_mlp_half
    assert with_absolute_paths(cfg) == cfg


def test_unknown_config_is_one_line(tmp_path):
    res = subprocess.run([sys.executable, "-m", "jaxmu.train", "--config", "xyz", *TINY],
                         capture_output=True, text=True, cwd=tmp_path, env=_env(), timeout=300)
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        "error: unknown config 'xyz': pass a YAML path or one of the shipped configs: "
        + ", ".join(shipped_configs())], res.stderr


@pytest.mark.entry
def test_relative_out_from_another_directory(tmp_path):
    """The README's first command failed: Orbax refused the default relative ``--out runs``."""
    res = subprocess.run([sys.executable, "-m", "jaxmu.train", "--out", "runs", *TINY],
                         capture_output=True, text=True, cwd=tmp_path, env=_env(), timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    line = next(l for l in res.stdout.splitlines() if l.startswith("run directory: "))
    run_dir = Path(line[len("run directory: "):].split()[0])
    assert run_dir.is_absolute() and run_dir.parent == (tmp_path / "runs").resolve()
    assert (run_dir / "original" / "final" / "meta.json").is_file()
    assert (run_dir / "retrain" / "final" / "meta.json").is_file()


def test_library_callers_may_pass_relative_paths(tmp_path, monkeypatch):
    """``run_dir_for`` and the checkpoints take a relative path from the current directory."""
    import numpy as np

    from jaxmu.checkpoint import load_tree, save_tree
    from jaxmu.stages import run_dir_for

    monkeypatch.chdir(tmp_path)
    run = run_dir_for("runs", load_config(None))
    assert run.is_absolute() and run.parent == Path(os.getcwd(), "runs") and run.is_dir()
    tree = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    save_tree("ckpt", tree, {"note": "relative"})
    back, meta = load_tree("ckpt", tree)
    assert meta["note"] == "relative" and np.array_equal(np.asarray(back["w"]), tree["w"])
