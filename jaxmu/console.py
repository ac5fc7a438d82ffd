"""The ``jaxmu`` console command: ``jaxmu SUBCOMMAND ...`` runs ``python -m jaxmu.SUBCOMMAND ...``.

    jaxmu sweep --method ng_plus        # = python -m jaxmu.sweep --method ng_plus
    jaxmu prepare mnist --data-dir DIR  # = python -m jaxmu.data.prepare mnist --data-dir DIR
    jaxmu --version

Each subcommand is the ``main(argv)`` of its module, run through ``jaxmu.cli.run_cli``: the
same flags and the same one-line ``error:`` handling (exit code 2). Installed as the
``jaxmu`` script by ``[project.scripts]``.
"""

from __future__ import annotations

import importlib
import sys
from typing import Sequence

COMMANDS: dict[str, tuple[str, str]] = {
    "sweep": ("jaxmu.sweep", "tune, unlearn and report one method (or all) end to end"),
    "train": ("jaxmu.train", "train the original and retrained stacks"),
    "unlearn": ("jaxmu.unlearn", "unlearn every seed with one method"),
    "attack": ("jaxmu.attack", "U-LiRA attack on one method"),
    "report": ("jaxmu.report", "merge the results of run directories into one leaderboard"),
    "prepare": ("jaxmu.data.prepare", "prepare tensorflow-datasets data for offline use"),
}


def usage() -> str:
    """The top-level help: the subcommands and the module each one runs."""
    width = max(map(len, COMMANDS))
    lines = ["usage: jaxmu {" + ",".join(COMMANDS) + "} [ARGS ...] | jaxmu --version", "",
             "subcommands (each takes the flags of `python -m MODULE`; `jaxmu SUBCOMMAND -h` lists them):"]
    lines += [f"  {name.ljust(width)}  {help_} ({module})" for name, (module, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to a subcommand (which exits through ``run_cli``); 2 for a missing or unknown one."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "--version":
        from jaxmu.version import __version__

        print(f"jaxmu {__version__}")
        return 0
    if args and args[0] in ("-h", "--help"):
        print(usage())
        return 0
    if not args or args[0] not in COMMANDS:
        print(usage(), file=sys.stderr)
        if args:
            print(f"error: unknown subcommand {args[0]!r}", file=sys.stderr)
        return 2
    from jaxmu.cli import run_cli

    module = importlib.import_module(COMMANDS[args[0]][0])
    run_cli(module.main, args[1:])
    return 0  # pragma: no cover - run_cli exits


if __name__ == "__main__":
    sys.exit(main())
