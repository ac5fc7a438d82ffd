"""MNIST, FashionMNIST, CIFAR-10/100 and SVHN from prepared tfds data (protocol §1.1).

Reading uses ``tfds.data_source(name, split=..., data_dir=..., download=False)``
over **array_record** files, which needs neither TensorFlow nor network
access. The data must have been prepared beforehand, on a machine with
internet, by ``python -m jaxmu.data.prepare NAME --data-dir DIR`` (see
``prepare.py``). Missing data fails at once with a :class:`DataError` saying
so, instead of tfds's minutes of download retries.

Conversion (protocol §1.1, §1.2): images are decoded, resized once on the host
with PIL bilinear to ``spec.image_size`` (MNIST/FashionMNIST 28 -> 32; a no-op
for 32x32 data), grey images are replicated to 3 channels, and the result is
stored as uint8 ``[N, 32, 32, 3]``, official train split first.

**Record order.** An array_record split returns records in tfds's shuffled
order: tfds sorts examples by ``md5(split_name + str(key))``
(``tensorflow_datasets/core/hashing.py``; tfds promises a major version bump
if this changes). jaxmu restores the order in which the builder generated the
examples, which for these builders is the order of the original files and so
of torchvision's datasets, whose positions the split indices of protocol §2
refer to:

* if the split has an ``id`` feature (CIFAR-10/100 ``train_00042``, SVHN
  ``train_000042``), records are sorted by id (natural order: prefix, then
  the trailing integer);
* otherwise (MNIST, FashionMNIST, whose builders yield integer keys
  ``0..n-1``) the key-hash shuffle is inverted: record ``j`` holds key
  ``perm[j]`` where ``perm`` sorts ``0..n-1`` by the md5 above.

The brief asked to keep the source order when no id exists; that order is
stable but unrelated to the reference's, so jaxmu inverts the shuffle instead
(deviation, tested against a builder with known keys).

A converted dataset is cached as ``DATA_DIR/jaxmu_cache/*.npz`` with a
checksum (``_cache.py``), so decoding and resizing happen once per machine.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from typing import Any

import numpy as np

from jaxmu.data import _cache
from jaxmu.data._image import resize_uint8
from jaxmu.data.core import DataError, Dataset, make_dataset

_CACHE_FORMAT = 1


@dataclasses.dataclass(frozen=True)
class TfdsSpec:
    """How to turn one tfds dataset into a :class:`Dataset` (protocol §1.1).

    Attributes:
      num_classes: number of classes; checked against the tfds label feature.
      image_size: stored height = width (PIL bilinear resize if different).
      grey_to_rgb: the source is 1-channel; replicate it to 3 channels.
      mean: per-channel normalisation mean, [0, 1] units.
      std: per-channel normalisation std, [0, 1] units.
      augment: default train-time augmentation.
      train_split: tfds split holding the official train set.
      test_split: tfds split holding the official test set.
      label_key: tfds feature holding the class label.
    """

    num_classes: int
    image_size: int
    grey_to_rgb: bool
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: str
    train_split: str = "train"
    test_split: str = "test"
    label_key: str = "label"


TFDS_SPECS: dict[str, TfdsSpec] = {
    "mnist": TfdsSpec(10, 32, True, (0.1307,) * 3, (0.3081,) * 3, "flip"),
    "fashion_mnist": TfdsSpec(10, 32, True, (0.2860,) * 3, (0.3530,) * 3, "flip"),
    "cifar10": TfdsSpec(
        10, 32, False, (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010), "crop_flip"
    ),
    "cifar100": TfdsSpec(
        100, 32, False, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), "crop_flip"
    ),
    "svhn_cropped": TfdsSpec(
        10, 32, False, (0.4377, 0.4438, 0.4728), (0.198, 0.201, 0.197), "none"
    ),
}
"""Specs of the tfds-backed datasets, keyed by tfds name (= jaxmu name)."""


def resolve_data_dir(data_dir: str | os.PathLike | None) -> str:
    """``data_dir``, else ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets`` (tfds's default)."""
    if data_dir is None:
        data_dir = os.environ.get("TFDS_DATA_DIR") or os.path.join("~", "tensorflow_datasets")
    return os.path.abspath(os.path.expanduser(os.fspath(data_dir)))


def prepare_hint(tfds_name: str, data_dir: str) -> str:
    """The fix for missing prepared data, as one sentence."""
    return (
        f"on a machine with internet run `python -m jaxmu.data.prepare {tfds_name} "
        f"--data-dir DIR` (writes array_record), then copy DIR to {data_dir} "
        "(or pass data_dir=DIR)"
    )


def tfds_generation_order(n: int, split: str) -> np.ndarray:
    """The keys held by records ``0..n-1`` of a tfds split generated with keys ``0..n-1``.

    tfds writes examples sorted by ``md5(split + str(key))`` (128-bit,
    big-endian; ``tensorflow_datasets/core/hashing.py``), so record ``j``
    holds key ``perm[j]`` with ``perm = argsort_k md5(split + str(k))``.
    """
    salt = hashlib.md5(split.encode())

    def h(k: int) -> bytes:
        m = salt.copy()
        m.update(str(k).encode())
        return m.digest()

    return np.array(sorted(range(n), key=h), dtype=np.int64)


def _natural_key(s: str) -> tuple[str, int]:
    m = re.fullmatch(r"(.*?)(\d+)", s)
    return (m.group(1), int(m.group(2))) if m else (s, -1)


def _read_split(
    source: Any, split: str, spec: TfdsSpec, tfds_name: str
) -> tuple[np.ndarray, np.ndarray]:
    """Decode, resize and reorder one split; returns uint8 images and int32 labels."""
    n = len(source)
    size = spec.image_size
    images = np.empty((n, size, size, 3), np.uint8)
    labels = np.empty((n,), np.int32)
    ids: list[str] = []
    want_c = 1 if spec.grey_to_rgb else 3
    for j in range(n):
        rec = source[j]
        img = np.asarray(rec["image"], dtype=np.uint8)
        if img.ndim == 2:
            img = img[..., None]
        if img.ndim != 3 or img.shape[2] != want_c:
            raise DataError(
                f"{tfds_name}/{split}: record {j} image has shape {img.shape}, expected "
                f"{want_c} channel(s); the spec does not fit this tfds dataset"
            )
        images[j] = resize_uint8(img, size)  # [s, s, 1] broadcasts to 3 channels
        labels[j] = int(rec[spec.label_key])
        if "id" in rec:
            rid = rec["id"]
            ids.append(rid.decode() if isinstance(rid, bytes) else str(rid))
    if ids:
        order = np.array(sorted(range(n), key=lambda j: _natural_key(ids[j])), dtype=np.int64)
        return images[order], labels[order]
    keys = tfds_generation_order(n, split)
    out_images = np.empty_like(images)
    out_labels = np.empty_like(labels)
    out_images[keys] = images
    out_labels[keys] = labels
    return out_images, out_labels


def _open_builder(tfds_name: str, root: str) -> Any:
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise DataError(
            f"reading {tfds_name} needs tensorflow-datasets: pip install tensorflow-datasets ({e})"
        ) from e
    import logging

    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)  # tfds warns about the missing folder; our error says it
    try:
        builder = tfds.builder(tfds_name, data_dir=root)
    except Exception as e:  # tfds raises its own DatasetNotFoundError and others
        absl_logger.setLevel(level)
        raise DataError(f"tfds has no dataset {tfds_name!r} ({type(e).__name__}: {e})") from e
    try:
        prepared = builder.is_prepared()
    finally:
        absl_logger.setLevel(level)
    if not prepared:
        raise DataError(
            f"{tfds_name} not found under {root} (expected {builder.data_dir}): "
            + prepare_hint(tfds_name, root)
        )
    fmt = getattr(builder.info.file_format, "value", builder.info.file_format)
    if str(fmt) != "array_record":
        raise DataError(
            f"{tfds_name} under {builder.data_dir} is stored as {fmt}, which needs "
            f"TensorFlow to read; re-prepare it as array_record: " + prepare_hint(tfds_name, root)
        )
    return builder


