"""scikit-learn's 8x8 digits: the embedded, download-free default dataset.

Not part of the Deep Unlearn benchmark (protocol §1.1); it exists so that
every stage runs offline in seconds. ``sklearn.datasets.load_digits()`` gives
1,797 images of 8x8 pixels with values 0..16, stored here as uint8
``round(v * 255 / 16)`` with one channel.

There is no official split, so one is made as for UTKFace (protocol §1.3):
test = the first ``floor(0.2 N)`` entries of
``np.random.default_rng(123).permutation(N)``, train = the rest; train comes
first in the arrays (1,438 train, 359 test).

Normalisation: the train-set pixel mean/std in [0, 1] units. Augmentation:
``"none"``, because a horizontal flip changes a digit's identity (2 vs 5...).
"""

from __future__ import annotations

import numpy as np

from jaxmu.data.core import Dataset, channel_stats, holdout_split, make_dataset

DIGITS_SPLIT_SEED = 123
DIGITS_TEST_RATIO = 0.2


def load_digits_dataset() -> Dataset:
    """Load the digits dataset as a :class:`Dataset` (see module docstring)."""
    from sklearn.datasets import load_digits

    raw = load_digits()
    images = np.round(raw.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = raw.target.astype(np.int32)
    train_idx, test_idx = holdout_split(
        images.shape[0], test_ratio=DIGITS_TEST_RATIO, seed=DIGITS_SPLIT_SEED
    )
    order = np.concatenate([train_idx, test_idx])
    images, labels = images[order], labels[order]
    mean, std = channel_stats(images[: train_idx.size])
    return make_dataset(
        "digits",
        images,
        labels,
        num_classes=10,
        n_train=train_idx.size,
        mean=mean,
        std=std,
        augment="none",
    )
