"""A researcher's own method, model and data (issue 12 items 2-3), end to end.

The README's example (the ``python`` block of "Your own method, model and data": a ~20-line
"gradient ascent with a retain anchor" written against ``init``/``update``/``plan``, and a
dataset from arrays) is written to a file and used as it stands: imported with ``--plugin`` by
the unlearn CLI (in-process ``run_cli``), through one tiny unlearn on the registered data, and its
method passes ``jaxmu.testing.check_method``. Entry points come from a dist-info folder on
``sys.path``; models register with and without a block layout. Every registration made here is
removed again (``unregister``), so other test files see the built-ins only.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmu.data as D
import jaxmu.methods as M
import jaxmu.models as Mo
from jaxmu.testing import check_method, fast_hparams

REPO = Path(__file__).resolve().parents[1]
TINY = ["--set", "model.name=mlp", "--set", "train.epochs=1", "--seeds", "1", "--quiet"]


def readme_example() -> str:
    """The ``python`` block of the README's "Your own method, model and data" section."""
    text = (REPO / "README.md").read_text()
    m = re.search(r"^## Your own method, model and data\n(.*?)(?=^## )", text, re.S | re.M)
    assert m, "README.md has no 'Your own method, model and data' section"
    (block,) = re.findall(r"^```python\n(.*?)^```", m.group(1), re.S | re.M)
    return block


@pytest.fixture
def plugin_file(tmp_path) -> Path:
    """The README example as ``my_unlearning.py``; what it registers is removed afterwards."""
    path = tmp_path / "my_unlearning.py"
    path.write_text(readme_example())
    yield path
    for name, remove in (("ga_anchor", M.unregister), ("blobs", D.unregister)):
        if name in (M.names() if remove is M.unregister else D.dataset_names()):
            remove(name)


def _one_line(e: pytest.ExceptionInfo, needle: str) -> None:
    msg = str(e.value)
    assert "\n" not in msg and needle in msg, msg


def _run_cli(cli: str, argv: list[str], capsys, monkeypatch) -> tuple[int, str, str]:
    import importlib

    from jaxmu.cli import run_cli

    monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))  # request_host_devices edits it
    monkeypatch.setenv("JAXMU_COMPILE_CACHE", jax.config.jax_compilation_cache_dir or "off")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        run_cli(importlib.import_module(f"jaxmu.{cli}").main, argv)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


# --------------------------------------------------------------------------- methods


def test_readme_method_through_the_cli_and_check_method(plugin_file, tmp_path, tiny, capsys, monkeypatch):
    """``--plugin FILE.py`` registers the README's method and data; ``unlearn`` runs it by name on
    the registered data (one tiny MLP seed); ``M.get`` binds it; the contract suite passes."""
    out = tmp_path / "runs"
    code, stdout, err = _run_cli("unlearn", ["--plugin", str(plugin_file), "--method", "ga_anchor(alpha=0.5)",
                                             "--set", "data.name=blobs", "--out", str(out), *TINY],
                                 capsys, monkeypatch)
    assert code == 0, err[-3000:]
    assert "ga_anchor(alpha=0.5) ran" in stdout
    (run,) = out.glob("blobs_mlp_*")
    assert (run / "original" / "final" / "meta.json").exists() and list((run / "unlearn").glob("ga_anchor_*"))
    assert "content" in (run / "config.json").read_text()  # registered data: keyed by its fingerprint

    assert "ga_anchor" in M.names() and "ga_anchor" not in M.builtin_names()
    m = M.get("ga_anchor(alpha=0.5)", epochs=1)
    assert m.hparams["alpha"] == 0.5 and m.static == {"epochs": 1, "batch_size": 64}
    with pytest.raises(M.MethodError) as e:
        M.get("ga_anchor", alpha=11.0)
    _one_line(e, "ga_anchor.alpha = 11.0 is outside its domain [0, 10] (the retain anchor's weight)")
    run = check_method(M.METHODS["ga_anchor"], tiny)
    assert run.method.static["epochs"] == 1


