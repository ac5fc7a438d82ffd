"""ResNet-18 and TinyViT-11M (``docs/protocol.md`` §3.1-3.2) and the reference-name table
(``docs/methods.md`` §2.7).

Cost control (2 CPU cores): parameter counts, shapes and name tables come from
``jax.eval_shape`` (no compilation); one jitted eval program (im2col), one eval program (xla) and
one train program per architecture, on batches of 2 images of 32x32, are shared through
module-scoped fixtures. The full-size ResNet-18 is initialised once; TinyViT's initialisation is
checked on a reduced configuration built from the same units.

Oracles: the golden logits below were computed by the PyTorch reference implementations
(torchvision 0.29 ``resnet18``; a transcription of ``thirdparty/tiny_vit.py`` with timm stubbed,
checked at 32x32 and 224x224, eval and train mode, to <= 1.5e-6) on parameters drawn by
``reference_state`` below.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmu.models import build_model, names
from jaxmu.models.base import Model
from jaxmu.models.layers import conv2d
from jaxmu.models.resnet import RESNET18_BLOCK_NAMES, build_resnet18
from jaxmu.models.tinyvit import (
    TINYVIT_BLOCK_NAMES,
    DropPath,
    TinyViT,
    attention_bias_index,
    build_tinyvit_11m,
    depthwise_conv2d,
    window_partition,
    window_reverse,
)

SHAPE = (32, 32, 3)
KEY = jax.random.PRNGKey(0)
# The init-distribution tests draw with the "rbg" bit generator: the initialisers are the same,
# and XLA:CPU compiles it ~2x faster than threefry (compilation dominates these tests).
INIT_KEY = jax.random.key(0, impl="rbg")


# --------------------------------------------------------------------------- helpers


def abstract_init(model: Model):
    """``(params, batch_stats)`` as ShapeDtypeStructs, without compiling anything."""
    return jax.eval_shape(model.init, KEY)


def count(tree) -> int:
    return sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(tree))


def reference_state(arch: str, model: Model, seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic non-trivial parameters in reference names and PyTorch layout.

    Entries in sorted-name order: running_var U(0.5, 1.5); running_mean, biases, attention
    biases N(0, 0.1^2); other 1-D weights (BN/LN scales) U(0.5, 1.5); weights N(0, 1/fan_in)
    with fan_in = prod(torch_shape[1:]).
    """
    params, stats = abstract_init(model)
    shapes = {}
    for tree in (params, stats):
        for path, leaf in zip(names.tree_paths(tree), jax.tree_util.tree_leaves(tree)):
            ref_shape = names.to_reference_layout(path, np.zeros(leaf.shape, np.float32)).shape
            shapes[names.reference_name(arch, path)] = ref_shape
    rng = np.random.default_rng(seed)
    state = {}
    for name in sorted(shapes):
        shp = shapes[name]
        if name.endswith("running_var"):
            v = rng.uniform(0.5, 1.5, shp)
        elif name.endswith(("running_mean", "bias", "attention_biases")):
            v = rng.normal(0.0, 0.1, shp)
        elif len(shp) == 1:
            v = rng.uniform(0.5, 1.5, shp)
        else:
            v = rng.normal(0.0, 1.0 / math.sqrt(math.prod(shp[1:])), shp)
        state[name] = v.astype(np.float32)
    return state


def reference_input(seed: int = 1) -> np.ndarray:
    """Two NCHW 3x32x32 images (the reference layout); transpose to NHWC for jaxmu."""
    return np.random.default_rng(seed).normal(size=(2, 3, 32, 32)).astype(np.float32)


def loaded(arch: str, model: Model):
    params, stats = abstract_init(model)
    return names.import_reference_state(arch, params, stats, reference_state(arch, model))


# Eval-mode logits of the PyTorch references on reference_state(...) / reference_input().
GOLDEN_RESNET18 = np.array([
    [0.3013490, 0.2829115, 0.8205913, -0.6704226, -0.1329115,
     -0.4829361, 1.8807333, -1.4951982, 1.3638043, 4.2085705],
    [1.0402353, -0.1359492, 0.7226311, -1.0093298, -0.2511098,
     -1.4739816, 1.9083124, -1.4255672, 1.7503161, 4.1656742],
], np.float32)
GOLDEN_TINYVIT = np.array([
    [0.2832306, -1.3291987, 1.8154005, 0.4923892, -0.4696865,
     0.0891300, 0.4723119, -2.0887625, -0.6563523, -1.1838460],
    [-0.1047904, -0.8502997, 1.5226740, 0.3987049, -0.4623975,
     -0.4887192, 0.6293589, -2.1821759, -0.3777755, -1.0098696],
], np.float32)


