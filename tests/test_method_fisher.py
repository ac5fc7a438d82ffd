"""FF (docs/methods.md §4.8): the accumulator against a brute-force class loop, the per-tensor
variance rules against a PyTorch-layout numpy transcription, the noise draw, and the driver."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmu.methods as M
from jaxmu.methods import fisher
from jaxmu.methods.stack import unlearn_stack, unlearning_key
from jaxmu.engine.losses import cross_entropy, forward
from jaxmu.engine.passes import gather, pass_batches
from jaxmu.methods import driver
from jaxmu.models.names import from_reference_layout, to_reference_layout, tree_paths

B = 100  # 240 retain examples -> batches 100, 100, 40 (partial kept)


def _one(tree, i):
    return jax.tree_util.tree_map(lambda x: x[i], tree)


@pytest.fixture(scope="module")
def brute_S(tiny):
    """S by an explicit loop over batches and classes with jax.grad (model 1 of the stack)."""
    params, bs = _one(tiny.params, 1), _one(tiny.batch_stats, 1)
    C = tiny.ctx.num_classes

    @jax.jit
    def g_and_p(p, x, c):
        def loss(q):
            logits = forward(tiny.ctx, q, bs, x, train=False)[0]
            return cross_entropy(logits, jnp.full((x.shape[0],), c, jnp.int32))
        logits = forward(tiny.ctx, p, bs, x, train=False)[0]
        return jax.grad(loss)(p), jnp.mean(jax.nn.softmax(logits, -1)[:, c])

    S = jax.tree_util.tree_map(lambda x: np.zeros(x.shape, np.float64), params)
    retain = np.asarray(tiny.data.retain)
    starts = list(range(0, len(retain), B))
    for s in starts:
        x, _ = gather(tiny.ctx, tiny.data, jnp.asarray(retain[s:s + B]))
        for c in range(C):
            g, pb = g_and_p(params, x, c)
            S = jax.tree_util.tree_map(lambda a, t, w=float(pb): a + w * np.asarray(t, np.float64) ** 2, S, g)
    return jax.tree_util.tree_map(lambda a: a / len(starts), S)


def _accumulate(tiny, params, bs):
    """S of step 1: FF's plan (its accumulation pass) through the driver, divided by K."""
    ctx = tiny.ctx.with_static({"batch_size": B})
    state = fisher.init(params, bs, {}, None, ctx, tiny.data)
    for phase in fisher.plan(ctx):
        state = driver.run_phase(fisher.SPEC, phase, state, {}, jax.random.PRNGKey(0), ctx, tiny.data)
    k = pass_batches(tiny.data.retain.shape[0], B)
    return jax.tree_util.tree_map(lambda s: s / k, state.S)


def test_accumulate_matches_brute_force(tiny, brute_S):
    params, bs = _one(tiny.params, 1), _one(tiny.batch_stats, 1)
    S = jax.jit(lambda p, b: _accumulate(tiny, p, b))(params, bs)
    for a, b in zip(jax.tree_util.tree_leaves(S), jax.tree_util.tree_leaves(brute_S)):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6 * float(np.max(b)))


def _ref_var(p, s, C, alpha):
    """Reference ``get_mean_var`` on PyTorch-layout numpy arrays."""
    var = 1.0 / (s + 1e-8)
    var = np.minimum(var, 1e3)
    if p.shape[0] == C:
        var = np.minimum(var, 1e2)
    var = alpha * var
    if p.ndim > 1:
        var = np.broadcast_to(var.mean(axis=1, keepdims=True), p.shape).copy()
    if p.shape[0] == C:  # noqa: SIM114 (transcribed as written)
        var *= 10
    elif p.ndim == 1:
        var *= 10
    return var


def _synthetic(C=10):
    k = jax.random.PRNGKey(1)
    shapes = {"conv1": {"kernel": (3, 3, 2, 4)}, "bn1": {"scale": (4,), "bias": (4,)},
              "conv2": {"kernel": (3, 3, 4, 6)}, "head": {"kernel": (24, C), "bias": (C,)}}
    leaves, treedef = jax.tree_util.tree_flatten(shapes, is_leaf=lambda x: isinstance(x, tuple))
    p = [jax.random.normal(jax.random.fold_in(k, i), s) for i, s in enumerate(leaves)]
    # S spans 1e-6..1e2 so both clamps (1e3 and 1e2 on 1/S) are exercised
    s = [jnp.exp(jax.random.uniform(jax.random.fold_in(k, 100 + i), sh, minval=-14.0, maxval=4.0))
         for i, sh in enumerate(leaves)]
    return jax.tree_util.tree_unflatten(treedef, p), jax.tree_util.tree_unflatten(treedef, s)


