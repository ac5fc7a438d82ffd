"""Re-score a finished run from its cached logits: ``jaxmu report --rescore RUN_DIR`` (issue 14 item 7).

Every stack a stage evaluated left ``scores.npz`` beside its checkpoint (``jaxmu.scores``):
``original/final``, ``retrain/final`` and each ``unlearn/<method>_<hash>`` (its ``meta.json``
names the call string). Re-scoring recomputes every per-seed metric from those logits —
``scores.scored_metrics`` against the retrained stack: accuracies, population MIAs,
indiscernibility, RetDev, ToW, offline RMIA — and writes them into the per-seed rows of every
``results.csv`` / ``results.json`` under the run directory whose stack it has. No model is
loaded, evaluated or trained: a metric added to jaxmu after the run appears as a new column, and
numbers that did not change are written back bit for bit. ``report.md`` files keep the tables
of the run that wrote them; ``results.csv`` holds the re-scored numbers.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np

from jaxmu.merge import SEED_STAGES, ResultsError, find_results, method_label
from jaxmu.results import ID_COLUMNS, JSON_NAME, NO_CALL, read_csv, write_csv, write_json
from jaxmu.scores import AGAINST_RETRAIN, METRICS, SCORES_FILE, Scores, load_scores, scored_metrics, split_metrics

RESCORED = (*METRICS, *AGAINST_RETRAIN)


@dataclasses.dataclass
class Rescored:
    """What ``rescore_run`` did: stacks read, files and rows rewritten, the largest change of a
    number that was there before, and the columns that are new."""

    run_dir: Path
    stacks: list[str]
    files: int = 0
    rows: int = 0
    max_change: float = 0.0
    new_columns: list[str] = dataclasses.field(default_factory=list)

    def line(self) -> str:
        new = f"; new columns: {', '.join(self.new_columns)}" if self.new_columns else ""
        return (f"rescored {self.run_dir.name}: {len(self.stacks)} cached stacks, {self.rows} rows in {self.files} "
                f"files, largest change {self.max_change:.3g}{new}")


def cached_stacks(run_dir: Path) -> dict[str, Scores]:
    """``{"original", "retrain", <call string>...: Scores}`` for every stack with a score cache."""
    out = {}
    for name in ("original", "retrain"):
        sc = load_scores(run_dir / name / "final" / SCORES_FILE)
        if sc is not None:
            out[name] = sc
    for cache in sorted((run_dir / "unlearn").glob(f"*/{SCORES_FILE}")):
        sc = load_scores(cache)
        try:
            call = json.loads((cache.parent / "meta.json").read_text())["call"]
        except (OSError, ValueError, KeyError):
            continue  # an unfinished or foreign folder: not a stack of this run
        if sc is not None:
            out[call] = sc
    return out


def run_seeds(run_dir: Path) -> list[str]:
    """The run's seeds as the CSV writes them (``config.json`` of the run directory)."""
    try:
        return [str(s) for s in json.loads((run_dir / "config.json").read_text())["seeds"]]
    except (OSError, ValueError, KeyError):
        raise ResultsError(f"{run_dir} has no readable config.json: pass a run directory "
                           "(runs/<dataset>_<model>_<hash>)") from None


def rescore_run(run_dir: Path) -> Rescored:
    """Recompute the per-seed metrics of every results file under ``run_dir`` from its caches."""
    run_dir = Path(run_dir)
    files = find_results(run_dir)
    seeds = run_seeds(run_dir)
    stacks = cached_stacks(run_dir)
    if "retrain" not in stacks:
        raise ResultsError(f"{run_dir} has no cached scores of the retrained stack ({SCORES_FILE}): it was run "
                           "by an older jaxmu; rerun its `python -m jaxmu.train` command once to write them")
    retrain = stacks["retrain"]
    retrain_metrics = split_metrics(retrain)
    metrics = {}
    for label, sc in stacks.items():
        if sc.num_models != len(seeds):
            raise ResultsError(f"{run_dir}: the cached scores of {label} hold {sc.num_models} models but the run has "
                               f"{len(seeds)} seeds: delete that stack's {SCORES_FILE} and rerun its stage")
        metrics[label] = scored_metrics(sc, retrain, retrain_metrics)
    done = Rescored(run_dir, sorted(stacks))
    new_cols: set[str] = set()
    for path in files:
        rows = read_csv(path)
        header = list(rows[0]) if rows else []
        updates: dict[int, dict[str, float]] = {}
        for j, r in enumerate(rows):
            label = method_label(r)
            if r["stage"] not in SEED_STAGES or r["seed"] == NO_CALL or label not in metrics or r["seed"] not in seeds:
                continue
            i = seeds.index(r["seed"])
            for k in RESCORED:
                new = float(np.asarray(metrics[label][k], np.float64)[i])
                old = r.get(k)
                if old in (None, ""):
                    new_cols.add(k)
                elif not (math.isnan(new) and math.isnan(float(old))):
                    done.max_change = max(done.max_change, abs(new - float(old)))
                r[k] = new
                updates.setdefault(j, {})[k] = new
        if not updates:
            continue
        columns = [c for c in header if c not in ID_COLUMNS] + [k for k in RESCORED if k not in header]
        write_csv(path, rows, columns)
        _rewrite_json_rows(path.with_name(JSON_NAME), updates)
        done.files += 1
        done.rows += len(updates)
    done.new_columns = sorted(new_cols)
    return done


def _rewrite_json_rows(path: Path, updates: dict[int, dict[str, float]]) -> None:
    """Apply ``{row index: {metric: value}}`` to the ``rows`` of a ``results.json`` (the same rows,
    in the same order, as its ``results.csv``; every other value and the metadata kept)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return  # no JSON beside the CSV: nothing to keep in step
    rows = data.get("rows", [])
    for i, values in updates.items():
        if i < len(rows):
            rows[i].update(values)
    write_json(path, data)