def jit_float32(fn):
    """``jax.jit(fn)`` traced with full float32 matmul/conv precision (no TF32 on GPUs)."""

    def traced(*args):
        with jax.default_matmul_precision("highest"):
            return fn(*args)

    return jax.jit(traced)


class Compiled:
    """An architecture's models (im2col, xla) and their jitted eval/train programs."""

    def __init__(self, build, arch: str):
        self.arch = arch
        self.model = build(10, SHAPE, "im2col", "imagenet")
        self.model_xla = build(10, SHAPE, "xla", "imagenet")
        m, mx = self.model, self.model_xla
        self.eval = jit_float32(lambda p, s, x: m.apply(p, s, x, train=False)[0])
        self.eval_xla = jit_float32(lambda p, s, x: mx.apply(p, s, x, train=False)[0])
        self.train = jit_float32(lambda p, s, x, k: m.apply(p, s, x, train=True, key=k))
        self.params, self.stats = loaded(arch, self.model)
        self.x = jnp.asarray(reference_input().transpose(0, 2, 3, 1))


@pytest.fixture(scope="module")
def resnet() -> Compiled:
    return Compiled(build_resnet18, "resnet18")


@pytest.fixture(scope="module")
def tinyvit() -> Compiled:
    return Compiled(build_tinyvit_11m, "tinyvit_11m")


# --------------------------------------------------------------------------- ResNet-18


@pytest.mark.parametrize("classes,expected", [(5, 11_179_077), (10, 11_181_642), (100, 11_227_812)])
def test_resnet18_parameter_count(classes, expected):
    params, _ = abstract_init(build_resnet18(classes, SHAPE, "im2col"))
    assert count(params) == expected
    assert set(params) == set(RESNET18_BLOCK_NAMES)
    assert len(jax.tree_util.tree_leaves(params)) == 62


def test_resnet18_cifar_stem_count_and_registry():
    m = build_model("resnet18", 10, SHAPE, stem="cifar")
    assert m.name == "resnet18" and m.block_names == RESNET18_BLOCK_NAMES
    params, _ = abstract_init(m)
    assert params["conv1"]["kernel"].shape == (3, 3, 3, 64)
    assert count(params) == 11_181_642 - 7 * 7 * 3 * 64 + 3 * 3 * 3 * 64
    with pytest.raises(ValueError):
        build_resnet18(10, SHAPE, "im2col", "other")


@pytest.mark.parametrize("stem,sizes", [
    ("imagenet", {"conv1": 16, "bn1": 16, "layer1": 8, "layer2": 4, "layer3": 2, "layer4": 1}),
    ("cifar", {"conv1": 32, "bn1": 32, "layer1": 32, "layer2": 16, "layer3": 8, "layer4": 4}),
])
def test_resnet18_spatial_sizes(stem, sizes):
    m = build_resnet18(10, SHAPE, "im2col", stem)
    params, stats = abstract_init(m)
    x = jnp.zeros((2, *SHAPE))

    def run(p, s):
        return m.module.apply({"params": p, "batch_stats": s}, x, train=False,
                              capture_intermediates=True, mutable=["intermediates"])

    logits, inter = jax.eval_shape(run, params, stats)
    assert logits.shape == (2, 10)
    inter = inter["intermediates"]
    for name, size in sizes.items():
        shape = inter[name]["__call__"][0].shape
        assert shape[1:3] == (size, size), (name, shape)
    assert inter["layer4"]["__call__"][0].shape[-1] == 512