def test_variance_rules_match_reference_layout():
    C, alpha = 10, 0.37
    p, s = _synthetic(C)
    v = fisher.noise_variance("cnn", C, p, s, alpha)
    for path, pl, sl, vl in zip(tree_paths(p), jax.tree_util.tree_leaves(p), jax.tree_util.tree_leaves(s),
                                jax.tree_util.tree_leaves(v)):
        ref = _ref_var(to_reference_layout(path, pl), to_reference_layout(path, np.asarray(sl, np.float64)), C, alpha)
        np.testing.assert_allclose(vl, from_reference_layout(path, ref), rtol=1e-5, err_msg=str(path))
    # the clamps were hit: head <= 10 * alpha * 1e2, others <= alpha * 1e3 (x10 for 1-D)
    assert float(jnp.max(v["head"]["kernel"])) <= 10 * alpha * 1e2 * (1 + 1e-6)
    assert float(jnp.max(v["conv1"]["kernel"])) <= alpha * 1e3 * (1 + 1e-6)
    # conv variance is constant along the input-channel axis (HWIO axis 2)
    np.testing.assert_allclose(v["conv2"]["kernel"], v["conv2"]["kernel"][:, :, :1, :].repeat(4, 2), rtol=1e-6)


def test_perturbation_is_sqrt_var_times_standard_normal():
    C, alpha = 10, 0.2
    p, s = _synthetic(C)
    p["conv2"]["kernel"] = jnp.zeros((3, 3, 64, 64))  # a large tensor for the empirical check
    s["conv2"]["kernel"] = jnp.full((3, 3, 64, 64), 0.5)
    key = jax.random.PRNGKey(7)
    out = fisher.perturb("cnn", C, p, s, alpha, key)
    v = fisher.noise_variance("cnn", C, p, s, alpha)
    for i, (p0, p1, vl) in enumerate(zip(*(jax.tree_util.tree_leaves(t) for t in (p, out, v)))):
        eps = (np.asarray(p1) - np.asarray(p0)) / np.sqrt(np.asarray(vl))
        np.testing.assert_allclose(eps, jax.random.normal(jax.random.fold_in(key, i), p0.shape), rtol=1e-4, atol=1e-4)
    d = np.asarray(out["conv2"]["kernel"]).ravel()
    expected = alpha / (0.5 + 1e-8)  # 4-D, not class-shaped: no x10
    assert abs(d.var() / expected - 1) < 0.03
    assert abs(d.mean()) < 0.03 * np.sqrt(expected)
    # alpha = 0 leaves every tensor unchanged
    same = fisher.perturb("cnn", C, p, s, 0.0, key)
    jax.tree_util.tree_map(np.testing.assert_array_equal, same, p)


def test_class_shaped_rule_refuses_other_matches():
    p = {"conv1": {"kernel": jnp.zeros((3, 3, 1, 10))}, "head": {"kernel": jnp.zeros((4, 10)),
                                                               "bias": jnp.zeros(10)}}
    with pytest.raises(M.MethodError, match="class-shaped"):
        fisher.noise_variance("cnn", 10, p, p, 0.2)


def test_driver_per_model_alpha(tiny, brute_S):
    m = M.get("fisher", batch_size=B)
    key = unlearning_key()
    r = unlearn_stack(m.spec, m.static, {"alpha": np.array([0.0, 0.2], np.float32)}, tiny.ctx, tiny.data,
                      tiny.params, tiny.batch_stats, key)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_array_equal(a[0], b[0]), r.params, tiny.params)
    jax.tree_util.tree_map(np.testing.assert_array_equal, r.batch_stats, tiny.batch_stats)  # eval mode
    p1 = _one(tiny.params, 1)
    S = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), brute_S)
    expected = fisher.perturb("cnn", 10, p1, S, jnp.float32(0.2), key)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a[1], b, rtol=1e-3, atol=1e-4), r.params, expected)
    assert not np.allclose(r.params["head"]["kernel"][1], p1["head"]["kernel"])
