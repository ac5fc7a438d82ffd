"""CF-k (docs/methods.md §4.10): trainable set, step-decay schedule, one-step update rule, frozen parts."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmu.methods as M
from jaxmu.engine.losses import cross_entropy, forward
from jaxmu.engine.passes import gather
from jaxmu.methods.stack import unlearn_stack, unlearning_key
from jaxmu.methods.driver import schedule_factor
from jaxmu.methods.layouts import trainable_mask
from jaxmu.methods.recipes import fk_init, fk_plan, fk_step
from jaxmu.models import build_model
from jaxmu.models.names import tree_paths


def _shapes(arch):
    model = build_model(arch, 10, (32, 32, 3))
    return jax.eval_shape(model.init, jax.random.PRNGKey(0))[0]


def _on(mask):
    return {p for p, m in zip(tree_paths(mask), jax.tree_util.tree_leaves(mask)) if m}


def test_trainable_mask_resnet18():
    params = _shapes("resnet18")
    paths = tree_paths(params)
    for k, groups in [(1, {"layer4", "fc"}), (2, {"layer3", "layer4", "fc"}),
                      (4, {"layer1", "layer2", "layer3", "layer4", "fc"}),
                      (10, {"layer1", "layer2", "layer3", "layer4", "fc"})]:
        on = _on(trainable_mask("resnet18", params, k))
        assert on == {p for p in paths if p[0] in groups}, k
    assert not any(p[0] in ("conv1", "bn1") for p in _on(trainable_mask("resnet18", params, 10)))
    with pytest.raises(M.MethodError):
        trainable_mask("resnet18", params, 0)


def test_trainable_mask_tinyvit():
    params = _shapes("tinyvit_11m")
    paths = tree_paths(params)
    on = _on(trainable_mask("tinyvit_11m", params, 1))
    assert on == {p for p in paths if p[0] in ("layers_3", "head") and p[-1] != "attention_biases"}
    assert any(p[-1] == "attention_biases" and p[0] == "layers_3" for p in paths)
    on = _on(trainable_mask("tinyvit_11m", params, 1, attention_biases="trainable"))
    assert on == {p for p in paths if p[0] in ("layers_3", "head")}
    on = _on(trainable_mask("tinyvit_11m", params, 7, attention_biases="trainable"))
    assert {p[0] for p in on} == {"layers_1", "layers_2", "layers_3", "head"}  # no stem, layers_0, norm_head


def test_step_decay_schedule_zero_based(tiny):
    (phase,) = fk_plan(tiny.ctx.with_static(M.get("cf_k").static))
    s = phase.schedule

    def epoch_lr(hp, e, E):  # what the driver sets at the start of epoch e of the plan's phase
        return hp[s.rate] * schedule_factor(s, e, E, hp)

    hp = {"learning_rate": jnp.float32(0.5), "sgda_decay_rate": jnp.float32(0.1)}
    lrs = np.array([float(epoch_lr(hp, e, 10)) for e in range(10)])
    np.testing.assert_allclose(lrs, [0.5] * 6 + [0.05] * 3 + [0.005], rtol=1e-6)
    # r = 0 keeps the initial lr while m = 0
    hp0 = {"learning_rate": jnp.float32(0.5), "sgda_decay_rate": jnp.float32(0.0)}
    assert float(epoch_lr(hp0, 5, 10)) == 0.5 and float(epoch_lr(hp0, 6, 10)) == 0.0


def test_one_update_matches_formula(tiny):
    """P' = P - lr (grad CE + lambda (P - anchor)) on T; frozen leaves and BN stats bit-identical."""
    take = lambda t: jax.tree_util.tree_map(lambda x: x[0], t)
    params, bs = take(tiny.params), take(tiny.batch_stats)
    mask = trainable_mask("cnn", params, 1)
    anchor = jax.tree_util.tree_map(lambda x: x + 0.01 * jnp.sign(x) + 0.003, params)
    hp = {"learning_rate": jnp.float32(0.3), "sgda_decay_rate": jnp.float32(0.1),
          "sgda_weight_decay": jnp.float32(0.7)}
    idx = tiny.data.retain[:50]
    state = fk_init(params, bs, hp).train
    new = jax.jit(lambda s: fk_step(tiny.ctx, tiny.data, s, idx, jax.random.PRNGKey(1), mask=mask,
                                    anchor=anchor, hp=hp))(state)
    x, y = gather(tiny.ctx, tiny.data, idx)
    g = jax.grad(lambda p: cross_entropy(forward(tiny.ctx, p, bs, x, train=False)[0], y))(params)
    for path, m, p, gg, a, q in zip(tree_paths(params), *(jax.tree_util.tree_leaves(t) for t in
                                                         (mask, params, g, anchor, new.params))):
        if m:
            np.testing.assert_allclose(q, p - 0.3 * (gg + 0.7 * (p - a)), rtol=1e-5, atol=1e-6, err_msg=str(path))
        else:
            np.testing.assert_array_equal(q, p, err_msg=str(path))
    assert {p[0] for p in _on(mask)} == {"conv2", "bn2", "head"}
    chex.assert_trees_all_equal(bs, new.batch_stats)


def test_stack_run_freezes_stem_and_bn_stats(tiny):
    m = M.get("cf_k", epochs=2, batch_size=120, learning_rate=0.05)
    assert m.static == {"epochs": 2, "batch_size": 120, "num_blocks": 1, "bn_mode": "eval",
                        "attention_biases": "frozen"}
    assert set(m.arrays) == {"learning_rate", "sgda_decay_rate", "sgda_weight_decay"}
    assert M.get("cf_k", momentum=0.5, sgda_learning_rate=0.1).hparams == M.get("cf_k").hparams  # dead
    r = unlearn_stack(m.spec, m.static, m.arrays, tiny.ctx, tiny.data, tiny.params, tiny.batch_stats,
                      unlearning_key())
    for g in ("conv1", "bn1"):
        chex.assert_trees_all_equal(tiny.params[g], r.params[g])
    for g in ("conv2", "bn2", "head"):
        assert any(np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-6 for a, b in
                   zip(jax.tree_util.tree_leaves(tiny.params[g]), jax.tree_util.tree_leaves(r.params[g])))
    chex.assert_trees_all_equal(tiny.batch_stats, r.batch_stats)
