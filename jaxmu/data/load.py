"""``load_dataset``: one entry point for every dataset jaxmu knows (protocol §1).

=================  ==========================================  ===========
name               source                                      arguments
=================  ==========================================  ===========
``digits``         scikit-learn, embedded (default, offline)   none
``mnist``          prepared tfds array_record                  ``data_dir``
``fashion_mnist``  prepared tfds array_record                  ``data_dir``
``cifar10``        prepared tfds array_record                  ``data_dir``
``cifar100``       prepared tfds array_record                  ``data_dir``
``svhn_cropped``   prepared tfds array_record                  ``data_dir``
``utkface``        folder of aligned & cropped JPEGs           ``path``
``npz``            a user's ``.npz`` file                      ``path``
=================  ==========================================  ===========

A researcher's own data joins these names with ``register(name, dataset_or_loader)`` (a
``Dataset``, e.g. from ``jaxmu.data.from_arrays``, or a function taking no argument that returns
one, called at each load): ``data.name: NAME`` then selects it in a config or with ``--set``.

    >>> register("blobs", from_arrays(x_train, y_train, x_test, y_test, name="blobs"))
    >>> load_dataset("blobs").n_train
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Union

from jaxmu.data.core import DataError, Dataset
from jaxmu.data.digits import load_digits_dataset
from jaxmu.data.npz import load_npz
from jaxmu.data.tfds_source import TFDS_SPECS, load_tfds
from jaxmu.data.utkface import load_utkface
from jaxmu.registry import Registry

DATASETS: tuple[str, ...] = (
    "digits",
    "mnist",
    "fashion_mnist",
    "cifar10",
    "cifar100",
    "svhn_cropped",
    "utkface",
    "npz",
)
_PATH_DATASETS = ("utkface", "npz")

Source = Union[Dataset, Callable[[], Dataset]]
"""A registered dataset: the ``Dataset`` itself or a loader returning it."""

_REGISTRY: Registry[Source] = Registry("dataset", dict.fromkeys(DATASETS, None), DataError)


def dataset_names() -> tuple[str, ...]:
    """Every dataset name: the built-ins (``DATASETS``, in their order), then registered ones, sorted."""
    return DATASETS + tuple(n for n in _REGISTRY.names() if n not in DATASETS)


def is_builtin(name: str) -> bool:
    """Whether ``name`` is a dataset shipped with jaxmu (``DATASETS``)."""
    return _REGISTRY.is_builtin(name)


def register(name: str, dataset_or_loader: Source, *, replace: bool = False) -> Source:
    """Register a researcher's dataset under ``name``; returns its second argument.

    ``dataset_or_loader`` is a ``Dataset`` (``from_arrays``) or a function taking no argument
    that returns one. A built-in name is refused, a registered one unless ``replace=True``.
    Run directories of registered data are keyed by its content (``jaxmu.data.fingerprint``).
    """
    if not isinstance(dataset_or_loader, Dataset) and not callable(dataset_or_loader):
        raise DataError(f"register({name!r}, ...): expected a Dataset (jaxmu.data.from_arrays) or a function "
                        f"returning one, got {type(dataset_or_loader).__name__}")
    _REGISTRY.add(name, dataset_or_loader, replace=replace)
    return dataset_or_loader


def unregister(name: str) -> None:
    """Remove a registered (not built-in) dataset."""
    _REGISTRY.remove(name)


def _load_registered(name: str) -> Dataset:
    source = _REGISTRY.view[name]
    ds = source if isinstance(source, Dataset) else source()
    if not isinstance(ds, Dataset):
        raise DataError(f"dataset {name!r}: its loader returned a {type(ds).__name__}, not a jaxmu.data.Dataset")
    return ds if ds.name == name else dataclasses.replace(ds, name=name)


def load_dataset(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    path: str | os.PathLike | None = None,
) -> Dataset:
    """Load dataset ``name`` (one of ``DATASETS`` or a registered name) into host memory.

    Args:
      name: dataset id, see the module table.
      data_dir: tfds data directory for the tfds datasets (default
        ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).
      path: the JPEG folder (``utkface``) or the ``.npz`` file (``npz``).

    Raises:
      DataError: unknown name, a missing/extra ``path``, or any loader problem.
    """
    if name not in _REGISTRY.view:
        raise DataError(f"unknown dataset {name!r}; valid names: {', '.join(dataset_names())}")
    if not is_builtin(name):
        if path is not None:
            raise DataError(f"dataset {name!r} is registered in memory: drop path=")
        return _load_registered(name)
    if name in _PATH_DATASETS:
        if path is None:
            what = "folder of JPEGs" if name == "utkface" else ".npz file"
            raise DataError(f"dataset {name!r} needs path= (its {what})")
        return load_utkface(path) if name == "utkface" else load_npz(path)
    if path is not None:
        raise DataError(
            f"path= is only used by {_PATH_DATASETS}; for {name!r} drop it (use data_dir= for tfds data)"
        )
    if name == "digits":
        return load_digits_dataset()
    return load_tfds(name, TFDS_SPECS[name], data_dir=data_dir)
