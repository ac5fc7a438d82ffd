"""Shared command-line plumbing: argument groups, the compile cache, one-line errors.

Every CLI (``jaxmu.train``, ``jaxmu.unlearn``, ``jaxmu.attack``, ``jaxmu.sweep``) runs its
``main`` through ``run_cli``: a known bad input (config, data, checkpoint, method, run
directory, plugin) prints one line ``error: ...`` on stderr and exits with code 2, no traceback.
Every stage CLI takes ``--plugin MODULE|FILE.py`` (repeatable, ``jaxmu.plugins``): a
researcher's code that registers methods, models or data, imported before the config is read.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

def _user_errors() -> tuple[type[BaseException], ...]:
    from jaxmu.checkpoint import CheckpointError
    from jaxmu.config import ConfigError
    from jaxmu.data import DataError
    from jaxmu.engine.finite import DivergedError
    from jaxmu.stages import RunDirError

    from jaxmu.merge import ResultsError
    from jaxmu.models import ModelError
    from jaxmu.plugins import PluginError

    errs: list[type[BaseException]] = [ConfigError, DataError, CheckpointError, RunDirError, ModelError,
                                        DivergedError, PluginError, ResultsError]
    try:
        from jaxmu.methods import MethodError

        errs.append(MethodError)
    except ImportError:  # pragma: no cover - methods package not present
        pass
    return tuple(errs)


def enable_compile_cache(path: str | None = None) -> None:
    """Turn on JAX's persistent compilation cache (default ``~/.cache/jaxmu/xla``).

    Minimum compile time and entry size are set to 0 so the small CPU programs are cached
    too (docs/performance.md §4: 0.81 s -> 0.14 s per program). ``JAXMU_COMPILE_CACHE=off``
    disables it.
    """
    import jax

    if os.environ.get("JAXMU_COMPILE_CACHE", "").lower() in ("off", "0", "none"):
        return
    path = path or os.environ.get("JAXMU_COMPILE_CACHE") or str(Path.home() / ".cache" / "jaxmu" / "xla")
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def add_config_args(p: argparse.ArgumentParser, default_config: str | None = "digits_mlp_half") -> None:
    """The arguments every stage CLI shares: config, output, overrides, seeds, multi-host.

    ``--out`` is made absolute against the current directory as it is parsed (argparse applies
    ``type`` to the default too), so the run directory every CLI prints is absolute.
    """
    from jaxmu.paths import absolute_path, shipped_configs

    p.add_argument("--config", default=default_config, metavar="NAME|PATH",
                   help=f"a YAML file, or a config shipped with jaxmu: {', '.join(shipped_configs())} "
                        "(default: %(default)s)")
    p.add_argument("--out", default="runs", type=absolute_path,
                   help="output directory, relative to the current one (default: %(default)s)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted override, e.g. --set train.epochs=5 (repeatable)")
    p.add_argument("--seeds", type=int, default=None, help="number of model seeds (0..N-1)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--plugin", dest="plugins", action="append", default=[], metavar="MODULE|FILE.py",
                   help="import a module or file that registers your own methods, models or data "
                        "(jaxmu.methods.register, ...) before anything else (repeatable)")
    g = p.add_argument_group("multi-host (see README; SLURM and TPU pods are detected automatically)")
    g.add_argument("--coordinator", default=None, metavar="HOST:PORT", help="coordinator of process 0")
    g.add_argument("--num-processes", type=int, default=None)
    g.add_argument("--process-id", type=int, default=None)


def add_original_arg(p: argparse.ArgumentParser) -> None:
    """``--original PATH...``: start from originals trained elsewhere (sets ``original.path``)."""
    p.add_argument("--original", nargs="+", default=None, metavar="PATH",
                   help="the original models, trained elsewhere: one PyTorch state_dict file per seed in "
                        "seed order (or a glob pattern), or one Orbax checkpoint directory of the stack; "
                        "the retrained models are still trained here (config: original.path)")


def request_host_devices(n: int) -> None:
    """Split the CPU into ``n`` XLA host devices (0 = one per core, at most 8).

    Only effective before JAX initialises, which is why every CLI calls it right after reading
    its config; an ``XLA_FLAGS`` already naming a device count wins.
    """
    if n == 0:
        n = max(1, min(os.cpu_count() or 1, 8))
    flags = os.environ.get("XLA_FLAGS", "")
    if n > 1 and "xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n}".strip()


def config_from_args(args: argparse.Namespace, *, multihost: bool = True):
    """The config of the command line (after importing its ``--plugin``s); starts JAX's
    distributed runtime when asked to.

    Paths the config names (``data.data_dir``, ``data.path``, a file-backed ``tune.storage``)
    are made absolute against the current directory here, once (``jaxmu.paths``).
    In a multi-process run every process computes the same (global) stacks; only process 0
    prints and shows progress. ``multihost=False`` refuses a multi-process launch (the sweep
    scales out with independent workers instead).
    """
    from jaxmu.config import load_config
    from jaxmu.paths import with_absolute_paths
    from jaxmu.plugins import load_plugins

    load_plugins(getattr(args, "plugins", []))
    overrides = list(args.overrides)
    if args.seeds is not None:
        if args.seeds < 1:
            from jaxmu.config import ConfigError

            raise ConfigError("--seeds must be >= 1")
        overrides.append(f"seeds=[{','.join(str(s) for s in range(args.seeds))}]")
    if args.quiet:
        overrides.append("engine.progress=false")
    cfg = load_config(args.config, overrides)
    if getattr(args, "original", None):
        cfg = cfg.replace(original=dataclasses.replace(cfg.original, path=tuple(args.original)))
    cfg = with_absolute_paths(cfg)
    from jaxmu.distributed import init_kwargs, maybe_initialize

    try:
        multi = init_kwargs(args.coordinator, args.num_processes, args.process_id) is not None
    except ValueError as e:
        from jaxmu.config import ConfigError

        raise ConfigError(str(e)) from None
    if multi and not multihost:
        from jaxmu.config import ConfigError

        raise ConfigError("this command runs in one process per host: start one sweep per host with "
                          "--worker NAME and a shared --storage URL instead (README, Scaling out)")
    if not multi:
        request_host_devices(cfg.engine.host_devices)
    if maybe_initialize(args.coordinator, args.num_processes, args.process_id):
        import jax

        if jax.process_index() != 0:
            sys.stdout.flush()  # process 0 reports for the run; the others print nothing, C++ included
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            cfg = cfg.replace(engine=dataclasses.replace(cfg.engine, progress=False))
    return cfg


def run_cli(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> None:
    """Run ``main`` turning known user errors into one line and exit code 2."""
    errors = _user_errors()
    try:
        code = main(argv)
    except errors as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: finished stages and checkpoints are kept; rerun the same command to resume",
              file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)


def format_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain fixed-width text table."""
    cells = [[str(h) for h in header]] + [[f"{c:.4f}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
