"""Batched evaluation of a model stack: logits, per-example losses and accuracies.

Eval mode (BatchNorm running statistics), test transform, no shuffling (protocol §6). The
examples are taken by index from the on-device data in batches of ``batch_size`` (the last
batch padded and the padding dropped), so any split is one index array.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxmu.data.augment import normalize
from jaxmu.engine.execution import map_models
from jaxmu.engine.sharding import addressable
from jaxmu.attacks.lira import logit_scaled_confidence
from jaxmu.metrics import accuracy, per_example_ce
from jaxmu.models.base import Model
from jaxmu.types import Array, DeviceData


@dataclasses.dataclass(frozen=True)
class Evaluator:
    """Static evaluation settings; ``logits`` is the jitted stack function."""

    model: Model
    mean: tuple[float, ...]
    std: tuple[float, ...]
    batch_size: int = 1024
    model_axis: str = "vmap"
    chunk_size: int = 8

    def _logits_one(self, params, batch_stats, batches: Array, data: DeviceData) -> Array:
        def one_batch(idx):
            x = normalize(data.images[idx], self.mean, self.std)
            logits, _ = self.model.apply(params, batch_stats, x, train=False)
            return logits.astype(jnp.float32)

        out = jax.lax.map(one_batch, batches)
        return out.reshape(-1, out.shape[-1])

    @functools.cached_property
    def _jitted(self):
        fn = map_models(self._logits_one, (0, 0, None, None), mode=self.model_axis, chunk_size=self.chunk_size)
        return jax.jit(fn)

    def logits(self, params, batch_stats, indices, data: DeviceData) -> Array:
        """Logits ``[models, n, classes]`` of every model on ``data.images[indices]``."""
        indices = np.asarray(indices, np.int32)
        n = indices.shape[0]
        if n == 0:
            m = jax.tree_util.tree_leaves(params)[0].shape[0]
            return jnp.zeros((m, 0, self.model.num_classes), jnp.float32)
        bsz = min(self.batch_size, n)
        n_b = -(-n // bsz)
        padded = np.concatenate([indices, np.full(n_b * bsz - n, indices[0], np.int32)])
        out = self._jitted(params, batch_stats, jnp.asarray(padded.reshape(n_b, bsz)), data)
        return addressable(out)[:, :n]  # multi-host: every process gets every model's logits


def scores_of_logits(logits, labels, *, margins: bool = False) -> dict[str, np.ndarray]:
    """Accuracy ``[models]``, per-example cross-entropy ``[models, n]`` and, with ``margins``, the
    margin z_y − logsumexp_{k≠y} z_k ``[models, n]`` (LiRA's φ; KLOM's margin, ``attacks/klom.py``)
    of host logits ``[models, n, classes]``. Fresh and cached logits (``jaxmu.scores``) go through
    this one function, so a re-scored run gives the same numbers bit for bit."""
    z = jnp.asarray(logits, jnp.float32)
    y = jnp.asarray(labels)
    out = {"accuracy": np.asarray(accuracy(z, y)), "loss": np.asarray(per_example_ce(z, y))}
    if margins:
        out["margin"] = np.asarray(logit_scaled_confidence(z, y))
    return out


def split_logits(evaluator: Evaluator, params, batch_stats, splits: dict[str, np.ndarray],
                 data: DeviceData) -> dict[str, np.ndarray]:
    """Host logits ``{split: [models, n, classes]}`` of every model on each named split."""
    return {name: np.asarray(evaluator.logits(params, batch_stats, idx, data)) for name, idx in splits.items()}


def evaluate_splits(evaluator: Evaluator, params, batch_stats, splits: dict[str, np.ndarray], data: DeviceData,
                    *, margins: bool = False) -> dict[str, dict[str, np.ndarray]]:
    """``scores_of_logits`` on each named split, from the logits where they were computed (no trip
    to the host); tuning's per-trial evaluation asks no margins."""
    labels = np.asarray(data.labels)
    return {name: scores_of_logits(evaluator.logits(params, batch_stats, idx, data), labels[np.asarray(idx)],
                                   margins=margins) for name, idx in splits.items()}
