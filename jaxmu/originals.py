"""Original models trained elsewhere: PyTorch ``state_dict`` files or an Orbax stack, as a jaxmu stack.

An experiment normally trains its original stack itself (``jaxmu.pipeline.reference_stacks``).
With ``original.path`` (or ``--original PATH...``) it starts from the user's models instead; the
retrained references are still trained by jaxmu. Two sources:

* **PyTorch** (``format: torch``): one ``state_dict`` per seed, in seed order, saved with
  ``torch.save(model.state_dict(), "seed0.pt")``. Names follow the reference layouts of
  ``jaxmu.models.names`` (torchvision ResNet-18 with either stem, Microsoft TinyViT, jaxmu's
  ``cnn``/``mlp``). Accepted wrappers: a ``module.`` (DataParallel) or ``_orig_mod.``
  (``torch.compile``) prefix on every key, and a checkpoint dict holding the ``state_dict`` under
  ``state_dict``, ``model_state_dict``, ``model`` or ``net`` (the reference code's
  ``{"state_dict": ..., "optimizer": ...}``). ``num_batches_tracked`` is ignored.
* **Orbax** (``format: orbax``): one checkpoint directory of the whole stack written by
  ``jaxmu.checkpoint.save_tree(path, (params, batch_stats))`` (leading models axis), or a jaxmu
  training stage ``RUN/original/final`` (its optimizer state is ignored).

``torch`` is imported only to read a ``.pt``/``.pth`` file; in-memory mappings of numpy arrays
(or tensors) and ``.npz`` files need no torch. Every mismatch is one ``OriginalError`` line
naming the file, the key and the likely cause.
"""

from __future__ import annotations

import glob
import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxmu.models import ModelError, build_model
from jaxmu.models.names import (IGNORED_REFERENCE_SUFFIXES, from_reference_layout, head_paths,
                                reference_names, stem_paths, tree_paths)

Source = str | Path | Mapping[str, Any]

WRAPPER_KEYS: tuple[str, ...] = ("state_dict", "model_state_dict", "model", "net")
"""Keys under which a training checkpoint may hold the ``state_dict`` (first match wins)."""

PREFIXES: tuple[str, ...] = ("module.", "_orig_mod.")
"""Key prefixes stripped when every key has them (DataParallel, ``torch.compile``)."""

FORMATS: tuple[str, ...] = ("auto", "torch", "orbax")


class OriginalError(ModelError):
    """User-supplied original weights that do not fit the configured model (one-line message)."""


# --------------------------------------------------------------------------- reading


def _label(source: Source) -> str:
    return str(source) if isinstance(source, (str, Path)) else "state_dict"


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor: bfloat16/half have no numpy dtype
        t = value.detach().cpu()
        if t.is_floating_point() and t.dtype.itemsize < 4:
            t = t.float()
        return t.numpy()
    return np.asarray(value)


def _read_file(path: Path) -> Mapping[str, Any]:
    if not path.is_file():
        raise OriginalError(f"original {path} not found: pass one state_dict file per seed")
    if path.suffix == ".npz":
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is optional
        raise OriginalError(f"reading {path} needs PyTorch: install torch, or save the state_dict "
                            "as .npz (numpy.savez)") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a file that is not a checkpoint
        first = (str(e).splitlines() or [""])[0][:160]
        raise OriginalError(f"original {path} cannot be read by torch.load ({type(e).__name__}: {first})") from None


def read_state_dict(source: Source) -> dict[str, np.ndarray]:
    """A ``state_dict`` as ``{key: numpy array}``, unwrapped and without a DataParallel prefix.

    ``source`` is a ``.pt``/``.pth`` (``torch.load``) or ``.npz`` file, or a mapping of arrays or
    tensors.

    Example::

        >>> sd = read_state_dict({"module.fc.weight": np.zeros((10, 512))})
        >>> list(sd)
        ['fc.weight']
    """
    raw = _read_file(Path(source)) if isinstance(source, (str, Path)) else source
    if not isinstance(raw, Mapping):
        raise OriginalError(f"{_label(source)} holds a {type(raw).__name__}, not a state_dict: "
                            "save model.state_dict(), not the model")
    for key in WRAPPER_KEYS:
        if isinstance(raw.get(key), Mapping):
            raw = raw[key]
            break
    keys = list(raw)
    for prefix in PREFIXES:
        if keys and all(str(k).startswith(prefix) for k in keys):
            raw = {str(k)[len(prefix):]: v for k, v in raw.items()}
            keys = list(raw)
    return {str(k): _to_numpy(v) for k, v in raw.items()}


def expand_paths(spec: str | Sequence[str]) -> list[str]:
    """Paths named by ``original.path``: a glob pattern expands to its matches sorted by name.

    Example: ``expand_paths("runs/seed*.pt")`` -> ``["runs/seed0.pt", "runs/seed1.pt"]``. A named
    path that does not exist raises here, before any count or format check.
    """
    out: list[str] = []
    for p in [spec] if isinstance(spec, str) else list(spec):
        if glob.has_magic(str(p)):
            hits = sorted(glob.glob(str(p)))
            if not hits:
                raise OriginalError(f"original pattern {p!r} matches no file")
            out.extend(hits)
        else:
            if not Path(p).exists():
                raise OriginalError(f"{p} not found: check original.path / --original")
            out.append(str(p))
    return out


