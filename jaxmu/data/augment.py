"""On-device augmentation and normalisation of uint8 batches (protocol §1.2).

Train transform = augmentation -> [0, 1] -> normalise; test transform = the
last two. Augmentations (torchvision semantics):

* ``"none"``: identity.
* ``"flip"``: ``RandomHorizontalFlip(0.5)``: each example is mirrored along
  the width axis with probability 1/2, independently.
* ``"crop_flip"``: ``RandomCrop(H, padding=4)`` then the flip. The
  **unnormalised** uint8 image is zero-padded by 4 pixels on each side and an
  ``H x W`` window with offsets ``(dy, dx)`` drawn uniformly from
  ``{0, ..., 8}`` each is cut out.

All functions are pure and shape-static, so they work under ``jax.jit`` and
under ``jax.vmap`` over a model axis of keys (one augmentation stream per
model, docs/sharp_edges.md). Per-example randomness comes from one key per batch:
``k_crop, k_flip = split(key)``; offsets ``randint(k_crop, [B, 2], 0, 9)``,
flips ``bernoulli(k_flip, 0.5, [B])`` (see :func:`sample_augment_params`).
Random draws do not match torchvision's stream; only the distribution does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxmu.data.core import AUGMENTATIONS, DataError

CROP_PADDING = 4


class AugmentParams(NamedTuple):
    """Per-example augmentation draws for a batch of B examples.

    Attributes:
      offsets: int32 ``[B, 2]`` crop window offsets ``(dy, dx)`` into the padded image.
      flip: bool ``[B]``, True where the example is mirrored horizontally.
    """

    offsets: jax.Array
    flip: jax.Array


def _check_kind(kind: str) -> None:
    if kind not in AUGMENTATIONS:
        raise DataError(f"augmentation kind {kind!r} unknown; use one of {AUGMENTATIONS}")


def _check_images(images: jax.Array) -> None:
    if images.ndim != 4 or images.dtype != jnp.uint8:
        raise DataError(
            f"augmentation expects uint8 images [B, H, W, C], got {images.dtype} "
            f"{tuple(images.shape)}; augment before normalising"
        )


def sample_augment_params(
    key: jax.Array, batch_size: int, kind: str, *, pad: int = CROP_PADDING
) -> AugmentParams:
    """Draw the crop offsets and flip decisions :func:`augment_batch` uses.

    For ``"flip"`` the offsets are the identity crop ``(pad, pad)``; for
    ``"none"`` nothing is flipped either.
    """
    _check_kind(kind)
    k_crop, k_flip = jax.random.split(key)
    if kind == "crop_flip":
        offsets = jax.random.randint(k_crop, (batch_size, 2), 0, 2 * pad + 1, dtype=jnp.int32)
    else:
        offsets = jnp.full((batch_size, 2), pad, jnp.int32)
    if kind == "none":
        flip = jnp.zeros((batch_size,), bool)
    else:
        flip = jax.random.bernoulli(k_flip, 0.5, (batch_size,))
    return AugmentParams(offsets=offsets, flip=flip)


def crop_with_offsets(
    images: jax.Array, offsets: jax.Array, *, pad: int = CROP_PADDING
) -> jax.Array:
    """Zero-pad each image by ``pad`` and cut the ``H x W`` window at ``offsets``.

    ``out[b] = P[b, dy_b : dy_b + H, dx_b : dx_b + W]`` with ``P`` the padded
    batch, via a vmapped ``lax.dynamic_slice``.
    """
    _, h, w, c = images.shape
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))

    def one(img: jax.Array, off: jax.Array) -> jax.Array:
        return jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, c))

    return jax.vmap(one)(padded, offsets.astype(jnp.int32))


def flip_where(images: jax.Array, flip: jax.Array) -> jax.Array:
    """Mirror ``images[b]`` along the width axis where ``flip[b]`` is True."""
    return jnp.where(flip[:, None, None, None], images[:, :, ::-1, :], images)


def augment_batch(images_uint8: jax.Array, key: jax.Array, kind: str) -> jax.Array:
    """Augment a uint8 batch ``[B, H, W, C]``; returns uint8 of the same shape.

    ``kind`` is static (a Python string): ``"none"``, ``"flip"`` or
    ``"crop_flip"`` (module docstring).
    """
    _check_kind(kind)
    _check_images(images_uint8)
    if kind == "none":
        return images_uint8
    params = sample_augment_params(key, images_uint8.shape[0], kind)
    out = images_uint8
    if kind == "crop_flip":
        out = crop_with_offsets(out, params.offsets)
    return flip_where(out, params.flip)


def normalize(images_uint8: jax.Array, mean: Sequence[float], std: Sequence[float]) -> jax.Array:
    """``(x / 255 - mean) / std`` per channel (last axis), as float32."""
    x = jnp.asarray(images_uint8).astype(jnp.float32) / 255.0
    m = jnp.asarray(mean, jnp.float32)
    s = jnp.asarray(std, jnp.float32)
    return (x - m) / s


def preprocess(
    images_uint8: jax.Array,
    key: jax.Array | None,
    *,
    kind: str,
    mean: Sequence[float],
    std: Sequence[float],
    train: bool,
) -> jax.Array:
    """Train transform (``train=True``: augment, then normalise) or test transform.

    ``kind`` and ``train`` are static; ``key`` is unused when ``train`` is False.
    """
    _check_kind(kind)
    if train and kind != "none":
        if key is None:
            raise DataError("preprocess(train=True) with augmentation needs a PRNG key")
        images_uint8 = augment_batch(images_uint8, key, kind)
    return normalize(images_uint8, mean, std)
