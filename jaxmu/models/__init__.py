"""Model registry: ``build_model(name, num_classes, input_shape, ...)`` returns a ``Model``."""

from __future__ import annotations

from typing import Callable

from jaxmu.models.base import Model
from jaxmu.models.layers import BatchNorm, Conv, Dense, conv2d, resolve_conv_impl
from jaxmu.models.small import CNN, MLP


def _mlp(num_classes: int, input_shape, conv_impl: str, stem: str) -> Model:
    return Model("mlp", MLP(num_classes), tuple(input_shape), num_classes, ("fc1", "fc2", "head"))


def _cnn(num_classes: int, input_shape, conv_impl: str, stem: str) -> Model:
    return Model(
        "cnn", CNN(num_classes, conv_impl=conv_impl), tuple(input_shape), num_classes,
        ("conv1", "bn1", "conv2", "bn2", "head"),
    )


_BUILDERS: dict[str, Callable[..., Model]] = {"mlp": _mlp, "cnn": _cnn}


def _register_optional() -> None:
    try:
        from jaxmu.models.resnet import build_resnet18
    except ImportError:  # pragma: no cover - during development only
        pass
    else:
        _BUILDERS["resnet18"] = build_resnet18
    try:
        from jaxmu.models.tinyvit import build_tinyvit_11m
    except ImportError:  # pragma: no cover
        pass
    else:
        _BUILDERS["tinyvit_11m"] = build_tinyvit_11m


_register_optional()

MODELS = tuple(_BUILDERS)


class ModelError(ValueError):
    """An unknown architecture or an option it does not support (message lists what is valid)."""


def build_model(
    name: str,
    num_classes: int,
    input_shape: tuple[int, int, int],
    *,
    conv_impl: str = "auto",
    stem: str = "imagenet",
) -> Model:
    """Build a registered model. ``conv_impl="auto"`` picks the backend's fast convolution."""
    if name not in _BUILDERS:
        raise ModelError(f"unknown model {name!r}: set model.name to one of {', '.join(sorted(_BUILDERS))}")
    if stem not in ("imagenet", "cifar"):
        raise ModelError(f"unknown stem {stem!r}: choose 'imagenet' or 'cifar'")
    try:
        return _BUILDERS[name](num_classes, tuple(input_shape), resolve_conv_impl(conv_impl), stem)
    except ModelError:
        raise
    except ValueError as e:  # e.g. TinyViT on an input size it cannot take
        raise ModelError(f"model {name!r} cannot be built for input {tuple(input_shape)}: {e}") from None


__all__ = [
    "MODELS", "Model", "ModelError", "build_model", "BatchNorm", "Conv", "Dense", "conv2d", "resolve_conv_impl",
    "CNN", "MLP",
]