def load_tfds(
    tfds_name: str,
    spec: TfdsSpec,
    *,
    data_dir: str | os.PathLike | None = None,
    cache: bool = True,
) -> Dataset:
    """Load a prepared tfds dataset as a :class:`Dataset` (see module docstring).

    Args:
      tfds_name: registered tfds builder name, e.g. ``"mnist"``.
      spec: conversion spec, e.g. ``TFDS_SPECS["mnist"]``.
      data_dir: tfds data directory (default: ``resolve_data_dir(None)``).
      cache: read/write the converted arrays under ``DATA_DIR/jaxmu_cache``.
        The prepared tfds data must exist even when a cache file does: it
        fixes the dataset version the cache is keyed on.

    Raises:
      DataError: the data is not prepared (with the command that prepares it),
        not array_record, or does not match ``spec``.
    """
    root = resolve_data_dir(data_dir)
    builder = _open_builder(tfds_name, root)
    label_feature = builder.info.features[spec.label_key]
    n_cls = getattr(label_feature, "num_classes", None)
    if n_cls != spec.num_classes:
        raise DataError(
            f"{tfds_name}: tfds feature {spec.label_key!r} has {n_cls} classes, spec says "
            f"{spec.num_classes}; fix the spec"
        )
    cache_path = os.path.join(
        root,
        "jaxmu_cache",
        f"{tfds_name}-{builder.version}-s{spec.image_size}"
        f"{'-grey' if spec.grey_to_rgb else ''}-f{_CACHE_FORMAT}.npz",
    )
    arrays = _cache.load(cache_path) if cache else None
    if arrays is None:
        import tensorflow_datasets as tfds

        parts = []
        for split in (spec.train_split, spec.test_split):
            try:
                source = tfds.data_source(tfds_name, split=split, data_dir=root, download=False)
            except Exception as e:
                raise DataError(
                    f"{tfds_name}: cannot open split {split!r} under {root} ({e}); "
                    + prepare_hint(tfds_name, root)
                ) from e
            parts.append(_read_split(source, split, spec, tfds_name))
        arrays = {
            "images": np.concatenate([parts[0][0], parts[1][0]]),
            "labels": np.concatenate([parts[0][1], parts[1][1]]),
            "n_train": np.asarray(parts[0][0].shape[0], np.int64),
        }
        if cache:
            _cache.save(cache_path, arrays)
    return make_dataset(
        tfds_name,
        arrays["images"],
        arrays["labels"],
        num_classes=spec.num_classes,
        n_train=int(arrays["n_train"]),
        mean=spec.mean,
        std=spec.std,
        augment=spec.augment,
    )
