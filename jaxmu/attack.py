"""``python -m jaxmu.attack``: the U-LiRA protocol for one method (protocol §8.3).

    python -m jaxmu.attack --config ulira_digits_cnn --method finetune --out runs

Trains (or reuses) the shadow originals and retrained shadows as vmapped stacks, unlearns every
(split, forget set) pair with the method, and prints the attack table — Hayes et al. and Deep
Unlearn formulations, accuracy / AUC / TPR at 1 % and 0.1 % FPR, and the NeurIPS-2023 ε score —
beside the same attack on the original stack (no unlearning) and on an independent retrained
stack (perfect unlearning). Per-example scores go to ``ulira_<method>.npz`` and the ROC curves
to ``ulira_<method>_roc.png`` in the attack directory.

The per-population table goes beside them, in ``results_<method>/``: ``results.csv`` (one row per
population and formulation: the identifying columns of ``jaxmu.results``, accuracy, AUC and TPR at
1 % / 0.1 % FPR each with its 95 % bootstrap interval, pair and model counts, ε median, forget
score and accuracies), ``results.json`` and ``report.md``. The intervals are percentile bootstrap
intervals over *target models* (``attacks.roc.bootstrap_ci``: every resample draws the scored
models with replacement and pools their pairs; ``--bootstrap`` resamples, default 1000, from
``numpy.random.default_rng(0)`` for every row).

Diverged unlearned shadow models (parameters or φ not finite) are left out of their
population's scores and counted in its row (``finetune (1 of 8 diverged)``); the command then
ends with one ``warning:`` line and exit code 3. Bad input (a diverged shadow training stage
included) prints one ``error:`` line and exits 2.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from jaxmu.cli import add_config_args, config_from_args, enable_compile_cache, format_table, run_cli


def attack_rows(report) -> list[list[object]]:
    """One row per (population, formulation); a population with diverged models says how many
    were left out in its name cell, e.g. ``finetune (1 of 8 diverged)``."""
    rows = []
    for pop in report.populations:
        name = pop.name
        if pop.n_diverged:
            name = f"{pop.name} ({pop.n_diverged} of {pop.phi.shape[0]} diverged)"
        if pop.hayes is None:
            rows.append([name, "none scored", *([math.nan] * 4), 0])
            continue
        for res in (pop.hayes, pop.deepunlearn):
            s = res.summary
            rows.append([name, res.formulation, s["accuracy"], s["auc"], s["tpr_at_1pct"], s["tpr_at_0.1pct"],
                         int(s["n_pos"] + s["n_neg"])])
    return rows


BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
STATISTICS = ("accuracy", "auc", "tpr_at_1pct", "tpr_at_0.1pct")
ATTACK_COLUMNS = ("population", "formulation", *(f"{k}{s}" for k in STATISTICS for s in ("", "_lo", "_hi")),
                  "n_pos", "n_neg", "n_models", "n_diverged", "eps_median", "forget_score", "retain_acc",
                  "forget_acc", "test_acc", "klom_forget_p95", "study_mean_p", "study_frac_p_gt_half",
                  "study_instances", "study_degenerate_examples", "bootstrap_resamples")


def population_rows(report, method_name: str, call: str, ident: dict[str, str],
                    n_boot: int = BOOTSTRAP_RESAMPLES) -> list[dict[str, Any]]:
    """One row per (population, formulation) with the grouped bootstrap 95% interval of each statistic,
    and the population's ε score, accuracies, KLOM and the study's own variant (§8.1).

    The groups are the pairs' target models (``ULiraResult.model_index``): a resample draws the
    models with replacement (``attacks.roc.bootstrap_ci``), seeded ``BOOTSTRAP_SEED`` per row. A
    population with fewer than two finite models has one row, ``status`` diverged, NaN statistics.
    """
    from jaxmu.attacks.roc import bootstrap_ci
    from jaxmu.results import NO_CALL

    rows = []
    for pop in report.populations:
        base = {**ident, "method": pop.name, "call": call if pop.name == method_name else NO_CALL, "seed": NO_CALL,
                "population": pop.name, "n_models": int(pop.phi.shape[0]), "n_diverged": pop.n_diverged,
                "eps_median": float(np.nanmedian(pop.eps)) if np.isfinite(pop.eps).any() else math.nan,
                "forget_score": pop.forget_score, "retain_acc": pop.retain_acc, "forget_acc": pop.forget_acc,
                "test_acc": pop.test_acc, "klom_forget_p95": pop.klom_forget, "bootstrap_resamples": n_boot,
                **(pop.study.summary() if pop.study is not None else {})}
        if pop.hayes is None:
            rows.append({**base, "status": "diverged", "formulation": "none scored",
                         **{k: math.nan for k in STATISTICS}})
            continue
        for res in (pop.hayes, pop.deepunlearn):
            ci = bootstrap_ci(res.scores, res.labels, res.model_index, n_boot, np.random.default_rng(BOOTSTRAP_SEED))
            row = {**base, "status": "ok", "formulation": res.formulation,
                   "n_pos": int(res.summary["n_pos"]), "n_neg": int(res.summary["n_neg"])}
            for k in STATISTICS:
                row.update({k: res.summary[k], f"{k}_lo": ci[k][0], f"{k}_hi": ci[k][1]})
            rows.append(row)
    return rows


def attack_markdown(rows: Sequence[dict[str, Any]], title: str, n_boot: int) -> list[str]:
    """The report: one line per population and formulation, each statistic with its interval."""
    def cell(r, k):
        return "nan" if math.isnan(r[k]) else f"{r[k]:.4f} [{r[k + '_lo']:.4f}, {r[k + '_hi']:.4f}]"

    lines = [title, "", f"Intervals: 95% percentile bootstrap over target models ({n_boot} resamples; each "
             f"resample draws the scored models with replacement and pools their pairs; "
             f"numpy default_rng({BOOTSTRAP_SEED}) per row).", "",
             "| population | formulation | accuracy | AUC | TPR@1% | TPR@0.1% | pairs | models (diverged) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['population']} | none scored | nan | nan | nan | nan | 0 | "
                         f"{r['n_models']} ({r['n_diverged']}) |")
            continue
        lines.append(f"| {r['population']} | {r['formulation']} | " + " | ".join(cell(r, k) for k in STATISTICS)
                     + f" | {r['n_pos'] + r['n_neg']} | {r['n_models']} ({r['n_diverged']}) |")
    return lines + [""]


def write_attack_results(setting, report, method, n_boot: int = BOOTSTRAP_RESAMPLES) -> Path:
    """``results.csv`` / ``results.json`` / ``report.md`` in ``<attack dir>/results_<method>/``."""
    from jaxmu.results import identity, write_results

    ident = identity(setting.cfg, "attack", setting.run_dir)
    rows = population_rows(report, method.name, method.call_string(), ident, n_boot)
    title = (f"# jaxmu attack (U-LiRA) — {setting.cfg.data.name} / {setting.cfg.model.name}: "
             f"`{method.call_string()}`")
    lines = attack_markdown(rows, title, n_boot)
    lines += [f"Config hash `{ident['config_hash']}`, attack directory `{report.out_dir}`.", ""]
    meta = {"config": setting.cfg.to_dict(), "attack_dir": str(report.out_dir), "call": method.call_string(),
            "bootstrap": {"method": "percentile, grouped by target model", "resamples": n_boot,
                          "seed": BOOTSTRAP_SEED, "level": 0.95},
            "timings": report.timings}
    return write_results(report.out_dir / f"results_{method.name}", rows, columns=ATTACK_COLUMNS, meta=meta,
                         report=lines)


def save_outputs(report, method_name: str):
    out = report.out_dir
    arrays = {"roles": report.roles, "pool": report.splits.pool, "phi_retrain": report.phi_retrain}
    for pop in report.populations:
        tag = pop.name.split(" ")[0]
        arrays[f"{tag}_phi"] = pop.phi
        arrays[f"{tag}_eps"] = pop.eps
        for res in (r for r in (pop.hayes, pop.deepunlearn) if r is not None):
            for field in ("scores", "labels", "model_index", "example_index"):
                arrays[f"{tag}_{res.formulation}_{field}"] = getattr(res, field)
    npz = out / f"ulira_{method_name}.npz"
    np.savez_compressed(npz, **arrays)
    png = out / f"ulira_{method_name}_roc.png"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jaxmu.attacks.roc import roc_curve

    fig, ax = plt.subplots(figsize=(5, 5))
    for pop in (p for p in report.populations if p.hayes is not None):
        fpr, tpr, _ = roc_curve(pop.hayes.scores, pop.hayes.labels)
        ax.plot(fpr, tpr, label=f"{pop.name} (AUC {pop.hayes.summary['auc']:.3f})")
    ax.plot([1e-4, 1], [1e-4, 1], "k:", lw=0.8)
    ax.set(xscale="log", yscale="log", xlim=(1e-3, 1), ylim=(1e-3, 1), xlabel="FPR", ylabel="TPR",
           title="U-LiRA (Hayes et al.)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return npz, png


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jaxmu.attack", description=__doc__.split("\n")[0])
    add_config_args(p, default_config="ulira_digits_cnn")
    p.add_argument("--method", default=None, help='method id or call string, e.g. "finetune(epochs=2)"')
    p.add_argument("--bootstrap", type=int, default=BOOTSTRAP_RESAMPLES, metavar="N",
                   help="bootstrap resamples of the target models for the intervals (default: %(default)s)")
    args = p.parse_args(argv)
    if args.bootstrap < 2:
        from jaxmu.config import ConfigError

        raise ConfigError(f"--bootstrap must be >= 2, got {args.bootstrap}")
    cfg = config_from_args(args)
    from jaxmu.ulira_stage import run_ulira
    from jaxmu.pipeline import method_from_config, prepare, require_applicable

    method = method_from_config(cfg, args.method)
    enable_compile_cache()
    setting = prepare(cfg, args.out, check=require_applicable(method))  # refused: nothing written
    a = cfg.attack
    print(f"U-LiRA: {a.num_splits} splits x {a.forget_sets} forget sets = {a.num_splits * a.forget_sets} "
          f"unlearned/retrained models; attack dir {setting.run_dir}")
    report = run_ulira(setting, method)
    if report is None:  # another process of a multi-host run reports
        return 0
    print(format_table(["unlearned", "formulation", "accuracy", "AUC", "TPR@1%", "TPR@0.1%", "pairs"],
                       attack_rows(report)))
    print(format_table(["unlearned", "retain acc", "forget acc", "test acc", "eps median", "forget score F", "N"],
                       [[p.name, p.retain_acc, p.forget_acc, p.test_acc, float(np.nanmedian(p.eps)),
                         p.forget_score, p.n_models_eps] for p in report.populations]))
    print(format_table(["unlearned", "KLOM forget p95", "study mean P", "study P>0.5", "degenerate examples"],
                       [[p.name, p.klom_forget, *((p.study.mean_p, p.study.frac_above_half, p.study.n_degenerate)
                                                  if p.study is not None else (float("nan"),) * 3)]
                        for p in report.populations]))
    print(format_table(["stage", "models", "compile s", "run s"],
                       [[k, v["models"], v["compile_s"], v["run_s"]] for k, v in report.timings.items()]))
    npz, png = save_outputs(report, method.name)
    results = write_attack_results(setting, report, method, args.bootstrap)
    print(f"per-example scores: {npz}\nROC curves: {png}\nresults: {results.parent}")
    diverged = [f"{p.name}: {p.n_diverged} of {p.phi.shape[0]}" for p in report.populations if p.n_diverged]
    if diverged:
        from jaxmu.unlearn import EXIT_DIVERGED

        print(f"warning: models diverged ({'; '.join(diverged)}): left out of their population's scores "
              f"(exit code {EXIT_DIVERGED})", file=sys.stderr)
        return EXIT_DIVERGED
    return 0


if __name__ == "__main__":
    run_cli(main)
