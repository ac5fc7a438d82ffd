"""A user's own dataset from one ``.npz`` file.

Required keys: ``x_train``, ``x_test`` (uint8 images ``[N, H, W]`` or
``[N, H, W, C]``, same H, W, C) and ``y_train``, ``y_test`` (integer labels
``[N]``, >= 0). Optional keys: ``mean`` and ``std`` (both or neither; one
value per channel, or a scalar for all channels, in [0, 1] pixel units;
default: the per-channel pixel mean/std of ``x_train``), ``num_classes``
(default: 1 + the largest label) and ``augment`` (default ``"none"``).

The official train set is ``x_train`` and the official test set ``x_test``
(protocol §2 step 1).
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

from jaxmu.data.core import AUGMENTATIONS, DataError, Dataset, channel_stats, make_dataset

REQUIRED_KEYS = ("x_train", "y_train", "x_test", "y_test")


def _images(f: dict[str, np.ndarray], key: str) -> np.ndarray:
    x = f[key]
    if x.dtype != np.uint8 or x.ndim not in (3, 4):
        raise DataError(
            f"npz key {key!r} has dtype {x.dtype} and shape {x.shape}; expected uint8 "
            "[N, H, W] or [N, H, W, C] (scale to 0..255 and cast with .astype(np.uint8))"
        )
    return x[..., None] if x.ndim == 3 else x


def _labels(f: dict[str, np.ndarray], key: str, n: int) -> np.ndarray:
    y = f[key]
    if not np.issubdtype(y.dtype, np.integer) or y.shape != (n,):
        raise DataError(
            f"npz key {key!r} has dtype {y.dtype} and shape {y.shape}; expected integer "
            f"labels of shape ({n},), one per image"
        )
    if n and y.min() < 0:
        raise DataError(f"npz key {key!r} has negative labels (min {y.min()}); use 0..C-1")
    if n and y.max() > np.iinfo(np.int32).max:
        raise DataError(f"npz key {key!r} has labels beyond int32; use 0..C-1")
    return y.astype(np.int32)


def _per_channel(f: dict[str, np.ndarray], key: str, c: int) -> tuple[float, ...]:
    v = np.asarray(f[key], dtype=np.float64).reshape(-1)
    if v.size == 1:
        v = np.repeat(v, c)
    if v.size != c:
        raise DataError(
            f"npz key {key!r} has shape {f[key].shape}; expected a scalar or ({c},) for "
            f"{c}-channel images"
        )
    return tuple(float(a) for a in v)


def load_npz(path: str | os.PathLike) -> Dataset:
    """Load a dataset from a ``.npz`` file (see module docstring).

    Raises:
      DataError: missing file or keys, or keys with the wrong dtype/shape.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"npz file {path!r} does not exist; pass path= an existing .npz file")
    try:
        with np.load(path, allow_pickle=False) as z:
            f = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"cannot read npz file {path!r} ({e}); write it with np.savez") from e
    missing = [k for k in REQUIRED_KEYS if k not in f]
    if missing:
        raise DataError(f"npz file {path!r} lacks keys {missing}; it needs {list(REQUIRED_KEYS)}")
    x_train, x_test = _images(f, "x_train"), _images(f, "x_test")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(
            f"npz keys 'x_train' {x_train.shape} and 'x_test' {x_test.shape} differ in image "
            "shape; store both at the same H, W, C"
        )
    if x_train.shape[0] == 0:
        raise DataError("npz key 'x_train' is empty; the dataset needs training images")
    y_train = _labels(f, "y_train", x_train.shape[0])
    y_test = _labels(f, "y_test", x_test.shape[0])
    c = x_train.shape[-1]
    if ("mean" in f) != ("std" in f):
        raise DataError("npz file has only one of 'mean' and 'std'; give both or neither")
    if "mean" in f:
        mean, std = _per_channel(f, "mean", c), _per_channel(f, "std", c)
    else:
        mean, std = channel_stats(x_train)
        if min(std) <= 0:
            raise DataError(
                "x_train has a constant channel (std 0); store 'mean' and 'std' keys in the npz"
            )
    labels = np.concatenate([y_train, y_test])
    num_classes = int(f["num_classes"]) if "num_classes" in f else int(labels.max()) + 1
    augment = str(f["augment"]) if "augment" in f else "none"
    if augment not in AUGMENTATIONS:
        raise DataError(f"npz key 'augment' is {augment!r}; use one of {AUGMENTATIONS}")
    return make_dataset(
        "npz",
        np.concatenate([x_train, x_test]),
        labels,
        num_classes=num_classes,
        n_train=x_train.shape[0],
        mean=mean,
        std=std,
        augment=augment,
    )
