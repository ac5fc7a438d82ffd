"""Name registries of methods, models and datasets: built-ins plus a researcher's own entries.

One class, ``Registry``, holds every registry's mutable state (``jaxmu.methods``,
``jaxmu.models`` and ``jaxmu.data`` each own one instance). Built-in entries are fixed when the
registry is made: they can be neither replaced nor removed. A user entry is added with
``add(name, item)``; adding a name again needs ``replace=True``. ``view`` is a read-only mapping
of every entry (built-ins first, then user entries in registration order); reading it first runs
the registry's lazy ``loader`` once (entry points of installed packages).

    >>> r = Registry("widget", {"a": 1}, KeyError)
    >>> r.add("b", 2)
    >>> sorted(r.view)
    ['a', 'b']
    >>> r.add("a", 3)
    Traceback (most recent call last):
    KeyError: "widget 'a' is built in and cannot be replaced: register yours under another name"

Nothing here imports the rest of jaxmu.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

T = TypeVar("T")


class _View(Mapping[str, T]):
    """A live, read-only view of a registry (runs its lazy loader before the first read)."""

    def __init__(self, registry: "Registry[T]") -> None:
        self._registry = registry

    def __getitem__(self, name: str) -> T:
        return self._registry.table()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._registry.table())

    def __len__(self) -> int:
        return len(self._registry.table())

    def __repr__(self) -> str:
        return f"<{self._registry.kind} registry: {', '.join(self._registry.table())}>"


class Registry(Generic[T]):
    """Built-in and user entries of one kind (``method``, ``model``, ``dataset``).

    Args:
      kind: the word used in error messages.
      builtins: the entries shipped with jaxmu (fixed).
      error: the exception class raised for a refused registration (``MethodError``, ...).
      loader: called once, lazily, before the first read (e.g. loading entry points); it may
        call ``add``.
    """

    def __init__(self, kind: str, builtins: Mapping[str, T], error: type[Exception],
                 loader: Callable[[], None] | None = None) -> None:
        self.kind = kind
        self.error = error
        self._builtins = dict(builtins)
        self._user: dict[str, T] = {}
        self._origins: dict[str, str] = {}
        self._loader = loader
        self._loaded = loader is None
        self.view: Mapping[str, T] = _View(self)

    def table(self) -> dict[str, T]:
        """Every entry (a fresh dict), after the lazy loader has run."""
        self.load()
        return {**self._builtins, **self._user}

    def load(self, *, again: bool = False) -> None:
        """Run the lazy loader (once; ``again=True`` runs it again, e.g. after ``sys.path`` grew)."""
        if self._loader is None or (self._loaded and not again):
            return
        self._loaded = True  # before the call: the loader's own ``add`` calls must not recurse
        try:
            self._loader()
        except BaseException:
            self._loaded = False  # a failing loader is retried (and fails again) on the next read
            raise

    def is_builtin(self, name: str) -> bool:
        return name in self._builtins

    def builtin_names(self) -> tuple[str, ...]:
        """Names of the built-in entries, sorted."""
        return tuple(sorted(self._builtins))

    def names(self) -> tuple[str, ...]:
        """Every name, sorted."""
        return tuple(sorted(self.table()))

    def add(self, name: str, item: T, *, replace: bool = False, origin: str | None = None) -> None:
        """Register ``item`` under ``name``; a built-in name is refused, a taken one unless ``replace``
        (or unless it is the very same ``item``, or came from the same ``origin``, e.g. an entry
        point loaded again: then the first registration stays)."""
        if not isinstance(name, str) or not name.isidentifier():
            raise self.error(f"{self.kind} name {name!r} must be a Python identifier (letters, digits, _)")
        if name in self._builtins:
            raise self.error(f"{self.kind} {name!r} is built in and cannot be replaced: "
                             "register yours under another name")
        if name in self._user and not replace:
            if self._user[name] is item or (origin is not None and self._origins.get(name) == origin):
                return
            raise self.error(f"{self.kind} {name!r} is already registered: pass replace=True to replace it")
        self._user[name] = item
        self._origins.pop(name, None)
        if origin is not None:
            self._origins[name] = origin

    def remove(self, name: str) -> None:
        """Remove a user entry (built-ins stay); an unknown name raises."""
        if name in self._builtins:
            raise self.error(f"{self.kind} {name!r} is built in and cannot be removed")
        if name not in self._user:
            raise self.error(f"{self.kind} {name!r} is not registered")
        del self._user[name]
        self._origins.pop(name, None)
