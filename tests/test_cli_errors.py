"""Bad input at the command line: one `error:` line naming the problem, exit code 2, no traceback.

One table of bad inputs (issue #10, item 5) runs against ``python -m jaxmu.train|unlearn|attack|
sweep``. Every case targets the output directory of a run prepared once (a tiny MLP, one seed, one
epoch), and a snapshot of that directory (every path with its size and mtime) is compared before
and after: a bad input changes nothing there, and creates nothing either. Most cases run
in-process (``run_cli(main, argv)`` and ``SystemExit``; an unexpected exception fails the test);
the cases marked ``SUB`` run as real subprocesses to prove the whole path end to end (no
``Traceback`` on stderr).
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

TINY = ["--set", "model.name=mlp", "--set", "train.epochs=1", "--seeds", "1", "--quiet"]
SUB = True  # run this case as a subprocess


def _cmd(cli: str, out: Path, extra: list[str]) -> list[str]:
    """The argument list of a case: ``--out`` the prepared directory unless the case names one."""
    return ([] if "--out" in extra else ["--out", str(out)]) + TINY + extra


def _snapshot(root: Path) -> dict[str, tuple[int, int] | None]:
    """Every path under ``root``: files with (size, mtime_ns), directories with None."""
    snap: dict[str, tuple[int, int] | None] = {}
    for p in sorted(root.rglob("*")):
        st = p.stat()
        snap[str(p.relative_to(root))] = None if p.is_dir() else (st.st_size, st.st_mtime_ns)
    return snap


def _one_line_error(code: int, stderr: str, needle: str) -> None:
    assert code == 2, stderr[-1500:]
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), stderr[-3000:]
    assert needle in lines[0], lines[0]


def _subprocess(repo_root: Path, cli: str, argv: list[str]) -> tuple[int, str]:
    res = subprocess.run([sys.executable, "-m", f"jaxmu.{cli}", *argv], capture_output=True, text=True,
                         cwd=repo_root, timeout=300)
    return res.returncode, res.stderr


def _in_process(cli: str, argv: list[str], capsys, monkeypatch, repo_root: Path) -> tuple[int, str]:
    """``run_cli(main, argv)`` here; the environment a CLI may touch is restored afterwards."""
    from jaxmu.cli import run_cli

    monkeypatch.chdir(repo_root)
    monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))  # request_host_devices edits it
    monkeypatch.setenv("JAXMU_COMPILE_CACHE", jax.config.jax_compilation_cache_dir or "off")  # keep the tests' cache
    main = importlib.import_module(f"jaxmu.{cli}").main
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        run_cli(main, argv)
    return exc.value.code, capsys.readouterr().err


@pytest.fixture(scope="module")
def prepared(repo_root, tmp_path_factory) -> Path:
    """An output directory holding one finished tiny run (original and retrain stacks)."""
    out = tmp_path_factory.mktemp("prepared")
    code, err = _subprocess(repo_root, "train", _cmd("train", out, []))
    assert code == 0, err[-2000:]
    assert next(out.rglob("retrain/final/meta.json")).exists()
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """Bad input files: a YAML syntax error, a YAML list, an existing file, an empty data dir, a
    plugin that fails while importing (it re-registers a built-in method), a cnn state_dict."""
    d = tmp_path_factory.mktemp("inputs")
    (d / "syntax.yaml").write_text("data: [digits\n")
    (d / "list.yaml").write_text("- data\n- model\n")
    (d / "afile").write_text("not a directory\n")
    (d / "empty").mkdir()
    (d / "broken_plugin.py").write_text("import jaxmu.methods as M\nM.register(M.METHODS['finetune'])\n")
    np.savez(d / "cnn.npz", **{"conv1.weight": np.zeros((16, 1, 3, 3), np.float32)})  # not an mlp state_dict
    return d


def _corrupt_checkpoint(run: Path) -> None:
    """Flip a byte in the middle of the retrained stack's largest array file."""
    final = next(run.rglob("retrain/final"))
    data = max((p for p in (final / "arrays").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))


def _corrupt_config(run: Path) -> None:
    next(run.rglob("config.json")).write_text("{not json")


def _foreign_config(run: Path) -> None:
    cfile = next(run.rglob("config.json"))
    cfile.write_text(cfile.read_text().replace('"epochs": 1', '"epochs": 7'))


