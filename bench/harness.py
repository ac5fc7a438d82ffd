"""The fresh-process measurement discipline shared by ``bench/compare.py`` and ``bench/gpu.py``.

* every measurement is one fresh ``python SCRIPT --worker SIDE ...`` process that prints its
  numbers as one JSON line (a framework that has computed in a process slows the next one in it);
* the sides run interleaved (A B C, A B C, ...) over the rounds, so slow drifts of a shared
  machine hit all of them; a side that failed is not run again (its one-line reason is kept);
* an optional wall-clock budget stops launching workers once spent and caps each worker's
  timeout at what is left, so a run never overruns its device time by more than the start-up of
  one process;
* each side is summarised by the median and the min-max spread over its rounds.

A worker that cannot run (a framework not installed) prints ``{"skip": "why"}`` and exits 0; one
that fails is reported by the last line of its stderr (no traceback is echoed).
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from collections.abc import Callable, Iterable, Sequence

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- inside a worker


def rss_mb() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def jax_peak_mb() -> tuple[float, str]:
    """(MiB, kind): the device allocator's peak on an accelerator, else the process's peak RSS."""
    import jax

    try:
        stats = jax.local_devices()[0].memory_stats()
    except Exception:  # noqa: BLE001 - backends without memory stats
        stats = None
    if stats and stats.get("peak_bytes_in_use"):
        return stats["peak_bytes_in_use"] / 2**20, "device"
    return rss_mb(), "rss"


def torch_peak_mb(device) -> tuple[float, str]:
    """(MiB, kind): ``torch.cuda.max_memory_allocated`` on a GPU, else the process's peak RSS."""
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "device"
    return rss_mb(), "rss"


def emit(result: dict) -> None:
    """A worker's answer: one JSON line on stdout (the driver reads the last such line)."""
    print(json.dumps(result), flush=True)


# ----------------------------------------------------------------------------- the driver


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:200] if lines else "no output"


def run_worker(script: str | Path, side: str, args: Sequence[str], timeout: float,
               env: dict[str, str] | None = None) -> dict | str:
    """One measurement in a fresh process: its JSON answer, or one line saying why there is none."""
    cmd = [sys.executable, str(Path(script).resolve()), "--worker", side, *args]
    pypath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=max(1.0, timeout),
                             env={**os.environ, "PYTHONPATH": pypath, **(env or {})})
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout:.0f} s"
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    out = json.loads(lines[-1]) if lines else None
    if isinstance(out, dict) and "skip" in out:
        return str(out["skip"])
    if res.returncode != 0 or out is None:
        return f"failed: {last_line(res.stderr)}"
    return out


def interleave(sides: Sequence[str], rounds: int, measure: Callable[[str, float], dict | str],
               describe: Callable[[dict], str], *, timeout: float = 1800.0,
               budget: float | None = None, min_left: float = 20.0) -> tuple[dict[str, list[dict]], dict[str, str]]:
    """Run ``measure(side, timeout)`` for every side, interleaved over ``rounds``.

    Returns ``(results, notes)``: the answers of every side, and for a side that failed or was
    skipped the reason. With ``budget`` (seconds), no worker starts once less than ``min_left``
    seconds are left, and no worker may run past the budget.
    """
    t0 = time.monotonic()
    results: dict[str, list[dict]] = {s: [] for s in sides}
    notes: dict[str, str] = {}
    for r in range(rounds):
        for side in sides:  # interleaved: A B C, A B C, ...
            if side in notes:
                continue  # failed before: do not spend the budget on it again
            limit = timeout
            if budget is not None:
                left = budget - (time.monotonic() - t0)
                if left < min_left:
                    print(f"  round {r} {side}: skipped, the {budget:.0f} s budget is spent", flush=True)
                    continue
                limit = min(timeout, left)
            out = measure(side, limit)
            if isinstance(out, str):
                notes[side] = out
                print(f"  round {r} {side}: {out}", flush=True)
            else:
                results[side].append(out)
                print(f"  round {r} {side}: {describe(out)}", flush=True)
    for side in sides:
        if not results[side] and side not in notes:
            notes[side] = "not run: budget spent"
    return results, notes


def spread(values: Iterable[float]) -> tuple[float, float, float]:
    """(median, min, max)."""
    v = list(values)
    return statistics.median(v), min(v), max(v)


def fmt_spread(med: float, lo: float, hi: float, digits: int = 1) -> str:
    return f"{med:.{digits}f} [{lo:.{digits}f}-{hi:.{digits}f}]"


def markdown(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A markdown table (cells already formatted; ``None`` prints empty)."""
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        out.append("| " + " | ".join("" if c is None else str(c) for c in row) + " |")
    return "\n".join(out)
