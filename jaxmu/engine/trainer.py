"""The vectorized trainer: a stack of M models trained as one compiled program.

Each model of the stack has its own initialisation key, its own hyperparameters (learning
rate, momentum, weight decay as arrays along the models axis) and, optionally, its own
training subset and data key. The training subset is an index set into the in-memory data, so
training the original (on D_r u D_f), retraining (on D_r) and a U-LiRA half-split are the same
code with different index arrays.

Recipe (protocol §4.1): train-mode cross-entropy, PyTorch SGD with coupled weight decay
(``jaxmu.engine.optim.torch_sgd``), cosine annealing to 0 stepped once per epoch, batches of
``B`` with the partial last batch kept (its own static shape, its own BatchNorm statistics),
data reshuffled every epoch, augmentation on device from the step key.

Randomness (protocol §4.2, docs/sharp_edges.md): epoch ``e`` permutes the subset with
``fold_in(data_key, e)``; batch ``b`` augments with ``fold_in(fold_in(data_key, e), b)``.
With ``shared_data`` (faithful mode) one data key and one subset serve every model (vmap
``in_axes=None``): identical order and augmentation for all seeds, only the initialisation
differs. Otherwise both carry a models axis.

One engine (issue #11): the model state is ``jaxmu.engine.state.TrainState`` (the same as the
methods'), the loss ``jaxmu.engine.losses.cross_entropy`` and the update
``TrainState.apply_gradients``. The epoch body stays here rather than ``engine.passes.run_pass``
because its key convention differs (batch ``b`` gets ``fold_in(ekey, b)`` with the permutation
also drawn from ``ekey``, where a method pass uses ``fold_in(key, 0)`` / ``fold_in(key, b + 1)``),
the epoch counter lives in the carry (``while_loop`` with a dynamic stop, for resumable chunks),
and it augments; moving it would change every trained model and checkpoint. ``TrainProgress``
carries the schedule's state next to the ``TrainState``; its leaves flatten in the order
``params, batch_stats, opt_state, base_lr, epoch`` (the checkpoint layout of ``checkpoint.FORMAT``
2, unchanged).

The epoch loop runs inside jit (``lax.fori_loop`` with dynamic bounds, so resuming at any
epoch reuses the same executable); callers run it in chunks of epochs to checkpoint between.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxmu.data.augment import preprocess
from jaxmu.engine.execution import map_models
from jaxmu.engine.losses import cross_entropy
from jaxmu.engine.optim import cosine_factor
from jaxmu.engine.state import TrainState
from jaxmu.models.base import Model
from jaxmu.types import Array, PRNGKey


class TrainProgress(NamedTuple):
    """A model in training (or, stacked, M models: every leaf gets a models axis).

    Attributes:
      state: the ``TrainState`` (params, batch_stats, ``torch_sgd`` state; hyperparameters inside).
      base_lr: the epoch-0 learning rate the cosine schedule scales.
      epoch: number of finished epochs (int32).
    """

    state: TrainState
    base_lr: Array
    epoch: Array

    @property
    def params(self):
        return self.state.params

    @property
    def batch_stats(self):
        return self.state.batch_stats


class DeviceData(NamedTuple):
    """The whole dataset resident on device: uint8 images ``[N, H, W, C]``, int32 labels."""

    images: Array
    labels: Array


@dataclasses.dataclass(frozen=True)
class Trainer:
    """Static configuration of a training stage; the jit-able functions hang off it.

    Attributes:
      model: the architecture.
      batch_size, num_epochs: static; define the step counts.
      augment: ``none`` | ``flip`` | ``crop_flip`` (train transform).
      mean, std: per-channel normalisation.
      shared_data: faithful mode (one subset and data key for all models).
      model_axis, chunk_size: execution of the models axis (``jaxmu.engine.execution``).
      flat_update: keep the optimizer state as one flat vector and update all parameters in
        one fused elementwise pass (``ravel_pytree``) instead of one per leaf. Same values;
        on XLA:CPU the per-kernel overhead dominates small models, and this measured 10-20%
        faster for the digits MLP (no change for the CNN). Off by default (GPU); the pipeline
        turns it on for the CPU backend.
    """

    model: Model
    batch_size: int
    num_epochs: int
    augment: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    shared_data: bool = True
    model_axis: str = "vmap"
    chunk_size: int = 8
    flat_update: bool = False

    # ------------------------------------------------------------------ init

    def init(self, init_keys: PRNGKey, learning_rate, momentum, weight_decay) -> TrainProgress:
        """Stacked initial state: one model per key; hyperparameters broadcast to ``[M]``."""
        m = init_keys.shape[0]
        hp = [jnp.broadcast_to(jnp.asarray(v, jnp.float32), (m,)) for v in (learning_rate, momentum, weight_decay)]
        return jax.jit(jax.vmap(self._init_one))(init_keys, *hp)

    def _init_one(self, key, lr, mu, wd) -> TrainProgress:
        params, batch_stats = self.model.init(key)
        hp = {"learning_rate": lr, "momentum": mu, "weight_decay": wd}
        state = TrainState.create(params, batch_stats, hp, flat=self.flat_update)
        return TrainProgress(state, lr, jnp.zeros((), jnp.int32))

    # ------------------------------------------------------------------ one model

    def _step(self, state: TrainState, idx: Array, key: PRNGKey, data: DeviceData) -> tuple[TrainState, Array]:
        """One SGD step on batch ``idx``; returns the new state and ``[loss, correct]`` of the batch
        (train-mode CE and the number of correctly classified examples, both before the update)."""
        x = preprocess(data.images[idx], key, kind=self.augment, mean=self.mean, std=self.std, train=True)
        y = data.labels[idx]
        dropout_key = jax.random.fold_in(key, 1)

        def loss_fn(params):
            logits, new_bs = self.model.apply(params, state.batch_stats, x, train=True, key=dropout_key)
            return cross_entropy(logits, y), (new_bs, logits)

        (loss, (new_bs, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        correct = jnp.sum(jnp.argmax(jax.lax.stop_gradient(logits), -1) == y).astype(jnp.float32)
        return state.apply_gradients(grads, batch_stats=new_bs), jnp.stack([loss.astype(jnp.float32), correct])

    def _epoch(self, prog: TrainProgress, subset: Array, data_key: PRNGKey,
               data: DeviceData) -> tuple[TrainProgress, Array]:
        """One epoch; returns the new progress and ``[mean loss, accuracy]`` over the epoch's examples.

        The epoch loss is the example-weighted mean of the batch losses (the partial last batch
        weighs ``rem / n``), the accuracy the fraction of examples classified correctly by the
        parameters of their step (train mode, augmented) -- the running figures of a training log.
        """
        n = subset.shape[0]
        bsz = self.batch_size
        n_full, rem = divmod(n, bsz)
        epoch = prog.epoch
        ekey = jax.random.fold_in(data_key, epoch)
        order = subset[jax.random.permutation(ekey, n)]
        lr = prog.base_lr * cosine_factor(epoch, self.num_epochs)
        state = prog.state.with_lr(lr)
        step_keys = jax.vmap(lambda b: jax.random.fold_in(ekey, b))(jnp.arange(n_full + (rem > 0)))
        loss_sum = jnp.zeros((), jnp.float32)
        correct = jnp.zeros((), jnp.float32)
        if n_full:
            batches = order[: n_full * bsz].reshape(n_full, bsz)

            def body(st, xs):
                return self._step(st, xs[0], xs[1], data)

            state, logs = jax.lax.scan(body, state, (batches, step_keys[:n_full]))
            loss_sum, correct = jnp.sum(logs[:, 0]) * bsz, jnp.sum(logs[:, 1])
        if rem:
            state, last = self._step(state, order[n_full * bsz :], step_keys[n_full], data)
            loss_sum, correct = loss_sum + last[0] * rem, correct + last[1]
        return prog._replace(state=state, epoch=epoch + 1), jnp.stack([loss_sum / n, correct / n])

    def _run_logged(self, prog, subset, data_key, stop, data):
        """Epochs until ``stop``, and ``[num_epochs, 2]`` (loss, accuracy) with row ``e`` set for
        each epoch e run here (NaN for the others)."""

        def body(carry):
            p, h = carry
            new, log = self._epoch(p, subset, data_key, data)
            return new, h.at[p.epoch].set(log)

        history = jnp.full((self.num_epochs, 2), jnp.nan, jnp.float32)
        return jax.lax.while_loop(lambda c: c[0].epoch < stop, body, (prog, history))

    def _run_one(self, prog, subset, data_key, stop, data):
        return jax.lax.while_loop(
            lambda p: p.epoch < stop, lambda p: self._epoch(p, subset, data_key, data)[0], prog
        )

    # ------------------------------------------------------------------ stacks

    @functools.cached_property
    def run_epochs(self):
        """Jitted ``(progress, subset, data_key, stop, data) -> progress``: train until epoch ``stop``.

        ``subset``/``data_key`` are shared (``[n]``, one key) when ``shared_data`` and
        per-model (``[M, n]``, ``[M]`` keys) otherwise. ``stop`` is a traced scalar, so every
        chunk of epochs reuses one executable.
        """
        ax = None if self.shared_data else 0
        fn = map_models(
            self._run_one, (0, ax, ax, None, None), mode=self.model_axis, chunk_size=self.chunk_size
        )
        return jax.jit(fn, donate_argnums=(0,))

    @functools.cached_property
    def run_epochs_logged(self):
        """Jitted ``(progress, subset, data_key, stop, data) -> (progress, history)``.

        ``run_epochs`` that also records the training loss and accuracy of every epoch it runs
        (computed in the step from the logits it already has): ``history`` ``[M, num_epochs, 2]``
        (columns loss, accuracy) has the rows of the epochs run in this call, NaN elsewhere, so
        the caller merges chunks of epochs. The parameters are those of ``run_epochs``, bit for
        bit (``tests/test_results.py``).
        """
        ax = None if self.shared_data else 0
        fn = map_models(
            self._run_logged, (0, ax, ax, None, None), mode=self.model_axis, chunk_size=self.chunk_size
        )
        return jax.jit(fn, donate_argnums=(0,))

    def bytes_per_model(self, data: DeviceData) -> int:
        """Memory of one model's training step (arguments, outputs, temporaries), from XLA.

        Compiles one single-model step (no models axis) and reads its memory analysis; the
        engine uses it to chunk a vmapped stack that would not fit (``execution.auto_chunk``).
        """
        key = jax.random.PRNGKey(0)
        state = jax.eval_shape(lambda k: self._init_one(k, 0.1, 0.9, 0.0).state, key)
        idx = jax.ShapeDtypeStruct((self.batch_size,), jnp.int32)
        compiled = jax.jit(lambda st, i, k, d: self._step(st, i, k, d)[0]).lower(state, idx, key, data).compile()
        mem = compiled.memory_analysis()
        if mem is None:
            return 0
        dataset = sum(x.size * x.dtype.itemsize for x in data)
        total = sum(int(getattr(mem, a, 0) or 0) for a in ("argument_size_in_bytes", "output_size_in_bytes",
                                                             "temp_size_in_bytes"))
        return max(0, total - dataset)  # the dataset is shared by every model

    def compile(self, state, subset, data_key, data, *, logged: bool = False) -> tuple[Any, float]:
        """Ahead-of-time compile ``run_epochs`` (``run_epochs_logged`` with ``logged``) for these
        shapes; returns (executable, seconds)."""
        t0 = time.perf_counter()
        fn = self.run_epochs_logged if logged else self.run_epochs
        exe = fn.lower(state, subset, data_key, jnp.int32(0), data).compile()
        return exe, time.perf_counter() - t0
