"""Which embedded setting shows unlearning? Original vs retrain on candidate no-download settings.

Usage::

    python bench/default_candidates.py [--seeds 10] [--out /tmp/candidates] [--only NAME ...]

For each candidate (a shipped config plus overrides) it trains (or loads) the original and the
retrained stacks through ``jaxmu.Experiment`` and prints, per metric, the original − retrain gap
paired over seeds with its 95% t-interval and whether it separates (``jaxmu.stats.separation``),
plus the training wall time. A default should separate in forget accuracy and in at least one
population MIA while its sweep stays within the CPU time budget (bench/README.md records the run).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CANDIDATES: dict[str, tuple[str, list[str]]] = {
    "digits_cnn": ("digits_cnn", []),
    "digits_cnn_wd0": ("digits_cnn", ["train.weight_decay=0.0"]),
    "digits_cnn_small": ("digits_cnn", ["train.weight_decay=0.0", "data.val_ratio=0.5"]),
    "digits_cnn_val50": ("digits_cnn", ["data.val_ratio=0.5"]),
    "digits_mlp": ("digits_mlp", []),
    "digits_mlp_wd0": ("digits_mlp", ["train.weight_decay=0.0"]),
    "digits_mlp_val50": ("digits_mlp", ["data.val_ratio=0.5"]),
    "digits_mlp_small": ("digits_mlp", ["train.weight_decay=0.0", "data.val_ratio=0.5"]),
    "digits_cnn_class": ("digits_cnn", ["data.forget_mode=class", "data.forget_class=3"]),
}
METRICS = ("retain_acc", "forget_acc", "test_acc", "val_mia", "test_mia", "rmia_auc")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--out", default="/tmp/jaxmu_candidates")
    p.add_argument("--only", nargs="*", default=None, help=f"candidates among {', '.join(CANDIDATES)}")
    args = p.parse_args()
    import jaxmu
    from jaxmu.stats import separation

    for name in args.only or CANDIDATES:
        config, overrides = CANDIDATES[name]
        t0 = time.perf_counter()
        exp = jaxmu.Experiment(config, seeds=args.seeds, out=args.out, overrides=overrides, progress=False)
        exp.references()
        wall = time.perf_counter() - t0
        m = exp._references["metrics"]
        gaps = separation(m["original"], m["retrain"], METRICS)
        cells = [f"{k} {g.diff.format(3)}{' *' if g.significant else ''}" for k, g in gaps.items()]
        print(f"| {name} | {' '.join(overrides) or '-'} | " + " | ".join(cells) + f" | {wall:.0f} s |", flush=True)


if __name__ == "__main__":
    main()
