"""The method contract: hyperparameters as data, ``init`` / ``update`` / ``plan``, a registry entry.

A method is written the optax way (docs/architecture.md#the-method-contract, ``jaxmu.methods.plan``): pure ``init`` and
``update`` functions over ONE model, a static ``plan`` of phases and passes, and optionally a
``result``; the one driver (``jaxmu.methods.driver``) runs every method's plan, and
``jaxmu.methods.stack`` maps it over the models axis. ``MethodSpec.unlearn_one`` is the per-model
entry point::

    spec.unlearn_one(ctx: StaticContext, data: SplitData, params, batch_stats, hp: dict, key,
                     *, static) -> (params, batch_stats)

``hp`` holds every *array* hyperparameter (learning rates, alpha, temperatures, thresholds,
noise scales, rates) as float32 scalars; they may differ per model (one compiled program runs a
batch of tuning trials). *Static* hyperparameters (epochs, batch sizes, k, quirk flags) change
shapes or loop counts; they are bound before tracing (``ctx.static``) and partition a sweep into
compile groups.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import types
from typing import Any, Callable, Mapping, NamedTuple

from jaxmu.methods import driver
from jaxmu.methods.plan import InitFn, PlanFn, ResultFn, UpdateFn
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
    """The generic set G of ``docs/methods.md`` §2.9 (momentum fixed at 0.9, hence not searched)."""
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


# --------------------------------------------------------------------------- domains
#
# A domain is where a hyperparameter MEANS something (a learning rate > 0, a weight in [0, 1],
# a flag out of its choices); a search space is what the tuner samples. A user may set a value
# beyond the searched range but never outside the domain, and every search space lies inside
# its domain (tests/test_methods_contract.py proves it for every method). Domains are checked
# when a method is bound (``jaxmu.methods.get``, ``Method.replace``), before any tracing.


@dataclasses.dataclass(frozen=True)
class Interval:
    """Numbers (or each number of a list/tuple value) between ``low`` and ``high``.

    ``why`` says what the hyperparameter is, for the error message.
    """

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    why: str = ""

    def _has(self, x: float) -> bool:
        above = x > self.low if self.low_open else x >= self.low
        below = x < self.high if self.high_open else x <= self.high
        return above and below

    def contains(self, value: Any) -> bool:
        """Whether ``value`` (a number, or every element of a list/tuple) lies in the interval."""
        xs = value if isinstance(value, (list, tuple)) else (value,)
        return all(isinstance(x, (int, float)) and not isinstance(x, bool) and x == x and self._has(x) for x in xs)

    def covers(self, dist: Dist) -> bool:
        """Whether every value ``dist`` can sample lies in the interval (``E_max`` resolved)."""
        if isinstance(dist, Choice):
            return all(self.contains(c) for c in dist.choices)
        return self.contains(dist.low) and self.contains(dist.high)

    def __str__(self) -> str:
        def fmt(x: float) -> str:
            return "inf" if x == math.inf else "-inf" if x == -math.inf else f"{x:g}"

        return f"{'(' if self.low_open else '['}{fmt(self.low)}, {fmt(self.high)}{')' if self.high_open else ']'}"


@dataclasses.dataclass(frozen=True)
class OneOf:
    """One of a fixed set of values (choice flags, strings, booleans)."""

    values: tuple
    why: str = ""

    def contains(self, value: Any) -> bool:
        return any(value == v and type(value) is type(v) for v in self.values)

    def covers(self, dist: Dist) -> bool:
        return isinstance(dist, Choice) and all(self.contains(c) for c in dist.choices)

    def __str__(self) -> str:
        return "{" + ", ".join(repr(v) for v in self.values) + "}"


Domain = Interval | OneOf

_INF = math.inf


def nonneg(why: str) -> Interval:
    """[0, inf): learning rates, weight decays, noise scales, loss weights, temperatures (T -> 0 is legal, §5)."""
    return Interval(0.0, _INF, high_open=True, why=why)


def at_least(n: int, why: str) -> Interval:
    """[n, inf): counts (epochs, batch sizes, blocks)."""
    return Interval(n, _INF, high_open=True, why=why)


def unit(why: str) -> Interval:
    """[0, 1]: fractions, probabilities, convex weights."""
    return Interval(0.0, 1.0, why=why)


D_LR = nonneg("a learning rate; 0 freezes the weights, which tests use to isolate a one-shot step")
D_WD = nonneg("a weight decay")
D_MOM = Interval(0.0, 1.0, high_open=True, why="a momentum")
D_EPOCHS = at_least(1, "a number of epochs")
D_BATCH = at_least(1, "a batch size")
D_TEMP = nonneg("a softmax temperature; T -> 0 is a legal trial, its losses may be non-finite")
D_BOOL = OneOf((False, True), why="a switch")


def generic_domains(lr: str = "learning_rate", wd: str = "weight_decay", bs: str = "batch_size",
                    ep: str | None = "epochs", mom: str | None = "momentum") -> dict[str, Domain]:
    """Domains of the generic set G (``generic_space``) plus its fixed momentum."""
    out: dict[str, Domain] = {lr: D_LR, wd: D_WD, bs: D_BATCH}
    if ep:
        out[ep] = D_EPOCHS
    if mom:
        out[mom] = D_MOM
    return out


E_MAX_PROBES = (1, 2, 10, 19, 37)
"""Epoch caps at which ``check_spec`` resolves ``E_max`` (small, odd and large settings)."""


def check_spec(spec: "MethodSpec") -> None:
    """Raise ``MethodError`` unless ``spec`` is a well-formed method (built-in or registered).

    Every default lies inside its domain; searched, static and ragged names are hyperparameters
    (dead ones are never searched); every search range lies inside its domain for several
    ``E_max`` (``E_MAX_PROBES``); the name is an identifier (so ``NAME(key=value)`` parses).

        >>> check_spec(dataclasses.replace(spec, defaults={**spec.defaults, "learning_rate": -1.0}))
        Traceback (most recent call last):
        MethodError: method 'mine': default learning_rate = -1.0 is outside its domain [0, inf) ...
    """
    if not isinstance(spec, MethodSpec):
        raise MethodError(f"expected a MethodSpec, got {type(spec).__name__}: build one with jaxmu.methods.MethodSpec")
    who = f"method {spec.name!r}"
    if not isinstance(spec.name, str) or not spec.name.isidentifier():
        raise MethodError(f"{who}: the name must be a Python identifier (letters, digits, _)")
    for what, names in (("searched", set(spec.search_space)), ("static", set(spec.static)),
                        ("dead", set(spec.dead)), ("tune_overrides", set(spec.tune_overrides))):
        unknown = names - set(spec.defaults)
        if what == "dead":
            unknown = names & set(spec.search_space)
            if unknown:
                raise MethodError(f"{who}: dead hyperparameters {sorted(unknown)} must not be searched")
            continue
        if unknown:
            raise MethodError(f"{who}: {what} names {sorted(unknown)} have no default: add them to defaults")
    for k, v in spec.defaults.items():
        dom = spec.domains[k]
        if not dom.contains(v):
            raise MethodError(f"{who}: default {k} = {v!r} is outside its domain {dom}: widen the domain or "
                              "change the default")
    for e_max in E_MAX_PROBES:
        for k, dist in resolve_space(spec.search_space, e_max).items():
            if not spec.domains[k].covers(dist):
                raise MethodError(f"{who}: search range of {k} {dist} is not inside its domain {spec.domains[k]} "
                                  f"(E_max {e_max}): narrow the search space or widen the domain")


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
      stream_sizes: ``(stream, n)`` pairs, the number of examples of each stream of the split
        (static shapes), bound by the driver before ``plan`` (``size``): plans whose step counts
        depend on a stream's size (PRMQ's step budget).
    """

    model: Model
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_augment: str = "none"
    static_items: tuple[tuple[str, Any], ...] = ()
    stream_sizes: tuple[tuple[str, int], ...] = ()

    @property
    def arch(self) -> str:
        return self.model.name

    @property
    def static(self) -> dict[str, Any]:
        """The method's static hyperparameters (epochs, batch sizes, flags), bound by the driver."""
        return dict(self.static_items)

    def with_static(self, static: Mapping[str, Any]) -> "StaticContext":
        return dataclasses.replace(self, static_items=tuple(sorted(static.items())))

    def size(self, stream: str) -> int:
        """The number of examples of ``stream`` (``retain``, ``forget``, ``val``, ``combined``)."""
        sizes = dict(self.stream_sizes)
        if stream not in sizes:
            raise ValueError(f"stream size of {stream!r} not bound (the driver binds it before plan)")
        return sizes[stream]


