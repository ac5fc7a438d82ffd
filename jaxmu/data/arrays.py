"""A researcher's own dataset from in-memory arrays (``from_arrays``), and its fingerprint.

    >>> import numpy as np, jaxmu.data as D
    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.integers(0, 256, (120, 8, 8, 1), dtype=np.uint8), rng.integers(0, 4, 120)
    >>> ds = D.from_arrays(x[:100], y[:100], x[100:], y[100:], name="blobs")
    >>> ds.n_train, ds.num_classes, ds.image_shape
    (100, 4, (8, 8, 1))
    >>> D.register("blobs", ds)           # then ``data.name: blobs`` in a config or --set

Images are uint8 ``[N, H, W]`` or ``[N, H, W, C]`` (same H, W, C for train and test), labels
integers ``[N]`` >= 0. ``mean``/``std`` default to the per-channel pixel statistics of
``x_train``; ``num_classes`` to 1 + the largest label. The npz loader (``jaxmu.data.npz``) builds
its datasets here too, so both validate alike; every problem is one ``DataError`` line.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from jaxmu.data.core import AUGMENTATIONS, DataError, Dataset, channel_stats, make_dataset


def _images(x: Any, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype != np.uint8 or x.ndim not in (3, 4):
        raise DataError(
            f"{what} has dtype {x.dtype} and shape {x.shape}; expected uint8 "
            "[N, H, W] or [N, H, W, C] (scale to 0..255 and cast with .astype(np.uint8))"
        )
    return x[..., None] if x.ndim == 3 else x


def _labels(y: Any, what: str, n: int) -> np.ndarray:
    y = np.asarray(y)
    if not np.issubdtype(y.dtype, np.integer) or y.shape != (n,):
        raise DataError(
            f"{what} has dtype {y.dtype} and shape {y.shape}; expected integer "
            f"labels of shape ({n},), one per image"
        )
    if n and y.min() < 0:
        raise DataError(f"{what} has negative labels (min {y.min()}); use 0..C-1")
    if n and y.max() > np.iinfo(np.int32).max:
        raise DataError(f"{what} has labels beyond int32; use 0..C-1")
    return y.astype(np.int32)


def _per_channel(v: Any, what: str, c: int) -> tuple[float, ...]:
    a = np.asarray(v, dtype=np.float64).reshape(-1)
    if a.size == 1:
        a = np.repeat(a, c)
    if a.size != c:
        raise DataError(f"{what} has shape {np.shape(v)}; expected a scalar or ({c},) for {c}-channel images")
    return tuple(float(s) for s in a)


def build_dataset(arrays: dict[str, Any], *, name: str, where: str, stats_hint: str) -> Dataset:
    """The validated ``Dataset`` of ``arrays`` (keys ``x_train``, ``y_train``, ``x_test``,
    ``y_test`` and optionally ``mean``, ``std``, ``num_classes``, ``augment``).

    ``where`` prefixes each array's name in messages (``"npz key"``); ``stats_hint`` says how to
    give ``mean``/``std`` when a channel is constant."""
    x_train, x_test = _images(arrays["x_train"], f"{where} 'x_train'"), _images(arrays["x_test"], f"{where} 'x_test'")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(
            f"{where}s 'x_train' {x_train.shape} and 'x_test' {x_test.shape} differ in image "
            "shape; store both at the same H, W, C"
        )
    if x_train.shape[0] == 0:
        raise DataError(f"{where} 'x_train' is empty; the dataset needs training images")
    y_train = _labels(arrays["y_train"], f"{where} 'y_train'", x_train.shape[0])
    y_test = _labels(arrays["y_test"], f"{where} 'y_test'", x_test.shape[0])
    c = x_train.shape[-1]
    mean, std = arrays.get("mean"), arrays.get("std")
    if (mean is None) != (std is None):
        raise DataError(f"{where}s give only one of 'mean' and 'std'; give both or neither")
    if mean is not None:
        mean, std = _per_channel(mean, f"{where} 'mean'", c), _per_channel(std, f"{where} 'std'", c)
    else:
        mean, std = channel_stats(x_train)
        if min(std) <= 0:
            raise DataError(f"x_train has a constant channel (std 0); {stats_hint}")
    labels = np.concatenate([y_train, y_test])
    num_classes = int(arrays["num_classes"]) if arrays.get("num_classes") is not None else int(labels.max()) + 1
    augment = str(arrays.get("augment", "none"))
    if augment not in AUGMENTATIONS:
        raise DataError(f"{where} 'augment' is {augment!r}; use one of {AUGMENTATIONS}")
    return make_dataset(name, np.concatenate([x_train, x_test]), labels, num_classes=num_classes,
                        n_train=x_train.shape[0], mean=mean, std=std, augment=augment)


def from_arrays(x_train: Any, y_train: Any, x_test: Any, y_test: Any, *, name: str,
                num_classes: int | None = None, mean: Any = None, std: Any = None,
                augment: str = "none") -> Dataset:
    """A ``Dataset`` (as the loaders return) from a researcher's arrays; see the module docstring.

    Raises:
      DataError: a bad name, dtype, shape or label, one line naming the argument and the fix.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise DataError(f"from_arrays: name={name!r} must be a Python identifier (letters, digits, _)")
    return build_dataset(
        {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test, "mean": mean, "std": std,
         "num_classes": num_classes, "augment": augment},
        name=name, where="from_arrays argument", stats_hint="pass mean= and std=")


def fingerprint(ds: Dataset) -> str:
    """16 hex digits of sha256 over a dataset's arrays and fields: keys the run directories of
    registered datasets, so two different datasets under one name never share checkpoints."""
    h = hashlib.sha256()
    for a in (ds.images, ds.labels):
        h.update(json.dumps([str(a.dtype), list(a.shape)]).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    h.update(json.dumps([ds.num_classes, ds.n_train, list(ds.mean), list(ds.std), ds.augment]).encode())
    return h.hexdigest()[:16]