# --------------------------------------------------------------------------- checking


def _torch_shape(path: tuple[str, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
    """A jaxmu leaf shape in the PyTorch layout (conv HWIO -> OIHW, dense [in, out] -> [out, in])."""
    if path[-1] == "kernel" and len(shape) == 4:
        return (shape[3], shape[2], shape[0], shape[1])
    if path[-1] == "kernel" and len(shape) == 2:
        return (shape[1], shape[0])
    return tuple(shape)


def _likely_cause(arch: str, path: tuple[str, ...]) -> str:
    under = lambda prefixes: any(path[: len(q)] == q for q in prefixes)  # noqa: E731
    if under(head_paths(arch)):
        return "the classifier head differs: was it trained with another number of classes (num_classes)?"
    if under(stem_paths(arch)):
        return ("the stem differs: set model.stem (imagenet: 7x7/2 conv1 + max-pool; cifar: 3x3/1 conv1) "
                "or check the input channels")
    return f"not a {arch} of this configuration"


def _few(keys: Sequence[str], n: int = 4) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def import_state_dict(arch: str, template: tuple[Any, Any], state: Mapping[str, np.ndarray],
                      label: str = "state_dict") -> tuple[Any, Any]:
    """One model's ``(params, batch_stats)`` (float32 numpy) from a reference-named ``state``.

    ``template`` is ``(params, batch_stats)`` of one model (arrays or ``jax.ShapeDtypeStruct``).
    Raises ``OriginalError`` for missing keys, unexpected keys, shape mismatches and values that
    are not finite.
    """
    names = {**reference_names(arch, template[0]), **{("batch_stats", *p): n for p, n in
                                                     reference_names(arch, template[1] or {}).items()}}
    want = set(names.values())
    have = {k for k in state if not k.endswith(IGNORED_REFERENCE_SUFFIXES)}
    if missing := want - have:
        raise OriginalError(f"{label}: missing keys {_few(missing)}: not a {arch} state_dict, "
                            "or saved from another architecture")
    if unexpected := have - want:
        raise OriginalError(f"{label}: unexpected keys {_few(unexpected)}: not a {arch} state_dict "
                            "(or a different model.stem / architecture)")

    def fill(tree: Any, stats: bool) -> Any:
        leaves = []
        for path, leaf in zip(tree_paths(tree), jax.tree_util.tree_leaves(tree)):
            name = names[("batch_stats", *path) if stats else path]
            value = np.asarray(state[name])
            expected = _torch_shape(path, tuple(leaf.shape))
            if tuple(value.shape) != expected:
                raise OriginalError(f"{label}: {name} has shape {tuple(value.shape)}, expected {expected}: "
                                    + _likely_cause(arch, path))
            if not np.all(np.isfinite(value)):
                raise OriginalError(f"{label}: {name} holds values that are not finite")
            leaves.append(from_reference_layout(path, value).astype(np.float32))
        return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(tree), leaves)

    return fill(template[0], False), (fill(template[1], True) if template[1] else {})


def _check_seeds(n: int, num_seeds: int | None, what: str) -> None:
    if num_seeds is not None and n != num_seeds:
        raise OriginalError(f"{what} {n} original model(s) but seeds has {num_seeds}: give one per seed, "
                            "in seed order (or set seeds to match)")


def model_template(arch: str, num_classes: int, input_shape: Sequence[int], stem: str = "imagenet"):
    """Shapes of one model's ``(params, batch_stats)`` (``jax.ShapeDtypeStruct`` leaves; nothing is computed)."""
    model = build_model(arch, num_classes, tuple(input_shape), stem=stem)
    return jax.eval_shape(model.init, jax.random.PRNGKey(0))


def load_torch_state_dicts(
    arch: str,
    sources: Sequence[Source],
    *,
    num_classes: int,
    input_shape: Sequence[int],
    stem: str = "imagenet",
    num_seeds: int | None = None,
) -> tuple[Any, Any]:
    """A stack ``(params, batch_stats)`` (leading models axis, float32 numpy) from one
    ``state_dict`` per seed.

    Args:
      arch: jaxmu model name (``resnet18``, ``tinyvit_11m``, ``cnn``, ``mlp``).
      sources: per seed, a ``.pt``/``.pth``/``.npz`` path or a mapping of arrays/tensors.
      num_classes, input_shape, stem: the model they must fit (``input_shape`` is ``(H, W, C)``).
      num_seeds: if given, ``len(sources)`` must equal it.

    Example::

        torch.save(net.state_dict(), "seed0.pt")   # a torchvision resnet18 with a CIFAR stem
        params, batch_stats = load_torch_state_dicts("resnet18", ["seed0.pt"], num_classes=10,
                                                     input_shape=(32, 32, 3), stem="cifar")
    """
    if isinstance(sources, (str, Path, Mapping)):
        sources = [sources]
    if not sources:
        raise OriginalError("no original state_dict given: pass one file per seed")
    _check_seeds(len(sources), num_seeds, "got")
    template = model_template(arch, num_classes, input_shape, stem)
    models = [import_state_dict(arch, template, read_state_dict(s), _label(s)) for s in sources]
    return jax.tree_util.tree_map(lambda *xs: np.stack(xs), *models)


def load_orbax_original(
    path: str | Path,
    *,
    arch: str,
    num_classes: int,
    input_shape: Sequence[int],
    stem: str = "imagenet",
    num_seeds: int | None = None,
) -> tuple[Any, Any]:
    """A stack ``(params, batch_stats)`` from an Orbax checkpoint written by ``jaxmu.checkpoint.save_tree``.

    The checkpoint holds ``(params, batch_stats)`` with a leading models axis, or is a jaxmu
    training stage (``RUN/original/final``: its leaves start with params and batch_stats; the
    optimizer state after them is ignored). The checksum is verified (``load_tree``).

    Example::

        save_tree("my_originals", (params, batch_stats))   # jaxmu.checkpoint
        params, batch_stats = load_orbax_original("my_originals", arch="cnn", num_classes=10,
                                                  input_shape=(8, 8, 1))
    """
    from jaxmu.checkpoint import CheckpointError, load_tree, read_metadata

    path = Path(path)
    if not (path / "meta.json").is_file():
        raise OriginalError(f"original {path} is not a jaxmu/Orbax checkpoint directory (no meta.json): "
                            "write it with jaxmu.checkpoint.save_tree(path, (params, batch_stats))")
    stored = read_metadata(path).get("leaves") or []
    flat = {f"{i:05d}": jax.ShapeDtypeStruct(tuple(s), np.dtype(d)) for i, (s, d) in enumerate(stored)}
    try:
        tree, _ = load_tree(path, flat)
    except CheckpointError as e:
        raise OriginalError(f"original: {e}") from None
    leaves = [np.asarray(tree[k]) for k in sorted(tree)]
    template = model_template(arch, num_classes, input_shape, stem)
    want = jax.tree_util.tree_leaves(template)
    if len(leaves) < len(want):
        raise OriginalError(f"original {path} holds {len(leaves)} arrays, a {arch} needs {len(want)}: "
                            "not a (params, batch_stats) stack of this model")
    n = leaves[0].shape[0] if leaves[0].ndim else 0
    paths = tree_paths(template[0]) + [("batch_stats", *p) for p in tree_paths(template[1] or {})]
    for p, have, w in zip(paths, leaves, want):
        if have.shape != (n, *w.shape):
            raise OriginalError(f"original {path}: {'/'.join(p)} has shape {have.shape}, expected "
                                f"(models, *{tuple(w.shape)}): " + _likely_cause(arch, p[1:] if p[0] == "batch_stats" else p))
    _check_seeds(n, num_seeds, f"{path} holds")
    stack = [x.astype(np.float32) for x in leaves[: len(want)]]
    if not all(np.all(np.isfinite(x)) for x in stack):
        raise OriginalError(f"original {path} holds values that are not finite")
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(template), stack)