METHOD_ALL = "bad_teacher, cf_k, cfw"
# (id, cli, extra arguments, expected substring of the error line, subprocess?, damage to a copy of the run)
CASES = [
    # methods: registry, call-string syntax, types, domains
    ("unknown-method", "unlearn", ["--method", "nope"], f"unknown method 'nope': valid are {METHOD_ALL}", SUB, None),
    ("unknown-hparam", "unlearn", ["--method", "ng_plus(beta=1)"], "ng_plus has no hyperparameter 'beta'", 0, None),
    ("malformed-call", "unlearn", ["--method", "ng_plus(alpha="], "cannot parse method 'ng_plus(alpha='", 0, None),
    ("non-literal-arg", "unlearn", ["--method", "ng_plus(alpha=x)"], "with literal values", 0, None),
    ("int-as-float", "unlearn", ["--method", "ng_plus(epochs=1.5)"], "ng_plus.epochs must be an integer", 0, None),
    ("str-as-number", "unlearn", ["--method", "ng_plus(alpha='x')"], "ng_plus.alpha must be a number", 0, None),
    ("alpha-domain", "unlearn", ["--method", "ng_plus(alpha=2.0)"],
     "ng_plus.alpha = 2.0 is outside its domain [0, 1] (a weight", SUB, None),
    ("lr-domain", "unlearn", ["--method", "ng_plus(learning_rate=-1)"],
     "ng_plus.learning_rate = -1 is outside its domain [0, inf)", 0, None),
    ("flag-domain", "unlearn", ["--method", "ng_plus(bn_mode='evl')"],
     "ng_plus.bn_mode = 'evl' is outside its domain {'eval', 'train'}", 0, None),
    ("config-method-domain", "unlearn", ["--set", "method.type=ng_plus", "--set", "method.alpha=2.0"],
     "ng_plus.alpha = 2.0 is outside its domain", 0, None),
    ("momentum-domain", "unlearn", ["--method", "scrub(momentum=1.0)"], "scrub.momentum = 1.0 is outside its domain [0, 1)",
     0, None),
    ("no-method", "unlearn", [], "no method given: pass --method NAME", 0, None),
    # config files and overrides
    ("unknown-config-key", "train", ["--set", "train.epoch=3"], "unknown config key 'train.epoch'", 0, None),
    ("override-no-value", "train", ["--set", "train.epochs"], "bad override 'train.epochs': use KEY=VALUE", 0, None),
    ("override-non-section", "train", ["--set", "seeds.x=1"], "'seeds' is not a section", 0, None),
    ("yaml-syntax", "train", ["--config", "{files}/syntax.yaml"], "is not valid YAML", 0, None),
    ("yaml-not-mapping", "train", ["--config", "{files}/list.yaml"], "must hold a mapping of sections", 0, None),
    ("config-missing", "train", ["--config", "{files}/missing.yaml"], "missing.yaml' not found", 0, None),
    ("config-wrong-type", "train", ["--set", "train.epochs=abc"], "'train.epochs': expected an integer, got 'abc'", 0, None),
    ("epochs-zero", "train", ["--set", "train.epochs=0"], "train.epochs must be >= 1", 0, None),
    ("val-ratio", "train", ["--set", "data.val_ratio=2"], "data.val_ratio must be in (0, 1)", 0, None),
    ("forget-mode", "train", ["--set", "data.forget_mode=bogus"], "'bogus' is not one of 'random', 'class'", 0, None),
    ("forget-class-unset", "train", ["--set", "data.forget_mode=class"], "forget_class must be set", 0, None),
    ("seeds-zero", "train", ["--seeds", "0"], "--seeds must be >= 1", 0, None),
    ("ulira-odd-splits", "attack", ["--set", "attack.num_splits=5"], "attack.num_splits must be even", 0, None),
    ("ulira-folds", "attack", ["--set", "attack.folds=9"], "attack.folds must be in [2, num_splits / 2]", 0, None),
    # plugins (--plugin MODULE|FILE.py)
    ("plugin-missing-file", "unlearn", ["--plugin", "{files}/nope.py", "--method", "finetune"],
     "--plugin {files}/nope.py: no such file", SUB, None),
    ("plugin-no-module", "train", ["--plugin", "no_such_plugin_mod"], "no module named 'no_such_plugin_mod'", 0, None),
    ("plugin-fails", "sweep", ["--plugin", "{files}/broken_plugin.py", "--method", "finetune"],
     "broken_plugin.py failed while importing (MethodError: method 'finetune' is built in and cannot be replaced",
     0, None),
    # data and models
    ("unknown-dataset", "train", ["--set", "data.name=nope"], "unknown dataset 'nope'", 0, None),
    ("unknown-model", "train", ["--set", "model.name=vgg"], "unknown model 'vgg'", 0, None),
    ("tinyvit-8x8", "train", ["--set", "model.name=tinyvit_11m"], "divisible by 32", 0, None),
    ("tfds-missing", "train", ["--set", "data.name=mnist", "--set", "data.data_dir={files}/empty"],
     "jaxmu.data.prepare", 0, None),
    ("npz-missing", "train", ["--set", "data.name=npz", "--set", "data.path={files}/missing.npz"],
     "missing.npz' does not exist", 0, None),
    # output directory (new)
    ("out-is-file", "train", ["--out", "{files}/afile"], "afile is a file, not a directory", SUB, None),
    ("out-under-file", "train", ["--out", "{files}/afile/sub"], "is not a writable directory", 0, None),
    ("out-unwritable", "train", ["--out", "/sys/jaxmu_out"], "--out /sys/jaxmu_out is not a writable directory", 0, None),
    # Optuna storage (new)
    ("storage-bogus", "sweep", ["--method", "finetune", "--storage", "bogus://x"],
     "storage 'bogus://x': unknown database kind", SUB, None),
    ("storage-unreachable", "sweep", ["--method", "finetune", "--storage", "postgresql://user:pw@127.0.0.1:1/db"],
     "storage 'postgresql://user:***@127.0.0.1:1/db'", 0, None),
    ("storage-sqlite-unopenable", "sweep", ["--method", "finetune", "--storage", "sqlite:////proc/jaxmu/x.db"],
     "storage 'sqlite:////proc/jaxmu/x.db' cannot be opened", 0, None),
    # originals trained elsewhere (--original)
    ("original-missing", "unlearn", ["--method", "finetune", "--original", "{files}/missing.pt"],
     "missing.pt not found", 0, None),
    ("original-unreadable", "sweep", ["--method", "finetune", "--original", "{files}/afile"],
     "cannot be read by torch.load", 0, None),
    ("original-wrong-model", "unlearn", ["--method", "finetune", "--original", "{files}/cnn.npz"],
     "missing keys fc1.bias", 0, None),
    ("original-seed-count", "unlearn", ["--method", "finetune", "--original", "{files}/cnn.npz", "{files}/cnn.npz"],
     "2 original model(s) but seeds has 1", 0, None),
    # a method that cannot apply to the architecture: refused before any stack is trained
    ("method-needs-convs", "unlearn", ["--method", "ct"], "ct cannot apply to architecture 'mlp'", 0, None),
    ("method-needs-convs-sweep", "sweep", ["--method", "msg"], "msg cannot apply to architecture 'mlp'", 0, None),
    # ... also where the run directory does not exist yet (other seeds): none is made, no split written
    ("method-needs-convs-attack", "attack", ["--method", "ct", "--set", "seeds=[0,1]"],
     "ct cannot apply to architecture 'mlp'", 0, None),
    ("method-needs-convs-new-run", "unlearn", ["--method", "msg", "--set", "data.split_seed=7"],
     "msg cannot apply to architecture 'mlp'", 0, None),
    # the run directory's own files
    ("corrupt-checkpoint", "train", [], "retrain/final", SUB, _corrupt_checkpoint),
    ("corrupt-config-json", "train", [], "config.json is corrupt", 0, _corrupt_config),
    ("foreign-config-json", "train", [], "holds another configuration", 0, _foreign_config),
]


