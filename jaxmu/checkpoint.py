"""Orbax checkpoints of whole stacks, with a checksum of our own; single- and multi-host.

Orbax restores flipped bytes in a data file silently (docs/performance.md §5), so every
checkpoint stores a sha256 over its leaves in ``meta.json`` and ``load_tree`` verifies it. It
also stores a sha256 of every file Orbax wrote, checked *before* Orbax reads them: a flipped
byte inside a compressed chunk otherwise makes Orbax fail inside its asyncio tasks, which print
tracebacks at interpreter exit after the one-line error. A
checkpoint is written to a temporary directory and renamed into place only after ``meta.json``
is complete, so a run killed mid-write leaves either the old checkpoint or none, never a half
one that looks finished.

The pytree is stored as a flat mapping of its leaves (``"00000"``, ``"00001"``, ...); the
structure comes back from the caller's template (built with ``jax.eval_shape``), so NamedTuple
optimizer states round-trip exactly.

Multi-host: leaves are global ``jax.Array``s laid out by ``jaxmu.engine.sharding.stack_spec``;
Orbax writes each process's shards from that process and restores each process's shards into
the same layout. The checksum is independent of the layout: it hashes every leaf row by row
(one row per model), each process the rows it holds, and combines the row digests gathered from
all processes. So a checkpoint written by 2 processes x 2 devices loads, verified, on 1 device,
and the other way round.
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

from jaxmu.engine import sharding as S
from jaxmu.paths import absolute_path

META = "meta.json"
ARRAYS = "arrays"
FORMAT = 2  # 2: row-wise checksum, arrays restored in the stack layout


class CheckpointError(ValueError):
    """A missing, incomplete, corrupt or mismatched checkpoint (message says what to do)."""


def _row_digests(leaf: Any) -> np.ndarray:
    """``[rows, 32]`` sha256 digests of ``leaf`` along its first axis (a scalar is one row)."""
    def digests(a: np.ndarray) -> np.ndarray:
        rows = a.reshape(1, -1) if a.ndim == 0 else a.reshape(a.shape[0], -1)
        out = np.zeros((rows.shape[0], 32), np.uint8)
        for i, r in enumerate(rows):
            out[i] = np.frombuffer(hashlib.sha256(np.ascontiguousarray(r).tobytes()).digest(), np.uint8)
        return out

    if not isinstance(leaf, jax.Array) or leaf.is_fully_addressable or leaf.is_fully_replicated:
        return digests(S.to_host(leaf))
    from jax.experimental import multihost_utils

    buf = np.zeros((leaf.shape[0], 32), np.uint8)
    for shard in leaf.addressable_shards:  # split along the models axis only (stack_spec)
        if shard.replica_id == 0:
            start = shard.index[0].start or 0
            d = digests(np.asarray(shard.data))
            buf[start:start + d.shape[0]] = d
    return np.asarray(multihost_utils.process_allgather(buf)).max(axis=0)  # one owner per row


def tree_checksum(tree: Any) -> str:
    """sha256 over every leaf's key path, dtype, shape and row digests (any layout, any host)."""
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        h.update(jax.tree_util.keystr(path).encode())
        h.update(str(np.dtype(leaf.dtype)).encode())
        h.update(str(tuple(leaf.shape)).encode())
        h.update(_row_digests(leaf).tobytes())
    return h.hexdigest()


def _leaf_dict(tree: Any) -> dict[str, jax.Array]:
    leaves = S.place(jax.tree_util.tree_leaves(tree))
    return {f"{i:05d}": x if isinstance(x, jax.Array) else jax.numpy.asarray(x) for i, x in enumerate(leaves)}


def file_digests(directory: Path) -> dict[str, str]:
    """sha256 of every file under ``directory``, keyed by its relative POSIX path."""
    out = {}
    for f in sorted(p for p in directory.rglob("*") if p.is_file()):
        h = hashlib.sha256()
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        out[f.relative_to(directory).as_posix()] = h.hexdigest()
    return out


