"""Typed configs: unknown keys, wrong types, overrides, hashes, shipped files."""

from __future__ import annotations

from pathlib import Path

import pytest

from jaxmu.config import ConfigError, load_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load(path):
    cfg = load_config(path)
    assert cfg.seeds and cfg.train.epochs >= 1


@pytest.mark.parametrize("override,match", [
    ("train.epochz=3", "unknown config key 'train.epochz'"),
    ("train.epochs=abc", "'train.epochs': expected an integer"),
    ("train.learning_rate=-1", "learning_rate must be > 0"),
    ("data.forget_mode=foo", "'data.forget_mode'"),
    ("bogus.x=1", "unknown config key 'bogus'"),
    ("train.epochs", "use KEY=VALUE"),
    ("train.shared_data_order=3", "expected true/false"),
    ("seeds=[1,1]", "must not repeat"),
    ("attack.forget_fraction=0.05", "fewer than 2 models"),
])
def test_bad_overrides_name_the_key(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, [override])


def test_overrides_and_hash():
    a = load_config(None, ["train.epochs=3", "seeds=4"])
    assert a.train.epochs == 3 and a.seeds == (0, 1, 2, 3)
    assert a.train.learning_rate == 0.1 and isinstance(a.train.weight_decay, float)
    b = load_config(None, ["train.epochs=3", "seeds=4", "engine.model_axis=vmap"])
    assert a.hash() == b.hash()
    assert a.hash() != load_config(None, ["train.epochs=4", "seeds=4"]).hash()


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("train:\n  epochs: 2\n  colour: red\n")
    with pytest.raises(ConfigError, match="train.colour"):
        load_config(bad)