def stack_hash(stack: tuple[Any, Any]) -> str:
    """sha256 (16 hex chars) of a stack's contents: leaf paths, shapes, dtypes and bytes.

    The same weights hash the same whichever file or format they came from; any other weights
    hash differently (the run directory of an imported original is keyed by it).
    """
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(stack)[0]:
        a = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{jax.tree_util.keystr(path)}|{a.dtype}|{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def load_original(spec: str | Sequence[str], fmt: str, *, arch: str, num_classes: int,
                  input_shape: Sequence[int], stem: str, num_seeds: int) -> tuple[Any, Any]:
    """The original stack of ``original.path``/``original.format`` (the pipeline's entry point).

    ``fmt="auto"``: a directory with ``meta.json`` is Orbax, anything else a ``state_dict`` file.
    """
    if fmt not in FORMATS:
        raise OriginalError(f"unknown original.format {fmt!r}: choose one of {', '.join(FORMATS)}")
    paths = expand_paths(spec)
    if not paths:
        raise OriginalError("original.path is empty: name one state_dict per seed or one Orbax checkpoint")
    kw = dict(num_classes=num_classes, input_shape=input_shape, stem=stem, num_seeds=num_seeds)
    orbax = fmt == "orbax" or (fmt == "auto" and len(paths) == 1 and (Path(paths[0]) / "meta.json").is_file())
    if orbax:
        if len(paths) != 1:
            raise OriginalError(f"original.format orbax takes one checkpoint directory, got {len(paths)} paths")
        return load_orbax_original(paths[0], arch=arch, **kw)
    return load_torch_state_dicts(arch, paths, **kw)


__all__ = [
    "FORMATS", "OriginalError", "PREFIXES", "WRAPPER_KEYS", "expand_paths", "import_state_dict",
    "load_orbax_original", "load_original", "load_torch_state_dicts", "model_template", "read_state_dict",
    "stack_hash",
]