@pytest.mark.parametrize("cli,extra,needle,sub,damage", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(cli, extra, needle, sub, damage, prepared, files, tmp_path,
                                                   repo_root, capsys, monkeypatch):
    out = prepared
    if damage is not None:  # a damaged copy, so the other cases keep a sound run
        out = tmp_path / "copy"
        shutil.copytree(prepared, out)
        damage(out)
    extra = [e.replace("{files}", str(files)) for e in extra]
    needle = needle.replace("{files}", str(files))
    before = _snapshot(out)
    argv = _cmd(cli, out, extra)
    code, stderr = (_subprocess(repo_root, cli, argv) if sub
                    else _in_process(cli, argv, capsys, monkeypatch, repo_root))
    _one_line_error(code, stderr, needle)
    assert _snapshot(out) == before, "a bad input changed the output directory"


def test_table_is_wide(repo_root):
    """The table keeps at least 33 distinct inputs, several of them real subprocesses."""
    assert len({c[0] for c in CASES}) == len(CASES) >= 33
    assert sum(bool(c[4]) for c in CASES) >= 5


def test_storage_check_hides_password_and_passes_a_good_url(tmp_path):
    from jaxmu.config import ConfigError
    from jaxmu.tuning import check_storage

    check_storage(f"sqlite:///{tmp_path / 'ok.db'}")
    assert (tmp_path / "ok.db").exists()
    check_storage(f"journal:///{tmp_path / 'j.log'}")
    with pytest.raises(ConfigError) as e:
        check_storage("mysql+nosuchdriver://u:secret@127.0.0.1:1/db")
    assert "secret" not in str(e.value) and "127.0.0.1:1" in str(e.value)
    with pytest.raises(ConfigError, match="is not a database URL"):
        check_storage("not a url")
