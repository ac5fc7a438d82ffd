"""Tests for on-device augmentation and normalisation (protocol §1.2)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmu.data import (
    DataError,
    augment_batch,
    crop_with_offsets,
    normalize,
    preprocess,
    sample_augment_params,
)

RNG = np.random.default_rng(0)
X = RNG.integers(1, 256, (16, 6, 5, 3), dtype=np.uint8)  # H != W: catches axis mix-ups
X32 = RNG.integers(1, 256, (8, 32, 32, 3), dtype=np.uint8)


def np_crop(x: np.ndarray, offsets: np.ndarray, pad: int = 4) -> np.ndarray:
    """Reference: zero-pad each image by ``pad``, cut the H x W window at (dy, dx)."""
    _, h, w, _ = x.shape
    p = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    return np.stack([p[b, dy : dy + h, dx : dx + w] for b, (dy, dx) in enumerate(offsets)])


def np_flip(x: np.ndarray, flip: np.ndarray) -> np.ndarray:
    return np.where(flip[:, None, None, None], x[:, :, ::-1, :], x)


def test_flip_flips_exactly_the_selected_examples():
    key = jax.random.key(1)
    out = np.asarray(augment_batch(jnp.asarray(X), key, "flip"))
    flip = np.asarray(sample_augment_params(key, 16, "flip").flip)
    assert 0 < flip.sum() < 16
    assert out.dtype == np.uint8 and out.shape == X.shape
    np.testing.assert_array_equal(out, np_flip(X, flip))
    np.testing.assert_array_equal(out[flip], X[flip][:, :, ::-1, :])
    np.testing.assert_array_equal(out[~flip], X[~flip])


def test_crop_matches_numpy_window_for_given_offsets():
    offsets = np.array([[0, 0], [8, 8], [0, 8], [8, 0], [4, 4], [3, 5], [7, 1], [2, 6]], np.int32)
    out = np.asarray(crop_with_offsets(jnp.asarray(X32), jnp.asarray(offsets)))
    assert out.dtype == np.uint8 and out.shape == X32.shape
    np.testing.assert_array_equal(out, np_crop(X32, offsets))
    np.testing.assert_array_equal(out[4], X32[4])  # centre window = identity
    assert (out[0, :4] == 0).all() and (out[0, :, :4] == 0).all()  # zero padding, top-left
    np.testing.assert_array_equal(out[0, 4:, 4:], X32[0, :28, :28])


def test_crop_flip_equals_reference_and_draw_ranges():
    key = jax.random.key(2)
    out = np.asarray(augment_batch(jnp.asarray(X32), key, "crop_flip"))
    p = sample_augment_params(key, 8, "crop_flip")
    ref = np_flip(np_crop(X32, np.asarray(p.offsets)), np.asarray(p.flip))
    np.testing.assert_array_equal(out, ref)
    big = sample_augment_params(jax.random.key(3), 4000, "crop_flip")
    off = np.asarray(big.offsets)
    for axis in (0, 1):
        assert set(np.unique(off[:, axis])) == set(range(9))  # uniform over 0..8
    assert 0.45 < float(np.asarray(big.flip).mean()) < 0.55


def test_none_is_identity_and_bad_inputs():
    out = augment_batch(jnp.asarray(X), jax.random.key(0), "none")
    np.testing.assert_array_equal(np.asarray(out), X)
    with pytest.raises(DataError, match="unknown"):
        augment_batch(jnp.asarray(X), jax.random.key(0), "rotate")
    with pytest.raises(DataError, match="uint8"):
        augment_batch(jnp.asarray(X, jnp.float32), jax.random.key(0), "flip")


def test_jit_and_vmap_over_model_keys_equal_loop():
    f = jax.jit(functools.partial(augment_batch, kind="crop_flip"))
    key = jax.random.key(4)
    np.testing.assert_array_equal(
        np.asarray(f(jnp.asarray(X32), key)),
        np.asarray(augment_batch(jnp.asarray(X32), key, "crop_flip")),
    )
    keys = jax.random.split(jax.random.key(5), 3)
    stacked = np.asarray(jax.jit(jax.vmap(f, in_axes=(None, 0)))(jnp.asarray(X32), keys))
    assert stacked.shape == (3, *X32.shape) and stacked.dtype == np.uint8
    for m in range(3):
        np.testing.assert_array_equal(
            stacked[m], np.asarray(augment_batch(jnp.asarray(X32), keys[m], "crop_flip"))
        )
    assert not np.array_equal(stacked[0], stacked[1])  # per-model streams differ
    raw_keys = jax.random.split(jax.random.PRNGKey(5), 3)  # legacy uint32 keys work too
    assert jax.vmap(f, in_axes=(None, 0))(jnp.asarray(X32), raw_keys).shape == stacked.shape


def test_normalize_and_preprocess():
    mean, std = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
    got = np.asarray(normalize(jnp.asarray(X32), mean, std))
    want = (X32.astype(np.float32) / 255 - np.float32(mean)) / np.float32(std)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    key = jax.random.key(6)
    test_t = preprocess(jnp.asarray(X32), None, kind="crop_flip", mean=mean, std=std, train=False)
    np.testing.assert_array_equal(np.asarray(test_t), got)
    pp = jax.jit(functools.partial(preprocess, kind="crop_flip", mean=mean, std=std, train=True))
    train_t = np.asarray(pp(jnp.asarray(X32), key))
    aug = augment_batch(jnp.asarray(X32), key, "crop_flip")
    np.testing.assert_allclose(train_t, np.asarray(normalize(aug, mean, std)), rtol=1e-6, atol=1e-6)
    # Padding happened before normalisation: padded pixels map to -mean/std.
    p = sample_augment_params(key, 8, "crop_flip")
    top_padded = np.asarray(p.offsets)[:, 0] < 4
    assert top_padded.any()
    b = int(np.argmax(top_padded))
    np.testing.assert_allclose(train_t[b, 0, 0], -np.float32(mean) / np.float32(std), rtol=1e-6)
