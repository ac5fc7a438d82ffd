"""Originals trained elsewhere (``jaxmu.originals``): PyTorch state_dicts and Orbax stacks as jaxmu stacks.

A torchvision-layout ResNet-18 (CIFAR stem) written here in plain torch gives the same eval-mode
logits in jaxmu after ``torch.save`` -> ``load_torch_state_dicts``; wrappers (``module.``, a
``{"state_dict": ...}`` checkpoint) load; bad inputs give one-line ``OriginalError``s; the
cnn/mlp layouts round-trip through ``export_reference_state``; and ``python -m jaxmu.unlearn
--original`` runs from state_dicts exported from jaxmu's own training.
"""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmu.models import build_model
from jaxmu.models.names import export_reference_state
from jaxmu.originals import (OriginalError, load_orbax_original, load_original, load_torch_state_dicts,
                             read_state_dict, stack_hash)

torch = pytest.importorskip("torch")
nn = torch.nn


# --------------------------------------------------------------------------- a torchvision ResNet-18


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class TorchResNet18(nn.Module):
    """torchvision's module names; ``cifar=True``: 3x3/1 conv1 and no max-pool (jaxmu's stem="cifar")."""

    def __init__(self, num_classes: int, cifar: bool = True):
        super().__init__()
        self.conv1 = (nn.Conv2d(3, 64, 3, 1, 1, bias=False) if cifar else nn.Conv2d(3, 64, 7, 2, 3, bias=False))
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.Identity() if cifar else nn.MaxPool2d(3, 2, 1)
        cin = 64
        for k, (c, s) in enumerate(((64, 1), (128, 2), (256, 2), (512, 2)), start=1):
            setattr(self, f"layer{k}", nn.Sequential(BasicBlock(cin, c, s), BasicBlock(c, c, 1)))
            cin = c
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for k in range(1, 5):
            x = getattr(self, f"layer{k}")(x)
        return self.fc(x.mean(dim=(2, 3)))


def _torch_resnet(seed: int = 0, num_classes: int = 10) -> TorchResNet18:
    torch.manual_seed(seed)
    net = TorchResNet18(num_classes)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):  # non-trivial affine and running statistics
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.num_batches_tracked.fill_(7)
    return net.eval()


@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory):
    net = _torch_resnet()
    path = tmp_path_factory.mktemp("resnet") / "seed0.pt"
    torch.save(net.state_dict(), path)
    return net, path


def test_resnet18_state_dict_matches_torch_logits(resnet_file):
    net, path = resnet_file
    params, bs = load_torch_state_dicts("resnet18", [path], num_classes=10, input_shape=(32, 32, 3), stem="cifar")
    assert jax.tree_util.tree_leaves(params)[0].shape[0] == 1
    x = np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype(np.float32)
    with torch.no_grad():
        want = net(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    model = build_model("resnet18", 10, (32, 32, 3), conv_impl="xla", stem="cifar")
    one = jax.tree_util.tree_map(lambda a: jnp.asarray(a[0]), (params, bs))
    with jax.default_matmul_precision("highest"):
        got, _ = jax.jit(lambda p, b, x: model.apply(p, b, x, train=False))(*one, jnp.asarray(x))
    assert np.abs(np.asarray(got) - want).max() < 1e-5, np.abs(np.asarray(got) - want).max()
    assert np.abs(want).max() > 0.1  # the comparison is not between two near-zero outputs


def test_wrapped_and_prefixed_state_dicts_load(resnet_file):
    net, path = resnet_file
    sd = net.state_dict()
    plain = read_state_dict(path)
    prefixed = read_state_dict({f"module.{k}": v for k, v in sd.items()})
    wrapped = read_state_dict({"state_dict": sd, "optimizer": {"lr": 0.1}, "epoch": 3})
    assert set(prefixed) == set(wrapped) == set(plain) == set(sd)
    for k in plain:
        np.testing.assert_array_equal(prefixed[k], plain[k])
        np.testing.assert_array_equal(wrapped[k], plain[k])
    a = load_torch_state_dicts("resnet18", [path, prefixed], num_classes=10, input_shape=(32, 32, 3), stem="cifar")
    for leaf in jax.tree_util.tree_leaves(a):
        np.testing.assert_array_equal(leaf[0], leaf[1])


def _tensors(state: dict) -> dict:
    """A numpy state_dict as torch tensors (copies: exported arrays may be read-only)."""
    return {k: torch.from_numpy(np.array(v)) for k, v in state.items()}


def _bad(fn, needle: str) -> str:
    with pytest.raises(OriginalError) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg and needle in msg, msg
    return msg


def test_resnet18_bad_state_dicts_are_one_line_errors(resnet_file):
    net, _ = resnet_file
    sd = {k: v.numpy() for k, v in net.state_dict().items()}
    kw = dict(num_classes=10, input_shape=(32, 32, 3), stem="cifar")
    load = lambda s, **o: load_torch_state_dicts("resnet18", [s], **{**kw, **o})  # noqa: E731
    _bad(lambda: load({k: v for k, v in sd.items() if k != "layer3.1.bn2.running_var"}),
         "missing keys layer3.1.bn2.running_var")
    _bad(lambda: load({**sd, "extra.weight": np.zeros(3), "head.bias": np.zeros(10)}),
         "unexpected keys extra.weight, head.bias")
    msg = _bad(lambda: load(sd, num_classes=100), "fc.bias has shape (10,), expected (100,)")
    assert "num_classes" in msg
    assert "model.stem" in _bad(lambda: load(sd, stem="imagenet"), "conv1.weight has shape (64, 3, 3, 3)")
    _bad(lambda: load_torch_state_dicts("resnet18", [sd, sd], num_seeds=3, **kw), "2 original model(s) but seeds has 3")


@pytest.mark.parametrize("arch", ["cnn", "mlp"])
def test_small_models_round_trip_through_export(arch, tmp_path):
    model = build_model(arch, 10, (8, 8, 1))
    stack = model.init_stack(jnp.stack([jax.random.PRNGKey(s) for s in range(2)]))
    files = []
    for i in range(2):
        one = jax.tree_util.tree_map(lambda a: a[i], stack)
        files.append(tmp_path / f"seed{i}.pt")
        torch.save(_tensors(export_reference_state(arch, *one)), files[-1])
    got = load_original(str(tmp_path / "seed*.pt"), "auto", arch=arch, num_classes=10, input_shape=(8, 8, 1),
                        stem="imagenet", num_seeds=2)
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(stack)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(stack)):
        np.testing.assert_array_equal(a, np.asarray(b))
    assert stack_hash(got) == stack_hash(jax.tree_util.tree_map(np.asarray, stack))


