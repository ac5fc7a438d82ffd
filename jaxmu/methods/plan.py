"""The method contract, optax-style: ``init`` / ``update`` pure functions and a static plan.

A method (``docs/methods.md`` §6.1, docs/architecture.md#the-method-contract) is three pure functions over ONE model — the driver
(``jaxmu.methods.driver``) maps them over the models axis:

* ``init(params, batch_stats, hp, key, ctx, data) -> State``: everything the method carries, as
  data (a ``NamedTuple``): the model being trained (a ``jaxmu.engine.state.TrainState``, in a
  field named ``train`` unless the state *is* one), frozen teachers, anchors, masks, counters.
* ``update(state, batch, hp, key, ctx, *, phase) -> (state, aux)``: one step. ``phase`` (static)
  names the step kind of the plan — a pass over a data stream, an epoch-start hook or a one-shot
  transform — and selects the loss; ``aux`` is a dict of scalar diagnostics (may be empty).
* ``plan(ctx) -> tuple[Phase, ...]``: the static schedule of steps, from the static
  hyperparameters ``ctx.static`` (epochs, batch sizes, flags) and, where step counts depend on
  them, the stream sizes ``ctx.size(stream)`` (bound by the driver; PRMQ's step budget).
* ``result(state, hp, key, ctx, data) -> (params, batch_stats)``: the unlearned model (default:
  the ``TrainState``'s); SCRUB's checkpoint selection and PRMQ's fp16 round trip live here.

``hp`` holds the *array* hyperparameters (float32 scalars per model; they may differ along the
models axis, so one compiled program serves a grid); ``ctx`` (``StaticContext``) holds the
architecture, the class count and the static hyperparameters; ``data`` (``SplitData``) the
on-device dataset and split indices (D_t is never given to a method, ``docs/methods.md`` §2.1).

Randomness, one convention for every method: phase ``p`` runs on ``fold(key, p.key)``; epoch
``e`` of a phase on ``k_e = fold_in(phase key, e)``; the epoch-start hook gets ``k_e``; a pass
gets ``fold(k_e, pass.key)``, permutes its stream with ``fold_in(pass key, 0)`` and gives step
``b`` the key ``fold_in(pass key, b + 1)``; a one-shot step gets the phase key.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, Mapping, NamedTuple, Protocol

from jaxmu.types import Array, PRNGKey

Stream = Literal["retain", "forget", "val", "combined"]
"""Where a pass draws its batches: D_r, D_f, D_v, or the positions ``0 .. n_f + n_r - 1`` of
``concat(D_f, D_r)`` (SRL / SalUn / BT's combined stream; ``jaxmu.methods.relabel``)."""


class Batch(NamedTuple):
    """What one call of ``update`` sees.

    Attributes:
      indices: int32 ``[B]``: dataset indices of the batch (stream positions for ``combined``);
        ``None`` in an epoch-start hook or a one-shot step.
      epoch: int32 scalar, the 0-based epoch of the phase.
      step: int32 scalar, the 0-based step within the pass.
      data: the ``SplitData`` (shared arrays; gather inputs with ``engine.passes.gather``).
    """

    indices: Array | None
    epoch: Array
    step: Array
    data: Any


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A learning rate set at every epoch start: ``hp[rate] * factor(e)`` (``docs/methods.md`` §2.5).

    Attributes:
      kind: ``cosine`` (CosineAnnealingLR stepped per epoch, T = the phase's epochs, eta_min 0),
        ``step`` (step decay by ``hp[decay]`` at floor(.5E), floor(.8E), floor(.9E)) or
        ``constant``.
      rate: name of the base-rate hyperparameter.
      decay: the decay rate of ``step``: a hyperparameter's name, or a fixed number (SCRUB's 0.1).
      one_based: ``step`` counts epochs 1..E (SCRUB) instead of 0..E-1 (CF-k / EU-k).
    """

    kind: Literal["cosine", "step", "constant"] = "cosine"
    rate: str = "learning_rate"
    decay: str | float = 0.1
    one_based: bool = False


@dataclasses.dataclass(frozen=True)
class Pass:
    """One pass over a data stream inside every epoch of a phase.

    Attributes:
      phase: the ``phase`` given to ``update`` at each step.
      stream: which examples (``Stream``).
      batch_size: B; the partial last batch is kept at its own static shape (``docs/methods.md`` §2.2).
      shuffle: a fresh permutation per pass (else the stored order).
      key: ``fold_in`` path from the epoch key to the pass key.
      epochs: ``(lo, hi)``: the pass runs only in epochs lo <= e < hi (SCRUB's max steps).
      steps: only the first ``steps`` full batches of the pass.
      subset: name of a field of the method's state holding the indices to pass over instead of
        the whole stream: a subset of it drawn at run time (e.g. by the ``on_epoch`` hook; its
        length is static), MSG's random R' of D_r. ``None``: the stream itself.
      count: the name of an epoch-count hyperparameter bounding the pass, for ragged counts: when
        the array hyperparameters hold it, the pass runs only in the epochs ``e < hp[count]``
        (``lax.cond``), ``epochs`` being the compiled window (SCRUB's ``msteps``).
    """

    phase: str
    stream: Stream
    batch_size: int
    shuffle: bool = True
    key: tuple[int, ...] = ()
    epochs: tuple[int, int] | None = None
    steps: int | None = None
    subset: str | None = None
    count: str | None = None


@dataclasses.dataclass(frozen=True)
class Phase:
    """A stage of a method: an optional one-shot step, then ``epochs`` epochs of passes.

    Attributes:
      name: for reports and errors.
      epochs: number of epochs (static; 0 runs no epoch).
      passes: the passes of every epoch, in order.
      once: ``phase`` of a one-shot step before the epochs (re-initialisation, masks, noise).
      on_epoch: ``phase`` of a hook called at the start of every epoch with the epoch key
        (re-draws, error logs, snapshots); it runs after ``schedule``.
      schedule: the learning rate of the state's ``TrainState`` set at every epoch start.
      key: ``fold_in`` path from the method key to the phase key.
      count: the name of the epoch-count hyperparameter that ``epochs`` comes from, for ragged
        epochs (``docs/methods.md`` §6.2): when the array hyperparameters hold it, ``epochs`` is only
        the compiled maximum; each model runs its own first ``hp[count]`` epochs (later ones are
        skipped, ``lax.cond``) and schedules use ``hp[count]`` as the phase length, so one
        program serves every epoch count up to ``epochs`` with the results of a program compiled
        for that count. A method lists such names in ``MethodSpec.ragged``.
      steps: a step budget S for the whole phase (static; one pass per epoch): the steps cross
        epoch boundaries, batch ``b`` of epoch ``e`` running while ``e * L + b < S`` (L: the
        pass's batches, the partial one included), so the last epoch stops after the first
        ``S mod L`` (full) batches of its shuffle; ``epochs`` must be ``ceil(S / L)``. With
        ``count``, ``hp[count]`` is each model's own budget (``MethodSpec.ragged_value``) and
        ``steps`` the compiled maximum (PRMQ's ``num_epochs`` under HPO).
    """

    name: str
    epochs: int = 1
    passes: tuple[Pass, ...] = ()
    once: str | None = None
    on_epoch: str | None = None
    schedule: Schedule | None = None
    key: tuple[int, ...] = ()
    count: str | None = None
    steps: int | None = None


def epoch_count(hp: Mapping[str, Array], ctx: Any, name: str = "epochs"):
    """The epoch count ``name`` as the running model sees it: its own per-model value when
    epochs are ragged (``Phase.count``; a traced float32) or the static one. For methods whose
    updates use the count itself (an annealing horizon, a last-epoch hook)."""
    return hp[name] if name in hp else ctx.static[name]


Plan = tuple[Phase, ...]
Aux = Mapping[str, Array]


class InitFn(Protocol):
    def __call__(self, params: Any, batch_stats: Any, hp: Mapping[str, Array], key: PRNGKey, ctx: Any,
                 data: Any) -> Any: ...


class UpdateFn(Protocol):
    def __call__(self, state: Any, batch: Batch, hp: Mapping[str, Array], key: PRNGKey, ctx: Any, *,
                 phase: str) -> tuple[Any, Aux]: ...


class PlanFn(Protocol):
    def __call__(self, ctx: Any) -> Plan: ...


class ResultFn(Protocol):
    def __call__(self, state: Any, hp: Mapping[str, Array], key: PRNGKey, ctx: Any, data: Any) -> tuple[Any, Any]: ...
