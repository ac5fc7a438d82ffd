"""``python -m jaxmu.train``: train the original and retrained stacks of a setting.

    python -m jaxmu.train --config digits_cnn --out runs [--set train.epochs=5]

Each stack (10 seeds by default) is one compiled program, checkpointed with Orbax; a rerun
skips finished stages and a killed run resumes from its last saved epoch. Prints per-seed and
mean ± std retain/forget/val/test accuracy.
"""

from __future__ import annotations

import argparse
from typing import Sequence

import numpy as np

from jaxmu.cli import add_config_args, config_from_args, enable_compile_cache, format_table, run_cli


def metric_rows(seeds, results: dict[str, dict[str, np.ndarray]], columns) -> list[list[object]]:
    """Per-seed rows ``[stack, seed, status, *metrics]`` and a mean ± std row per stack.

    ``status`` is ``ok`` or ``diverged`` (``metrics["diverged"]``, else a NaN in the row); a
    diverged seed's metrics are NaN and left out of the mean ± std (std over the finite seeds,
    ddof=1), whose label says so: ``mean±std (2 of 3; 1 diverged)``. One seed is flagged.
    """
    from jaxmu.metrics import summarize

    rows: list[list[object]] = []
    for stack, metrics in results.items():
        cols = [np.asarray(metrics[c], np.float64) for c in columns]
        diverged = np.asarray(metrics.get("diverged", np.isnan(np.stack(cols)).any(axis=0)), bool)
        for i, seed in enumerate(seeds):
            rows.append([stack, seed, "diverged" if diverged[i] else "ok"] + [float(a[i]) for a in cols])
        sums = [summarize(a) for a in cols]
        excluded = max(s.n_excluded for s in sums)
        note = sums[[s.n_excluded for s in sums].index(excluded)].count_note()
        label = "mean±std" if len(seeds) > 1 else "single seed"
        if excluded:
            label = f"{label} ({note})"
        rows.append([stack, label, ""] + [f"{s.mean:.4f}±{s.std:.4f}" for s in sums])
    return rows


def stage_lines(stages: dict, num_models: int) -> list[str]:
    """One line per reference stage: loaded, resumed or trained, with compile and run time apart."""
    lines = []
    for name, r in stages.items():
        how = "loaded" if r.skipped else (f"resumed at epoch {r.resumed_from}" if r.resumed_from else "trained")
        lines.append(f"{name}: {how}; compile {r.compile_s:.2f} s, run {r.run_s:.2f} s "
                     f"({r.run_s / num_models:.3f} s per model)")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jaxmu.train", description=__doc__.split("\n")[0])
    add_config_args(p)
    args = p.parse_args(argv)
    cfg = config_from_args(args)
    enable_compile_cache()
    from jaxmu.pipeline import METRICS, prepare, reference_stacks, stack_metrics

    setting = prepare(cfg, args.out)
    print(f"run directory: {setting.run_dir}  (model axis: {setting.model_axis}, "
          f"{len(cfg.seeds)} seeds, split {setting.splits.content_hash})")
    stages = reference_stacks(setting)
    results = {name: stack_metrics(setting, r.state) for name, r in stages.items()}
    print("\n".join(stage_lines(stages, len(cfg.seeds))))
    print(format_table(["stack", "seed", "status", *METRICS], metric_rows(cfg.seeds, results, METRICS)))
    return 0


if __name__ == "__main__":
    run_cli(main)
