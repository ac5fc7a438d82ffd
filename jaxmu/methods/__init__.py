"""The unlearning methods of the Deep Unlearn benchmark (``docs/methods.md``), as pure functions.

    >>> import jaxmu.methods as M
    >>> M.names()                        # every registered id
    >>> m = M.get("ng_plus", alpha=0.9)  # or M.get("ng_plus(alpha=0.9)")
    >>> m.spec.search_space              # what the tuner searches
    >>> m.spec.domains                   # what a user may set (wider); checked when bound

Each method lives in its own module ``jaxmu/methods/<id>.py`` that defines ``SPEC`` (a
``MethodSpec``); modules are discovered automatically, so registering a method is adding its
module (and the contract tests then cover it). Duplicate ids raise.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import pkgutil
from typing import Any, Mapping

from jaxmu.methods._base import (
    BS, EMAX, EP, EPF, ETA, LR, NL, TEMP, U01, WD, Choice, Dist, Domain, Float, Int, Interval, MethodError,
    MethodSpec, OneOf, SplitData, StaticContext, epoch_cap, generic_space, resolve_space,
)


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
        table[spec.name] = spec
    return table


METHODS: Mapping[str, MethodSpec] = _discover()


def names() -> tuple[str, ...]:
    """Registered method ids, sorted."""
    return tuple(sorted(METHODS))


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
    "BS", "EMAX", "EP", "EPF", "ETA", "LR", "NL", "TEMP", "U01", "WD", "Choice", "Dist", "Domain", "Float", "Int",
    "Interval", "METHODS", "Method", "MethodError", "MethodSpec", "SplitData", "StaticContext", "epoch_cap",
    "OneOf", "generic_space", "get", "names", "parse_call", "resolve_space",
]
