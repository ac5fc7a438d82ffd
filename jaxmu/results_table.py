"""``ResultTable``: rows of results that print as a table in a notebook, save, convert and plot.

    >>> t = ResultTable([{"stack": "a", "seed": 0, "forget_acc": 0.9}, {"stack": "a", "seed": 1, "forget_acc": 0.8}])
    >>> print(t.table())            # one line per stack: mean ± 95% t half-width over its rows
    >>> t.to_csv("r.csv"); t.to_json("r.json"); df = t.to_pandas()   # pandas only if installed
    >>> fig = t.plot(["forget_acc"])

Rows are plain dicts (one per model seed, or per attack population); ``group_by`` names the
columns that identify a line of the summary. Numeric columns are summarised with
``jaxmu.stats.interval`` (NaN rows — diverged seeds — left out and counted there).
"""

from __future__ import annotations

import csv
import dataclasses
import html
import io
import json
import math
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from jaxmu.stats import METHOD_NOTE, interval

__all__ = ["ResultTable"]

_NOT_SUMMARISED = ("seed",)


def _short_label(text: str, width: int = 64) -> str:
    """A plot label: long floats rounded to 3 significant digits, then cut to ``width`` characters."""
    text = re.sub(r"\d+\.\d{4,}(?:e-?\d+)?", lambda m: f"{float(m.group()):.3g}", text)
    return text if len(text) <= width else text[:width - 1] + "…"


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


@dataclasses.dataclass
class ResultTable:
    """Result rows with a summary view (see module)."""

    rows: list[dict[str, Any]]
    title: str = ""
    group_by: tuple[str, ...] = ("stack",)

    @classmethod
    def from_stacks(cls, stacks: Mapping[str, Mapping[str, Any]], seeds: Sequence[int], *, title: str = "",
                    params: Mapping[str, Mapping[str, Any]] | None = None) -> "ResultTable":
        """One row per (stack, seed) from per-stack metric dicts ``{metric: [models]}`` (as
        ``pipeline.stack_metrics`` returns them); ``params`` adds ``hp_<name>`` columns per stack."""
        from jaxmu.report import CSV_METRICS, seed_status

        rows = []
        for name, m in stacks.items():
            status = seed_status(m)
            hp = {f"hp_{k}": v for k, v in (params or {}).get(name, {}).items()}
            for i, seed in enumerate(seeds):
                rows.append({"stack": name, "seed": int(seed), "status": status[i],
                             **{k: float(np.asarray(m[k])[i]) for k in CSV_METRICS if k in m}, **hp})
        return cls(rows, title=title)

    # ------------------------------------------------------------------ views

    def columns(self) -> list[str]:
        """Every column, in first-seen order."""
        seen: dict[str, None] = {}
        for r in self.rows:
            seen.update(dict.fromkeys(r))
        return list(seen)

    def metric_columns(self) -> list[str]:
        """Numeric columns that are summarised (not the grouping columns, seeds or ``hp_``)."""
        skip = set(self.group_by) | set(_NOT_SUMMARISED)
        return [c for c in self.columns() if c not in skip and not c.startswith("hp_")
                and all(_is_number(r[c]) for r in self.rows if c in r)]

    def groups(self) -> dict[tuple, list[dict[str, Any]]]:
        out: dict[tuple, list[dict[str, Any]]] = {}
        for r in self.rows:
            out.setdefault(tuple(r.get(g) for g in self.group_by), []).append(r)
        return out

    def summary(self, columns: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Per group: the grouping values, ``n`` rows, and ``{column: Interval}``."""
        cols = list(columns) if columns is not None else self.metric_columns()
        return [{**dict(zip(self.group_by, key)), "n": len(rows),
                 **{c: interval([r.get(c, math.nan) for r in rows],
                                diverged=[r.get("status") == "diverged" for r in rows]) for c in cols}}
                for key, rows in self.groups().items()]

    def _cells(self, columns: Sequence[str] | None) -> tuple[list[str], list[list[str]]]:
        cols = list(columns) if columns is not None else self.metric_columns()
        head = [*self.group_by, "n", *cols]
        body = []
        for s in self.summary(cols):
            body.append([str(s[g]) for g in self.group_by] + [str(s["n"])]
                        + [s[c].format() if s["n"] > 1 else f"{s[c].mean:.4f}" for c in cols])
        return head, body

    def table(self, columns: Sequence[str] | None = None) -> str:
        """Markdown: one line per group, mean ± 95% t half-width of each numeric column."""
        head, body = self._cells(columns)
        lines = ([f"**{self.title}**", ""] if self.title else []) + [
            "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        if any(len(rows) > 1 for rows in self.groups().values()):
            lines += ["", f"{METHOD_NOTE}."]
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        return self.table()

    def _repr_html_(self) -> str:
        head, body = self._cells(None)
        cap = f"<caption>{html.escape(self.title)}</caption>" if self.title else ""
        th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
        trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body)
        return f"<table>{cap}<thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"

    def __str__(self) -> str:
        return self.table()

    def __len__(self) -> int:
        return len(self.rows)

    # ------------------------------------------------------------------ save and convert

    def to_csv(self, path: str | Path) -> Path:
        """Every row, every column (``""`` where a row lacks one)."""
        buf = io.StringIO(newline="")
        w = csv.DictWriter(buf, fieldnames=self.columns(), restval="")
        w.writeheader()
        w.writerows(self.rows)
        p = Path(path)
        p.write_text(buf.getvalue())
        return p

    def to_json(self, path: str | Path) -> Path:
        p = Path(path)
        rows = [{k: (None if _is_number(v) and not math.isfinite(float(v)) else v) for k, v in r.items()}
                for r in self.rows]
        p.write_text(json.dumps({"title": self.title, "group_by": list(self.group_by), "rows": rows},
                                indent=1, default=str))
        return p

    def to_pandas(self):
        """A ``pandas.DataFrame`` of the rows (pandas is optional: installed by the user)."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("to_pandas needs pandas: pip install pandas (or use to_csv / .rows)") from None
        return pd.DataFrame(self.rows)

    def plot(self, columns: Sequence[str] | None = None, ax=None):
        """Mean ± 95% interval of each column per group, one panel per column; returns the figure."""
        import matplotlib.pyplot as plt

        cols = list(columns) if columns is not None else self.metric_columns()[:4]
        if not cols:
            raise ValueError("nothing to plot: no numeric column")
        summary = self.summary(cols)
        labels = [_short_label(" / ".join(str(s[g]) for g in self.group_by)) for s in summary]
        if ax is None:
            fig, axes = plt.subplots(1, len(cols), figsize=(3.2 * len(cols), 0.35 * len(labels) + 1.6), squeeze=False)
            axes = axes[0]
        else:
            axes, fig = np.atleast_1d(ax), np.atleast_1d(ax)[0].figure
        for a, c in zip(axes, cols):
            means = [s[c].mean for s in summary]
            errs = [s[c].half_width if math.isfinite(s[c].half_width) else 0.0 for s in summary]
            a.errorbar(means, range(len(labels)), xerr=errs, fmt="o", capsize=3)
            a.set_yticks(range(len(labels)), labels if a is axes[0] else [""] * len(labels))
            a.invert_yaxis()
            a.set_title(c, fontsize=9)
            a.tick_params(axis="x", labelsize=7)
        fig.tight_layout()
        return fig
