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


BATCH = {"scrub": {"retain_batch_size": 64, "forget_batch_size": 64}, "rni": {"batch_size": 64,
                                                                                "fine_lr_schedule": "scalar"}}


def assert_rows_are_own_programs(mlp, ragged, methods) -> None:
    """Model i of the ragged stack equals ``methods[i]`` (a bound method) run alone on model i's
    starting point with its own program, bit for bit."""
    for i, m in enumerate(methods):
        take = lambda t, i=i: jax.tree_util.tree_map(lambda x: x[i:i + 1], t)  # noqa: E731
        own = unlearn_stack(m.spec, m.static, m.arrays, mlp.ctx, mlp.data, take(mlp.params), take(mlp.batch_stats),
                            unlearning_key(), model_axis="loop")
        chex.assert_trees_all_equal(take((ragged.params, ragged.batch_stats)), (own.params, own.batch_stats))


# cosine, step, two phases, counts in updates; SCRUB: a pass count (msteps) and a selection over
# the first E snapshots; RNI: F and R read by the update
@pytest.mark.parametrize("name", ["finetune", "cf_k", "kde", "cfw", "fcs", "scrub", "rni"])
def test_one_program_for_every_count_equals_one_program_per_count(mlp, name):
    spec = M.METHODS[name]
    extra = BATCH.get(name, {"batch_size": 64})
    base = M.get(name, **extra, **{k: 1 for k in spec.ragged})
    static, arrays = spec.ragged_split(base.spec.check_hparams(base.hparams), {k: max(COUNTS) for k in spec.ragged})
    assert all(static[k] == max(COUNTS) for k in spec.ragged)
    arrays = {**arrays, **{k: np.array(COUNTS, np.float32) for k in spec.ragged}}
    ragged = unlearn_stack(spec, static, arrays, mlp.ctx, mlp.data, mlp.params, mlp.batch_stats, unlearning_key(),
                           model_axis="loop")
    own = [M.get(name, **extra, **{k: n for k in spec.ragged}) for n in COUNTS]
    assert_rows_are_own_programs(mlp, ragged, own)


def test_ragged_split_moves_only_declared_searched_counts():
    spec = M.METHODS["kde"]
    hp = spec.check_hparams({"epochs": 2, "retain_epochs": 1})
    static, arrays = spec.ragged_split(hp, {"epochs": 4, "retain_epochs": 4})
    assert (static["epochs"], static["retain_epochs"], arrays["epochs"], arrays["retain_epochs"]) == (4, 4, 2.0, 1.0)
    assert spec.ragged_split(hp, {}) == spec.split_hparams(hp)  # nothing searched: nothing moves
    with pytest.raises(M.MethodError, match="exceeds the compiled maximum"):
        spec.ragged_split(hp, {"epochs": 1})
    assert M.METHODS["scrub"].ragged == {"epochs", "msteps"} and M.METHODS["rni"].ragged == {
        "epochs", "fine_epochs", "reset_epochs"}


def test_prmq_float_epochs_are_one_program_of_host_computed_step_budgets(mlp):
    """PRMQ's searched ``num_epochs`` is a float: ragged, it becomes each model's step budget
    S = int(L * E) + 1 computed on the host in float64 (``ragged_value``). The third E sits just
    below an integer multiple of 1/L: in float32, L * E rounds up to that integer (one step more)."""
    spec = M.METHODS["prmq"]
    size = lambda stream: int(mlp.data.retain.shape[0])  # noqa: E731  (only D_r is asked for)
    L = -(-size("retain") // 64)
    edge = (L + 3) / L - 1e-9
    assert int(L * edge) != int(np.float32(L) * np.float32(edge))  # the case float32 gets wrong
    counts = (0.5, 1.37, edge)
    base = spec.check_hparams({"batch_size": 64, "epochs": 1.0})
    rows = [spec.ragged_split({**base, "epochs": e}, {"epochs": 2.0}, size) for e in counts]
    assert [r[1]["epochs"] for r in rows] == [float(int(L * e) + 1) for e in counts]
    static = rows[0][0]
    assert static["epochs"] == 2.0
    arrays = {k: np.array([r[1][k] for r in rows], np.float32) for k in rows[0][1]}
    ragged = unlearn_stack(spec, static, arrays, mlp.ctx, mlp.data, mlp.params, mlp.batch_stats, unlearning_key(),
                           model_axis="loop")
    for i, e in enumerate(counts):
        m = M.get("prmq", batch_size=64, epochs=e)
        take = lambda t, i=i: jax.tree_util.tree_map(lambda x: x[i:i + 1], t)  # noqa: E731
        own = unlearn_stack(spec, m.static, m.arrays, mlp.ctx, mlp.data, take(mlp.params), take(mlp.batch_stats),
                            unlearning_key(), model_axis="loop")
        chex.assert_trees_all_equal(take((ragged.params, ragged.batch_stats)), (own.params, own.batch_stats))


def test_a_step_budget_phase_must_be_well_formed(mlp):
    """``Phase.steps`` needs one whole-stream pass and ceil(S / L) epochs."""
    from jaxmu.methods.driver import step_budget, with_stream_sizes
    from jaxmu.methods.plan import Pass, Phase

    ctx = with_stream_sizes(mlp.ctx, mlp.data)
    L = -(-ctx.size("retain") // 64)
    one = Pass("step", "retain", 64)
    with pytest.raises(ValueError, match="need 2 epochs, not 3"):
        step_budget(Phase("p", 3, passes=(one,), steps=L + 1), {}, ctx)
    with pytest.raises(ValueError, match="exactly one whole-stream pass"):
        step_budget(Phase("p", 2, passes=(one, one), steps=L + 1), {}, ctx)
    phase, gate = step_budget(Phase("p", 2, passes=(one,), steps=L + 1), {}, ctx)
    assert gate is None and [(p.epochs, p.steps) for p in phase.passes] == [((0, 1), None), ((1, 2), 1)]


@pytest.mark.parametrize("name,rows", [
    ("rni", [{"epochs": 3, "fine_epochs": 1, "reset_epochs": 1}, {"epochs": 3, "fine_epochs": 2, "reset_epochs": 2},
             {"epochs": 2, "fine_epochs": 1, "reset_epochs": 0}]),  # partial epochs, noise from epoch R
    ("scrub", [{"epochs": 3, "msteps": 1}, {"epochs": 2, "msteps": 2}, {"epochs": 3, "msteps": 0}]),
])
def test_mixed_counts_equal_their_own_programs(mlp, name, rows):
    """Counts that differ independently per model (RNI's E, F, R; SCRUB's E and msteps) in one
    program compiled for their maxima equal each model's own program, bit for bit."""
    spec = M.METHODS[name]
    maxima = {k: max(r[k] for r in rows) for k in spec.ragged}
    split = [spec.ragged_split(spec.check_hparams({**BATCH[name], **r}), maxima) for r in rows]
    arrays = {k: np.array([s[1][k] for s in split], np.float32) for k in split[0][1]}
    ragged = unlearn_stack(spec, split[0][0], arrays, mlp.ctx, mlp.data, mlp.params, mlp.batch_stats,
                           unlearning_key(), model_axis="loop")
    assert_rows_are_own_programs(mlp, ragged, [M.get(name, **BATCH[name], **r) for r in rows])