def test_orbax_original_loads_and_checks(tmp_path):
    from jaxmu.checkpoint import save_tree

    model = build_model("cnn", 10, (8, 8, 1))
    stack = model.init_stack(jnp.stack([jax.random.PRNGKey(s) for s in range(3)]))
    save_tree(tmp_path / "orig", stack)
    kw = dict(arch="cnn", num_classes=10, input_shape=(8, 8, 1))
    got = load_orbax_original(tmp_path / "orig", **kw, num_seeds=3)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(stack)):
        np.testing.assert_array_equal(a, np.asarray(b))
    _bad(lambda: load_orbax_original(tmp_path / "orig", **kw, num_seeds=2), "holds 3 original model(s) but seeds has 2")
    _bad(lambda: load_orbax_original(tmp_path / "orig", arch="cnn", num_classes=5, input_shape=(8, 8, 1)),
         "num_classes")
    _bad(lambda: load_orbax_original(tmp_path, **kw), "not a jaxmu/Orbax checkpoint directory")


# --------------------------------------------------------------------------- end to end through the CLI


def test_unlearn_cli_starts_from_exported_state_dicts(tmp_path, monkeypatch, capsys, repo_root):
    from jaxmu.checkpoint import load_tree
    from jaxmu.cli import run_cli
    from jaxmu.config import load_config
    from jaxmu.pipeline import prepare, train_stage
    from jaxmu.unlearn import main

    monkeypatch.chdir(repo_root)
    sets = ["train.epochs=1", "seeds=[0,1]", "engine.progress=false", "engine.host_devices=1"]
    cfg = load_config("digits_cnn", sets)
    setting = prepare(cfg, tmp_path / "elsewhere")
    trained = train_stage(setting, "original").state
    for i in range(2):
        one = jax.tree_util.tree_map(lambda a: np.asarray(a[i]), (trained.params, trained.batch_stats))
        torch.save(_tensors(export_reference_state("cnn", *one)), tmp_path / f"cnn_seed{i}.pth")

    argv = ["--config", "digits_cnn", "--out", str(tmp_path / "runs"), "--method", "finetune(epochs=1)", "--quiet",
            "--original", str(tmp_path / "cnn_seed*.pth"), *[a for s in sets for a in ("--set", s)]]
    with pytest.raises(SystemExit) as exc:
        run_cli(main, argv)
    out = capsys.readouterr()
    assert exc.value.code in (0, 3), out.err
    run_dir = next((tmp_path / "runs").iterdir())
    assert run_dir.name != setting.run_dir.name and (run_dir / "unlearn").is_dir() and (run_dir / "retrain" / "final").is_dir()
    final = run_dir / "original" / "final"
    template = jax.eval_shape(lambda s: s, trained)
    state, meta = load_tree(final, template)
    assert meta["imported"]["sha256"] == stack_hash(jax.tree_util.tree_map(np.asarray, (trained.params, trained.batch_stats)))
    for a, b in zip(jax.tree_util.tree_leaves((state.params, state.batch_stats)),
                    jax.tree_util.tree_leaves((trained.params, trained.batch_stats))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert "original_sha256" in json.loads((run_dir / "config.json").read_text())
    import csv

    with next(run_dir.rglob("results/unlearn/*/results.csv")).open(newline="") as f:
        hashes = {r["config_hash"] for r in csv.DictReader(f)}
    assert hashes == {run_dir.name.rsplit("_", 1)[-1]}  # the content-keyed run, not the bare config's hash

    # other weights never reuse that run directory
    other = {k: v * 0.5 for k, v in read_state_dict(tmp_path / "cnn_seed0.pth").items()}
    torch.save(_tensors(other), tmp_path / "cnn_seed0.pth")
    cfg2 = cfg.replace(original=dataclasses.replace(cfg.original, path=str(tmp_path / "cnn_seed*.pth")))
    assert prepare(cfg2, tmp_path / "runs").run_dir.name != run_dir.name
