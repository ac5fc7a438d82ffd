"""Fault injection for the kill-and-resume tests.

``checkpoint_reached(name)`` ends the process abruptly (``os._exit(137)``, like SIGKILL: no
cleanup, no flushing) when the environment variable ``JAXMU_DIE_AT`` names that point. Points:
``stage:<name>:epoch`` (a resumable epoch checkpoint is on disk), ``tune:round`` (a round of
trials is evaluated but not yet told to Optuna), ``unlearn:saved`` (the unlearned stack is saved,
the sweep's ``final.json`` not yet written). Unset (always, outside tests), it does nothing.
"""

from __future__ import annotations

import os


def checkpoint_reached(name: str) -> None:
    if os.environ.get("JAXMU_DIE_AT") == name:
        os._exit(137)
