"""Checkpointed, resumable, content-addressed stages (docs/sharp_edges.md).

A *run directory* ``OUT/<dataset>_<model>_<hash>`` is keyed by the hash of the semantic
config (data, model, train, seeds). It holds ``config.json`` and one folder per stage::

    original/epoch_0005/   resumable checkpoint of the whole stack (kept: the latest)
    original/final/        the finished stack + meta.json (config, versions, device,
                           compile_s and run_s apart, checksum)
    retrain/...

Resume precedence: a finished ``final`` is loaded and the stage skipped; else the latest
``epoch_*`` checkpoint is restored and training continues from its epoch; else from scratch.
A checkpoint that is corrupt or belongs to another config raises ``CheckpointError``.

Divergence: after every chunk of epochs (before its checkpoint) the stack is checked per model
(``jaxmu.engine.finite.finite_rows``, one device reduction over parameters and BatchNorm
statistics). A model that is no longer finite stops the stage with ``DivergedError`` naming its
seeds; nothing is written for the diverged epochs (no ``final/``), and the last good
``epoch_*`` checkpoint is kept.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxmu._faults import checkpoint_reached
from jaxmu.checkpoint import load_tree, save_tree, write_text_atomic
from jaxmu.engine.finite import DivergedError, diverged_names, finite_rows
from jaxmu.engine.sharding import place, to_host
from jaxmu.config import Config
from jaxmu.engine.state import TrainProgress
from jaxmu.training import Trainer
from jaxmu.types import DeviceData
from jaxmu.paths import absolute_path


class RunDirError(ValueError):
    """The run directory holds another configuration."""


def environment() -> dict[str, Any]:
    """Versions and device, recorded with every checkpoint."""
    import flax
    import optax
    import orbax.checkpoint

    from jaxmu.version import __version__

    dev = jax.devices()[0]
    return {
        "jaxmu": __version__,
        "jax": jax.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "orbax": getattr(orbax.checkpoint, "__version__", "?"),
        "python": platform.python_version(),
        "backend": jax.default_backend(),
        "device": f"{dev.platform}:{getattr(dev, 'device_kind', '?')} x{jax.device_count()}",
    }


def check_writable_dir(out: Path) -> None:
    """Create ``out`` if needed and prove it writable, or raise ``RunDirError`` naming it.

    Writability is probed by creating and removing a temporary file: permission bits alone
    do not tell (root ignores them; read-only mounts and ``/proc`` refuse everyone).
    """
    import os
    import tempfile

    if out.exists() and not out.is_dir():
        raise RunDirError(f"--out {out} is a file, not a directory: choose a directory (it is created if missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".jaxmu-write-probe-", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise RunDirError(f"--out {out} is not a writable directory ({e.strerror or e}): "
                          "choose a directory you can write to") from None


def run_dir_for(out: str | Path, cfg: Config, content: dict[str, str] | None = None,
                original: str | None = None) -> Path:
    """Create (or check) the run directory of ``cfg`` under ``out`` (made absolute: Orbax needs it).

    ``content`` names what the config's names do not pin down: the fingerprints of a registered
    dataset and model (``{"data": ..., "model": ...}``, ``jaxmu.pipeline.content_key``). It is
    hashed into the directory name and stored in ``config.json``, so two datasets (or modules)
    registered under one name never share a run directory; built-in settings pass none and keep
    their directories. ``original``: the content hash of an imported original stack
    (``jaxmu.originals.stack_hash``); it joins the key (and ``config.json`` as ``original_sha256``),
    so other weights never reuse this directory's stages.
    """
    from jaxmu.results import run_hash

    key = run_hash(cfg)
    if original is not None:
        content = {**(content or {}), "original_sha256": original}
    if content:
        blob = json.dumps({"config": key, "content": content}, sort_keys=True).encode()
        key = hashlib.sha256(blob).hexdigest()[:16]
    out = absolute_path(out)
    run = out / f"{cfg.data.name}_{cfg.model.name}_{key}"
    check_writable_dir(out)
    try:
        run.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunDirError(f"cannot create the run directory {run} ({e.strerror or e}): choose another --out") from None
    cfile = run / "config.json"
    want = {k: cfg.semantic_dict()[k] for k in ("data", "model", "train", "seeds")}
    if content:
        want["content"] = dict(content)
    if original is not None:
        want["original_sha256"] = original
    if cfile.exists():
        try:
            have = json.loads(cfile.read_text())
        except json.JSONDecodeError:
            raise RunDirError(f"{cfile} is corrupt: delete it (checkpoints are verified separately)") from None
        if have != want:
            raise RunDirError(
                f"run directory {run} holds another configuration: use another --out or delete it"
            )
    else:
        write_text_atomic(cfile, json.dumps(want, indent=1, sort_keys=True))
    return run


@dataclasses.dataclass
class StageResult:
    """A finished training stage: the stacked state, its timings (seconds) and its learning curves.

    ``history``: ``{"loss": [M, epochs], "accuracy": [M, epochs]}``, each epoch's training loss
    and accuracy per model as the trainer computed them during the epoch (``jaxmu.training.update``);
    None for a stage finished before jaxmu recorded them.
    """

    state: TrainProgress
    compile_s: float
    run_s: float
    skipped: bool
    resumed_from: int
    history: dict[str, np.ndarray] | None = None
    path: Path | None = None  # the finished checkpoint (its scores cache lives beside it: jaxmu.scores)


HISTORY_COLUMNS = ("loss", "accuracy")


def history_dict(history: Any) -> dict[str, np.ndarray]:
    """``[M, epochs, 2]`` (loss, accuracy) as ``{"loss": [M, epochs], "accuracy": [M, epochs]}``."""
    h = np.asarray(history, np.float64)
    return {name: h[..., i] for i, name in enumerate(HISTORY_COLUMNS)}


def _history_meta(history: np.ndarray) -> dict[str, list]:
    """The history as JSON lists for ``meta.json`` (NaN, for epochs not run, is written ``NaN``)."""
    return {k: v.tolist() for k, v in history_dict(history).items()}


def _history_from_meta(meta: dict[str, Any]) -> np.ndarray | None:
    h = meta.get("history")
    if not h:
        return None
    return np.stack([np.asarray(h[k], np.float32) for k in HISTORY_COLUMNS], axis=-1)


def _epoch_dirs(stage_dir: Path) -> list[Path]:
    return sorted(p for p in stage_dir.glob("epoch_*") if p.is_dir() and ".tmp" not in p.name)


def run_training_stage(
    stage_dir: Path,
    trainer: Trainer,
    init_state: TrainProgress,
    subset,
    data_key,
    data: DeviceData,
    *,
    checkpoint_every: int,
    metadata: dict[str, Any],
    progress: bool = True,
    label: str = "",
    on_checkpoint: Callable[[int], None] | None = None,
    model_names: Sequence[Any] | None = None,
) -> StageResult:
    """Train ``init_state`` to ``trainer.num_epochs`` epochs, resumably, under ``stage_dir``.

    ``on_checkpoint(epoch)`` is called after each resumable checkpoint is on disk (tests use it
    to interrupt a run at a known point). The per-epoch training loss and accuracy
    (``Trainer.run_epochs_logged``) travel with the checkpoints in ``meta.json`` (``history``)
    and come back as ``StageResult.history``. ``model_names`` (the seeds) name the models of the
    stack in a ``DivergedError``; row indices are used without them.
    """
    stage_dir = Path(stage_dir)
    stage_dir.mkdir(parents=True, exist_ok=True)
    final = stage_dir / "final"
    template = jax.eval_shape(lambda s: s, init_state)
    if (final / "meta.json").exists():
        state, meta = load_tree(final, template)
        _check_finite(state, label, model_names, f"its checkpoint {final} holds them: delete it")
        hist = _history_from_meta(meta)
        return StageResult(state, meta.get("compile_s", 0.0), meta.get("run_s", 0.0), True, trainer.num_epochs,
                           None if hist is None else history_dict(hist), final)

    num_models = jax.tree_util.tree_leaves(init_state)[0].shape[0]
    history = np.full((num_models, trainer.num_epochs, 2), np.nan, np.float32)
    state, prior_run_s, resumed = place(init_state), 0.0, 0  # the layout the program keeps
    epochs_done = _epoch_dirs(stage_dir)  # written atomically: each one is complete
    if epochs_done:
        state, meta = load_tree(epochs_done[-1], template)  # corrupt or foreign: CheckpointError
        prior_run_s, resumed = meta.get("run_s", 0.0), int(meta["epoch"])
        saved = _history_from_meta(meta)
        if saved is not None and saved.shape == history.shape:
            history = saved

    subset = jnp.asarray(subset)
    exe, compile_s = trainer.compile(state, subset, data_key, data, logged=True)
    total = trainer.num_epochs
    bar = _progress(total, resumed, label, progress)
    run_s = prior_run_s
    epoch = resumed
    while epoch < total:
        stop = min(epoch + checkpoint_every, total)
        t0 = time.perf_counter()
        state, chunk = exe(state, subset, data_key, jnp.int32(stop), data)
        jax.block_until_ready(state)
        history[:, epoch:stop] = to_host(chunk)[:, epoch:stop]  # the rows of the epochs just run
        run_s += time.perf_counter() - t0
        last_good = _epoch_dirs(stage_dir)
        _check_finite(state, label, model_names,
                      (f"epoch {stop}" if stop == epoch + 1 else f"epochs {epoch + 1}-{stop}") + "; nothing of it was saved"
                      + (f", the last good checkpoint {last_good[-1].name} is kept" if last_good else ""))
        epoch = stop
        if bar is not None:
            bar.update(stop - bar.n)
        if epoch < total:
            path = stage_dir / f"epoch_{epoch:04d}"
            save_tree(path, state, {**metadata, "epoch": epoch, "run_s": run_s,
                                    "history": _history_meta(history)})
            _drop_epochs(stage_dir, keep=path)
            if on_checkpoint is not None:
                on_checkpoint(epoch)
            checkpoint_reached(f"stage:{label}:epoch")
    if bar is not None:
        bar.close()
    save_tree(final, state, {**metadata, "epoch": total, "run_s": run_s, "compile_s": compile_s,
                             "done": True, "environment": environment(), "history": _history_meta(history)})
    _drop_epochs(stage_dir)
    return StageResult(state, compile_s, run_s, False, resumed, history_dict(history), final)


def _check_finite(state: TrainProgress, label: str, names: Sequence[Any] | None, where: str) -> None:
    """Raise ``DivergedError`` naming the models whose parameters or BatchNorm statistics are not finite."""
    ok = finite_rows((state.params, state.batch_stats))
    if not ok.all():
        who = "seeds" if names is not None else "models"
        raise DivergedError(
            f"training stage {label or 'train'!r} diverged: {who} {diverged_names(ok, names)} have parameters "
            f"that are not finite ({where}); lower train.learning_rate (or check the data)")


def _drop_epochs(stage_dir: Path, keep: Path | None = None) -> None:
    """Delete superseded epoch checkpoints (process 0 of a multi-host run; after save_tree's barrier)."""
    import shutil

    if jax.process_index() != 0:
        return
    for old in _epoch_dirs(stage_dir):
        if old != keep:
            shutil.rmtree(old, ignore_errors=True)


def _progress(total: int, start: int, label: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, desc=label or "train", unit="epoch", leave=False)
