"""The in-memory dataset record shared by every loader (protocol §1).

A :class:`Dataset` holds a whole image-classification dataset as host NumPy
arrays: uint8 images ``[N, H, W, C]`` and int32 labels ``[N]``, the official
train set first (``images[:n_train]``, the "dev" set of protocol §2 step 1)
and the official test set after it (``images[n_train:]``). Images are stored
already resized (protocol §1.2: resizing happens once on the host with PIL),
so training only gathers, augments (``jaxmu.data.augment``) and normalises.

Also here: :class:`DataError`, the single exception type for user-facing data
problems, and small host-side helpers shared by several loaders.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

AUGMENTATIONS: tuple[str, ...] = ("none", "flip", "crop_flip")
"""Train-time augmentation kinds (protocol §1.2); see ``augment.py``."""


class DataError(ValueError):
    """A user-facing data problem; the message says what is wrong and the fix."""


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A whole dataset resident in host memory.

    Attributes:
      name: dataset id (``load_dataset`` name, or the tfds name).
      images: uint8 ``[N, H, W, C]``; official train set first, then the
        official test set.
      labels: int32 ``[N]`` in ``[0, num_classes)``.
      num_classes: number of classes C.
      n_train: size of the official train ("dev") set; ``images[n_train:]`` is
        the official test set D_t (protocol §2 step 1).
      mean: per-channel normalisation mean in [0, 1] pixel units (§1.1).
      std: per-channel normalisation std in [0, 1] pixel units (§1.1).
      augment: default train-time augmentation, one of ``AUGMENTATIONS``.

    ``eq=False``: equality of array fields is not a boolean; compare arrays
    explicitly.
    """

    name: str
    images: np.ndarray
    labels: np.ndarray
    num_classes: int
    n_train: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: str

    def __post_init__(self) -> None:
        imgs, labels = self.images, self.labels
        if not isinstance(imgs, np.ndarray) or imgs.dtype != np.uint8 or imgs.ndim != 4:
            raise DataError(
                f"Dataset {self.name!r}: images must be a uint8 array [N, H, W, C], got "
                f"{getattr(imgs, 'dtype', type(imgs))} with shape {getattr(imgs, 'shape', None)}; "
                "convert with np.asarray(x, np.uint8) and add a channel axis"
            )
        if not isinstance(labels, np.ndarray) or labels.dtype != np.int32 or labels.ndim != 1:
            raise DataError(
                f"Dataset {self.name!r}: labels must be an int32 array [N], got "
                f"{getattr(labels, 'dtype', type(labels))} with shape "
                f"{getattr(labels, 'shape', None)}; convert with np.asarray(y, np.int32)"
            )
        n = imgs.shape[0]
        if labels.shape[0] != n:
            raise DataError(
                f"Dataset {self.name!r}: {n} images but {labels.shape[0]} labels; "
                "pass one label per image"
            )
        if not 0 <= self.n_train <= n:
            raise DataError(f"Dataset {self.name!r}: n_train={self.n_train} outside [0, {n}]")
        if self.num_classes < 1:
            raise DataError(f"Dataset {self.name!r}: num_classes={self.num_classes} must be >= 1")
        if n and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise DataError(
                f"Dataset {self.name!r}: labels span [{labels.min()}, {labels.max()}] but "
                f"num_classes={self.num_classes}; labels must lie in [0, num_classes)"
            )
        c = imgs.shape[3]
        if len(self.mean) != c or len(self.std) != c:
            raise DataError(
                f"Dataset {self.name!r}: mean/std have {len(self.mean)}/{len(self.std)} "
                f"entries but images have {c} channels; give one value per channel"
            )
        if not all(math.isfinite(s) and s > 0 for s in self.std):
            raise DataError(f"Dataset {self.name!r}: std {self.std} must be finite and > 0")
        if self.augment not in AUGMENTATIONS:
            raise DataError(
                f"Dataset {self.name!r}: augment={self.augment!r} unknown; use one of {AUGMENTATIONS}"
            )

    @property
    def n_test(self) -> int:
        """Size of the official test set D_t."""
        return int(self.images.shape[0]) - self.n_train

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(H, W, C)`` of one stored image."""
        return tuple(int(s) for s in self.images.shape[1:])  # type: ignore[return-value]


def make_dataset(
    name: str,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    num_classes: int,
    n_train: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    augment: str,
) -> Dataset:
    """Build a validated :class:`Dataset` whose arrays are read-only."""
    images = np.ascontiguousarray(images, dtype=np.uint8)
    labels = np.ascontiguousarray(labels, dtype=np.int32)
    images.flags.writeable = False
    labels.flags.writeable = False
    return Dataset(
        name=name,
        images=images,
        labels=labels,
        num_classes=int(num_classes),
        n_train=int(n_train),
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
        augment=augment,
    )


def holdout_split(
    n: int, *, test_ratio: float = 0.2, seed: int = 123
) -> tuple[np.ndarray, np.ndarray]:
    """The UTKFace-style official split of ``n`` unsplit examples (protocol §1.3).

    ``perm = np.random.default_rng(seed).permutation(n)``; test = ``perm[:k]``
    with ``k = floor(test_ratio * n)``, train = ``perm[k:]``, both in
    permutation order (as the reference indexes its arrays with them).

    Returns:
      ``(train_idx, test_idx)`` int64 index arrays.
    """
    perm = np.random.default_rng(seed).permutation(n)
    k = int(test_ratio * n)
    return perm[k:], perm[:k]


def channel_stats(
    images: np.ndarray, *, chunk: int = 4096
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of uint8 images in [0, 1] units.

    ``mean_c = E[x/255]``, ``std_c = sqrt(E[(x/255)^2] - mean_c^2)`` over all
    pixels of all images, accumulated in float64 chunk by chunk so memory stays
    bounded.
    """
    if images.shape[0] == 0:
        raise DataError("cannot compute mean/std of an empty image set; pass mean and std")
    c = images.shape[-1]
    s1 = np.zeros(c, np.float64)
    s2 = np.zeros(c, np.float64)
    for i in range(0, images.shape[0], chunk):
        x = images[i : i + chunk].reshape(-1, c).astype(np.float64) / 255.0
        s1 += x.sum(axis=0)
        s2 += np.square(x).sum(axis=0)
    count = images.size // c
    mean = s1 / count
    std = np.sqrt(np.maximum(s2 / count - mean**2, 0.0))
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)
