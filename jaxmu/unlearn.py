"""``python -m jaxmu.unlearn``: unlearn every seed of the original stack with one method.

    python -m jaxmu.unlearn --config digits_cnn --method ng_plus \
        [--set method.alpha=0.9] [--original seed0.pt seed1.pt ...] --out runs

Loads (or trains, through the engine's stages) the original and retrained stacks, unlearns all
seeds in one vmapped program, checkpoints the unlearned stack, and prints per-seed and
mean ± std retain/forget/val/test accuracy beside the retrained stack, with the method's run
time (compile time apart) and its run-time efficiency RTE = t_retrain / t_method.

``--original PATH...`` (config ``original.path``) starts from originals trained elsewhere: one
PyTorch ``state_dict`` per seed or one Orbax stack (``jaxmu.originals``); only the retrained
stack is trained, and the run directory is keyed by the weights' content hash.

A seed whose unlearned model diverged (parameters or losses not finite, e.g. a learning rate of
1e30) costs only itself: its row says ``diverged``, its metrics are NaN and left out of the
means (``mean±std (2 of 3; 1 diverged)``), the other seeds are reported exactly as without it,
and the command ends with one ``warning:`` line naming the diverged seeds on stderr.

Results go to ``<run dir>/results/unlearn/<method>_<hash>/`` (the hash of the hyperparameters, as
the checkpoint's folder): ``results.csv`` (one row per seed for the method and for the retrain
and original references: the identifying columns of ``jaxmu.results``, status, accuracies, MIAs,
indiscernibility, RetDev, run time, RTE, ``hp_*``), ``results.json`` and ``report.md`` (means ±
95% t-intervals over seeds beside the retrained and original stacks, as the sweep's).

Exit codes: 0 all models finite; 2 bad input (one ``error:`` line, e.g. a diverged *training*
stage); 3 (``EXIT_DIVERGED``) the run finished but some unlearned models diverged.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from jaxmu.cli import add_config_args, add_original_arg, config_from_args, enable_compile_cache, format_table, run_cli

EXIT_DIVERGED = 3  # the run finished, but some models diverged (their metrics are NaN)


def diverged_warning(what: str, seeds: Sequence[object], diverged) -> str | None:
    """One ``warning:`` line naming the diverged seeds of ``what``, or None when none diverged."""
    import numpy as np

    from jaxmu.engine.finite import diverged_names

    d = np.asarray(diverged, bool)
    if not d.any():
        return None
    return (f"warning: {what}: {int(d.sum())} of {d.size} models diverged (seeds {diverged_names(~d, seeds)}): "
            f"parameters or losses not finite; their metrics are NaN and left out of the means "
            f"(exit code {EXIT_DIVERGED})")


UNLEARN_COLUMNS = ("unlearn_s", "compile_s", "rte")


def write_unlearn_results(setting, method, res, metrics: dict[str, dict], retrain_run_s: float,
                          rte: float) -> Path:
    """The unlearn stage's results under ``<run dir>/results/unlearn/<checkpoint folder>/``.

    ``metrics``: ``{method.name: ..., "retrain": ..., "original": ...}``, each
    ``with_retention(stack_metrics(...), retrain)``; returns the report's path.
    """
    from jaxmu import report as R
    from jaxmu.results import NO_CALL, identity, seed_rows, write_results
    from jaxmu.stats import METHOD_NOTE

    cfg = setting.cfg
    ident = identity(cfg, "unlearn", setting.run_dir)
    call = method.call_string()
    rows = []
    for name, m in metrics.items():
        own = name == method.name
        stack_rows = seed_rows(ident, name, call if own else NO_CALL, cfg.seeds, m, R.CSV_METRICS,
                               R.seed_status(m))
        if own:
            for r in stack_rows:
                r.update(unlearn_s=res.run_s, compile_s=res.compile_s, rte=rte,
                         **{f"hp_{k}": v for k, v in method.hparams.items()})
        rows += stack_rows
    lines = [f"# jaxmu unlearn — {cfg.data.name} / {cfg.model.name}: `{call}`", "",
             f"Config hash `{ident['config_hash']}`, {len(cfg.seeds)} seeds; run directory `{setting.run_dir}`. "
             f"Means over seeds; {METHOD_NOTE}.", "", R.summary_table(metrics), "",
             f"Unlearning: {res.run_s:.3f} s for {len(cfg.seeds)} models (compile {res.compile_s:.2f} s apart); "
             f"retrain {retrain_run_s:.2f} s; RTE {rte:.1f}x.", ""]
    meta = {"config": cfg.to_dict(), "run_dir": str(setting.run_dir), "call": call,
            "hparams": dict(method.hparams), "checkpoint": str(res.path), "unlearn_s": res.run_s,
            "compile_s": res.compile_s, "retrain_run_s": retrain_run_s, "rte": rte}
    out = setting.run_dir / "results" / "unlearn" / res.path.name
    return write_results(out, rows, columns=(*R.CSV_METRICS, *UNLEARN_COLUMNS), meta=meta, report=lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jaxmu.unlearn", description=__doc__.split("\n")[0])
    add_config_args(p)
    add_original_arg(p)
    p.add_argument("--method", default=None, help='method id or call string, e.g. "ng_plus(alpha=0.9)"')
    args = p.parse_args(argv)
    cfg = config_from_args(args)
    from jaxmu.pipeline import (METRICS, method_from_config, prepare, require_applicable, scored_references,
                                stack_evaluation, unlearn_stage)
    from jaxmu.train import metric_rows, stage_lines

    method = method_from_config(cfg, args.method)  # validate before any work
    enable_compile_cache()
    setting = prepare(cfg, args.out, check=require_applicable(method))  # refused: nothing written
    print(f"run directory: {setting.run_dir}  (model axis: {setting.model_axis}, {len(cfg.seeds)} seeds)")
    scored = scored_references(setting)
    refs = scored.stacks
    print("\n".join(stage_lines(refs, len(cfg.seeds))))
    res = unlearn_stage(setting, method, refs["original"])
    results = {
        method.name: scored.score(stack_evaluation(setting, (res.params, res.batch_stats), res.path)),
        "retrain": scored.metrics["retrain"],
    }
    columns = (*METRICS, "retdev")
    print(format_table(["stack", "seed", "status", *columns], metric_rows(cfg.seeds, results, columns)))
    t_r = refs["retrain"].run_s
    rte = t_r / res.run_s if res.run_s > 0 else float("inf")
    how = "loaded from checkpoint" if res.skipped else "ran"
    print(f"{method.call_string()} {how}: run {res.run_s:.3f} s for {len(cfg.seeds)} models "
          f"(compile {res.compile_s:.2f} s apart); retrain {t_r:.3f} s; RTE {rte:.1f}x")
    print(f"checkpoint: {res.path}")
    import jax

    original = scored.metrics["original"]
    if jax.process_index() == 0:  # every process holds the metrics; one writes them
        path = write_unlearn_results(setting, method, res, {**results, "original": original}, t_r, rte)
        print(f"results: {path.parent}")
    warning = diverged_warning(method.call_string(), cfg.seeds, results[method.name]["diverged"])
    if warning:
        print(warning, file=sys.stderr)
        return EXIT_DIVERGED
    return 0


if __name__ == "__main__":
    run_cli(main)
