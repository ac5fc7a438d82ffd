"""Retain / forget / validation / test index splits (protocol §2).

Random forgetting, exactly as the reference (``munl/datasets/splits.py``,
``pipeline/step_1_generate_fixed_splits.py``):

1. dev = the official-train indices ``0..n_train-1``; D_t = the official-test
   indices ``n_train..N-1``.
2. ``(train, D_v) = train_test_split(dev, test_size=val_ratio, random_state=seed)``.
3. ``(D_r, D_f) = train_test_split(train, test_size=forget_ratio, random_state=seed)``.

scikit-learn takes ``n_test = ceil(ratio * n)`` and, for an array ``a`` of
length n, ``perm = RandomState(seed).permutation(n)``, returning
``(a[perm[n_test:]], a[perm[:n_test]])`` in permutation order. CIFAR-shaped
data (50,000 / 10,000) gives |train| 42,500, |D_r| 38,250, |D_f| 4,250,
|D_v| 7,500, |D_t| 10,000.

Class-wise forgetting (``forget_mode="class"``) is a jaxmu extension the
protocol lacks (§2 specifies random forgetting only): steps 1-2 as above,
then with ``idx_c`` = the post-validation train indices whose label is
``forget_class`` (in train order) and ``k = ceil(forget_class_fraction *
|idx_c|)``, ``D_f = idx_c[default_rng(seed).permutation(|idx_c|)[:k]]`` and
``D_r`` = the remaining train indices in train order. ``forget_ratio`` is
unused in that mode.

A :class:`Splits` carries a content hash over its four index arrays; files
written by :func:`save_splits` are verified on load, and :func:`splits_for`
keeps one file per (dataset, arguments) in a cache folder (docs/protocol.md §2).
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import math
import numbers
import os
import tempfile
import zipfile
from typing import Any

import numpy as np

from jaxmu.data.core import DataError, Dataset

SPLIT_NAMES: tuple[str, ...] = ("retain", "forget", "val", "test")
FORGET_MODES: tuple[str, ...] = ("random", "class")
DEFAULT_VAL_RATIO = 0.15
DEFAULT_FORGET_RATIO = 0.10
DEFAULT_SEED = 123
_ARGS_KEY = "arguments"
_HASH_KEY = "content_hash"


def content_hash(retain: np.ndarray, forget: np.ndarray, val: np.ndarray, test: np.ndarray) -> str:
    """First 16 hex digits of sha256 over ``name|length|int32-LE bytes`` of each split."""
    h = hashlib.sha256()
    for name, a in zip(SPLIT_NAMES, (retain, forget, val, test)):
        a = np.ascontiguousarray(a, dtype="<i4")
        h.update(f"{name}|{a.size}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


@dataclasses.dataclass(frozen=True, eq=False)
class Splits:
    """Index arrays into a :class:`Dataset`'s arrays (int32, read-only).

    Attributes:
      retain: D_r.
      forget: D_f.
      val: D_v.
      test: D_t.
      content_hash: :func:`content_hash` of the four arrays.
    """

    retain: np.ndarray
    forget: np.ndarray
    val: np.ndarray
    test: np.ndarray
    content_hash: str

    @property
    def train(self) -> np.ndarray:
        """The original model's training set: ``concat(retain, forget)``."""
        return np.concatenate([self.retain, self.forget])

    def sizes(self) -> dict[str, int]:
        """``{"train", "retain", "forget", "val", "test"}`` -> number of indices."""
        out = {"train": int(self.retain.size + self.forget.size)}
        out.update({k: int(getattr(self, k).size) for k in SPLIT_NAMES})
        return out


def _build(retain: Any, forget: Any, val: Any, test: Any) -> Splits:
    arrays = []
    for a in (retain, forget, val, test):
        a = np.array(a, dtype=np.int32)
        a.flags.writeable = False
        arrays.append(a)
    return Splits(*arrays, content_hash=content_hash(*arrays))


def _check_ratio(name: str, value: float) -> None:
    if not (isinstance(value, numbers.Real) and 0.0 < float(value) < 1.0):
        raise DataError(f"{name}={value!r} must be a float in (0, 1)")