class SplitData(NamedTuple):
    """Arrays a method may read (traced): the on-device dataset and the split indices.

    ``images`` uint8 ``[N, H, W, C]`` and ``labels`` int32 ``[N]`` are shared by every model.
    ``retain``, ``forget``, ``val`` are int32 index arrays: shared (``[n]``) in the main
    benchmark, or per model (``[M, n]`` before vmapping) in U-LiRA. D_t is never given to a
    method (``docs/methods.md`` §2.1).
    """

    images: Array
    labels: Array
    retain: Array
    forget: Array
    val: Array


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """A registered method: defaults, search space, static names, and its driver.

    Attributes:
      name: registry id (``docs/methods.md`` §1).
      init, update, plan, result: the method (``jaxmu.methods.plan``); ``result`` defaults to
        the trained ``TrainState``'s parameters and statistics.
      defaults: every hyperparameter's default (the reference config's value).
      search_space: what the tuner searches (dead hyperparameters excluded).
      static: names of hyperparameters that are static (shapes / loop counts / flags).
      dead: hyperparameters the reference searches that have no effect (accepted, ignored).
      doc: one-line description.
      applies_to: architectures the method supports (``None`` = all).
      tune_overrides: settings the tuner applies before searching (e.g. RNI's scalar fine
        learning rate: under HPO the reference's fine lr is a searched scalar, not its list).
      domains: every hyperparameter's domain (``Interval`` / ``OneOf``): where its value means
        something; wider than (or equal to) its search range. Required for every default.
      ragged: static epoch counts that may instead be given per model as array hyperparameters
        (``Phase.count``, ``docs/methods.md`` §6.2): ``ragged_split`` moves them, one program then
        serves every count up to the compiled maximum.
      ragged_value: ``(name, value, static, size) -> float``: the per-model array a ragged count
        becomes, when it is not the count itself (``static``: the static hyperparameters;
        ``size(stream)``: a stream's number of examples). PRMQ's ``num_epochs`` E becomes its
        step budget ``int(ceil(n_r / B) * E) + 1``, computed here in float64 as the reference
        does (float32 arithmetic in the program could round ``L * E`` across an integer).
    """

    name: str
    defaults: Mapping[str, Any]
    search_space: Mapping[str, Dist]
    static: frozenset[str]
    init: InitFn
    update: UpdateFn
    plan: PlanFn
    result: ResultFn | None = None
    dead: frozenset[str] = frozenset()
    doc: str = ""
    applies_to: tuple[str, ...] | None = None
    tune_overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    domains: Mapping[str, Domain] = dataclasses.field(default_factory=dict)
    ragged: frozenset[str] = frozenset()
    ragged_value: Callable[[str, Any, Mapping[str, Any], Callable[[str], int]], float] | None = None

    def __post_init__(self) -> None:
        if not self.ragged <= self.static:
            raise ValueError(f"method {self.name}: ragged epoch counts {sorted(self.ragged - self.static)} "
                             "must be static hyperparameters")
        missing = set(self.defaults) - set(self.domains)
        extra = set(self.domains) - set(self.defaults)
        if missing or extra:
            raise ValueError(f"method {self.name}: domains must name exactly its hyperparameters "
                             f"(missing {sorted(missing)}, unknown {sorted(extra)})")

    def unlearn_one(self, ctx: StaticContext, data: SplitData, params, batch_stats, hp: Mapping[str, Any],
                    key, *, static: Mapping[str, Any]) -> tuple[Any, Any]:
        """Unlearn ONE model (traced under jit/vmap by ``jaxmu.methods.stack``)."""
        return driver.run_method(self, ctx.with_static(static), data, params, batch_stats, hp, key)

    def check_hparams(self, hp: Mapping[str, Any]) -> dict[str, Any]:
        """Merge ``hp`` over the defaults and validate: names, types, then domains.

        Unknown names, a wrong type (``epochs=1.5``) or a value outside its domain
        (``ng_plus.alpha = 2.0``) raise ``MethodError`` naming the hyperparameter and what is
        allowed; this runs when a method is bound, before anything is traced or trained.
        """
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
            dom = self.domains[k]
            if not dom.contains(merged[k]):
                why = f" ({dom.why})" if dom.why else ""
                raise MethodError(f"{self.name}.{k} = {v!r} is outside its domain {dom}{why}")
        return merged

    def split_hparams(self, hp: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, float]]:
        """(static, arrays) parts of a full hyperparameter dict."""
        static = {k: v for k, v in hp.items() if k in self.static}
        arrays = {k: float(v) for k, v in hp.items() if k not in self.static}
        return static, arrays

    def ragged_split(self, hp: Mapping[str, Any], maxima: Mapping[str, Any],
                     size: Callable[[str], int] | None = None) -> tuple[dict[str, Any], dict[str, float]]:
        """``split_hparams`` with every ragged epoch count named in ``maxima`` moved to the arrays.

        The static part then holds ``maxima[name]`` (the compiled number of epochs, e.g. the
        search space's E_max) and the arrays the model's own count — or ``ragged_value`` of it,
        which may read the stream sizes ``size`` —, so trials that differ only in those counts
        share one program (``Phase.count``). A count above its maximum raises.
        """
        static, arrays = self.split_hparams(hp)
        for name in self.ragged & set(maxima):
            if static[name] > maxima[name]:
                raise MethodError(f"{self.name}.{name} = {static[name]} exceeds the compiled maximum {maxima[name]}")
            if self.ragged_value is None:
                arrays[name] = float(static[name])
            elif size is None:
                raise ValueError(f"{self.name}.{name}: a ragged count with ragged_value needs the stream sizes")
            else:
                arrays[name] = float(self.ragged_value(name, static[name], static, size))
            static[name] = type(self.defaults[name])(maxima[name])
        return static, arrays


