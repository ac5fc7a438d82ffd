"""Model registry: ``build_model(name, num_classes, input_shape, ...)`` returns a ``Model``.

A researcher's own Flax module joins the registry with ``register``; it is then a
``model.name`` like the built-ins (configs, CLIs, every method that needs no block layout)::

    >>> import jaxmu.models as Mo
    >>> def build(num_classes, input_shape, conv_impl, stem) -> Mo.Model:
    ...     return Mo.Model("tiny_mlp", TinyMLP(num_classes), tuple(input_shape), num_classes, ("body", "head"))
    >>> Mo.register("tiny_mlp", build, layout=Mo.BlockLayout(("stem",), (("body",),), "head"))
    >>> Mo.model_names()
"""

from __future__ import annotations

import hashlib
import json
from typing import Callable, NamedTuple, Protocol

import jax

from jaxmu.models.base import Model
from jaxmu.models.blocks import BUILTIN_LAYOUTS, BlockLayout
from jaxmu.models.layers import BatchNorm, Conv, Dense, conv2d, resolve_conv_impl
from jaxmu.models.small import CNN, MLP
from jaxmu.registry import Registry


def _mlp(num_classes: int, input_shape, conv_impl: str, stem: str) -> Model:
    return Model("mlp", MLP(num_classes), tuple(input_shape), num_classes, ("fc1", "fc2", "head"))


def _cnn(num_classes: int, input_shape, conv_impl: str, stem: str) -> Model:
    return Model(
        "cnn", CNN(num_classes, conv_impl=conv_impl), tuple(input_shape), num_classes,
        ("conv1", "bn1", "conv2", "bn2", "head"),
    )


class BuildFn(Protocol):
    """``build(num_classes, input_shape, conv_impl, stem) -> Model`` (``conv_impl`` resolved)."""

    def __call__(self, num_classes: int, input_shape: tuple[int, int, int], conv_impl: str, stem: str) -> Model: ...


class ModelEntry(NamedTuple):
    """A registry entry: the builder and the block layout (``None``: no block-wise methods)."""

    build: BuildFn
    layout: BlockLayout | None


def _builtins() -> dict[str, ModelEntry]:
    builders: dict[str, Callable[..., Model]] = {"mlp": _mlp, "cnn": _cnn}
    try:
        from jaxmu.models.resnet import build_resnet18
    except ImportError:  # pragma: no cover - during development only
        pass
    else:
        builders["resnet18"] = build_resnet18
    try:
        from jaxmu.models.tinyvit import build_tinyvit_11m
    except ImportError:  # pragma: no cover
        pass
    else:
        builders["tinyvit_11m"] = build_tinyvit_11m
    return {name: ModelEntry(b, BUILTIN_LAYOUTS.get(name)) for name, b in builders.items()}


class ModelError(ValueError):
    """An unknown architecture or an option it does not support (message lists what is valid)."""


_REGISTRY: Registry[ModelEntry] = Registry("model", _builtins(), ModelError)

MODELS = _REGISTRY.builtin_names()
"""The architectures shipped with jaxmu (``model_names()`` adds registered ones)."""


def model_names() -> tuple[str, ...]:
    """Every model name (built-in and registered), sorted."""
    return _REGISTRY.names()


def register(name: str, build_fn: BuildFn, *, layout: BlockLayout | None = None, replace: bool = False) -> BuildFn:
    """Register a researcher's model under ``name``; returns ``build_fn``.

    ``build_fn(num_classes, input_shape, conv_impl, stem)`` returns a ``Model`` (as the built-in
    builders; ``Model.name`` should be ``name``, ``conv_impl`` is resolved to ``im2col`` or
    ``xla``). ``layout`` names its stem, blocks and classifier (top-level ``params`` keys) for
    the block-wise methods (CF-k, EU-k); without one those methods refuse the model with a
    ``MethodError``. A built-in name is refused, a registered one unless ``replace=True``.
    """
    if not callable(build_fn):
        raise ModelError(f"register({name!r}, ...): build_fn must be callable "
                         "build(num_classes, input_shape, conv_impl, stem) -> Model")
    if layout is not None and not isinstance(layout, BlockLayout):
        raise ModelError(f"register({name!r}, ...): layout must be a jaxmu.models.BlockLayout, "
                         f"got {type(layout).__name__}")
    _REGISTRY.add(name, ModelEntry(build_fn, layout), replace=replace)
    return build_fn


def unregister(name: str) -> None:
    """Remove a registered (not built-in) model."""
    _REGISTRY.remove(name)


def is_builtin(name: str) -> bool:
    """Whether ``name`` is an architecture shipped with jaxmu."""
    return _REGISTRY.is_builtin(name)


def block_layout(name: str) -> BlockLayout | None:
    """The block layout of model ``name`` (``None`` when unknown or registered without one)."""
    entry = _REGISTRY.view.get(name)
    return entry.layout if entry else None


def fingerprint(model: Model) -> str:
    """16 hex digits naming what a model computes: its module (class and attributes), input
    shape, classes, and every parameter's and statistic's path, shape and dtype.

    Keys run directories of registered models, so two different modules registered under one
    name never share checkpoints."""
    params, stats = jax.eval_shape(model.init, jax.random.PRNGKey(0))
    shapes = [[jax.tree_util.keystr(p), list(x.shape), str(x.dtype)]
              for tree in (params, stats) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]]
    cls = type(model.module)
    blob = json.dumps({"module": f"{cls.__module__}.{cls.__qualname__}", "repr": repr(model.module),
                       "input_shape": list(model.input_shape), "num_classes": model.num_classes,
                       "blocks": list(model.block_names), "shapes": shapes}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build_model(
    name: str,
    num_classes: int,
    input_shape: tuple[int, int, int],
    *,
    conv_impl: str = "auto",
    stem: str = "imagenet",
) -> Model:
    """Build a registered model. ``conv_impl="auto"`` picks the backend's fast convolution."""
    if name not in _REGISTRY.view:
        raise ModelError(f"unknown model {name!r}: set model.name to one of {', '.join(model_names())}")
    if stem not in ("imagenet", "cifar"):
        raise ModelError(f"unknown stem {stem!r}: choose 'imagenet' or 'cifar'")
    try:
        model = _REGISTRY.view[name].build(num_classes, tuple(input_shape), resolve_conv_impl(conv_impl), stem)
    except ModelError:
        raise
    except ValueError as e:  # e.g. TinyViT on an input size it cannot take
        raise ModelError(f"model {name!r} cannot be built for input {tuple(input_shape)}: {e}") from None
    if not isinstance(model, Model):
        raise ModelError(f"model {name!r}: its build function returned a {type(model).__name__}, "
                         "not a jaxmu.models.Model")
    return model


__all__ = [
    "MODELS", "BlockLayout", "BuildFn", "Model", "ModelEntry", "ModelError", "block_layout", "build_model",
    "fingerprint", "is_builtin", "model_names", "register", "unregister", "BatchNorm", "Conv", "Dense", "conv2d", "resolve_conv_impl",
    "CNN", "MLP",
]
