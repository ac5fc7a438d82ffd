"""The unlearning methods of the Deep Unlearn benchmark (``docs/methods.md``), as pure functions.

    >>> import jaxmu.methods as M
    >>> M.names()                        # every registered id
    >>> m = M.get("ng_plus", alpha=0.9)  # or M.get("ng_plus(alpha=0.9)")
    >>> m.spec.search_space              # what the tuner searches
    >>> m.spec.domains                   # what a user may set (wider); checked when bound

Each method lives in its own module ``jaxmu/methods/<id>.py`` that defines ``SPEC`` (a
``MethodSpec``); modules are discovered automatically, so registering a method is adding its
module (and the contract tests then cover it). Duplicate ids raise.

A researcher's own method is registered without touching the package (``register``), or shipped
in an installed package as an entry point of the group ``jaxmu.methods`` whose value is a
``MethodSpec`` or a function returning one (loaded lazily, once, on the first lookup)::

    >>> M.register(MY_SPEC)               # a call ...
    >>> @M.register                       # ... or a decorator on a function returning the spec
    ... def my_method() -> M.MethodSpec:
    ...     return M.MethodSpec(name="my_method", ...)

Registered methods pass the same checks as the built-ins (``check_spec``); ``jaxmu.testing.
check_method`` runs the contract suite on one.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.metadata
import pkgutil
from typing import Any, Callable, Mapping, TypeVar

from jaxmu.methods._base import (
    BS, E_MAX_PROBES, EMAX, EP, EPF, ETA, LR, NL, TEMP, U01, WD, Choice, Dist, Domain, Float, Int, Interval, MethodError,
    MethodSpec, OneOf, SplitData, StaticContext, check_spec, epoch_cap, fingerprint, generic_domains, generic_space,
    resolve_space,
)
from jaxmu.registry import Registry

ENTRY_POINT_GROUP = "jaxmu.methods"


def _discover() -> dict[str, MethodSpec]:
    table: dict[str, MethodSpec] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        spec = getattr(module, "SPEC", None)
        if spec is None:
            continue
        if spec.name in table:
            raise RuntimeError(f"duplicate method id {spec.name!r}")
        check_spec(spec)
        table[spec.name] = spec
    return table


def _spec_of(obj: Any, where: str) -> MethodSpec:
    """``obj`` if it is a ``MethodSpec``, else ``obj()`` when that returns one."""
    if not isinstance(obj, MethodSpec) and callable(obj):
        obj = obj()
    if not isinstance(obj, MethodSpec):
        raise MethodError(f"{where} gave a {type(obj).__name__}, not a MethodSpec: return jaxmu.methods.MethodSpec(...)")
    return obj


def load_entry_points() -> None:
    """Register the methods of installed packages' ``jaxmu.methods`` entry points.

    Runs lazily on the first lookup; call it again after installing a package (or extending
    ``sys.path``) in a running interpreter. An entry point that fails to load raises one-line
    ``MethodError`` naming it.
    """
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        where = f"entry point {ep.name} = {ep.value} (group {ENTRY_POINT_GROUP})"
        try:
            obj = ep.load()
        except Exception as e:  # noqa: BLE001 - any import failure of a third-party package
            raise MethodError(f"{where} failed to load ({type(e).__name__}: {e}): fix or uninstall its package") from None
        spec = _spec_of(obj, where)
        _register(spec, replace=False, origin=where)


_REGISTRY: Registry[MethodSpec] = Registry("method", _discover(), MethodError, loader=load_entry_points)

METHODS: Mapping[str, MethodSpec] = _REGISTRY.view
"""Every method id -> ``MethodSpec`` (read-only; built-ins, registered and entry-point methods)."""


def names() -> tuple[str, ...]:
    """Registered method ids (built-in and user), sorted."""
    return _REGISTRY.names()


def builtin_names() -> tuple[str, ...]:
    """The ids of the methods shipped with jaxmu, sorted."""
    return _REGISTRY.builtin_names()


def _register(spec: MethodSpec, *, replace: bool, origin: str | None = None) -> MethodSpec:
    check_spec(spec)
    _REGISTRY.add(spec.name, spec, replace=replace, origin=origin)
    return spec


S = TypeVar("S", MethodSpec, Callable[[], MethodSpec])


def register(spec: S | None = None, *, replace: bool = False) -> Any:
    """Register a researcher's method under ``spec.name``; returns its argument unchanged.

    ``spec`` is a ``MethodSpec``, or a function taking no argument that returns one (then
    ``register`` works as a decorator, with or without ``(replace=True)``). The spec passes the
    built-ins' checks (``check_spec``: defaults and search ranges inside their domains). A
    built-in id is refused, and so is an id already registered unless ``replace=True``; both
    raise a one-line ``MethodError`` saying what to do.

        >>> M.register(SPEC)                   # SPEC: a MethodSpec named "ga_anchor"
        >>> M.get("ga_anchor", epochs=2)       # then usable by name, in configs and CLIs
        >>> @M.register(replace=True)          # a decorator on a function returning a MethodSpec
        ... def ga_anchor() -> M.MethodSpec: ...
    """
    if spec is None:
        return lambda fn: register(fn, replace=replace)
    where = f"register({getattr(spec, '__name__', type(spec).__name__)})"
    _register(_spec_of(spec, where), replace=replace)
    return spec


def unregister(name: str) -> None:
    """Remove a registered (not built-in) method."""
    _REGISTRY.remove(name)


@dataclasses.dataclass(frozen=True)
class Method:
    """A method bound to a full set of hyperparameters (defaults merged, validated)."""

    spec: MethodSpec
    hparams: Mapping[str, Any]

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def static(self) -> dict[str, Any]:
        return self.spec.split_hparams(self.hparams)[0]

    @property
    def arrays(self) -> dict[str, float]:
        return self.spec.split_hparams(self.hparams)[1]

    def call_string(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in sorted(self.hparams.items()) if v != self.spec.defaults.get(k))
        return f"{self.name}({args})"

    def replace(self, **hp: Any) -> "Method":
        return Method(self.spec, self.spec.check_hparams({**self.hparams, **hp}))


def parse_call(text: str) -> tuple[str, dict[str, Any]]:
    """``"ng_plus(alpha=0.9)"`` -> ``("ng_plus", {"alpha": 0.9})``; a bare name has no args."""
    text = text.strip()
    try:
        node = ast.parse(text, mode="eval").body
    except SyntaxError:
        raise MethodError(f"cannot parse method {text!r}: use NAME or NAME(key=value, ...)") from None
    if isinstance(node, ast.Name):
        return node.id, {}
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.args:
        try:
            return node.func.id, {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords}
        except ValueError:
            pass
    raise MethodError(f"cannot parse method {text!r}: use NAME or NAME(key=value, ...) with literal values")


def get(name: str, **hparams: Any) -> Method:
    """Look up a method by id or call string and bind hyperparameters (validated)."""
    base, args = parse_call(name)
    if base not in METHODS:
        raise MethodError(f"unknown method {base!r}: valid are {', '.join(names())}")
    spec = METHODS[base]
    return Method(spec, spec.check_hparams({**args, **hparams}))


__all__ = [
    "BS", "E_MAX_PROBES", "EMAX", "EP", "EPF", "ETA", "LR", "NL", "TEMP", "U01", "WD", "Choice", "Dist", "Domain", "Float", "Int",
    "Interval", "METHODS", "Method", "MethodError", "MethodSpec", "SplitData", "StaticContext", "epoch_cap",
    "ENTRY_POINT_GROUP", "OneOf", "builtin_names", "check_spec", "fingerprint", "generic_domains", "generic_space", "get", "load_entry_points",
    "names", "parse_call", "register", "resolve_space", "unregister",
]