def test_register_as_call_and_decorator_and_its_refusals():
    base = M.METHODS["gradient_ascent"]
    mine = dataclasses.replace(base, name="my_ascent")
    try:
        assert M.register(mine) is mine and M.METHODS["my_ascent"] is mine
        M.register(mine)  # the same spec again: nothing to replace
        with pytest.raises(M.MethodError) as e:
            M.register(dataclasses.replace(mine, doc="another"))
        _one_line(e, "method 'my_ascent' is already registered: pass replace=True")

        @M.register(replace=True)
        def my_ascent() -> M.MethodSpec:
            return dataclasses.replace(mine, doc="replaced")

        assert callable(my_ascent) and M.METHODS["my_ascent"].doc == "replaced"
        with pytest.raises(TypeError):
            M.METHODS["x"] = mine  # read-only view
    finally:
        M.unregister("my_ascent")
    assert "my_ascent" not in M.METHODS

    with pytest.raises(M.MethodError) as e:
        M.register(dataclasses.replace(base, doc="mine"))
    _one_line(e, "method 'gradient_ascent' is built in and cannot be replaced: register yours under another name")
    bad_default = dataclasses.replace(base, name="bad_lr", defaults={**base.defaults, "learning_rate": -1.0})
    with pytest.raises(M.MethodError) as e:
        M.register(bad_default)
    _one_line(e, "method 'bad_lr': default learning_rate = -1.0 is outside its domain [0, inf)")
    wide = dataclasses.replace(base, name="wide", search_space={**base.search_space, "momentum": M.Float(0.0, 1.0)})
    with pytest.raises(M.MethodError) as e:
        M.register(wide)
    _one_line(e, "search range of momentum")
    with pytest.raises(M.MethodError) as e:
        M.register(lambda: 42)
    _one_line(e, "not a MethodSpec")
    with pytest.raises(M.MethodError) as e:
        M.unregister("finetune")
    _one_line(e, "built in and cannot be removed")
    assert "bad_lr" not in M.names() and "wide" not in M.names()


def test_method_fingerprint_follows_its_code():
    """Registered methods' unlearned checkpoints are keyed by ``M.fingerprint`` (their code)."""
    ga, ft = M.METHODS["gradient_ascent"], M.METHODS["finetune"]

    def make(sign):
        def update(state, batch, hp, key, ctx, *, phase):
            return state, {"sign": sign}
        return update

    fp = M.fingerprint
    assert fp(ga) == fp(dataclasses.replace(ga)) and fp(ga) != fp(dataclasses.replace(ga, plan=ft.plan))
    assert fp(dataclasses.replace(ga, update=make(1.0))) != fp(dataclasses.replace(ga, update=make(-1.0)))
    code = "import jaxmu.methods as M; print(M.fingerprint(M.METHODS['ng_plus']))"
    runs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                           env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONHASHSEED": seed}).stdout
            for seed in ("1", "2")}
    assert runs == {fp(M.METHODS["ng_plus"]) + "\n"}  # stable across interpreters


ENTRY_MODULE = '''
import dataclasses
import jaxmu.methods as M

def make_spec():
    return dataclasses.replace(M.METHODS["gradient_ascent"], name="ep_ascent", doc="from an entry point")
'''


@pytest.fixture
def entry_point_dir(tmp_path, monkeypatch) -> Path:
    """A package installed by hand: a module and its dist-info with ``entry_points.txt``."""
    site = tmp_path / "site"
    (site / "jaxmu_ep_demo-0.1.dist-info").mkdir(parents=True)
    (site / "jaxmu_ep_demo.py").write_text(ENTRY_MODULE)
    (site / "jaxmu_ep_demo-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: jaxmu-ep-demo\n"
                                                                   "Version: 0.1\n")
    (site / "jaxmu_ep_demo-0.1.dist-info" / "entry_points.txt").write_text(
        "[jaxmu.methods]\nep_ascent = jaxmu_ep_demo:make_spec\n")
    monkeypatch.syspath_prepend(str(site))
    yield site
    if "ep_ascent" in M.names():
        M.unregister("ep_ascent")


