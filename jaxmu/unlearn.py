"""``python -m jaxmu.unlearn``: unlearn every seed of the original stack with one method.

    python -m jaxmu.unlearn --config digits_cnn --method ng_plus \
        [--set method.alpha=0.9] --out runs

Loads (or trains, through the engine's stages) the original and retrained stacks, unlearns all
seeds in one vmapped program, checkpoints the unlearned stack, and prints per-seed and
mean ± std retain/forget/val/test accuracy beside the retrained stack, with the method's run
time (compile time apart) and its run-time efficiency RTE = t_retrain / t_method.
"""

from __future__ import annotations

import argparse
from typing import Sequence

from jaxmu.cli import add_config_args, config_from_args, enable_compile_cache, format_table, run_cli


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jaxmu.unlearn", description=__doc__.split("\n")[0])
    add_config_args(p)
    p.add_argument("--method", default=None, help='method id or call string, e.g. "ng_plus(alpha=0.9)"')
    args = p.parse_args(argv)
    cfg = config_from_args(args)
    from jaxmu.pipeline import (METRICS, method_from_config, prepare, reference_stacks, stack_metrics,
                                unlearn_stage, with_retention)
    from jaxmu.train import metric_rows, stage_lines

    method = method_from_config(cfg, args.method)  # validate before any work
    enable_compile_cache()
    setting = prepare(cfg, args.out)
    print(f"run directory: {setting.run_dir}  (model axis: {setting.model_axis}, {len(cfg.seeds)} seeds)")
    refs = reference_stacks(setting)
    print("\n".join(stage_lines(refs, len(cfg.seeds))))
    res = unlearn_stage(setting, method, refs["original"])
    retrain = stack_metrics(setting, refs["retrain"].state)
    results = {
        method.name: with_retention(stack_metrics(setting, (res.params, res.batch_stats)), retrain),
        "retrain": with_retention(retrain, retrain),
    }
    columns = (*METRICS, "retdev")
    print(format_table(["stack", "seed", *columns], metric_rows(cfg.seeds, results, columns)))
    t_r = refs["retrain"].run_s
    rte = t_r / res.run_s if res.run_s > 0 else float("inf")
    how = "loaded from checkpoint" if res.skipped else "ran"
    print(f"{method.call_string()} {how}: run {res.run_s:.3f} s for {len(cfg.seeds)} models "
          f"(compile {res.compile_s:.2f} s apart); retrain {t_r:.3f} s; RTE {rte:.1f}x")
    print(f"checkpoint: {res.path}")
    return 0


if __name__ == "__main__":
    run_cli(main)