def _stable_repr(value: Any) -> str:
    """``repr`` that does not depend on string hashing (sets sorted, tuples element-wise)."""
    if isinstance(value, (set, frozenset)):
        return "{" + ",".join(sorted(_stable_repr(v) for v in value)) + "}"
    if isinstance(value, tuple):
        return "(" + ",".join(_stable_repr(v) for v in value) + ")"
    return repr(value)


def _code_digest(obj: Any, h: "hashlib._Hash", depth: int = 0) -> None:
    """Feed ``h`` with what a function computes: its name, bytecode, constants (nested functions
    included), the names it reads and the simple values or functions it closes over;
    ``functools.partial`` objects by their function and arguments; anything else by its type."""
    if depth > 8:
        return
    fn = getattr(obj, "func", None) if not hasattr(obj, "__code__") else None
    if fn is not None:  # functools.partial
        _code_digest(fn, h, depth + 1)
        h.update(_stable_repr((tuple(getattr(obj, "args", ())), tuple(sorted(getattr(obj, "keywords", {}).items()))))
                 .encode())
        return
    code = getattr(obj, "__code__", obj if isinstance(obj, types.CodeType) else None)
    if code is None:
        h.update(f"{type(obj).__module__}.{type(obj).__qualname__}".encode())
        return
    h.update(f"{code.co_name}|{code.co_names}|{code.co_varnames}".encode())
    h.update(code.co_code)
    for cell in getattr(obj, "__closure__", None) or ():  # values a factory closed over
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if callable(value):
            _code_digest(value, h, depth + 1)
        elif isinstance(value, (bool, int, float, str, bytes, tuple, frozenset)) or value is None:
            h.update(_stable_repr(value).encode())
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            _code_digest(c, h, depth + 1)
        else:
            h.update(_stable_repr(c).encode())


def fingerprint(spec: MethodSpec) -> str:
    """16 hex digits naming a method's code (``init``, ``update``, ``plan``, ``result``) and its
    hyperparameter names: keys the unlearned checkpoints of registered methods, so a method
    re-registered with changed code never reuses the old one's results. (Helpers the functions
    call are not followed: change the method's own code, or its name, when they change.)"""
    h = hashlib.sha256(spec.name.encode())
    for fn in (spec.init, spec.update, spec.plan, spec.result):
        _code_digest(fn, h)
    h.update(repr((sorted(spec.defaults), sorted(spec.static), sorted(spec.ragged))).encode())
    return h.hexdigest()[:16]
