"""Tests for jaxmu.data loaders and splits (protocol §1, §2)."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
from PIL import Image

from jaxmu.data import (
    DATASETS,
    DataError,
    Dataset,
    load_dataset,
    load_splits,
    make_splits,
    normalize,
    save_splits,
    splits_for,
)
from jaxmu.data import prepare as prepare_mod
from jaxmu.data.utkface import load_utkface

# ---------------------------------------------------------------------------- digits


def test_digits_shapes_and_split(digits):
    assert digits.name == "digits"
    assert digits.images.shape == (1797, 8, 8, 1) and digits.images.dtype == np.uint8
    assert digits.labels.shape == (1797,) and digits.labels.dtype == np.int32
    assert digits.n_train == 1797 - 359 and digits.n_test == 359
    assert set(np.unique(digits.labels)) == set(range(10)) and digits.num_classes == 10
    assert digits.images.max() == 255 and digits.augment == "none"
    # Official split replay: test = first floor(0.2 N) of default_rng(123).permutation(N).
    from sklearn.datasets import load_digits

    raw = load_digits()
    perm = np.random.default_rng(123).permutation(1797)
    order = np.concatenate([perm[359:], perm[:359]])
    np.testing.assert_array_equal(digits.labels, raw.target[order])
    expected = np.round(raw.images[order] * 255 / 16).astype(np.uint8)
    np.testing.assert_array_equal(digits.images[..., 0], expected)


def test_digits_normalisation_is_train_standardising(digits):
    x = np.asarray(normalize(digits.images[: digits.n_train], digits.mean, digits.std))
    assert abs(x.mean()) < 1e-4 and abs(x.std() - 1.0) < 1e-4
    assert not digits.images.flags.writeable


def test_load_dataset_argument_errors(tmp_path):
    with pytest.raises(DataError, match="valid names: digits, mnist"):
        load_dataset("imagenet")
    with pytest.raises(DataError, match="path="):
        load_dataset("digits", path=str(tmp_path))
    with pytest.raises(DataError, match="needs path="):
        load_dataset("utkface")
    assert DATASETS == (
        "digits",
        "mnist",
        "fashion_mnist",
        "cifar10",
        "cifar100",
        "svhn_cropped",
        "utkface",
        "npz",
    )


def test_dataset_validation():
    ok = {
        "name": "x",
        "images": np.zeros((4, 2, 2, 1), np.uint8),
        "labels": np.zeros(4, np.int32),
        "num_classes": 2,
        "n_train": 3,
        "mean": (0.5,),
        "std": (0.5,),
        "augment": "none",
    }
    Dataset(**ok)
    for bad in (
        {"images": np.zeros((4, 2, 2, 1), np.float32)},
        {"labels": np.zeros(3, np.int32)},
        {"labels": np.full(4, 2, np.int32)},
        {"n_train": 5},
        {"mean": (0.5, 0.5)},
        {"std": (0.0,)},
        {"augment": "rotate"},
    ):
        with pytest.raises(DataError):
            Dataset(**{**ok, **bad})


# ---------------------------------------------------------------------------- npz


def test_npz_roundtrip_grey_and_stats(tmp_path):
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, (12, 5, 6), dtype=np.uint8)
    x_test = rng.integers(0, 256, (4, 5, 6), dtype=np.uint8)
    y_train, y_test = rng.integers(0, 3, 12), np.array([0, 1, 2, 2])
    p = tmp_path / "d.npz"
    np.savez(p, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    ds = load_dataset("npz", path=str(p))
    assert ds.images.shape == (16, 5, 6, 1) and ds.n_train == 12 and ds.num_classes == 3
    np.testing.assert_array_equal(ds.images[:12, ..., 0], x_train)
    np.testing.assert_array_equal(ds.images[12:, ..., 0], x_test)
    np.testing.assert_array_equal(ds.labels, np.concatenate([y_train, y_test]))
    np.testing.assert_allclose(ds.mean, [x_train.mean() / 255], rtol=1e-10)
    np.testing.assert_allclose(ds.std, [(x_train / 255).std()], rtol=1e-10)
    assert ds.augment == "none"


def test_npz_roundtrip_rgb_with_given_stats(tmp_path):
    x = np.arange(2 * 3 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3, 3)
    p = tmp_path / "d.npz"
    np.savez(
        p,
        x_train=x,
        y_train=np.array([0, 4]),
        x_test=x[:1],
        y_test=np.array([1]),
        mean=np.array([0.1, 0.2, 0.3]),
        std=np.float32(0.5),
        augment=np.array("crop_flip"),
    )
    ds = load_dataset("npz", path=str(p))
    assert ds.images.shape == (3, 3, 3, 3) and ds.num_classes == 5
    assert ds.mean == pytest.approx((0.1, 0.2, 0.3)) and ds.std == (0.5, 0.5, 0.5)
    assert ds.augment == "crop_flip"


@pytest.mark.parametrize(
    "override, match",
    [
        ({"x_train": np.zeros((4, 3, 3), np.float32)}, "'x_train'.*float32.*(4, 3, 3)"),
        ({"x_train": np.zeros((4, 3), np.uint8)}, "'x_train'.*\\(4, 3\\)"),
        ({"y_train": np.zeros(5, np.int64)}, "'y_train'.*\\(5,\\)"),
        ({"y_test": np.zeros(2, np.float32)}, "'y_test'.*float32"),
        ({"x_test": np.zeros((2, 4, 3), np.uint8)}, "'x_test'"),
        ({"mean": np.zeros(2)}, "only one of"),
        ({"mean": np.zeros(2), "std": np.ones(2)}, "'mean'.*\\(2,\\)"),
    ],
)
def test_npz_bad_inputs(tmp_path, override, match):
    base = {
        "x_train": np.full((4, 3, 3), 7, np.uint8),
        "y_train": np.zeros(4, np.int64),
        "x_test": np.zeros((2, 3, 3), np.uint8),
        "y_test": np.zeros(2, np.int64),
        "mean": np.array(0.5),
        "std": np.array(0.25),
    }
    if "mean" in override and "std" not in override:
        base.pop("std")
    p = tmp_path / "bad.npz"
    np.savez(p, **{**base, **override})
    with pytest.raises(DataError, match=match):
        load_dataset("npz", path=str(p))


def test_npz_missing_file_and_keys(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("npz", path=str(tmp_path / "nope.npz"))
    p = tmp_path / "k.npz"
    np.savez(p, x_train=np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(DataError, match="y_train"):
        load_dataset("npz", path=str(p))


# ---------------------------------------------------------------------------- utkface

_AGES = [1, 19, 20, 39, 40, 59, 60, 79, 80, 99, 100, 116]
_BUCKETS = [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 4, 4]


def _utk_folder(tmp_path):
    """12 tiny solid-colour JPEGs (two greyscale), plus files the loader must ignore."""
    folder = tmp_path / "UTKFace"
    folder.mkdir()
    colours = {}
    for i, age in enumerate(_AGES):
        name = f"{age}_{i % 2}_{i % 5}_2017011617452{i:02d}.jpg.chip.jpg"
        if i in (3, 7):
            colours[name] = (10 * i,) * 3
            Image.new("L", (10, 10), 10 * i).save(folder / name, format="JPEG", quality=95)
        else:
            colours[name] = (20 * i, 255 - 20 * i, 60)
            Image.new("RGB", (10, 10), colours[name]).save(folder / name, format="JPEG", quality=95)
    (folder / "notes.txt").write_text("not an image")
    (folder / "x.png").write_bytes(b"")
    return folder, colours


def test_utkface_loader(tmp_path):
    folder, colours = _utk_folder(tmp_path)
    ds = load_dataset("utkface", path=str(folder))
    assert ds.images.shape == (12, 224, 224, 3) and ds.images.dtype == np.uint8
    assert ds.num_classes == 5 and ds.augment == "none" and ds.mean == (0.485, 0.456, 0.406)
    names = sorted(colours)
    perm = np.random.default_rng(123).permutation(12)
    order = np.concatenate([perm[2:], perm[:2]])  # test = first floor(0.2 * 12) = 2
    assert ds.n_train == 10
    labels = np.array([_BUCKETS[_AGES.index(int(n.split("_")[0]))] for n in names])
    np.testing.assert_array_equal(ds.labels, labels[order])
    got = ds.images.reshape(12, -1, 3).astype(float).mean(axis=1)
    want = np.array([colours[names[j]] for j in order], float)
    np.testing.assert_allclose(got, want, atol=3)  # JPEG of a solid colour is near exact


def test_utkface_image_size_and_errors(tmp_path):
    folder, _ = _utk_folder(tmp_path)
    assert load_utkface(folder, image_size=16).images.shape == (12, 16, 16, 3)
    Image.new("RGB", (4, 4)).save(folder / "abc_0_1_2017.jpg.chip.jpg", format="JPEG")
    with pytest.raises(DataError, match="abc_0_1_2017.jpg.chip.jpg"):
        load_utkface(folder, image_size=16)
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("utkface", path=str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .jpg"):
        load_dataset("utkface", path=str(tmp_path / "empty"))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "30_0_0_1.jpg.chip.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="cannot be decoded"):
        load_utkface(bad, image_size=8)


# ---------------------------------------------------------------------------- splits


def _fake(n_train: int, n_test: int, num_classes: int = 10, labels=None) -> Dataset:
    n = n_train + n_test
    return Dataset(
        name=f"fake{n_train}",
        images=np.broadcast_to(np.zeros((1, 1, 1, 1), np.uint8), (n, 1, 1, 1)),
        labels=np.zeros(n, np.int32) if labels is None else labels,
        num_classes=num_classes,
        n_train=n_train,
        mean=(0.5,),
        std=(0.5,),
        augment="none",
    )


@pytest.mark.parametrize(
    "n_train, n_test, sizes",
    [
        (50000, 10000, (42500, 38250, 4250, 7500, 10000)),  # CIFAR-10/100
        (60000, 10000, (51000, 45900, 5100, 9000, 10000)),  # MNIST/FashionMNIST
        (23708 - 4741, 4741, (16121, 14508, 1613, 2846, 4741)),  # UTKFace
    ],
)
def test_split_sizes_match_protocol_table(n_train, n_test, sizes):
    s = make_splits(_fake(n_train, n_test))
    assert tuple(s.sizes()[k] for k in ("train", "retain", "forget", "val", "test")) == sizes


def test_split_exact_replay_and_disjoint_cover():
    s = make_splits(_fake(50000, 10000))
    dev = np.arange(50000)
    perm = np.random.RandomState(123).permutation(50000)
    train, val = dev[perm[7500:]], dev[perm[:7500]]
    perm2 = np.random.RandomState(123).permutation(train.size)
    retain, forget = train[perm2[4250:]], train[perm2[:4250]]
    for got, want in ((s.retain, retain), (s.forget, forget), (s.val, val)):
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(s.test, np.arange(50000, 60000))
    np.testing.assert_array_equal(s.train, np.concatenate([retain, forget]))
    allidx = np.concatenate([s.retain, s.forget, s.val, s.test])
    np.testing.assert_array_equal(np.sort(allidx), np.arange(60000))  # disjoint + covering


def test_split_stability_and_hash(digits):
    a, b = make_splits(digits), make_splits(digits)
    assert a.content_hash == b.content_hash and len(a.content_hash) == 16
    for k in ("retain", "forget", "val", "test"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
        assert not getattr(a, k).flags.writeable
    assert make_splits(digits, seed=124).content_hash != a.content_hash
    assert make_splits(digits, forget_ratio=0.2).content_hash != a.content_hash


def test_split_bad_arguments(digits):
    for kw in (
        {"val_ratio": 0.0},
        {"forget_ratio": 1.0},
        {"forget_mode": "sample"},
        {"forget_class": 3},
        {"forget_class_fraction": 0.5},
        {"seed": -1},
    ):
        with pytest.raises(DataError):
            make_splits(digits, **kw)
    with pytest.raises(DataError, match="too few"):
        make_splits(_fake(2, 1))


def test_save_load_and_corruption(tmp_path, digits):
    s = make_splits(digits)
    p = tmp_path / "s.npz"
    save_splits(s, p)
    r = load_splits(p)
    assert r.content_hash == s.content_hash
    np.testing.assert_array_equal(r.retain, s.retain)
    np.testing.assert_array_equal(r.test, s.test)
    # Tampered content under the original hash.
    with np.load(p) as z:
        f = dict(z)
    f["forget"] = f["forget"].copy()
    f["forget"][0] += 1
    bad = tmp_path / "bad.npz"
    np.savez(bad, **f)
    with pytest.raises(DataError, match="corrupt"):
        load_splits(bad)
    # Truncated file.
    raw = p.read_bytes()
    (tmp_path / "trunc.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="unreadable"):
        load_splits(tmp_path / "trunc.npz")
    with pytest.raises(DataError, match="does not exist"):
        load_splits(tmp_path / "none.npz")


def test_splits_for_caches_and_verifies(tmp_path, digits):
    s = splits_for(digits, tmp_path, seed=5)
    files = list(tmp_path.glob("splits_digits_*.npz"))
    assert len(files) == 1
    mtime = os.stat(files[0]).st_mtime_ns
    again = splits_for(digits, tmp_path, seed=5)
    assert os.stat(files[0]).st_mtime_ns == mtime and again.content_hash == s.content_hash
    assert s.content_hash == make_splits(digits, seed=5).content_hash
    # Explicit defaults name the same file.
    splits_for(digits, tmp_path, seed=5, val_ratio=0.15)
    assert len(list(tmp_path.glob("*.npz"))) == 1
    splits_for(digits, tmp_path, seed=6)
    assert len(list(tmp_path.glob("*.npz"))) == 2
    # A file holding other splits under this name is rejected.
    save_splits(make_splits(digits, seed=7), files[0])
    with pytest.raises(DataError, match="other arguments"):
        splits_for(digits, tmp_path, seed=5)
    with pytest.raises(DataError, match="bad split arguments"):
        splits_for(digits, tmp_path, sed=5)


def test_class_mode(digits):
    s = make_splits(digits, forget_mode="class", forget_class=3)
    base = make_splits(digits)
    np.testing.assert_array_equal(s.val, base.val)
    np.testing.assert_array_equal(s.test, base.test)
    train = base.train  # same set of indices, in another order
    assert set(s.train.tolist()) == set(train.tolist())
    assert (digits.labels[s.forget] == 3).all() and not (digits.labels[s.retain] == 3).any()
    n_c = int((digits.labels[np.concatenate([base.retain, base.forget])] == 3).sum())
    assert s.forget.size == n_c
    # Partial: replay with default_rng(seed) over the class members in post-val train order.
    h = make_splits(digits, forget_mode="class", forget_class=3, forget_class_fraction=0.3, seed=9)
    from sklearn.model_selection import train_test_split

    tr, _ = train_test_split(np.arange(digits.n_train), test_size=0.15, random_state=9)
    idx_c = tr[digits.labels[tr] == 3]
    k = math.ceil(0.3 * idx_c.size)
    np.testing.assert_array_equal(
        h.forget, idx_c[np.random.default_rng(9).permutation(idx_c.size)[:k]]
    )
    np.testing.assert_array_equal(h.retain, tr[~np.isin(tr, h.forget)])
    for kw in (
        {"forget_class": 10},
        {"forget_class": None},
        {"forget_class": 1, "forget_class_fraction": 0.0},
        {"forget_class": 1, "forget_class_fraction": 1.5},
    ):
        with pytest.raises(DataError):
            make_splits(digits, forget_mode="class", **kw)
    labels = np.zeros(30, np.int32)
    labels[:20] = np.arange(20) % 2
    with pytest.raises(DataError, match="no examples"):
        make_splits(
            _fake(20, 10, num_classes=3, labels=labels), forget_mode="class", forget_class=2
        )


# ---------------------------------------------------------------------------- prepare CLI


def test_prepare_argument_parsing(monkeypatch, tmp_path, capsys):
    a = prepare_mod.parse_args(["mnist", "cifar10", "--data-dir", "/x"])
    assert a.names == ["mnist", "cifar10"] and a.data_dir == "/x" and a.download_dir is None
    with pytest.raises(SystemExit):
        prepare_mod.parse_args(["imagenet", "--data-dir", "/x"])
    with pytest.raises(SystemExit):
        prepare_mod.parse_args(["mnist"])  # --data-dir is required
    capsys.readouterr()
    monkeypatch.setattr(prepare_mod.importlib.util, "find_spec", lambda name: None)
    assert prepare_mod.main(["mnist", "--data-dir", str(tmp_path)]) == 2
    assert "TensorFlow" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_split_file_keeps_arguments(tmp_path, digits):
    splits_for(digits, tmp_path, forget_mode="class", forget_class=2)
    (f,) = tmp_path.glob("*.npz")
    with np.load(f) as z:
        args = json.loads(str(z["arguments"]))
    assert args["args"]["forget_class"] == 2 and args["dataset"]["name"] == "digits"
