"""Merge the ``results.csv`` of many runs into one leaderboard (``jaxmu report``, issue 14 item 4).

Every stage's ``results.csv`` starts with the identifying columns of ``jaxmu.results``, so the
rows of any number of run directories concatenate. The leaderboard takes the per-seed rows
(stages ``train``, ``unlearn``, ``sweep``) and groups them by dataset, model and method — the
method's call string, or the reference stack (``original``, ``retrain``) for a row without one —
then gives every metric's mean ± the half-width of its 95% Student-t interval over the group's
seeds (``jaxmu.stats.interval``; NaN seeds, diverged models, left out and counted).

One seed of one run is counted once: rows with the same run hash (``config_hash``), method and
seed — the retrain reference that ``train`` and ``unlearn`` both write, a sweep and an unlearn
of the same call — are one seed, their columns merged. Runs with other seeds (another
``config_hash``) add seeds to the group; the ``runs`` column says how many run hashes a group
pools. Attack rows (one per population and formulation, with bootstrap intervals) are listed in
a table of their own.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

from jaxmu.results import CSV_NAME, ID_COLUMNS, NO_CALL, read_csv
from jaxmu.stats import interval

SEED_STAGES = ("train", "unlearn", "sweep")
METRICS = ("retain_acc", "forget_acc", "val_acc", "test_acc", "val_mia", "test_mia", "indiscernibility", "retdev",
           "tow", "rmia_auc", "train_loss", "train_acc")
REFERENCES = ("original", "retrain")


class ResultsError(ValueError):
    """A run directory that is missing or holds no results this command can read."""


def find_results(run_dir: Path) -> list[Path]:
    """Every ``results.csv`` under ``run_dir`` (sorted), or ``ResultsError`` naming the problem."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise ResultsError(f"{run_dir} does not exist: pass run directories (runs/<dataset>_<model>_<hash>)")
    if not run_dir.is_dir():
        raise ResultsError(f"{run_dir} is not a directory: pass run directories (runs/<dataset>_<model>_<hash>)")
    found = sorted(run_dir.rglob(CSV_NAME))
    if not found:
        raise ResultsError(f"{run_dir} holds no {CSV_NAME}: run `jaxmu train|unlearn|attack|sweep --out ...` first")
    return found


def load_rows(run_dirs: Sequence[Path]) -> list[dict[str, str]]:
    """The rows of every ``results.csv`` under the run directories, each with its ``source`` file."""
    rows = []
    for d in run_dirs:
        for path in find_results(d):
            part = read_csv(path)
            missing = [c for c in ID_COLUMNS if part and c not in part[0]]
            if missing:
                raise ResultsError(f"{path} lacks the identifying columns {', '.join(missing)}: it was written by an "
                                   "older jaxmu; rerun its stage to rewrite it")
            rows += [{**r, "source": str(path)} for r in part]
    return rows


def method_label(row: dict[str, str]) -> str:
    """The call string, or the stack's name for a trained reference (``call`` ``-``)."""
    return row["call"] if row.get("call") not in (None, "", NO_CALL) else row["method"]


def unique_seed_rows(rows: Iterable[dict[str, str]]) -> list[dict[str, str]]:
    """The per-seed rows, one per (run hash, method, seed), columns of duplicates merged in order."""
    merged: dict[tuple[str, str, str], dict[str, str]] = {}
    for r in rows:
        if r["stage"] not in SEED_STAGES or r["seed"] == NO_CALL:
            continue
        key = (r["config_hash"], method_label(r), r["seed"])
        have = merged.setdefault(key, dict(r))
        have.update({k: v for k, v in r.items() if have.get(k) in (None, "")})
    return list(merged.values())


def _value(cell: str | None) -> float | None:
    if cell in (None, ""):
        return None
    try:
        return float(cell)
    except ValueError:
        return None