def test_entry_point_method_is_listed_and_usable(entry_point_dir):
    """In a fresh interpreter the entry point is loaded lazily on the first lookup (the unknown
    method error lists it); here, after ``sys.path`` grew, ``load_entry_points`` adds it."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(entry_point_dir), str(REPO)])}
    res = subprocess.run([sys.executable, "-c", "import jaxmu.methods as M; M.get('nope')"], capture_output=True,
                         text=True, env=env, timeout=300)
    assert res.returncode == 1 and "unknown method 'nope': valid are" in res.stderr
    assert "ep_ascent" in res.stderr.strip().splitlines()[-1], res.stderr[-2000:]

    M.load_entry_points()
    assert M.get("ep_ascent", epochs=1).spec.doc == "from an entry point"
    with pytest.raises(M.MethodError) as e:
        M.get("nope")
    _one_line(e, "ep_ascent")
    M.load_entry_points()  # again: the same entry point is not a duplicate


def test_broken_entry_point_is_one_line(tmp_path, monkeypatch):
    site = tmp_path / "site"
    (site / "broken_ep-0.1.dist-info").mkdir(parents=True)
    (site / "broken_ep-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-ep\nVersion: 0.1\n")
    (site / "broken_ep-0.1.dist-info" / "entry_points.txt").write_text("[jaxmu.methods]\nbroken = no_such_module:x\n")
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(M.MethodError) as e:
        M.load_entry_points()
    _one_line(e, "entry point broken = no_such_module:x (group jaxmu.methods) failed to load")


# --------------------------------------------------------------------------- plugins
# (a bad --plugin, one error line per CLI: tests/test_cli_errors.py's table)


def test_plugin_as_module_name(tmp_path, monkeypatch):
    from jaxmu.plugins import load_plugins

    (tmp_path / "my_lab_methods.py").write_text(
        "import dataclasses, jaxmu.methods as M\n"
        "M.register(dataclasses.replace(M.METHODS['finetune'], name='lab_ft'))\n")
    (tmp_path / "lab_data.py").write_text(
        "import numpy as np, jaxmu.data as D\n"
        "x = np.zeros((10, 4, 4), np.uint8); x[::2] = 255\n"
        "D.register('lab_data', D.from_arrays(x[:8], np.arange(8) % 2, x[8:], np.arange(2), name='lab_data'))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:  # --plugin is repeatable: a module name and a file, in order
        module, data = load_plugins(["my_lab_methods", str(tmp_path / "lab_data.py")])
        assert module.__name__ == "my_lab_methods" and "lab_ft" in M.names()
        assert D.load_dataset("lab_data").n_train == 8
    finally:
        M.unregister("lab_ft")
        D.unregister("lab_data")
        sys.modules.pop("my_lab_methods", None)


# --------------------------------------------------------------------------- models


class TwoLayer(nn.Module):
    """A researcher's Flax module: stem -> body -> head (no BatchNorm)."""

    num_classes: int

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(nn.Dense(32, name="stem")(x.reshape(x.shape[0], -1)))
        x = nn.relu(nn.Dense(32, name="body")(x))
        return nn.Dense(self.num_classes, name="head")(x)


def build_two_layer(num_classes, input_shape, conv_impl, stem) -> Mo.Model:
    return Mo.Model("two_layer", TwoLayer(num_classes), tuple(input_shape), num_classes, ("stem", "body", "head"))


LAYOUT = Mo.BlockLayout(stem=("stem",), blocks=(("body",),), classifier="head")


def _trace(name: str, model: Mo.Model, data):
    """``eval_shape`` of one model unlearned by method ``name`` (no compile)."""
    m = M.get(name, **fast_hparams(M.METHODS[name]))
    ctx = M.StaticContext(model, model.num_classes, (0.5,), (0.25,), "none")
    params, bs = jax.eval_shape(model.init, jax.random.PRNGKey(0))
    hp = {k: jnp.float32(v) for k, v in m.arrays.items()}
    return jax.eval_shape(lambda p, b: m.spec.unlearn_one(ctx, data, p, b, hp, jax.random.PRNGKey(0),
                                                          static=m.static), params, bs)


