"""``--plugin MODULE|FILE.py``: import a researcher's code that registers methods, models, data.

    python -m jaxmu.unlearn --plugin my_methods.py --method ga_anchor
    python -m jaxmu.sweep --plugin mylab.unlearning --method mine --set data.name=blobs

A plugin is an ordinary Python module: importing it calls ``jaxmu.methods.register``,
``jaxmu.models.register`` and/or ``jaxmu.data.register``. A path ending in ``.py`` (or naming an
existing file) is imported from that file; anything else is imported as a module from
``sys.path``. A plugin that cannot be found or fails while importing raises ``PluginError``: the
command lines print it as one ``error:`` line and exit with code 2.

    >>> load_plugins(["tests/fixtures/no_such_plugin.py"])
    Traceback (most recent call last):
    PluginError: --plugin tests/fixtures/no_such_plugin.py: no such file
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType


class PluginError(ValueError):
    """A ``--plugin`` that cannot be found or fails while importing (one line, the cause named)."""


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def _from_file(path: Path, label: str) -> ModuleType:
    if not path.is_file():
        raise PluginError(f"--plugin {label}: no such file")
    path = path.resolve()
    # one module per file (the same file imported twice is the same module)
    name = f"jaxmu_plugin_{path.stem}_{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"--plugin {label}: cannot import it as a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as e:
        del sys.modules[name]
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        raise PluginError(f"--plugin {label} failed while importing ({_first_line(e)})") from None
    return module


def _from_module(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name and (name == e.name or name.startswith(e.name + ".")):
            raise PluginError(f"--plugin {name}: no module named {e.name!r} on sys.path "
                              "(give a FILE.py path, or install the package)") from None
        raise PluginError(f"--plugin {name} failed while importing ({_first_line(e)})") from None
    except Exception as e:  # noqa: BLE001 - any failure of the researcher's module
        raise PluginError(f"--plugin {name} failed while importing ({_first_line(e)})") from None


def load_plugin(target: str) -> ModuleType:
    """Import one plugin: a ``.py`` file (or any existing file) or a dotted module name."""
    path = Path(target)
    if target.endswith(".py") or path.is_file():
        return _from_file(path, target)
    if not all(part.isidentifier() for part in target.split(".")):
        raise PluginError(f"--plugin {target}: neither a FILE.py path nor a module name")
    return _from_module(target)


def load_plugins(targets: Sequence[str]) -> list[ModuleType]:
    """Import every plugin in order (``--plugin`` is repeatable)."""
    return [load_plugin(t) for t in targets]
