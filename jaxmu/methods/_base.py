"""The method contract: hyperparameters as data, a per-model pure ``run``, a registry entry.

A method is written the optax way (design.md §1): its module defines small pure functions —
an ``init`` that builds the method's state from the original model (teachers, masks, anchors,
re-initialised weights, optimizer states) and an ``update`` for one step on a batch — and a
*driver* ``run`` that strings its phases and epochs together with ``jaxmu.engine.passes``.
``run`` unlearns ONE model::

    run(ctx: StaticContext, data: SplitData, params, batch_stats, hp: dict, key) -> (params, batch_stats)

``hp`` holds every *array* hyperparameter (learning rates, alpha, temperatures, thresholds,
noise scales, rates) as float32 scalars; the driver in ``jaxmu.methods.unlearn`` vmaps ``run``
over the models axis, so they may differ per model (one compiled program runs a batch of
tuning trials). *Static* hyperparameters (epochs, batch sizes, k, quirk flags) change shapes or
loop counts; they are bound before tracing (``static`` in the spec below) and partition a
sweep into compile groups.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, NamedTuple

from jaxmu.models.base import Model
from jaxmu.types import Array


class MethodError(ValueError):
    """Unknown method, bad hyperparameter, or a method that cannot apply to a model."""


# --------------------------------------------------------------------------- search spaces

EMAX = "E_max"  # symbolic epoch cap, resolved per setting: ceil(0.2 * training epochs)


@dataclasses.dataclass(frozen=True)
class Float:
    """A continuous hyperparameter, uniform or log-uniform on [low, high]."""

    low: float
    high: float | str
    log: bool = False


@dataclasses.dataclass(frozen=True)
class Int:
    """An integer hyperparameter, uniform on [low, high]; ``high`` may be ``E_max``."""

    low: int
    high: int | str


@dataclasses.dataclass(frozen=True)
class Choice:
    choices: tuple


Dist = Float | Int | Choice

LR = Float(1e-5, 1e-1, log=True)
WD = Float(1e-5, 1e-1, log=True)
EP = Int(1, EMAX)
EPF = Float(1.0, EMAX)
BS = Choice((64, 128, 256))
U01 = Float(0.0, 1.0)
TEMP = Float(0.0, 5.0)
ETA = Float(1e-6, 1e-1, log=True)
NL = Int(1, 10)


def generic_space(lr: str = "learning_rate", wd: str = "weight_decay", bs: str = "batch_size",
                  ep: str | None = "epochs") -> dict[str, Dist]:
    """The generic set G of ``methods.md`` §2.9 (momentum fixed at 0.9, hence not searched)."""
    space: dict[str, Dist] = {lr: LR, wd: WD, bs: BS}
    if ep:
        space[ep] = EP
    return space


def resolve_space(space: Mapping[str, Dist], e_max: int) -> dict[str, Dist]:
    """Replace the symbolic ``E_max`` by the setting's epoch cap."""
    out: dict[str, Dist] = {}
    for k, d in space.items():
        if isinstance(d, (Int, Float)) and d.high == EMAX:
            d = dataclasses.replace(d, high=e_max if isinstance(d, Int) else float(e_max))
        out[k] = d
    return out


def epoch_cap(training_epochs: int) -> int:
    """E_max = ceil(0.2 x training epochs) (protocol §7.1)."""
    return math.ceil(0.2 * training_epochs - 1e-9)


# --------------------------------------------------------------------------- context


@dataclasses.dataclass(frozen=True)
class StaticContext:
    """Static facts a method may read (hashable; closed over, never traced).

    Attributes:
      model: the architecture (``apply``, ``init``, ``block_names``).
      arch: the model's registry id (``mlp``, ``cnn``, ``resnet18``, ``tinyvit_11m``).
      num_classes: C.
      mean, std: normalisation of the test transform.
      train_augment: the train transform's augmentation (EU-k's retain stream only).
    """

    model: Model
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_augment: str = "none"

    @property
    def arch(self) -> str:
        return self.model.name


class SplitData(NamedTuple):
    """Arrays a method may read (traced): the on-device dataset and the split indices.

    ``images`` uint8 ``[N, H, W, C]`` and ``labels`` int32 ``[N]`` are shared by every model.
    ``retain``, ``forget``, ``val`` are int32 index arrays: shared (``[n]``) in the main
    benchmark, or per model (``[M, n]`` before vmapping) in U-LiRA. D_t is never given to a
    method (``methods.md`` §2.1).
    """

    images: Array
    labels: Array
    retain: Array
    forget: Array
    val: Array


RunFn = Callable[..., tuple[Any, Any]]


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """A registered method: defaults, search space, static names, and its driver.

    Attributes:
      name: registry id (``methods.md`` §1).
      run: ``run(ctx, data, params, batch_stats, hp, key, *, static) -> (params, batch_stats)``
        for ONE model; ``static`` is a dict of the static hyperparameters.
      defaults: every hyperparameter's default (the reference config's value).
      search_space: what the tuner searches (dead hyperparameters excluded).
      static: names of hyperparameters that are static (shapes / loop counts / flags).
      dead: hyperparameters the reference searches that have no effect (accepted, ignored).
      doc: one-line description.
      applies_to: architectures the method supports (``None`` = all).
      tune_overrides: settings the tuner applies before searching (e.g. RNI's scalar fine
        learning rate: under HPO the reference's fine lr is a searched scalar, not its list).
    """

    name: str
    run: RunFn
    defaults: Mapping[str, Any]
    search_space: Mapping[str, Dist]
    static: frozenset[str]
    dead: frozenset[str] = frozenset()
    doc: str = ""
    applies_to: tuple[str, ...] | None = None
    tune_overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def check_hparams(self, hp: Mapping[str, Any]) -> dict[str, Any]:
        """Merge ``hp`` over the defaults; unknown names are a ``MethodError``."""
        unknown = set(hp) - set(self.defaults) - set(self.dead)
        if unknown:
            raise MethodError(
                f"{self.name} has no hyperparameter {', '.join(sorted(map(repr, unknown)))}: "
                f"valid are {', '.join(sorted(self.defaults))}"
            )
        merged = {k: v for k, v in self.defaults.items()}
        merged.update({k: v for k, v in hp.items() if k not in self.dead})
        for k, v in merged.items():
            d = self.defaults[k]
            if isinstance(d, bool):
                if not isinstance(v, bool):
                    raise MethodError(f"{self.name}.{k} must be true/false, got {v!r}")
            elif isinstance(d, int) and not isinstance(d, bool):
                if isinstance(v, bool) or not isinstance(v, int):
                    raise MethodError(f"{self.name}.{k} must be an integer, got {v!r}")
            elif isinstance(d, float):
                if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
                    raise MethodError(f"{self.name}.{k} must be a number, got {v!r}")
                merged[k] = float(v)
            elif isinstance(d, str) and not isinstance(v, str):
                raise MethodError(f"{self.name}.{k} must be a string, got {v!r}")
        return merged

    def split_hparams(self, hp: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, float]]:
        """(static, arrays) parts of a full hyperparameter dict."""
        static = {k: v for k, v in hp.items() if k in self.static}
        arrays = {k: float(v) for k, v in hp.items() if k not in self.static}
        return static, arrays
