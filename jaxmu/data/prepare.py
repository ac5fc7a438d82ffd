"""Prepare tfds datasets as array_record, on a machine with internet.

Usage::

    python -m jaxmu.data.prepare mnist cifar10 --data-dir DIR

then copy ``DIR`` to the machine that runs jaxmu and pass ``data_dir=DIR``
(or set ``TFDS_DATA_DIR``). Runs
``tfds.builder(name, data_dir=DIR).download_and_prepare(file_format="array_record")``
per dataset.

Preparing needs TensorFlow (``pip install tensorflow-cpu``): the tfds builders
of these datasets read their source files with ``tf.io.gfile`` and encode
images with ``tf.image.encode_png``. *Reading* the prepared array_record files
(``tfds_source.py``) needs neither TensorFlow nor network.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Sequence

from jaxmu.data.core import DataError
from jaxmu.data.tfds_source import TFDS_SPECS
from jaxmu.paths import absolute_path


def _absolute(path: str) -> str:
    return str(absolute_path(path))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``NAME [NAME ...] --data-dir DIR [--download-dir DIR]`` (dirs made absolute)."""
    p = argparse.ArgumentParser(
        prog="python -m jaxmu.data.prepare",
        description="Download and prepare tfds datasets as array_record for jaxmu.",
    )
    p.add_argument(
        "names",
        nargs="+",
        choices=sorted(TFDS_SPECS),
        metavar="NAME",
        help=f"datasets to prepare: {', '.join(sorted(TFDS_SPECS))}",
    )
    p.add_argument("--data-dir", required=True, type=_absolute,
                   help="tfds data directory to write into (relative to the current one)")
    p.add_argument(
        "--download-dir", default=None, type=_absolute,
        help="where raw downloads go (default: DATA_DIR/downloads)",
    )
    return p.parse_args(argv)


def prepare(name: str, data_dir: str, download_dir: str | None = None) -> str:
    """Download and prepare ``name`` as array_record under ``data_dir``; returns its folder."""
    if importlib.util.find_spec("tensorflow") is None:
        raise DataError(
            "preparing tfds datasets needs TensorFlow (tfds encodes images with tf.image): "
            "pip install tensorflow-cpu, then re-run"
        )
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=data_dir)
    builder.download_and_prepare(download_dir=download_dir, file_format="array_record")
    return str(builder.data_dir)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the process exit status."""
    args = parse_args(argv)
    try:
        for name in args.names:
            print(f"prepared {name} in {prepare(name, args.data_dir, args.download_dir)}")
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
