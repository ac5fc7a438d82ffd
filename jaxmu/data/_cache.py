"""Best-effort on-disk cache of converted (resized) datasets as ``.npz``.

A cache file holds the arrays plus ``sha256``, a digest over every array's
name, dtype, shape and bytes. Loading recomputes it, so a truncated or
bit-flipped file is detected (and then ignored: the caller rebuilds it).
Writes go to a temporary file and are renamed into place, so concurrent
writers never expose half-written files. A read-only location only costs a
warning.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
import zipfile
from collections.abc import Mapping

import numpy as np

_DIGEST_KEY = "sha256"


def digest(arrays: Mapping[str, np.ndarray]) -> str:
    """sha256 hex digest over ``name, dtype, shape, bytes`` of each array (sorted by name)."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def load(path: str) -> dict[str, np.ndarray] | None:
    """Return the cached arrays, or ``None`` if missing or corrupt (with a warning)."""
    if not os.path.exists(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        stored = str(arrays.pop(_DIGEST_KEY))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        warnings.warn(f"ignoring unreadable dataset cache {path}: {e}", stacklevel=3)
        return None
    if stored != digest(arrays):
        warnings.warn(f"ignoring corrupt dataset cache {path} (checksum mismatch)", stacklevel=3)
        return None
    return arrays


def save(path: str, arrays: Mapping[str, np.ndarray]) -> bool:
    """Write ``arrays`` atomically; return False (with a warning) if not writable."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays, **{_DIGEST_KEY: np.asarray(digest(arrays))})
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    except OSError as e:
        warnings.warn(f"could not write dataset cache {path}: {e}", stacklevel=3)
        return False
    return True
