"""The tfds path of ``load_dataset``, exercised offline.

Tiny stand-ins for MNIST and CIFAR-10 are built with tfds itself
(``GeneratorBasedBuilder.download_and_prepare(file_format="array_record")``,
no network, no TensorFlow: images are yielded as PNG bytes, because tfds
encodes ``np.ndarray`` images with ``tf.image.encode_png``). They carry the
real names, versions and features (``skip_registration`` keeps them out of
the tfds registry), so ``load_dataset("mnist", data_dir=...)`` runs the exact
production path: ``tfds.builder`` of the real MNIST class, ``is_prepared``,
``tfds.data_source``, decoding, resizing, order restoration, caching.
"""

from __future__ import annotations

import dataclasses
import io
import time

import numpy as np
import pytest
from PIL import Image

from jaxmu.data import TFDS_SPECS, DataError, load_dataset, load_tfds
from jaxmu.data.tfds_source import tfds_generation_order

tfds = pytest.importorskip("tensorflow_datasets")

N_TRAIN, N_TEST = 20, 10
C_TRAIN, C_TEST = 12, 5


def _png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a).save(buf, format="PNG")
    return buf.getvalue()


def grey_image(split: str, i: int) -> np.ndarray:
    return np.random.default_rng([len(split), i]).integers(0, 256, (28, 28, 1), dtype=np.uint8)


def grey_label(split: str, i: int) -> int:
    return (7 * i) % 10 if split == "train" else (3 * i + 1) % 10


def rgb_image(split: str, i: int) -> np.ndarray:
    return np.random.default_rng([len(split), 99, i]).integers(0, 256, (32, 32, 3), dtype=np.uint8)


class FakeMnist(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """MNIST's name, version and features; keys 0..n-1 like the real builder."""

    name = "mnist"
    VERSION = tfds.core.Version("3.0.1")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(28, 28, 1)),
                    "label": tfds.features.ClassLabel(num_classes=10),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        return {
            "train": self._generate_examples("train", N_TRAIN),
            "test": self._generate_examples("test", N_TEST),
        }

    def _generate_examples(self, split, n):
        for i in range(n):
            yield i, {"image": _png(grey_image(split, i)), "label": grey_label(split, i)}


class FakeCifar10(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """CIFAR-10's name, version and features; string keys, so only the id gives the order."""

    name = "cifar10"
    VERSION = tfds.core.Version("3.0.2")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "id": tfds.features.Text(),
                    "image": tfds.features.Image(shape=(32, 32, 3)),
                    "label": tfds.features.ClassLabel(num_classes=10),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        return {
            "train": self._generate_examples("train", C_TRAIN),
            "test": self._generate_examples("test", C_TEST),
        }

    def _generate_examples(self, split, n):
        for i in range(n):  # unpadded ids: natural order puts train_10 after train_9
            yield (
                f"key-{i}",
                {"id": f"{split}_{i}", "image": _png(rgb_image(split, i)), "label": i % 10},
            )


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tfds")
    FakeMnist(data_dir=str(d)).download_and_prepare(file_format="array_record")
    FakeCifar10(data_dir=str(d)).download_and_prepare(file_format="array_record")
    return d


def _expected_grey():
    imgs, labels = [], []
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        for i in range(n):
            big = Image.fromarray(grey_image(split, i)[..., 0]).resize((32, 32), Image.BILINEAR)
            imgs.append(np.repeat(np.asarray(big)[..., None], 3, axis=-1))
            labels.append(grey_label(split, i))
    return np.stack(imgs), np.array(labels, np.int32)


def test_source_order_is_shuffled(data_dir):
    """Guard: without order restoration the test below would fail."""
    src = tfds.data_source("mnist", split="train", data_dir=str(data_dir), download=False)
    got = [int(src[j]["label"]) for j in range(len(src))]
    assert got != [grey_label("train", i) for i in range(N_TRAIN)]
    assert got == [grey_label("train", int(k)) for k in tfds_generation_order(N_TRAIN, "train")]


def test_load_dataset_mnist_offline(data_dir):
    ds = load_dataset("mnist", data_dir=str(data_dir))
    images, labels = _expected_grey()
    assert ds.name == "mnist" and ds.images.dtype == np.uint8
    assert ds.images.shape == (N_TRAIN + N_TEST, 32, 32, 3) and ds.n_train == N_TRAIN
    np.testing.assert_array_equal(ds.labels, labels)
    np.testing.assert_array_equal(ds.images, images)  # resize 28->32, grey->3, generation order
    assert ds.mean == (0.1307,) * 3 and ds.std == (0.3081,) * 3 and ds.augment == "flip"
    assert (data_dir / "jaxmu_cache").is_dir()
    again = load_tfds("mnist", TFDS_SPECS["mnist"], data_dir=data_dir)  # from the cache
    np.testing.assert_array_equal(again.images, ds.images)
    fresh = load_tfds("mnist", TFDS_SPECS["mnist"], data_dir=data_dir, cache=False)
    np.testing.assert_array_equal(fresh.labels, ds.labels)


def test_load_dataset_cifar_sorted_by_id(data_dir):
    ds = load_dataset("cifar10", data_dir=str(data_dir))
    want = np.stack(
        [rgb_image(s, i) for s, n in (("train", C_TRAIN), ("test", C_TEST)) for i in range(n)]
    )
    np.testing.assert_array_equal(ds.images, want)
    np.testing.assert_array_equal(
        ds.labels, [i % 10 for i in range(C_TRAIN)] + [i % 10 for i in range(C_TEST)]
    )
    assert ds.n_train == C_TRAIN and ds.augment == "crop_flip" and ds.num_classes == 10


def test_corrupt_cache_is_rebuilt(data_dir):
    ds = load_tfds("mnist", TFDS_SPECS["mnist"], data_dir=data_dir)
    (cache,) = (data_dir / "jaxmu_cache").glob("mnist-*.npz")
    raw = bytearray(cache.read_bytes())
    raw[len(raw) // 3] ^= 0xFF
    cache.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="cache"):
        again = load_tfds("mnist", TFDS_SPECS["mnist"], data_dir=data_dir)
    np.testing.assert_array_equal(again.images, ds.images)


def test_spec_mismatch_is_reported(data_dir):
    with pytest.raises(DataError, match="classes"):
        load_tfds(
            "mnist", dataclasses.replace(TFDS_SPECS["mnist"], num_classes=100), data_dir=data_dir
        )
    rgb_spec = dataclasses.replace(TFDS_SPECS["mnist"], grey_to_rgb=False)
    with pytest.raises(DataError, match="channel"):
        load_tfds("mnist", rgb_spec, data_dir=data_dir, cache=False)


@pytest.mark.parametrize("name", sorted(TFDS_SPECS))
def test_missing_data_fails_fast(tmp_path, name):
    t0 = time.perf_counter()
    with pytest.raises(DataError) as e:
        load_dataset(name, data_dir=str(tmp_path / "empty"))
    assert time.perf_counter() - t0 < 10
    msg = str(e.value)
    assert f"python -m jaxmu.data.prepare {name} --data-dir" in msg and str(tmp_path) in msg


def test_generation_order_matches_tfds_hasher():
    from tensorflow_datasets.core import hashing

    h = hashing.Hasher("test")
    want = sorted(range(50), key=h.hash_key)
    np.testing.assert_array_equal(tfds_generation_order(50, "test"), want)
