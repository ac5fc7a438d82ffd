"""Where user-given paths point: shipped configs by name, and paths made absolute.

Two concerns of the command-line boundary live here:

* **Shipped configs.** The YAML settings ship inside the package (``jaxmu/configs/*.yaml``,
  read through ``importlib.resources``; the repository's top-level ``configs/`` is a symlink to
  that folder, so there is one copy). ``--config`` takes a path or a shipped name
  (``cifar10_resnet18`` or ``cifar10_resnet18.yaml``); an existing path wins.
* **Relative paths.** Orbax refuses relative checkpoint paths, and a relative path means
  something else once a process changes directory, so every path a user gives (``--out``,
  ``data.data_dir``, ``data.path``, file-backed storage URLs) is made absolute against the
  current directory once, where the command line is read (``jaxmu.cli``), and printed in that
  form. Other URLs (``postgresql://...``) pass through unchanged.
"""

from __future__ import annotations

import dataclasses
import os
import re
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from jaxmu.config import Config

_SQLITE = re.compile(r"^(sqlite(?:\+\w+)?:///)(.*)$")
_JOURNAL = "journal://"


def absolute_path(path: str | os.PathLike[str]) -> Path:
    """``path`` made absolute against the current directory (``~`` expanded, ``..`` folded).

    Symlinks are kept as the user named them (``os.path.abspath``, not ``Path.resolve``).
    """
    return Path(os.path.abspath(os.path.expanduser(os.fspath(path))))


def absolute_storage_url(url: str) -> str:
    """An Optuna storage URL whose file (SQLite database, journal) has an absolute path.

    ``sqlite:///rel.db`` -> ``sqlite:////CWD/rel.db`` (SQLAlchemy: three slashes then a relative
    path, four for an absolute one); ``journal://rel/study.journal`` -> ``journal:///CWD/rel/...``
    (``jaxmu.tuning.open_storage`` takes everything after ``journal://`` as the file path, so
    ``journal:///abs`` is already absolute). Empty, in-memory and server URLs are unchanged.
    """
    m = _SQLITE.match(url)
    if m:
        prefix, rest = m.groups()
        file, sep, query = rest.partition("?")
        if not file or file == ":memory:" or file.startswith("file:"):
            return url
        return f"{prefix}{absolute_path(file)}{sep}{query}"
    if url.startswith(_JOURNAL) and url[len(_JOURNAL):]:
        return f"{_JOURNAL}{absolute_path(url[len(_JOURNAL):])}"
    return url


def with_absolute_paths(cfg: "Config") -> "Config":
    """``cfg`` with ``data.data_dir``, ``data.path``, ``tune.storage`` and ``original.path`` made absolute.

    The run directory's hash covers these values, so the same data reached from two working
    directories keys the same run directory.
    """
    data = cfg.data
    data = dataclasses.replace(
        data,
        data_dir=str(absolute_path(data.data_dir)) if data.data_dir else data.data_dir,
        path=str(absolute_path(data.path)) if data.path else data.path,
    )
    tune = dataclasses.replace(cfg.tune, storage=absolute_storage_url(cfg.tune.storage))
    spec = cfg.original.path
    paths = [str(absolute_path(p)) for p in ([spec] if isinstance(spec, str) else spec)]
    original = dataclasses.replace(cfg.original, path=paths[0] if isinstance(spec, str) else tuple(paths))
    return cfg.replace(data=data, tune=tune, original=original)


def _shipped_dir() -> Traversable:
    return resources.files("jaxmu").joinpath("configs")


def shipped_configs() -> list[str]:
    """Names of the configs shipped with the package (file names without ``.yaml``), sorted."""
    return sorted(f.name[: -len(".yaml")] for f in _shipped_dir().iterdir()
                  if f.name.endswith(".yaml") and f.is_file())


def shipped_config(name: str) -> Traversable | None:
    """The shipped config called ``name`` (with or without ``.yaml``), or None."""
    stem = name[: -len(".yaml")] if name.endswith(".yaml") else name
    if stem not in shipped_configs():
        return None
    return _shipped_dir().joinpath(f"{stem}.yaml")
