"""The model contract: a Flax module plus pure ``init``/``apply`` over explicit state.

A model's variables are two pytrees: ``params`` (trained) and ``batch_stats`` (BatchNorm
running statistics, explicit state; an empty dict for models without BatchNorm).
``apply(params, batch_stats, x, train=..., key=...)`` returns ``(logits, batch_stats)``: in
train mode BatchNorm uses batch statistics and returns updated running statistics; in eval
mode it uses (and returns unchanged) the running statistics. ``key`` feeds stochastic layers
(TinyViT's drop-path) in train mode.

A *stack* of M models is ``jax.vmap(model.init)(keys)``: every leaf gets a leading models axis.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxmu.types import Array, BatchStats, Params, PRNGKey


@dataclasses.dataclass(frozen=True)
class Model:
    """A classifier with explicit parameters and BatchNorm state.

    Attributes:
      name: registry id (``mlp``, ``cnn``, ``resnet18``, ``tinyvit_11m``).
      module: the Flax linen module; called as ``module(x, train=bool)``.
      input_shape: ``(H, W, C)`` of one normalised input.
      num_classes: number of output logits.
      block_names: top-level parameter groups in forward order (stem first, head last);
        methods that act on blocks (CF-k, EU-k, KDE, ...) read it.
    """

    name: str
    module: nn.Module
    input_shape: tuple[int, int, int]
    num_classes: int
    block_names: tuple[str, ...] = ()

    def init(self, key: PRNGKey) -> tuple[Params, BatchStats]:
        """Initial ``(params, batch_stats)`` of one model from ``key``."""
        x = jnp.zeros((1, *self.input_shape), jnp.float32)
        variables = self.module.init({"params": key, "dropout": key}, x, train=False)
        return variables["params"], variables.get("batch_stats", {})

    def init_stack(self, keys: PRNGKey) -> tuple[Params, BatchStats]:
        """A stack of models, one per key (``keys``: ``[models, ...]``)."""
        return jax.vmap(self.init)(keys)

    def apply(
        self,
        params: Params,
        batch_stats: BatchStats,
        x: Array,
        *,
        train: bool,
        key: PRNGKey | None = None,
    ) -> tuple[Array, BatchStats]:
        """Logits ``[batch, classes]`` and the (possibly updated) running statistics."""
        variables: dict[str, Any] = {"params": params}
        if batch_stats:
            variables["batch_stats"] = batch_stats
        rngs = {"dropout": key} if (train and key is not None) else None
        if train and batch_stats:
            logits, updates = self.module.apply(
                variables, x, train=True, rngs=rngs, mutable=["batch_stats"]
            )
            return logits, updates["batch_stats"]
        logits = self.module.apply(variables, x, train=train, rngs=rngs)
        return logits, batch_stats

    def num_params(self, params: Params) -> int:
        return sum(int(x.size) for x in jax.tree_util.tree_leaves(params))
