"""UTKFace ("Aligned & Cropped") from a local folder of JPEGs (protocol §1.1, §1.3).

Mirrors ``munl/datasets/utkface.py`` of the reference:

* files: every ``*.jpg`` in the folder (``Path.suffix == ".jpg"``, e.g.
  ``26_0_1_20170116174525125.jpg.chip.jpg``); expected N = 23,708;
* label = ``min(floor(age / 20), 4)`` with age the first ``_``-separated field
  of the name (5 age buckets);
* official split: ``perm = default_rng(123).permutation(N)``, test =
  ``perm[:floor(0.2 N)]``, train = the rest, both in permutation order; train
  first in the arrays;
* images resized to 224x224 with PIL bilinear; ImageNet mean/std; no
  augmentation (train transform = test transform).

Deviations (protocol §1.3): file names are **sorted** before the permutation
(the reference uses unsorted ``iterdir()``, so its split depends on the file
system), and images are converted to RGB explicitly.

Memory: 23,708 x 224 x 224 x 3 bytes = 3.6 GB of uint8. Decoding runs on a
thread pool (PIL releases the GIL). No cache is written.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from jaxmu.data._image import load_rgb
from jaxmu.data.core import DataError, Dataset, holdout_split, make_dataset

UTKFACE_IMAGE_SIZE = 224
UTKFACE_NUM_CLASSES = 5
UTKFACE_MEAN = (0.485, 0.456, 0.406)
UTKFACE_STD = (0.229, 0.224, 0.225)
UTKFACE_TEST_RATIO = 0.2
UTKFACE_SPLIT_SEED = 123


def age_label(filename: str) -> int:
    """``min(floor(age / 20), 4)`` for a UTKFace file name ``AGE_GENDER_RACE_DATE...jpg``.

    Raises:
      DataError: the first ``_``-separated field is not a non-negative integer.
    """
    field = filename.split(".")[0].split("_")[0]
    if not field.isdigit():
        raise DataError(
            f"UTKFace file {filename!r}: cannot read the age (first '_' field {field!r}); "
            "names must look like 26_0_1_20170116174525125.jpg.chip.jpg - remove or rename it"
        )
    return min(int(field) // 20, UTKFACE_NUM_CLASSES - 1)


def load_utkface(path: str | os.PathLike, *, image_size: int = UTKFACE_IMAGE_SIZE) -> Dataset:
    """Load UTKFace from the folder ``path`` holding the JPEGs (see module docstring).

    Args:
      path: folder with the aligned & cropped ``*.jpg`` files
        (``.../UTKface_Aligned_cropped/UTKFace`` in the reference layout).
      image_size: stored height = width; 224 in the benchmark (smaller only
        for tests).

    Raises:
      DataError: missing folder, no ``.jpg`` files, an unparseable name or an
        undecodable image.
    """
    folder = os.fspath(path)
    if not os.path.isdir(folder):
        raise DataError(
            f"UTKFace folder {folder!r} does not exist; pass path= the folder of aligned & "
            "cropped JPEGs (UTKface_Aligned_cropped/UTKFace)"
        )
    names = sorted(n for n in os.listdir(folder) if n.endswith(".jpg"))
    if not names:
        raise DataError(
            f"UTKFace folder {folder!r} holds no .jpg files; pass the folder that contains "
            "the images themselves (UTKface_Aligned_cropped/UTKFace)"
        )
    labels = np.array([age_label(n) for n in names], dtype=np.int32)
    train_idx, test_idx = holdout_split(
        len(names), test_ratio=UTKFACE_TEST_RATIO, seed=UTKFACE_SPLIT_SEED
    )
    order = np.concatenate([train_idx, test_idx])
    images = np.empty((len(names), image_size, image_size, 3), np.uint8)

    def fill(i: int) -> None:
        name = names[order[i]]
        try:
            images[i] = load_rgb(os.path.join(folder, name), image_size)
        except OSError as e:  # PIL's UnidentifiedImageError is an OSError
            raise DataError(
                f"UTKFace file {name!r} cannot be decoded ({e}); remove or replace it"
            ) from e

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(fill, range(len(names))))
    return make_dataset(
        "utkface",
        images,
        labels[order],
        num_classes=UTKFACE_NUM_CLASSES,
        n_train=train_idx.size,
        mean=UTKFACE_MEAN,
        std=UTKFACE_STD,
        augment="none",
    )
