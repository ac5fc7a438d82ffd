"""The vectorized trainer of original and retrained stacks: the plan "train on D for E epochs".

Training is a method like the others, run by the one driver (``jaxmu.methods.driver``): its plan
is FT's (``methods.recipes.cosine_finetune_plan``: E epochs of one shuffled pass over the training
subset, the cosine learning rate set at every epoch start) and its ``update`` is one PyTorch SGD
step on the train-mode cross-entropy of the *augmented* batch (protocol §4.1: coupled weight
decay, partial last batch kept at its own shape with its own BatchNorm statistics). The only
differences from unlearning are where the model comes from (a fresh initialisation per seed) and
that the epochs run in resumable chunks (``run_phase``'s ``window``: one compiled program serves
every chunk, so a stage checkpoints between chunks and resumes at any epoch).

Each model of the stack has its own initialisation key, its own hyperparameters (learning rate,
momentum, weight decay as arrays along the models axis) and, optionally, its own training
subset and data key. The subset is an index set into the in-memory data, so training the
original (on D_r u D_f), retraining (on D_r) and a U-LiRA half-split are the same code.

Randomness: the methods' convention (``jaxmu.methods.plan``) with the data key as the method key:
epoch ``e`` runs on ``k_e = fold_in(data_key, e)``, permutes the subset with ``fold_in(k_e, 0)``
and gives batch ``b`` the key ``fold_in(k_e, b + 1)``, which augments the batch; dropout uses
``fold_in(step key, 1)``. With ``shared_data`` (faithful mode) one data key and one subset serve
every model (``in_axes=None``): identical order and augmentation for all seeds, only the
initialisation differs. Otherwise both carry a models axis. (Until the trainer became a plan it
drew the permutation from ``k_e`` itself and batch ``b``'s key as ``fold_in(k_e, b)``: run
directories are keyed by ``jaxmu.version.TRAINER_RECIPE`` so models trained that way are never resumed this way.)

Each epoch also logs the training loss and accuracy its steps saw (the running figures of a
training log): the state carries them as data (``Logged.log``), each step adding its share.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxmu.engine.execution import map_models
from jaxmu.engine.losses import cross_entropy, forward
from jaxmu.engine.passes import gather
from jaxmu.engine.state import TrainProgress, TrainState
from jaxmu.methods._base import SplitData, StaticContext
from jaxmu.methods.driver import run_phase, with_stream_sizes
from jaxmu.methods.plan import Batch
from jaxmu.methods.recipes import cosine_finetune_plan, sgd_spec
from jaxmu.models.base import Model
from jaxmu.types import Array, DeviceData, PRNGKey


class Logged(NamedTuple):
    """The trainer's state in a chunk of epochs: the model and its log ``[E, 2]`` (per epoch: the
    example-weighted mean training loss and the fraction of examples classified correctly)."""

    train: TrainState
    log: Array

    @classmethod
    def start(cls, train: TrainState, epochs: int) -> "Logged":
        """``train`` with an empty log of ``epochs`` rows."""
        return cls(train, jnp.zeros((epochs, 2), jnp.float32))


def init(params, batch_stats, hp, key, ctx: StaticContext, data) -> Logged:
    """A fresh PyTorch SGD state on ``params`` and an empty log."""
    del key, data
    return Logged.start(TrainState.create(params, batch_stats, hp), ctx.static["epochs"])


def update(state: Logged, batch: Batch, hp, key, ctx: StaticContext, *, phase: str):
    """One SGD step on the train-mode CE of the batch, augmented with ``key`` (``ctx.train_augment``);
    the epoch's log row gains the batch's loss x |batch| / n and its correct count / n."""
    del hp, phase
    x, y = gather(ctx, batch.data, batch.indices, key, augment=ctx.train_augment)
    st = state.train

    def loss_fn(params):
        logits, bs = forward(ctx, params, st.batch_stats, x, train=True, key=jax.random.fold_in(key, 1))
        return cross_entropy(logits, y), (bs, logits)

    (loss, (bs, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(st.params)
    correct = jnp.sum(jnp.argmax(jax.lax.stop_gradient(logits), -1) == y).astype(jnp.float32)
    n = ctx.size("retain")
    row = jnp.stack([loss.astype(jnp.float32) * (x.shape[0] / n), correct / n])
    return Logged(st.apply_gradients(grads, batch_stats=bs), state.log.at[batch.epoch].add(row)), {"loss": loss}


TRAINING = sgd_spec("train", cosine_finetune_plan,
                    {"epochs": 1, "batch_size": 128, "learning_rate": 0.1, "momentum": 0.9, "weight_decay": 5e-4},
                    "train from scratch: E epochs of augmented CE, PyTorch SGD, cosine learning rate (protocol §4.1)",
                    init=init, update=update, searched=False)
"""Not a registered method: the original / retrain recipe, run by ``Trainer`` through the driver."""


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

    def _ctx(self, data: SplitData) -> StaticContext:
        """The recipe's static context: architecture, normalisation, augmentation, E and B, and the
        stream sizes of ``data`` (its ``retain`` stream is the training subset)."""
        ctx = StaticContext(self.model, self.model.num_classes, tuple(self.mean), tuple(self.std), self.augment)
        return with_stream_sizes(ctx.with_static({"epochs": self.num_epochs, "batch_size": self.batch_size}), data)

    @staticmethod
    def _split(subset: Array, data: DeviceData) -> SplitData:
        none = jnp.zeros((0,), jnp.int32)
        return SplitData(data.images, data.labels, subset, none, none)

    def _run_one(self, prog: TrainProgress, subset, data_key, start, stop, data) -> tuple[TrainProgress, Array]:
        """Epochs ``start .. stop - 1`` of one model: its progress and the ``[E, 2]`` log of the
        epochs run here (NaN for the others)."""
        split = self._split(subset, data)
        ctx = self._ctx(split)
        (phase,) = TRAINING.plan(ctx)
        state = Logged.start(prog.state, self.num_epochs)
        state = run_phase(TRAINING, phase, state, {"learning_rate": prog.base_lr}, data_key, ctx, split,
                          window=(start, stop))
        e = jnp.arange(self.num_epochs)
        log = jnp.where(((e >= start) & (e < stop))[:, None], state.log, jnp.nan)
        return prog._replace(state=state.train, epoch=jnp.maximum(prog.epoch, stop)), log

    def _mapped(self, logged: bool):
        ax = None if self.shared_data else 0
        one = map_models(self._run_one, (0, ax, ax, None, None, None), mode=self.model_axis,
                         chunk_size=self.chunk_size)

        def run(prog, subset, data_key, stop, data):
            start = prog.epoch.reshape(-1)[0]  # every model of a stack is at the same epoch
            new, log = one(prog, subset, data_key, start, jnp.asarray(stop, jnp.int32), data)
            return (new, log) if logged else new

        return jax.jit(run, donate_argnums=(0,))

    @functools.cached_property
    def run_epochs(self):
        """Jitted ``(progress, subset, data_key, stop, data) -> progress``: train until epoch ``stop``.

        ``subset``/``data_key`` are shared (``[n]``, one key) when ``shared_data`` and
        per-model (``[M, n]``, ``[M]`` keys) otherwise. ``stop`` is a traced scalar, so every
        chunk of epochs reuses one executable.
        """
        return self._mapped(logged=False)

    @functools.cached_property
    def run_epochs_logged(self):
        """Jitted ``(progress, subset, data_key, stop, data) -> (progress, history)``.

        ``run_epochs`` that also returns the training loss and accuracy of every epoch it runs:
        ``history`` ``[M, num_epochs, 2]`` (columns loss, accuracy) has the rows of the epochs run
        in this call, NaN elsewhere, so the caller merges chunks of epochs. The parameters are
        those of ``run_epochs``, bit for bit (``tests/test_results.py``).
        """
        return self._mapped(logged=True)

    def step(self, state: TrainState, idx: Array, key: PRNGKey, data: DeviceData) -> TrainState:
        """One training step of ONE model on the batch ``idx`` (the recipe's ``update``), for
        memory and cost analyses of a step (``bytes_per_model``, ``bench/gpu.py``)."""
        split = self._split(idx, data)
        logged = Logged.start(state, self.num_epochs)
        batch = Batch(idx, jnp.int32(0), jnp.int32(0), split)
        return update(logged, batch, {}, key, self._ctx(split), phase="descend")[0].train

    def bytes_per_model(self, data: DeviceData) -> int:
        """Memory of one model's training step (arguments, outputs, temporaries), from XLA.

        Compiles one single-model step (no models axis) and reads its memory analysis; the
        engine uses it to chunk a vmapped stack that would not fit (``execution.auto_chunk``).
        """
        key = jax.random.PRNGKey(0)
        state = jax.eval_shape(lambda k: self._init_one(k, 0.1, 0.9, 0.0).state, key)
        idx = jax.ShapeDtypeStruct((self.batch_size,), jnp.int32)
        compiled = jax.jit(self.step).lower(state, idx, key, data).compile()
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
