"""``python -m jaxmu.train``: train the original and retrained stacks of a setting.

    python -m jaxmu.train --config digits_cnn --out runs [--set train.epochs=5]

Each stack (10 seeds by default) is one compiled program, checkpointed with Orbax; a rerun
skips finished stages and a killed run resumes from its last saved epoch. Prints per-seed and
mean ± std retain/forget/val/test accuracy, and writes ``<run dir>/results/train/``:
``results.csv`` (one row per stack and seed: the identifying columns of ``jaxmu.results``, the
accuracies and MIAs, the last epoch's training loss and accuracy), ``learning_curves.csv`` (one row
per stack, seed and epoch), ``results.json``, ``report.md`` (means ± 95% t-intervals over seeds)
and ``learning_curves.png``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
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


TRAIN_COLUMNS = ("train_loss", "train_acc", "epochs", "compile_s", "run_s")


def write_train_results(setting, stages: dict, metrics: dict[str, dict[str, np.ndarray]]) -> Path:
    """The train stage's results under ``<run dir>/results/train/``; returns the report's path.

    ``stages``: ``{stack: StageResult}``; ``metrics``: ``{stack: stack_metrics(...)}``. A stage
    finished before learning curves were recorded (``history`` None) gets empty curve cells.
    """
    from jaxmu import report as R
    from jaxmu.pipeline import AGAINST_RETRAIN, METRICS
    from jaxmu.results import NO_CALL, identity, seed_rows, write_csv, write_results
    from jaxmu.stats import METHOD_NOTE, interval

    cfg = setting.cfg
    out = setting.run_dir / "results" / "train"
    out.mkdir(parents=True, exist_ok=True)
    ident = identity(cfg, "train", setting.run_dir)
    rows, curves, histories = [], [], {}
    for stack, st in stages.items():
        h = st.history
        last = {} if h is None else {"train_loss": h["loss"][:, -1], "train_acc": h["accuracy"][:, -1]}
        stack_rows = seed_rows(ident, stack, NO_CALL, cfg.seeds, {**metrics[stack], **last},
                               (*METRICS, *AGAINST_RETRAIN, "train_loss", "train_acc"), R.seed_status(metrics[stack]))
        for r in stack_rows:
            r.update(epochs=cfg.train.epochs, compile_s=st.compile_s, run_s=st.run_s)
        rows += stack_rows
        if h is not None:
            histories[stack] = h
            status = R.seed_status(metrics[stack])
            curves += [{**ident, "method": stack, "call": NO_CALL, "seed": seed, "status": status[i], "epoch": e + 1,
                        "train_loss": float(h["loss"][i, e]), "train_acc": float(h["accuracy"][i, e])}
                       for i, seed in enumerate(cfg.seeds) for e in range(h["loss"].shape[1])]
    write_csv(out / "learning_curves.csv", curves, ("epoch", "train_loss", "train_acc"))
    if histories:
        R.plot_learning_curves(out / "learning_curves.png", histories)
    lines = [f"# jaxmu train — {cfg.data.name} / {cfg.model.name}", "",
             f"Config hash `{ident['config_hash']}`, {len(cfg.seeds)} seeds, {cfg.train.epochs} epochs; run "
             f"directory `{setting.run_dir}`. Means over seeds; {METHOD_NOTE}.", "",
             R.summary_table({k: metrics[k] for k in stages}), ""]
    if histories:
        lines += ["## Training loss and accuracy, last epoch", "", "| stack | train loss | train accuracy |",
                  "|---|---|---|"]
        lines += [f"| {k} | {interval(h['loss'][:, -1]).format()} | {interval(h['accuracy'][:, -1]).format()} |"
                  for k, h in histories.items()]
        lines += ["", "Per epoch: `learning_curves.csv`, `learning_curves.png` (training mode, augmented "
                  "batches, each example scored by the parameters of its step).", ""]
    lines += stage_lines(stages, len(cfg.seeds))
    meta = {"config": cfg.to_dict(), "run_dir": str(setting.run_dir),
            "history": {k: {n: v.tolist() for n, v in h.items()} for k, h in histories.items()},
            "timings": {k: {"compile_s": st.compile_s, "run_s": st.run_s} for k, st in stages.items()}}
    return write_results(out, rows, columns=(*METRICS, *AGAINST_RETRAIN, *TRAIN_COLUMNS), meta=meta, report=lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jaxmu.train", description=__doc__.split("\n")[0])
    add_config_args(p)
    args = p.parse_args(argv)
    cfg = config_from_args(args)
    enable_compile_cache()
    from jaxmu.pipeline import METRICS, prepare, scored_references

    setting = prepare(cfg, args.out)
    print(f"run directory: {setting.run_dir}  (model axis: {setting.model_axis}, "
          f"{len(cfg.seeds)} seeds, split {setting.splits.content_hash})")
    refs = scored_references(setting)
    stages, results = refs.stacks, refs.metrics
    print("\n".join(stage_lines(stages, len(cfg.seeds))))
    print(format_table(["stack", "seed", "status", *METRICS], metric_rows(cfg.seeds, results, METRICS)))
    import jax

    if jax.process_index() == 0:  # every process holds the metrics; one writes them
        print(f"results: {write_train_results(setting, stages, results).parent}")
    return 0


if __name__ == "__main__":
    run_cli(main)