def test_model_with_and_without_layout(tiny, digits):
    shape = digits.images.shape[1:]
    try:
        Mo.register("two_layer", build_two_layer, layout=LAYOUT)
        assert "two_layer" in Mo.model_names() and Mo.block_layout("two_layer") == LAYOUT
        model = Mo.build_model("two_layer", 10, shape)
        out = _trace("cf_k", model, tiny.data)  # the last block + head train; the stem stays
        assert set(out[0]) == {"stem", "body", "head"}
        _trace("finetune", model, tiny.data)

        with pytest.raises(Mo.ModelError) as e:
            Mo.register("two_layer", build_two_layer)
        _one_line(e, "model 'two_layer' is already registered: pass replace=True")
        Mo.register("two_layer", build_two_layer, replace=True)  # now without a layout
        _trace("finetune", model, tiny.data)
        for name in ("cf_k", "eu_k"):
            with pytest.raises(M.MethodError) as e:
                _trace(name, model, tiny.data)
            _one_line(e, "model 'two_layer' has no block layout, which block-wise methods (cf_k, eu_k) need")
    finally:
        Mo.unregister("two_layer")
    with pytest.raises(Mo.ModelError) as e:
        Mo.build_model("two_layer", 10, shape)
    _one_line(e, "unknown model 'two_layer': set model.name to one of cnn, mlp, resnet18, tinyvit_11m")
    with pytest.raises(Mo.ModelError) as e:
        Mo.register("cnn", build_two_layer)
    _one_line(e, "model 'cnn' is built in and cannot be replaced")
    with pytest.raises(Mo.ModelError) as e:
        Mo.register("tl", build_two_layer, layout=("stem",))
    _one_line(e, "layout must be a jaxmu.models.BlockLayout")


def test_every_builtin_method_runs_on_a_registered_model_or_says_why(tiny, digits):
    """As for the built-in architectures: each method traces, or refuses in one line (no
    convolutions, no reference parameter names, no reset rule)."""
    try:
        Mo.register("two_layer", build_two_layer, layout=LAYOUT)
        model = Mo.build_model("two_layer", 10, digits.images.shape[1:])
        refused = {}
        for name in M.builtin_names():
            try:
                out = _trace(name, model, tiny.data)
            except (M.MethodError, Mo.ModelError) as e:
                assert "\n" not in str(e) and "two_layer" in str(e), str(e)
                refused[name] = str(e)
                continue
            assert set(out[0]) == {"stem", "body", "head"}
        assert set(refused) == {"ct", "kde", "msg", "rni"}, refused
    finally:
        Mo.unregister("two_layer")


