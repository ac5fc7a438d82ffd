"""Ragged epochs (docs/methods.md §6.2, issue 13): one program compiled for E_max epochs, each model
stopping at its own count, equals programs compiled for each count — bit for bit in a loop over
models (a real ``lax.cond``), and the tuner's split of hyperparameters that makes it happen."""

from __future__ import annotations

import chex
import jax
import numpy as np
import pytest

import jaxmu.methods as M
from jaxmu.methods.stack import unlearn_stack, unlearning_key

COUNTS = (1, 2, 3)


@pytest.fixture(scope="module")
def mlp(digits, digits_splits):
    from jaxmu.testing import TinySetting

    return TinySetting(digits, digits_splits, arch="mlp", num_models=len(COUNTS))


@pytest.mark.parametrize("name", ["finetune", "cf_k", "kde", "cfw", "fcs"])  # cosine, step, two phases, counts in updates
def test_one_program_for_every_count_equals_one_program_per_count(mlp, name):
    spec = M.METHODS[name]
    base = M.get(name, batch_size=64, **{k: 1 for k in spec.ragged})
    static, arrays = spec.ragged_split(base.spec.check_hparams(base.hparams), {k: max(COUNTS) for k in spec.ragged})
    assert all(static[k] == max(COUNTS) for k in spec.ragged)
    arrays = {**arrays, **{k: np.array(COUNTS, np.float32) for k in spec.ragged}}
    ragged = unlearn_stack(spec, static, arrays, mlp.ctx, mlp.data, mlp.params, mlp.batch_stats, unlearning_key(),
                           model_axis="loop")
    for i, n in enumerate(COUNTS):
        m = M.get(name, batch_size=64, **{k: n for k in spec.ragged})
        take = lambda t, i=i: jax.tree_util.tree_map(lambda x: x[i:i + 1], t)  # noqa: E731
        own = unlearn_stack(spec, m.static, m.arrays, mlp.ctx, mlp.data, take(mlp.params), take(mlp.batch_stats),
                            unlearning_key(), model_axis="loop")
        chex.assert_trees_all_equal(take((ragged.params, ragged.batch_stats)), (own.params, own.batch_stats))


def test_ragged_split_moves_only_declared_searched_counts():
    spec = M.METHODS["kde"]
    hp = spec.check_hparams({"epochs": 2, "retain_epochs": 1})
    static, arrays = spec.ragged_split(hp, {"epochs": 4, "retain_epochs": 4})
    assert (static["epochs"], static["retain_epochs"], arrays["epochs"], arrays["retain_epochs"]) == (4, 4, 2.0, 1.0)
    assert spec.ragged_split(hp, {}) == spec.split_hparams(hp)  # nothing searched: nothing moves
    with pytest.raises(M.MethodError, match="exceeds the compiled maximum"):
        spec.ragged_split(hp, {"epochs": 1})
    assert not M.METHODS["scrub"].ragged  # epochs also set SCRUB's max-step window: stays static