def make_splits(
    ds: Dataset,
    *,
    val_ratio: float = DEFAULT_VAL_RATIO,
    forget_ratio: float = DEFAULT_FORGET_RATIO,
    seed: int = DEFAULT_SEED,
    forget_mode: str = "random",
    forget_class: int | None = None,
    forget_class_fraction: float = 1.0,
) -> Splits:
    """Compute the splits of protocol §2 (or class-wise forgetting; module docstring).

    Args:
      ds: the dataset; only ``n_train``, its length and (class mode) labels are used.
      val_ratio: fraction of the official train set held out as D_v.
      forget_ratio: fraction of the post-validation train set forgotten (random mode).
      seed: ``random_state`` of both ``train_test_split`` calls; class mode also
        seeds ``default_rng``.
      forget_mode: ``"random"`` (protocol) or ``"class"`` (extension).
      forget_class: class forgotten in class mode; must be None in random mode.
      forget_class_fraction: fraction of that class's train examples forgotten,
        in (0, 1]; must stay 1.0 in random mode.

    Raises:
      DataError: bad ratios, mode, class or fraction, or too little data.
    """
    from sklearn.model_selection import train_test_split

    _check_ratio("val_ratio", val_ratio)
    _check_ratio("forget_ratio", forget_ratio)
    if forget_mode not in FORGET_MODES:
        raise DataError(f"forget_mode={forget_mode!r} unknown; use one of {FORGET_MODES}")
    if not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise DataError(f"seed={seed!r} must be an int in [0, 2**32)")
    n_total = int(ds.labels.shape[0])
    dev = np.arange(ds.n_train)
    test = np.arange(ds.n_train, n_total)
    n_val = math.ceil(val_ratio * dev.size)
    if dev.size - n_val < 2:
        raise DataError(
            f"dataset {ds.name!r} has {dev.size} official-train examples, too few for "
            f"val_ratio={val_ratio}; use a larger dataset or a smaller val_ratio"
        )
    train, val = train_test_split(dev, test_size=val_ratio, random_state=int(seed))
    if forget_mode == "random":
        if forget_class is not None or forget_class_fraction != 1.0:
            raise DataError(
                "forget_class/forget_class_fraction only apply to forget_mode='class'; "
                "drop them or set forget_mode='class'"
            )
        retain, forget = train_test_split(train, test_size=forget_ratio, random_state=int(seed))
        return _build(retain, forget, val, test)
    if (
        forget_class is None
        or not isinstance(forget_class, (int, np.integer))
        or not (0 <= forget_class < ds.num_classes)
    ):
        raise DataError(
            f"forget_class={forget_class!r} must be an int in [0, {ds.num_classes}) "
            "with forget_mode='class'"
        )
    if not (isinstance(forget_class_fraction, numbers.Real) and 0.0 < forget_class_fraction <= 1.0):
        raise DataError(f"forget_class_fraction={forget_class_fraction!r} must be in (0, 1]")
    in_class = ds.labels[train] == forget_class
    idx_c = train[in_class]
    if idx_c.size == 0:
        raise DataError(
            f"class {forget_class} has no examples in the post-validation train set of "
            f"{ds.name!r}; pick another forget_class"
        )
    if idx_c.size == train.size:
        raise DataError(
            f"every train example of {ds.name!r} is of class {forget_class}; nothing would "
            "remain to retain"
        )
    k = math.ceil(forget_class_fraction * idx_c.size)
    chosen = np.random.default_rng(int(seed)).permutation(idx_c.size)[:k]
    forget = idx_c[chosen]
    keep = np.ones(train.size, bool)
    keep[np.flatnonzero(in_class)[chosen]] = False
    return _build(train[keep], forget, val, test)