def _verify_files(path: Path, want: dict[str, str]) -> None:
    """Raise CheckpointError naming the first missing or changed array file."""
    have = file_digests(path / ARRAYS)
    for name, digest in want.items():
        if name not in have:
            raise CheckpointError(f"checkpoint {path} is incomplete ({ARRAYS}/{name} is missing): delete it and rerun")
        if have[name] != digest:
            raise CheckpointError(f"checkpoint {path} is corrupt ({ARRAYS}/{name} changed): delete it and rerun")


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a per-process temporary file and a rename.

    Readers never see a half-written file, and processes writing the same file at once (the
    processes of a multi-host run, two sweep workers) never collide.
    """
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _tmp_dir(path: Path) -> Path:
    # every process of a multi-host run writes into the same directory; single processes
    # (e.g. two sweep workers) each into their own
    tag = "mh" if S.is_multiprocess() else str(os.getpid())
    return path.with_name(f"{path.name}.tmp{tag}")


def save_tree(path: str | Path, tree: Any, metadata: dict[str, Any] | None = None) -> None:
    """Save ``tree`` to ``path`` atomically, with ``metadata`` and a checksum in meta.json.

    A finished checkpoint at ``path`` is never overwritten: checkpoints are content-addressed, so
    when two workers race to write the same one, the first rename wins and the other's copy is
    dropped. In a multi-process run every process calls this (it is collective); process 0
    writes ``meta.json`` and renames. A relative ``path`` is taken from the current directory
    (Orbax refuses relative paths).
    """
    path = absolute_path(path)
    tmp = _tmp_dir(path)
    primary = jax.process_index() == 0
    if primary:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    S.barrier(f"jaxmu:save-start:{path}")
    leaves = _leaf_dict(tree)
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(tmp / ARRAYS, leaves)
    ckptr.wait_until_finished()
    ckptr.close()
    S.barrier(f"jaxmu:save-written:{path}")  # every process's files are on disk before they are hashed
    meta = dict(metadata or {})
    meta["checksum"] = tree_checksum(leaves)
    if primary:
        meta["files"] = file_digests(tmp / ARRAYS)
    meta["format"] = FORMAT
    meta["leaves"] = [[list(v.shape), str(np.dtype(v.dtype))] for v in leaves.values()]
    if primary:
        (tmp / META).write_text(json.dumps(meta, indent=1, sort_keys=True, default=str))
        if path.exists() and not (path / META).exists():
            shutil.rmtree(path)  # a directory without meta.json is never a finished checkpoint
        try:
            os.replace(tmp, path)
        except OSError:
            if not (path / META).exists():
                raise
            shutil.rmtree(tmp)  # another process (a second worker) finished the same checkpoint first
    S.barrier(f"jaxmu:save-done:{path}")


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

    ``template`` may hold arrays or ``jax.ShapeDtypeStruct`` (``jax.eval_shape``). Leaves come
    back in the stack layout on the current devices (``sharding.place``), whatever layout wrote
    them. Raises ``CheckpointError`` when the checkpoint is incomplete, was written by an older
    jaxmu, does not match the template's shapes (another config), or fails its checksum.
    """
    path = absolute_path(path)
    meta = read_metadata(path)
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} was written by an older jaxmu (format {meta.get('format', 1)}, "
                              f"this one reads {FORMAT}): delete it and rerun")
    leaves_t, treedef = jax.tree_util.tree_flatten(template)
    want = [[list(x.shape), str(np.dtype(x.dtype))] for x in leaves_t]
    if meta.get("leaves") != want:
        raise CheckpointError(
            f"checkpoint {path} does not match this configuration (different shapes or model): "
            "use another --out directory or delete the checkpoint"
        )
    mesh = S.default_mesh()
    local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

    def target(shape, dtype):
        sharding = S.stack_sharding(shape, mesh) if mesh is not None else local
        return jax.ShapeDtypeStruct(tuple(shape), np.dtype(dtype), sharding=sharding)

    _verify_files(path, meta.get("files", {}))  # checkpoints written before file digests have none
    abstract = {f"{i:05d}": target(s, d) for i, (s, d) in enumerate(want)}
    ckptr = ocp.StandardCheckpointer()
    try:
        restored = ckptr.restore(path / ARRAYS, abstract)
    except Exception as e:  # orbax raises many types for truncated/missing files
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(e).__name__}): delete it and rerun") from None
    finally:
        ckptr.close()
    if tree_checksum(restored) != meta.get("checksum"):
        raise CheckpointError(f"checkpoint {path} is corrupt (checksum mismatch): delete it and rerun")
    tree = jax.tree_util.tree_unflatten(treedef, [restored[f"{i:05d}"] for i in range(len(want))])
    return tree, meta
