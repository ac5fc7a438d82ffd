"""Pieces several methods share: ``engine.passes.batch_at`` (NG+'s cycled forget batches, FCS's
zipped retain batches), ``methods.ranking`` (MSG, PRMQ, RNI, SalUn) and ``methods.noise`` (RNI, CFW)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmu.engine.passes import batch_at
from jaxmu.methods.noise import add_noise
from jaxmu.methods.ranking import ranks, smallest_mask, smallest_masks, split_like


def _batches_seen(seq, batch_size, batches, js):
    """What ``fn`` receives for each j (the sum and size of its batch), or None past the end."""
    def fn(acc, idx):
        return acc.at[0].add(jnp.sum(idx)).at[1].add(idx.shape[0]).at[2].add(1)

    run = jax.jit(lambda j: batch_at(seq, j, batch_size, fn, jnp.zeros((3,), jnp.int32), batches=batches))
    out = []
    for j in js:
        s, n, calls = (int(v) for v in run(jnp.int32(j)))
        out.append(None if calls == 0 else (s, n))
    return out


@pytest.mark.parametrize("n, batches", [(10, None), (10, 5), (8, 3), (3, 2), (12, 3), (0, 2)])
def test_batch_at_cuts_like_a_loader_and_stops_past_the_end(n, batches):
    seq = jnp.arange(100, 100 + n, dtype=jnp.int32)
    B = 4
    count = batches if batches is not None else -(-n // B)
    want = []
    for j in range(count):
        part = list(range(100 + j * B, min(100 + n, 100 + (j + 1) * B)))
        want.append((sum(part), len(part)) if part else None)
    assert _batches_seen(seq, B, batches, range(count)) == want


def test_batch_at_under_vmap_equals_a_loop():
    seq = jnp.arange(10, dtype=jnp.int32)

    def f(j):
        return batch_at(seq, j, 4, lambda acc, idx: acc + jnp.sum(idx) * 10 + idx.shape[0], jnp.int32(0), batches=4)

    js = jnp.arange(4, dtype=jnp.int32)
    np.testing.assert_array_equal(jax.vmap(f)(js), [f(j) for j in js])


def test_ranks_invert_a_permutation():
    perm = jax.random.permutation(jax.random.PRNGKey(0), 7)
    r = ranks(perm)
    np.testing.assert_array_equal(np.asarray(r)[np.asarray(perm)], np.arange(7))


def test_smallest_masks_rank_across_arrays_together():
    a = jnp.array([[3.0, 0.5], [2.0, 9.0]])
    b = jnp.array([1.0, 0.1, 7.0])
    got = smallest_masks([a, b], 3 / 7)  # round(3) smallest over all 7 entries: 0.1, 0.5, 1.0
    np.testing.assert_array_equal(got[0], [[False, True], [False, False]])
    np.testing.assert_array_equal(got[1], [True, True, False])
    flat = smallest_mask(jnp.concatenate([a.ravel(), b]), 3 / 7)
    for m, piece in zip(got, split_like(flat, [a, b])):
        np.testing.assert_array_equal(m, piece)


def test_add_noise_touches_only_the_named_leaves():
    params = {"a": {"kernel": jnp.zeros((3, 4))}, "b": {"bias": jnp.ones((5,))}}
    key = jax.random.PRNGKey(3)
    new = add_noise(params, {("a", "kernel"): (jnp.float32(0.5), key)})
    np.testing.assert_array_equal(new["b"]["bias"], params["b"]["bias"])
    np.testing.assert_array_equal(new["a"]["kernel"], 0.5 * jax.random.normal(key, (3, 4)))
