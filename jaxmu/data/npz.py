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

from jaxmu.data.arrays import build_dataset
from jaxmu.data.core import DataError, Dataset

REQUIRED_KEYS = ("x_train", "y_train", "x_test", "y_test")


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
    return build_dataset(f, name="npz", where="npz key", stats_hint="store 'mean' and 'std' keys in the npz")
