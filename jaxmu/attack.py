"""``python -m jaxmu.attack``: the U-LiRA protocol for one method (protocol §8.3).

    python -m jaxmu.attack --config ulira_digits_cnn --method finetune --out runs

Trains (or reuses) the shadow originals and retrained shadows as vmapped stacks, unlearns every
(split, forget set) pair with the method, and prints the attack table — Hayes et al. and Deep
Unlearn formulations, accuracy / AUC / TPR at 1 % and 0.1 % FPR, and the NeurIPS-2023 ε score —
beside the same attack on the original stack (no unlearning) and on an independent retrained
stack (perfect unlearning). Per-example scores go to ``ulira_<method>.npz`` and the ROC curves
to ``ulira_<method>_roc.png`` in the attack directory.

Diverged unlearned shadow models (parameters or φ not finite) are left out of their
population's scores and counted in its row (``finetune (1 of 8 diverged)``); the command then
ends with one ``warning:`` line and exit code 3. Bad input (a diverged shadow training stage
included) prints one ``error:`` line and exits 2.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Sequence

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
    args = p.parse_args(argv)
    cfg = config_from_args(args)
    from jaxmu.ulira_stage import run_ulira
    from jaxmu.pipeline import method_from_config, prepare

    method = method_from_config(cfg, args.method)
    enable_compile_cache()
    setting = prepare(cfg, args.out)
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
    print(f"per-example scores: {npz}\nROC curves: {png}")
    diverged = [f"{p.name}: {p.n_diverged} of {p.phi.shape[0]}" for p in report.populations if p.n_diverged]
    if diverged:
        from jaxmu.unlearn import EXIT_DIVERGED

        print(f"warning: models diverged ({'; '.join(diverged)}): left out of their population's scores "
              f"(exit code {EXIT_DIVERGED})", file=sys.stderr)
        return EXIT_DIVERGED
    return 0


if __name__ == "__main__":
    run_cli(main)
