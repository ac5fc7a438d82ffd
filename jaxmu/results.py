"""The results every stage leaves: ``results.csv``, ``results.json`` and ``report.md`` (issue 14 item 4).

One writer for every stage (``train``, ``unlearn``, ``attack``, ``sweep``): a stage hands it rows
(one ``dict`` per seed, or per attack population and formulation), the columns it fills, the
JSON metadata and its markdown report. Every CSV row starts with the identifying columns
``ID_COLUMNS``, so the ``results.csv`` of many runs concatenate into one table (``jaxmu report``):

* ``stage``: ``train``, ``unlearn``, ``attack`` or ``sweep``;
* ``dataset``, ``model``: the setting;
* ``config_hash``: the run directory's key (data, model, train, seeds, and the content of a registered
  dataset/model or imported original; ``runs/<dataset>_<model>_<config_hash>``);
* ``method``: the method's name, or the reference stack (``original``, ``retrain``) a row measures;
* ``call``: the method's call string with every hyperparameter, ``-`` for a trained reference stack;
* ``seed``: the model seed, ``-`` for a row over many models (an attack population);
* ``status``: ``ok`` or ``diverged`` (NaN metrics);
* ``jaxmu_version``.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from jaxmu.checkpoint import write_text_atomic

ID_COLUMNS = ("stage", "dataset", "model", "config_hash", "method", "call", "seed", "status", "jaxmu_version")
CSV_NAME, JSON_NAME, REPORT_NAME = "results.csv", "results.json", "report.md"
NO_CALL = "-"  # the call column of a trained reference stack, the seed column of a population row


def run_hash(cfg) -> str:
    """The hash keying a config's run directory (``stages.run_dir_for``): data, model, train, seeds
    and the trainer's recipe version (``version.TRAINER_RECIPE``: models trained under another
    recipe live in other directories)."""
    import hashlib

    from jaxmu.version import TRAINER_RECIPE

    blob = f"{cfg.hash('data', 'model', 'train', 'seeds')}:trainer-recipe-{TRAINER_RECIPE}"
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_key(run_dir: Path) -> str:
    """The key of a run directory ``<dataset>_<model>_<key>``: ``run_hash`` of its config, or — for a
    registered dataset or model, or an imported original — the hash of the config *and* that
    content (``stages.run_dir_for``), so two runs of one config on other weights never share it."""
    return Path(run_dir).name.rsplit("_", 1)[-1]


def identity(cfg, stage: str, run_dir: Path) -> dict[str, str]:
    """The identifying columns every row of ``stage`` shares in ``run_dir`` (all but
    method/call/seed/status); ``config_hash`` is the run directory's key (``run_key``)."""
    from jaxmu.version import __version__

    return {"stage": stage, "dataset": cfg.data.name, "model": cfg.model.name, "config_hash": run_key(run_dir),
            "jaxmu_version": __version__}


def column_order(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> list[str]:
    """``ID_COLUMNS``, then the stage's ``columns``, then any other key of the rows (sorted, e.g. ``hp_*``)."""
    head = list(dict.fromkeys([*ID_COLUMNS, *columns]))
    extra = sorted({k for r in rows for k in r} - set(head))
    return head + extra


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """``rows`` under the header ``column_order(rows, columns)``; a missing value is an empty cell."""
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=column_order(rows, columns), extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: _cell(v) for k, v in r.items()})
    write_text_atomic(Path(path), buf.getvalue())


def _cell(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def read_csv(path: Path) -> list[dict[str, str]]:
    """The rows of a ``results.csv`` as strings (``jaxmu report`` parses the numbers it needs)."""
    with Path(path).open(newline="") as f:
        return list(csv.DictReader(f))


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """``data`` as indented JSON (NumPy values made plain; NaN written ``NaN``)."""
    write_text_atomic(Path(path), json.dumps(data, indent=1, sort_keys=True, default=_plain))


def _plain(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def write_results(out_dir: Path, rows: Sequence[Mapping[str, Any]], *, columns: Sequence[str],
                  meta: Mapping[str, Any], report: str | Iterable[str]) -> Path:
    """Write ``results.csv`` (``rows``), ``results.json`` (``meta`` with the rows under ``rows``) and
    ``report.md`` (``report``: text or lines) into ``out_dir``; returns the report's path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(out_dir / CSV_NAME, rows, columns)
    write_json(out_dir / JSON_NAME, {**meta, "rows": [dict(r) for r in rows]})
    text = report if isinstance(report, str) else "\n".join(report)
    write_text_atomic(out_dir / REPORT_NAME, text)
    return out_dir / REPORT_NAME


def seed_rows(ident: Mapping[str, str], method: str, call: str, seeds: Sequence[Any],
              metrics: Mapping[str, Any], columns: Sequence[str], status: Sequence[str]) -> list[dict[str, Any]]:
    """One row per seed: the identity, ``method``/``call``, the seed, its status and ``columns`` of ``metrics``."""
    cols = {c: np.asarray(metrics[c], np.float64).reshape(-1) for c in columns if c in metrics}
    return [{**ident, "method": method, "call": call, "seed": seed, "status": status[i],
             **{c: float(v[i]) for c, v in cols.items()}} for i, seed in enumerate(seeds)]
