"""The ``jaxmu`` console command dispatches to the stage CLIs with their flags and errors."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import jaxmu
from jaxmu.console import COMMANDS, main

REPO = Path(__file__).resolve().parents[1]


def test_entry_point_is_declared():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"jaxmu": "jaxmu.console:main"}


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"jaxmu {jaxmu.__version__}"


@pytest.mark.parametrize("argv", [[], ["bogus"], ["--bogus"]])
def test_missing_or_unknown_subcommand_prints_usage(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: jaxmu ") and all(f"  {name} " in err for name in COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_subcommands_take_their_modules_flags(capsys, name):
    with pytest.raises(SystemExit) as e:
        main([name, "--help"])
    assert e.value.code == 0
    assert f"usage: python -m {COMMANDS[name][0]} " in capsys.readouterr().out


def test_user_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--config", "xyz"])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip().startswith("error: unknown config 'xyz': pass a YAML path")


@pytest.mark.entry
def test_runs_as_a_module():
    res = subprocess.run([sys.executable, "-m", "jaxmu.console", "unlearn", "--method", "nope"],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and "unknown method 'nope'" in lines[0], res.stderr