def test_resnet18_init_distributions():
    m = build_resnet18(10, SHAPE, "im2col")
    params, stats = jax.jit(m.init)(INIT_KEY)
    # BatchNorm: scale 1, bias 0, running mean 0, running variance 1 (no zero-init residual).
    for path, leaf in zip(names.tree_paths(params), jax.tree_util.tree_leaves(params)):
        leaf = np.asarray(leaf)
        if "bn" in path[-2]:
            assert np.all(leaf == (1.0 if path[-1] == "scale" else 0.0)), path
    for path, leaf in zip(names.tree_paths(stats), jax.tree_util.tree_leaves(stats)):
        assert np.all(np.asarray(leaf) == (0.0 if path[-1] == "mean" else 1.0)), path
    # Convs: kaiming normal, fan_out = O * kh * kw.
    for path in (("conv1",), ("layer4", "1", "conv2"), ("layer3", "0", "downsample_conv")):
        k = np.asarray(params[path[0]]["kernel"] if len(path) == 1 else
                       params[path[0]][path[1]][path[2]]["kernel"])
        std = math.sqrt(2.0 / (k.shape[0] * k.shape[1] * k.shape[3]))
        assert abs(k.mean()) < 0.05 * std and abs(k.std() / std - 1) < 0.05, (path, k.std(), std)
    # fc: PyTorch default U(+-1/sqrt(512)) for weight and bias.
    bound = 1 / math.sqrt(512)
    w, b = np.asarray(params["fc"]["kernel"]), np.asarray(params["fc"]["bias"])
    assert w.shape == (512, 10) and np.abs(w).max() <= bound and np.abs(b).max() <= bound
    assert abs(w.std() - bound / math.sqrt(3)) < 0.1 * bound
    assert np.abs(b).max() > 0


def test_resnet18_eval_matches_reference_and_impls(resnet):
    y = np.asarray(resnet.eval(resnet.params, resnet.stats, resnet.x))
    assert y.shape == (2, 10) and np.all(np.isfinite(y))
    np.testing.assert_allclose(y, GOLDEN_RESNET18, atol=1e-4, rtol=1e-4)
    y_xla = np.asarray(resnet.eval_xla(resnet.params, resnet.stats, resnet.x))
    np.testing.assert_allclose(y_xla, y, atol=1e-4, rtol=0)


def test_resnet18_train_forward_updates_batch_stats(resnet):
    logits, new = resnet.train(resnet.params, resnet.stats, resnet.x, KEY)
    assert logits.shape == (2, 10) and np.all(np.isfinite(np.asarray(logits)))
    assert jax.tree_util.tree_structure(new) == jax.tree_util.tree_structure(resnet.stats)
    for path, old, upd in zip(names.tree_paths(new), jax.tree_util.tree_leaves(resnet.stats),
                              jax.tree_util.tree_leaves(new)):
        assert not np.allclose(np.asarray(old), np.asarray(upd)), path
    # bn1 sees the stem conv output: running mean <- 0.9 mean + 0.1 batch mean (PyTorch).
    conv = conv2d(resnet.x, resnet.params["conv1"]["kernel"], stride=2, padding=3, impl="xla")
    old = np.asarray(resnet.stats["bn1"]["mean"])
    expected = 0.9 * old + 0.1 * np.asarray(conv).mean((0, 1, 2))
    np.testing.assert_allclose(np.asarray(new["bn1"]["mean"]), expected, rtol=1e-4, atol=1e-5)


def test_resnet18_matches_torchvision_if_available(resnet):
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    ref = torchvision.models.resnet18(num_classes=10)
    state = {k: v.numpy() for k, v in ref.state_dict().items()}
    params, stats = names.import_reference_state("resnet18", resnet.params, resnet.stats, state)
    y = np.asarray(resnet.eval(params, stats, resnet.x))
    ref.eval()
    with torch.no_grad():
        y_ref = ref(torch.from_numpy(reference_input())).numpy()
    np.testing.assert_allclose(y, y_ref, atol=1e-4, rtol=1e-4)
    # Same names both ways.
    exported = names.export_reference_state("resnet18", params, stats)
    assert set(exported) == {k for k in state if not k.endswith("num_batches_tracked")}


# --------------------------------------------------------------------------- TinyViT-11M


@pytest.mark.parametrize("classes,expected", [
    (2, 10_548_870), (5, 10_550_217), (10, 10_552_462), (100, 10_592_872),
])
def test_tinyvit_parameter_count(classes, expected):
    """Counts of the reference TinyViT-11M (``tiny_vit.py``) at img_size 32 (and 224)."""
    params, stats = abstract_init(build_tinyvit_11m(classes, SHAPE, "im2col"))
    assert count(params) == expected
    assert set(params) == set(TINYVIT_BLOCK_NAMES)
    assert len(jax.tree_util.tree_leaves(params)) == 215
    assert len(jax.tree_util.tree_leaves(stats)) == 54  # 27 Conv2d_BN units x (mean, var)
    if classes == 10:
        big, _ = abstract_init(build_tinyvit_11m(classes, (224, 224, 3), "im2col"))
        assert count(big) == expected


