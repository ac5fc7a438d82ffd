"""Datasets, splits and on-device augmentation for jaxmu (protocol §1, §2).

* :func:`load_dataset` -> :class:`Dataset` (uint8 images, official train set
  first); ``digits`` is the embedded offline default; tfds datasets are read
  from prepared array_record files (``python -m jaxmu.data.prepare``).
* :func:`from_arrays` -> :class:`Dataset` from a researcher's arrays;
  :func:`register` makes it (or a loader) a ``data.name``; :func:`fingerprint`
  names its content.
* :func:`make_splits` / :func:`splits_for` -> :class:`Splits` (retain, forget,
  val, test indices with a content hash; protocol §2).
* :func:`preprocess` / :func:`augment_batch` / :func:`normalize`: jit- and
  vmap-able batch transforms (protocol §1.2).
"""

from jaxmu.data.augment import (
    AugmentParams,
    augment_batch,
    crop_with_offsets,
    flip_where,
    normalize,
    preprocess,
    sample_augment_params,
)
from jaxmu.data.arrays import fingerprint, from_arrays
from jaxmu.data.core import AUGMENTATIONS, DataError, Dataset
from jaxmu.data.load import DATASETS, dataset_names, is_builtin, load_dataset, register, unregister
from jaxmu.data.splits import Splits, load_splits, make_splits, save_splits, splits_for
from jaxmu.data.tfds_source import TFDS_SPECS, TfdsSpec, load_tfds

__all__ = [
    "AUGMENTATIONS",
    "DATASETS",
    "TFDS_SPECS",
    "AugmentParams",
    "DataError",
    "Dataset",
    "Splits",
    "TfdsSpec",
    "augment_batch",
    "crop_with_offsets",
    "dataset_names",
    "fingerprint",
    "flip_where",
    "from_arrays",
    "is_builtin",
    "load_dataset",
    "load_splits",
    "load_tfds",
    "make_splits",
    "normalize",
    "preprocess",
    "register",
    "sample_augment_params",
    "save_splits",
    "splits_for",
    "unregister",
]