def _write(splits: Splits, path: str | os.PathLike, extra: dict[str, str]) -> None:
    """Atomically write ``splits`` (+ string ``extra`` entries) to the .npz ``path``."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(
                f,
                **{k: getattr(splits, k) for k in SPLIT_NAMES},
                **{_HASH_KEY: np.asarray(splits.content_hash)},
                **{k: np.asarray(v) for k, v in extra.items()},
            )
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_splits(splits: Splits, path: str | os.PathLike) -> None:
    """Write ``splits`` to the .npz file ``path`` (the name is used as given)."""
    _write(splits, path, {})


def _read(path: str | os.PathLike) -> tuple[Splits, dict[str, str]]:
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            f = {k: z[k] for k in z.files}
    except FileNotFoundError as e:
        raise DataError(f"split file {path!r} does not exist; create it with save_splits") from e
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"split file {path!r} is unreadable ({e}); delete it and regenerate") from e
    missing = [k for k in (*SPLIT_NAMES, _HASH_KEY) if k not in f]
    if missing:
        raise DataError(f"split file {path!r} lacks {missing}; delete it and regenerate")
    for k in SPLIT_NAMES:
        if f[k].ndim != 1 or not np.issubdtype(f[k].dtype, np.integer):
            raise DataError(
                f"split file {path!r}: {k!r} has dtype {f[k].dtype} and shape {f[k].shape}, "
                "expected 1-D integers; delete it and regenerate"
            )
    splits = _build(*(f[k] for k in SPLIT_NAMES))
    stored = str(f[_HASH_KEY])
    if splits.content_hash != stored:
        raise DataError(
            f"split file {path!r} is corrupt: content hash {splits.content_hash} != stored "
            f"{stored}; delete it and regenerate"
        )
    extra = {k: str(v) for k, v in f.items() if k not in (*SPLIT_NAMES, _HASH_KEY)}
    return splits, extra


def load_splits(path: str | os.PathLike) -> Splits:
    """Read splits written by :func:`save_splits`, verifying the content hash.

    Raises:
      DataError: missing, unreadable or corrupt file (hash mismatch).
    """
    return _read(path)[0]


def split_arguments(ds: Dataset, **kwargs: Any) -> dict[str, Any]:
    """The full, JSON-able description of a split: dataset fingerprint + all arguments.

    Unspecified arguments take :func:`make_splits` defaults; the dataset is
    identified by name, sizes, class count and a sha256 of its labels.
    """
    try:
        bound = inspect.signature(make_splits).bind(ds, **kwargs)
    except TypeError as e:
        raise DataError(f"bad split arguments {sorted(kwargs)} ({e})") from e
    bound.apply_defaults()
    args = {k: v for k, v in bound.arguments.items() if k != "ds"}
    args = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in args.items()}
    labels_sha = hashlib.sha256(np.ascontiguousarray(ds.labels, "<i4").tobytes()).hexdigest()
    return {
        "dataset": {
            "name": ds.name,
            "n": int(ds.labels.shape[0]),
            "n_train": ds.n_train,
            "num_classes": ds.num_classes,
            "labels_sha256": labels_sha[:16],
        },
        "args": args,
    }


def splits_for(ds: Dataset, cache_dir: str | os.PathLike, *, write: bool = True, **kwargs: Any) -> Splits:
    """Splits of ``ds`` for ``kwargs`` (see :func:`make_splits`), cached on disk.

    The file is ``cache_dir/splits_<name>_<h>.npz`` with ``h`` the first 16
    hex digits of sha256 over :func:`split_arguments`; it is reused when
    present, after verifying its content hash and its stored arguments.
    ``write=False``: a missing file is not written (the splits are computed only).

    Raises:
      DataError: the cached file is corrupt or was made for other arguments.
    """
    args = split_arguments(ds, **kwargs)
    args_json = json.dumps(args, sort_keys=True)
    h = hashlib.sha256(args_json.encode()).hexdigest()[:16]
    path = os.path.join(os.fspath(cache_dir), f"splits_{ds.name}_{h}.npz")
    if os.path.exists(path):
        splits, extra = _read(path)
        if extra.get(_ARGS_KEY) != args_json:
            raise DataError(
                f"split file {path!r} was made for other arguments ({extra.get(_ARGS_KEY)}); "
                "delete it and regenerate"
            )
        return splits
    splits = make_splits(ds, **kwargs)
    if write:
        _write(splits, path, {_ARGS_KEY: args_json})
    return splits
