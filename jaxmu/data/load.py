"""``load_dataset``: one entry point for every dataset jaxmu knows (protocol §1).

=================  ==========================================  ===========
name               source                                      arguments
=================  ==========================================  ===========
``digits``         scikit-learn, embedded (default, offline)   none
``mnist``          prepared tfds array_record                  ``data_dir``
``fashion_mnist``  prepared tfds array_record                  ``data_dir``
``cifar10``        prepared tfds array_record                  ``data_dir``
``cifar100``       prepared tfds array_record                  ``data_dir``
``svhn_cropped``   prepared tfds array_record                  ``data_dir``
``utkface``        folder of aligned & cropped JPEGs           ``path``
``npz``            a user's ``.npz`` file                      ``path``
=================  ==========================================  ===========
"""

from __future__ import annotations

import os

from jaxmu.data.core import DataError, Dataset
from jaxmu.data.digits import load_digits_dataset
from jaxmu.data.npz import load_npz
from jaxmu.data.tfds_source import TFDS_SPECS, load_tfds
from jaxmu.data.utkface import load_utkface

DATASETS: tuple[str, ...] = (
    "digits",
    "mnist",
    "fashion_mnist",
    "cifar10",
    "cifar100",
    "svhn_cropped",
    "utkface",
    "npz",
)
_PATH_DATASETS = ("utkface", "npz")


def load_dataset(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    path: str | os.PathLike | None = None,
) -> Dataset:
    """Load dataset ``name`` (one of ``DATASETS``) into host memory.

    Args:
      name: dataset id, see the module table.
      data_dir: tfds data directory for the tfds datasets (default
        ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).
      path: the JPEG folder (``utkface``) or the ``.npz`` file (``npz``).

    Raises:
      DataError: unknown name, a missing/extra ``path``, or any loader problem.
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    if name in _PATH_DATASETS:
        if path is None:
            what = "folder of JPEGs" if name == "utkface" else ".npz file"
            raise DataError(f"dataset {name!r} needs path= (its {what})")
        return load_utkface(path) if name == "utkface" else load_npz(path)
    if path is not None:
        raise DataError(
            f"path= is only used by {_PATH_DATASETS}; for {name!r} drop it (use data_dir= for tfds data)"
        )
    if name == "digits":
        return load_digits_dataset()
    return load_tfds(name, TFDS_SPECS[name], data_dir=data_dir)