class Wider(TwoLayer):
    """Another module under the same registered name (wider body)."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(nn.Dense(32, name="stem")(x.reshape(x.shape[0], -1)))
        x = nn.relu(nn.Dense(48, name="body")(x))
        return nn.Dense(self.num_classes, name="head")(x)


def test_registered_model_is_a_config_name_keyed_by_its_fingerprint(tmp_path):
    from jaxmu.config import load_config
    from jaxmu.pipeline import prepare

    a = build_two_layer(10, (8, 8, 1), "im2col", "imagenet")
    assert Mo.fingerprint(a) == Mo.fingerprint(build_two_layer(10, (8, 8, 1), "xla", "cifar"))
    assert Mo.fingerprint(a) != Mo.fingerprint(dataclasses.replace(a, module=TwoLayer(7), num_classes=7))
    cfg = load_config("digits_mlp", ["model.name=two_layer", "seeds=1"])
    try:
        Mo.register("two_layer", build_two_layer)
        first = prepare(cfg, tmp_path)
        assert first.model.name == "two_layer" and first.run_dir.name.startswith("digits_two_layer_")
        Mo.register("two_layer", lambda c, shape, impl, stem: dataclasses.replace(
            build_two_layer(c, shape, impl, stem), module=Wider(c)), replace=True)
        second = prepare(cfg, tmp_path)
        assert second.run_dir != first.run_dir  # another module under the same name: no shared checkpoints
    finally:
        Mo.unregister("two_layer")


# --------------------------------------------------------------------------- data


def _arrays(seed: int = 0, n: int = 100):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 8, 8), dtype=np.uint8), rng.integers(0, 3, n)


def test_from_arrays_is_a_dataset_and_refuses_bad_input():
    x, y = _arrays()
    ds = D.from_arrays(x[:80], y[:80], x[80:], y[80:], name="mine")
    assert isinstance(ds, D.Dataset) and ds.images.shape == (100, 8, 8, 1) and ds.n_train == 80
    assert ds.num_classes == 3 and ds.labels.dtype == np.int32 and ds.augment == "none"
    np.testing.assert_allclose(ds.mean, [x[:80].mean() / 255], rtol=1e-10)
    bad = [
        (dict(x_train=x[:80].astype(np.float32)), "from_arrays argument 'x_train' has dtype float32"),
        (dict(x_train=x[:80, 0]), "expected uint8 [N, H, W] or [N, H, W, C]"),
        (dict(y_train=y[:79]), "'y_train' has dtype int64 and shape (79,); expected integer labels of shape (80,)"),
        (dict(y_test=y[80:] - 5), "'y_test' has negative labels"),
        (dict(y_test=y[80:].astype(np.float32)), "'y_test' has dtype float32"),
        (dict(x_test=np.zeros((20, 4, 4), np.uint8)), "differ in image shape"),
        (dict(name="my data"), "name='my data' must be a Python identifier"),
        (dict(mean=0.5), "only one of 'mean' and 'std'"),
        (dict(augment="rotate"), "'augment' is 'rotate'"),
        (dict(num_classes=2), "labels span [0, 2] but num_classes=2"),
    ]
    base = dict(x_train=x[:80], y_train=y[:80], x_test=x[80:], y_test=y[80:], name="mine")
    for change, needle in bad:
        with pytest.raises(D.DataError) as e:
            D.from_arrays(**{**base, **change})
        _one_line(e, needle)


def test_registered_data_is_loaded_by_name_and_keyed_by_content(tmp_path):
    from jaxmu.config import load_config
    from jaxmu.pipeline import prepare

    x, y = _arrays(0)
    x2, y2 = _arrays(1)
    cfg = load_config("digits_mlp", ["data.name=mine", "seeds=1"])
    try:
        D.register("mine", D.from_arrays(x[:80], y[:80], x[80:], y[80:], name="other_name"))
        assert D.load_dataset("mine").name == "mine" and "mine" in D.dataset_names()
        first = prepare(cfg, tmp_path).run_dir
        assert prepare(cfg, tmp_path).run_dir == first  # the same content: the same run directory
        with pytest.raises(D.DataError) as e:
            D.register("mine", lambda: D.from_arrays(x2[:80], y2[:80], x2[80:], y2[80:], name="mine"))
        _one_line(e, "dataset 'mine' is already registered: pass replace=True")
        D.register("mine", lambda: D.from_arrays(x2[:80], y2[:80], x2[80:], y2[80:], name="mine"), replace=True)
        second = prepare(cfg, tmp_path).run_dir
        assert second != first and second.name.startswith("mine_mlp_")
        with pytest.raises(D.DataError) as e:
            D.load_dataset("mine", path="x.npz")
        _one_line(e, "drop path=")
    finally:
        D.unregister("mine")
    with pytest.raises(D.DataError) as e:
        D.register("digits", D.from_arrays(x[:80], y[:80], x[80:], y[80:], name="digits"))
    _one_line(e, "dataset 'digits' is built in and cannot be replaced")
    with pytest.raises(D.DataError) as e:
        D.register("arr", x)
    _one_line(e, "expected a Dataset (jaxmu.data.from_arrays) or a function returning one, got ndarray")
    # a built-in setting keeps its run directory (no content key)
    assert prepare(load_config("digits_mlp", ["seeds=1"]), tmp_path).run_dir.name.startswith("digits_mlp_")


@pytest.mark.slow
def test_entry_point_method_through_the_command_lines(entry_point_dir, tmp_path):
    """An installed package's method: listed by the sweep's unknown-method error, and run by
    ``python -m jaxmu.unlearn`` by name (fresh interpreters: the entry point loads lazily)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(entry_point_dir), str(REPO)])}
    res = subprocess.run([sys.executable, "-m", "jaxmu.sweep", "--method", "nope", "--out", str(tmp_path)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 2 and "ep_ascent" in res.stderr and "Traceback" not in res.stderr, res.stderr[-2000:]
    flags = [a for s in ("model.name=mlp", "train.epochs=1", "engine.progress=false") for a in ("--set", s)]
    res = subprocess.run([sys.executable, "-m", "jaxmu.unlearn", "--method", "ep_ascent(epochs=1)", "--seeds", "2",
                          "--out", str(tmp_path), "--quiet", *flags], capture_output=True, text=True, env=env,
                         timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert list(tmp_path.rglob("results/unlearn/ep_ascent_*/results.csv"))
