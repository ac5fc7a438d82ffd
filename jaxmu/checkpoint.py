"""Orbax checkpoints of whole stacks, with a checksum of our own.

Orbax restores flipped bytes in a data file silently (cpu-performance.md), so every
checkpoint stores a sha256 over its leaves (path, dtype, shape, bytes) in ``meta.json`` and
``load_tree`` verifies it. A checkpoint is written to a temporary directory and renamed into
place only after ``meta.json`` is complete, so a run killed mid-write leaves either the old
checkpoint or none, never a half one that looks finished.

The pytree is stored as a flat mapping of its leaves (``"00000"``, ``"00001"``, ...); the
structure comes back from the caller's template (built with ``jax.eval_shape``), so NamedTuple
optimizer states round-trip exactly.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

META = "meta.json"
ARRAYS = "arrays"


class CheckpointError(ValueError):
    """A missing, incomplete, corrupt or mismatched checkpoint (message says what to do)."""


def tree_checksum(tree: Any) -> str:
    """sha256 over every leaf's key path, dtype, shape and bytes (host copy)."""
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        arr = np.asarray(jax.device_get(leaf))
        h.update(jax.tree_util.keystr(path).encode())
        h.update(str(arr.dtype).encode())
        h.update(str(arr.shape).encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def _leaf_dict(tree: Any) -> dict[str, np.ndarray]:
    leaves = jax.tree_util.tree_leaves(tree)
    return {f"{i:05d}": np.asarray(jax.device_get(x)) for i, x in enumerate(leaves)}


def save_tree(path: str | Path, tree: Any, metadata: dict[str, Any] | None = None) -> None:
    """Save ``tree`` to ``path`` atomically, with ``metadata`` and a checksum in meta.json.

    A finished checkpoint at ``path`` is never overwritten: checkpoints are content-addressed, so
    when two workers race to write the same one, the first rename wins and the other's copy is
    dropped.
    """
    path = Path(path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    leaves = _leaf_dict(tree)
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(tmp / ARRAYS, leaves)
    ckptr.wait_until_finished()
    ckptr.close()
    meta = dict(metadata or {})
    meta["checksum"] = tree_checksum(tree)
    meta["leaves"] = [[list(v.shape), str(v.dtype)] for v in leaves.values()]
    (tmp / META).write_text(json.dumps(meta, indent=1, sort_keys=True, default=str))
    if path.exists() and not (path / META).exists():
        shutil.rmtree(path)  # a directory without meta.json is never a finished checkpoint
    try:
        os.replace(tmp, path)
    except OSError:
        if not (path / META).exists():
            raise
        shutil.rmtree(tmp)  # another process (a second worker) finished the same checkpoint first


def read_metadata(path: str | Path) -> dict[str, Any]:
    """``meta.json`` of a checkpoint (CheckpointError if missing or unreadable)."""
    path = Path(path)
    try:
        return json.loads((path / META).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} is incomplete (no {META}): delete it and rerun") from None
    except json.JSONDecodeError:
        raise CheckpointError(f"checkpoint {path} has a corrupt {META}: delete it and rerun") from None


def load_tree(path: str | Path, template: Any) -> tuple[Any, dict[str, Any]]:
    """Restore a tree saved by ``save_tree`` into the structure of ``template``.

    ``template`` may hold arrays or ``jax.ShapeDtypeStruct`` (``jax.eval_shape``). Raises
    ``CheckpointError`` when the checkpoint is incomplete, does not match the template's
    shapes (another config), or fails its checksum (corrupt bytes).
    """
    path = Path(path)
    meta = read_metadata(path)
    leaves_t, treedef = jax.tree_util.tree_flatten(template)
    want = [[list(x.shape), str(np.dtype(x.dtype))] for x in leaves_t]
    if meta.get("leaves") != want:
        raise CheckpointError(
            f"checkpoint {path} does not match this configuration (different shapes or model): "
            "use another --out directory or delete the checkpoint"
        )
    abstract = {f"{i:05d}": jax.ShapeDtypeStruct(tuple(s), np.dtype(d)) for i, (s, d) in enumerate(want)}
    ckptr = ocp.StandardCheckpointer()
    try:
        restored = ckptr.restore(path / ARRAYS, abstract)
    except Exception as e:  # orbax raises many types for truncated/missing files
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(e).__name__}): delete it and rerun") from None
    finally:
        ckptr.close()
    tree = jax.tree_util.tree_unflatten(treedef, [restored[f"{i:05d}"] for i in range(len(want))])
    if tree_checksum(tree) != meta.get("checksum"):
        raise CheckpointError(f"checkpoint {path} is corrupt (checksum mismatch): delete it and rerun")
    return tree, meta
