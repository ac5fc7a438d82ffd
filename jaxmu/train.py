"""``python -m jaxmu.train``: train the original and retrained stacks of a setting.

    python -m jaxmu.train --config configs/digits_cnn.yaml --out runs [--set train.epochs=5]

Each stack (10 seeds by default) is one compiled program, checkpointed with Orbax; a rerun
skips finished stages and a killed run resumes from its last saved epoch. Prints per-seed and
mean ± std retain/forget/val/test accuracy.
"""

from __future__ import annotations

import argparse
from typing import Sequence

import numpy as np

from jaxmu.cli import add_config_args, config_from_args, enable_compile_cache, format_table, run_cli


def accuracy_rows(seeds, results: dict[str, dict[str, dict[str, np.ndarray]]]) -> list[list[object]]:
    """Per-seed rows and a mean ± std row per stack (std over seeds, ddof=1 when > 1 seed)."""
    rows: list[list[object]] = []
    for stack, ev in results.items():
        accs = [ev[s]["accuracy"] for s in ("retain", "forget", "val", "test")]
        for i, seed in enumerate(seeds):
            rows.append([stack, seed] + [float(a[i]) for a in accs])
        ddof = 1 if len(seeds) > 1 else 0
        rows.append([stack, "mean±std"] + [f"{a.mean():.4f}±{a.std(ddof=ddof):.4f}" for a in accs])
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jaxmu.train", description=__doc__.split("\n")[0])
    add_config_args(p)
    args = p.parse_args(argv)
    cfg = config_from_args(args)
    enable_compile_cache()
    from jaxmu.pipeline import evaluate_state, prepare, reference_stacks

    setting = prepare(cfg, args.out)
    print(f"run directory: {setting.run_dir}  (model axis: {setting.model_axis}, "
          f"{len(cfg.seeds)} seeds, split {setting.splits.content_hash})")
    stages = reference_stacks(setting)
    results = {name: evaluate_state(setting, r.state) for name, r in stages.items()}
    for name, r in stages.items():
        how = "loaded" if r.skipped else (f"resumed at epoch {r.resumed_from}" if r.resumed_from else "trained")
        print(f"{name}: {how}; compile {r.compile_s:.2f} s, run {r.run_s:.2f} s "
              f"({r.run_s / len(cfg.seeds):.3f} s per model)")
    print(format_table(["stack", "seed", "retain", "forget", "val", "test"], accuracy_rows(cfg.seeds, results)))
    return 0


if __name__ == "__main__":
    run_cli(main)