def test_tinyvit_builder_validation():
    m = build_model("tinyvit_11m", 10, SHAPE)
    assert m.name == "tinyvit_11m" and m.block_names == TINYVIT_BLOCK_NAMES
    with pytest.raises(ValueError):
        build_tinyvit_11m(10, SHAPE, "im2col", "cifar")
    with pytest.raises(ValueError):
        build_tinyvit_11m(10, (28, 28, 1), "im2col")


def test_tinyvit_stage_shapes():
    m = build_tinyvit_11m(10, SHAPE, "im2col")
    params, stats = abstract_init(m)

    def run(p, s):
        return m.module.apply({"params": p, "batch_stats": s}, jnp.zeros((2, *SHAPE)),
                              train=False, capture_intermediates=True, mutable=["intermediates"])

    logits, inter = jax.eval_shape(run, params, stats)
    inter = inter["intermediates"]
    assert logits.shape == (2, 10)
    expected = {"patch_embed": (8, 64), "layers_0": (4, 128), "layers_1": (2, 256),
                "layers_2": (1, 448), "layers_3": (1, 448)}
    for name, (size, ch) in expected.items():
        assert inter[name]["__call__"][0].shape == (2, size, size, ch), name
    # Attention biases: one per (|dy|, |dx|) offset of the stage's window.
    for i, (heads, ws) in enumerate(zip((4, 8, 14), (7, 14, 7)), start=1):
        ab = params[f"layers_{i}"]["blocks_0"]["attn"]["attention_biases"]
        assert ab.shape == (heads, ws * ws)


def test_tinyvit_init_distributions():
    """Init rules on a reduced configuration built from the same units (fast to compile)."""
    module = TinyViT(10, embed_dims=(16, 32, 64, 56), depths=(1, 1, 1, 1), num_heads=(2, 4, 8, 14))
    m = Model("tinyvit_small", module, SHAPE, 10, TINYVIT_BLOCK_NAMES)
    params, stats = jax.jit(m.init)(INIT_KEY)
    assert set(params) == set(TINYVIT_BLOCK_NAMES)
    seen = {"bn0": 0, "bn1": 0, "ln": 0, "linear": 0, "conv": 0, "ab": 0}
    for path, leaf in zip(names.tree_paths(params), jax.tree_util.tree_leaves(params)):
        leaf = np.asarray(leaf)
        if path[-2] == "bn":  # Conv2d_BN: bn_weight_init 0 only for MBConv conv3
            zero = path[0] == "layers_0" and path[1].startswith("blocks") and path[2] == "conv3"
            want = 0.0 if (path[-1] == "bias" or zero) else 1.0
            assert np.all(leaf == want), path
            seen["bn0" if zero else "bn1"] += 1
        elif path[-2] in ("norm", "norm_head"):  # LayerNorm 1 / 0
            assert np.all(leaf == (1.0 if path[-1] == "scale" else 0.0)), path
            seen["ln"] += 1
        elif path[-1] == "attention_biases":
            assert np.all(leaf == 0.0), path
            seen["ab"] += 1
        elif leaf.ndim == 4:  # conv: PyTorch default U(+-1/sqrt(fan_in)), groups respected
            bound = 1 / math.sqrt(leaf.shape[0] * leaf.shape[1] * leaf.shape[2])
            assert np.abs(leaf).max() <= bound and np.abs(leaf).max() > 0.8 * bound, path
            seen["conv"] += 1
        else:  # Linear: trunc-normal(std .02) weight, zero bias
            if path[-1] == "bias":
                assert np.all(leaf == 0.0), path
            else:
                assert leaf.ndim == 2 and abs(leaf.std() / 0.02 - 1) < 0.15, (path, leaf.std())
            seen["linear"] += 1
    assert all(v > 0 for v in seen.values()), seen
    depthwise = params["layers_1"]["blocks_0"]["local_conv"]["c"]["kernel"]
    assert depthwise.shape == (3, 3, 1, 32)
    for path, leaf in zip(names.tree_paths(stats), jax.tree_util.tree_leaves(stats)):
        assert np.all(np.asarray(leaf) == (0.0 if path[-1] == "mean" else 1.0)), path