def leaderboard_rows(rows: Iterable[dict[str, str]], metrics: Sequence[str] = METRICS) -> list[dict[str, Any]]:
    """One entry per (dataset, model, method): ``runs``, ``seeds`` and every metric's ``Interval``
    over the group's seeds (None where no row of the group has the metric)."""
    groups: dict[tuple[str, str, str], list[dict[str, str]]] = {}
    for r in unique_seed_rows(rows):
        groups.setdefault((r["dataset"], r["model"], method_label(r)), []).append(r)
    out = []
    for (dataset, model, method), members in groups.items():
        entry: dict[str, Any] = {"dataset": dataset, "model": model, "method": method,
                                 "runs": len({m["config_hash"] for m in members}), "seeds": len(members)}
        for k in metrics:
            have = [(v, m.get("status") == "diverged") for v, m in ((_value(m.get(k)), m) for m in members)
                    if v is not None]
            entry[k] = interval([v for v, _ in have], diverged=[d for _, d in have]) if have else None
        out.append(entry)
    return sorted(out, key=lambda e: (e["dataset"], e["model"], e["method"] not in REFERENCES, e["method"]))


def present_metrics(board: Sequence[dict[str, Any]], metrics: Sequence[str] = METRICS) -> list[str]:
    """The metrics at least one leaderboard entry has."""
    return [k for k in metrics if any(e.get(k) is not None for e in board)]


def leaderboard_markdown(board: Sequence[dict[str, Any]], metrics: Sequence[str]) -> str:
    """Markdown: dataset, model, method, runs, seeds, then mean ± 95% t half-width of each metric."""
    head = ["dataset", "model", "method", "runs", "seeds", *metrics]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for e in board:
        cells = [e["dataset"], e["model"], f"`{e['method']}`", str(e["runs"]), str(e["seeds"])]
        cells += [_cell(e[k], e["seeds"]) for k in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(iv, seeds: int) -> str:
    """``mean ± hw``; ``(n=2)`` when only some of the group's seeds have the metric; ``—`` when none."""
    if iv is None:
        return "—"
    return iv.format() + (f" (n={iv.n})" if iv.n + iv.excluded < seeds else "")


def leaderboard_csv(board: Sequence[dict[str, Any]], metrics: Sequence[str]) -> str:
    """CSV: per metric its mean, the interval's half-width and the number of finite seeds."""
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(["dataset", "model", "method", "runs", "seeds",
                *(f"{k}{s}" for k in metrics for s in ("", "_half_width", "_n"))])
    for e in board:
        cells: list[Any] = [e["dataset"], e["model"], e["method"], e["runs"], e["seeds"]]
        for k in metrics:
            iv = e[k]
            cells += ["", "", 0] if iv is None else [iv.mean, iv.half_width, iv.n]
        w.writerow(cells)
    return buf.getvalue()


def attack_markdown(rows: Iterable[dict[str, str]]) -> str | None:
    """The attack rows (one per run, population and formulation), AUC and TPRs with their bootstrap
    intervals; None when there are none."""
    seen, lines = set(), []
    for r in rows:
        if r["stage"] != "attack":
            continue
        key = (r["config_hash"], r["call"], r.get("population"), r.get("formulation"), r.get("source"))
        if key in seen:
            continue
        seen.add(key)
        cells = [r["dataset"], r["model"], r["config_hash"], f"`{method_label(r)}`", r.get("formulation", "")]
        for k in ("auc", "tpr_at_1pct", "tpr_at_0.1pct"):
            v, lo, hi = (_value(r.get(k + s)) for s in ("", "_lo", "_hi"))
            cells.append("nan" if v is None or math.isnan(v) else f"{v:.4f} [{lo:.4f}, {hi:.4f}]")
        cells.append(r.get("bootstrap_resamples", ""))
        lines.append("| " + " | ".join(cells) + " |")
    if not lines:
        return None
    head = ["| dataset | model | config hash | population | formulation | AUC [95% CI] | TPR@1% [95% CI] | "
            "TPR@0.1% [95% CI] | resamples |", "|---" * 9 + "|"]
    return "\n".join(head + lines)