def test_tinyvit_eval_matches_reference_and_impls(tinyvit):
    y = np.asarray(tinyvit.eval(tinyvit.params, tinyvit.stats, tinyvit.x))
    assert y.shape == (2, 10) and np.all(np.isfinite(y))
    np.testing.assert_allclose(y, GOLDEN_TINYVIT, atol=1e-4, rtol=1e-4)
    y_xla = np.asarray(tinyvit.eval_xla(tinyvit.params, tinyvit.stats, tinyvit.x))
    np.testing.assert_allclose(y_xla, y, atol=1e-4, rtol=0)


def test_tinyvit_train_forward(tinyvit):
    p, s, x = tinyvit.params, tinyvit.stats, tinyvit.x
    k1, k2 = jax.random.split(KEY)
    y1, new = tinyvit.train(p, s, x, k1)
    y1b, _ = tinyvit.train(p, s, x, k1)
    y2, _ = tinyvit.train(p, s, x, k2)
    assert y1.shape == (2, 10) and np.all(np.isfinite(np.asarray(y1)))
    np.testing.assert_array_equal(np.asarray(y1), np.asarray(y1b))  # same key, same drop-path
    assert not np.allclose(np.asarray(y1), np.asarray(y2))  # drop-path is active in train mode
    assert jax.tree_util.tree_structure(new) == jax.tree_util.tree_structure(s)
    for path, old, upd in zip(names.tree_paths(new), jax.tree_util.tree_leaves(s),
                              jax.tree_util.tree_leaves(new)):
        assert not np.allclose(np.asarray(old), np.asarray(upd)), path


def test_drop_path_semantics():
    x = jnp.ones((4000, 3))
    layer = DropPath(0.25)
    y = np.asarray(layer.apply({}, x, train=True, rngs={"dropout": KEY}))
    rows = y[:, 0]
    assert np.all(y == rows[:, None])  # one draw per sample
    assert set(np.unique(rows)) <= {0.0, np.float32(1 / 0.75)}
    assert abs((rows == 0).mean() - 0.25) < 0.03
    np.testing.assert_array_equal(np.asarray(layer.apply({}, x, train=False)), np.asarray(x))
    np.testing.assert_array_equal(
        np.asarray(DropPath(0.0).apply({}, x, train=True)), np.asarray(x))
    with pytest.raises(ValueError, match="dropout"):  # train mode without a key
        layer.apply({}, x, train=True)


def test_attention_bias_index_matches_reference_rule():
    for ws in (7, 14):
        idx = attention_bias_index(ws)
        assert idx.shape == (ws * ws, ws * ws) and idx.max() + 1 == ws * ws
        yy, xx = np.divmod(np.arange(ws * ws), ws)
        # Offsets are first met in row-major order from position (0, 0): index = |dy|*ws + |dx|.
        expected = np.abs(yy[:, None] - yy[None]) * ws + np.abs(xx[:, None] - xx[None])
        np.testing.assert_array_equal(idx, expected)


def test_window_partition_pads_and_roundtrips():
    x = jnp.arange(2 * 4 * 4 * 3, dtype=jnp.float32).reshape(2, 4, 4, 3) + 1
    win, padded = window_partition(x, 7)
    assert win.shape == (2, 49, 3) and padded == (7, 7)
    # Zero padding at the bottom/right: real tokens are row-major positions (r, c), r, c < 4.
    grid = np.asarray(win).reshape(2, 7, 7, 3)
    np.testing.assert_array_equal(grid[:, :4, :4], np.asarray(x))
    assert np.all(grid[:, 4:] == 0) and np.all(grid[:, :, 4:] == 0)
    np.testing.assert_array_equal(np.asarray(window_reverse(win, 7, padded, (4, 4))), np.asarray(x))
    y = jax.random.normal(KEY, (1, 14, 21, 2))
    win, padded = window_partition(y, 7)
    assert win.shape == (6, 49, 2)
    np.testing.assert_array_equal(np.asarray(win[1]).reshape(7, 7, 2), np.asarray(y[0, :7, 7:14]))
    back = window_reverse(win, 7, padded, (14, 21))
    np.testing.assert_array_equal(np.asarray(back), np.asarray(y))


@pytest.mark.parametrize("stride,padding,size", [(1, 1, 6), (2, 1, 7), (2, 1, 2)])
def test_depthwise_conv_impls_agree(stride, padding, size):
    rng = np.random.default_rng(size)
    xn = rng.normal(size=(2, size, size, 5)).astype(np.float32)
    kn = rng.normal(size=(3, 3, 1, 5)).astype(np.float32)

    @jax.jit
    def both(x, k):
        return (depthwise_conv2d(x, k, stride=stride, padding=padding, impl="im2col"),
                depthwise_conv2d(x, k, stride=stride, padding=padding, impl="xla"))

    a, b = both(xn, kn)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
    # Channel c only sees channel c.
    xp = np.pad(xn, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    out = np.asarray(a)
    i, j = out.shape[1] - 1, out.shape[2] - 1
    patch = xp[:, i * stride : i * stride + 3, j * stride : j * stride + 3, :]
    expected = np.einsum("bhwc,hwc->bc", patch, kn[:, :, 0])
    np.testing.assert_allclose(out[:, i, j], expected, atol=1e-5)


@pytest.mark.parametrize("arch", ["resnet18", "tinyvit_11m"])
def test_model_stack_traces_under_vmap(arch):
    """A stack of 3 models: init_stack and a vmapped train-mode apply (traced, not compiled)."""
    model = {"resnet18": build_resnet18, "tinyvit_11m": build_tinyvit_11m}[arch](
        10, SHAPE, "im2col", "imagenet")
    params, stats = jax.eval_shape(model.init_stack, jax.random.split(KEY, 3))
    assert all(leaf.shape[0] == 3 for leaf in jax.tree_util.tree_leaves((params, stats)))

    def step(p, s, x, k):
        return model.apply(p, s, x, train=True, key=k)

    logits, new = jax.eval_shape(jax.vmap(step), params, stats, jnp.zeros((3, 2, *SHAPE)),
                                 jax.random.split(KEY, 3))
    assert logits.shape == (3, 2, 10)
    assert jax.tree_util.tree_structure(new) == jax.tree_util.tree_structure(stats)


# --------------------------------------------------------------------------- names


def _arch_models():
    return {
        "mlp": build_model("mlp", 10, (8, 8, 1)),
        "cnn": build_model("cnn", 10, (8, 8, 1), conv_impl="im2col"),
        "resnet18": build_resnet18(10, SHAPE, "im2col"),
        "tinyvit_11m": build_tinyvit_11m(10, SHAPE, "im2col"),
    }


@pytest.mark.parametrize("arch", names.ARCHS)
def test_names_cover_every_leaf_once(arch):
    model = _arch_models()[arch]
    params, stats = abstract_init(model)
    table = {**names.reference_names(arch, params), **names.reference_names(arch, stats)}
    n_leaves = len(jax.tree_util.tree_leaves(params)) + len(jax.tree_util.tree_leaves(stats))
    assert len(table) == n_leaves and len(set(table.values())) == n_leaves
    param_names = list(names.reference_names(arch, params).values())
    bn = sum("bn" in n for n in param_names)
    expected_bn = {"mlp": (0, 6), "cnn": (4, 4), "resnet18": (34, 28), "tinyvit_11m": (54, 161)}
    assert (bn, len(param_names) - bn) == expected_bn[arch]  # RNI's "bn" filter, docs/methods.md §4.18
    for prefix in names.stem_paths(arch) + names.head_paths(arch, with_norm=True):
        assert names.paths_under(params, [prefix]), prefix


def test_reference_name_examples():
    rn = names.reference_name
    assert rn("resnet18", ("layer1", "0", "conv1", "kernel")) == "layer1.0.conv1.weight"
    assert rn("resnet18", ("bn1", "scale")) == "bn1.weight"
    assert rn("resnet18", ("bn1", "bias")) == "bn1.bias"
    assert rn("resnet18", ("layer2", "0", "downsample_conv", "kernel")) == \
        "layer2.0.downsample.0.weight"
    assert rn("resnet18", ("layer3", "0", "downsample_bn", "var")) == \
        "layer3.0.downsample.1.running_var"
    assert rn("resnet18", ("fc", "kernel")) == "fc.weight"
    assert rn("tinyvit_11m", ("patch_embed", "seq_2", "bn", "mean")) == \
        "patch_embed.seq.2.bn.running_mean"
    assert rn("tinyvit_11m", ("layers_2", "blocks_5", "attn", "attention_biases")) == \
        "layers.2.blocks.5.attn.attention_biases"
    assert rn("tinyvit_11m", ("layers_0", "downsample", "conv2", "c", "kernel")) == \
        "layers.0.downsample.conv2.c.weight"
    assert rn("tinyvit_11m", ("layers_3", "blocks_1", "mlp", "norm", "scale")) == \
        "layers.3.blocks.1.mlp.norm.weight"
    assert rn("tinyvit_11m", ("norm_head", "bias")) == "norm_head.bias"
    assert rn("cnn", ("bn2", "mean")) == "bn2.running_mean"
    assert rn("mlp", ("fc1", "kernel")) == "fc1.weight"
    with pytest.raises(KeyError):
        rn("resnet18", ("fc", "weights"))
    with pytest.raises(ValueError):
        rn("vgg", ("fc", "kernel"))


def test_conv_kernel_paths_stem_and_head():
    models = _arch_models()
    p_res, _ = abstract_init(models["resnet18"])
    convs = names.conv_kernel_paths(p_res)
    assert len(convs) == 20 and convs[0] == ("conv1", "kernel")  # stem + 16 3x3 + 3 downsample
    assert ("layer4", "0", "downsample_conv", "kernel") in convs
    p_vit, _ = abstract_init(models["tinyvit_11m"])
    vconvs = names.conv_kernel_paths(p_vit)
    assert len(vconvs) == 27 and all(p[-2] == "c" for p in vconvs)  # every Conv2d_BN unit
    # Depthwise [3, 3, 1, C]: 2 MBConv + 3 PatchMerging + 10 local convs.
    assert sum(_leaf(p_vit, p).shape[2] == 1 for p in vconvs) == 2 + 3 + 10
    stacked = jax.eval_shape(models["resnet18"].init_stack, jax.random.split(KEY, 3))[0]
    assert names.conv_kernel_paths(stacked, stacked=True) == convs
    assert names.conv_kernel_paths(stacked) == []
    assert set(names.paths_under(p_res, names.stem_paths("resnet18"))) == {
        ("conv1", "kernel"), ("bn1", "bias"), ("bn1", "scale")}
    assert set(names.paths_under(p_res, names.head_paths("resnet18"))) == {
        ("fc", "kernel"), ("fc", "bias")}
    assert set(names.paths_under(p_vit, names.head_paths("tinyvit_11m"))) == {
        ("head", "kernel"), ("head", "bias")}
    assert len(names.paths_under(p_vit, names.head_paths("tinyvit_11m", with_norm=True))) == 4
    assert set(names.paths_under(p_vit, names.stem_paths("tinyvit_11m"))) == {
        ("patch_embed", "seq_0", "c", "kernel"), ("patch_embed", "seq_0", "bn", "scale"),
        ("patch_embed", "seq_0", "bn", "bias")}
    p_cnn, _ = abstract_init(models["cnn"])
    assert names.conv_kernel_paths(p_cnn) == [("conv1", "kernel"), ("conv2", "kernel")]
    assert set(names.paths_under(p_cnn, names.head_paths("cnn"))) == {
        ("head", "kernel"), ("head", "bias")}


def _leaf(tree, path):
    for k in path:
        tree = tree[k]
    return tree


def test_export_import_roundtrip_and_errors():
    model = build_model("cnn", 10, (8, 8, 1), conv_impl="im2col")
    rng = np.random.default_rng(0)
    params, stats = jax.tree_util.tree_map(
        lambda a: rng.normal(size=a.shape).astype(np.float32), abstract_init(model))
    state = names.export_reference_state("cnn", params, stats)
    assert state["conv2.weight"].shape == (32, 16, 3, 3)  # PyTorch OIHW
    assert state["head.weight"].shape == (10, params["head"]["kernel"].shape[0])  # [out, in]
    np.testing.assert_array_equal(state["conv1.weight"][3, 0, 1, 2],
                                  np.asarray(params["conv1"]["kernel"])[1, 2, 0, 3])
    p2, s2 = names.import_reference_state("cnn", params, stats, state)
    leaves = zip(jax.tree_util.tree_leaves((params, stats)), jax.tree_util.tree_leaves((p2, s2)))
    for a, b in leaves:
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(KeyError):
        names.import_reference_state("cnn", params, stats,
                                     {k: v for k, v in state.items() if k != "bn1.weight"})
    with pytest.raises(ValueError):
        names.import_reference_state("cnn", params, stats, {**state, "extra.weight": np.zeros(1)})
    with pytest.raises(ValueError):
        names.import_reference_state("cnn", params, stats, {**state, "head.bias": np.zeros(3)})
    # Reference-only buffers are ignored.
    names.import_reference_state("cnn", params, stats,
                                 {**state, "bn1.num_batches_tracked": np.zeros(())})
