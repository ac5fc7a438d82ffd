"""Report tables and plots (protocol §6.7), and ``jaxmu report``: one leaderboard of many runs.

    jaxmu report RUN_DIR [RUN_DIR ...] [--out FILE.csv]   # = python -m jaxmu.report ...

prints the leaderboard of every ``results.csv`` under the run directories (``jaxmu.merge``:
grouped by dataset, model and method, mean ± 95% t half-width over seeds) as markdown, with the
attack rows in a table of their own, and with ``--out`` writes the leaderboard as CSV. A missing
directory, or one without results, is one ``error:`` line and exit code 2.

The sweep's tables:

Every table shows the retrained reference beside each method, the mean over seeds with its 95%
Student-t interval (``jaxmu.stats``; single seed flagged), Val and Test MIA both, and the
resolved configuration hash. A diverged seed (``status`` ``diverged`` in ``results.csv``, NaN
metrics) is left out of every mean and interval, and the table says how many:
``0.8123 ± 0.0100 (2 of 3; 1 diverged)``. The leaderboard compares methods paired over seeds.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from jaxmu.metrics import summarize
from jaxmu.stats import interval, paired

CSV_METRICS = ("retain_acc", "forget_acc", "val_acc", "test_acc", "val_mia", "test_mia", "indiscernibility",
               "retdev", "tow", "rmia_auc")
CSV_COLUMNS = ("method", "seed", "status", *CSV_METRICS, "unlearn_s", "compile_s", "rte")


def _fmt(values, diverged=None) -> str:
    return interval(values, diverged=diverged).format()


def seed_status(metrics: dict[str, Any]) -> list[str]:
    """``ok``/``diverged`` per seed: ``metrics["diverged"]`` if recorded, else a NaN metric marks it."""
    if "diverged" in metrics:
        d = np.asarray(metrics["diverged"], bool)
    else:
        d = np.isnan(np.stack([np.asarray(metrics[k], np.float64) for k in CSV_METRICS if k in metrics])).any(axis=0)
    return ["diverged" if x else "ok" for x in d]


def summary_table(stacks: dict[str, dict[str, np.ndarray]]) -> str:
    """Markdown table: one row per stack, every metric's mean ± its 95% t-interval over seeds."""
    cols = [c for c in CSV_METRICS if all(c in m for m in stacks.values())]
    lines = ["| stack | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, m in stacks.items():
        lines.append(f"| {name} | " + " | ".join(_fmt(m[c], m.get("diverged")) for c in cols) + " |")
    return "\n".join(lines)


def leaderboard(per_method: dict[str, dict[str, np.ndarray]], rte: dict[str, float]) -> str:
    """Methods ranked by the mean of their ranks on RetDev (lower is better) and Indisc (higher),
    each compared with the top-ranked method paired over seeds (``jaxmu.stats.paired``); ToW
    (Zhao et al. 2024, 1 is best) is shown beside them and does not enter the rank.

    Means are over each method's finite seeds; a method whose every seed diverged (NaN mean)
    ranks last on both. The columns "vs #1" give the paired difference of RetDev and Indisc to
    the first method with its 95% t-interval, and ``*`` where the difference is significant
    (p < 0.05); without ``*`` the two cannot be told apart on these seeds, whatever the ranks.

    The reference does not ship its ranking code; these are the two headline metrics of the
    v2 tables (protocol §6.3–6.4), so jaxmu ranks on both with equal weight and reports RTE.
    """
    names = list(per_method)
    retdev = np.array([summarize(per_method[n]["retdev"]).mean for n in names])  # over finite seeds
    indisc = np.array([summarize(per_method[n]["indiscernibility"]).mean for n in names])
    retdev, indisc = np.nan_to_num(retdev, nan=np.inf), np.nan_to_num(indisc, nan=-np.inf)
    rank = (np.argsort(np.argsort(retdev)) + np.argsort(np.argsort(-indisc))) / 2 + 1
    order = np.argsort(rank, kind="stable")
    top = names[order[0]]
    lines = ["| rank | method | mean rank | RetDev | Indisc (test MIA) | RetDev vs #1 | Indisc vs #1 | ToW | RTE |",
             "|---|---|---|---|---|---|---|---|---|"]
    for pos, i in enumerate(order, 1):
        n = names[i]
        vs = ["—", "—"] if n == top else [_paired_cell(per_method[n][k], per_method[top][k])
                                          for k in ("retdev", "indiscernibility")]
        d = per_method[n].get("diverged")
        lines.append(f"| {pos} | {n} | {rank[i]:.1f} | {_fmt(per_method[n]['retdev'], d)} | "
                     f"{_fmt(per_method[n]['indiscernibility'], d)} | {vs[0]} | {vs[1]} | {_tow_cell(per_method[n])} | "
                     f"{rte.get(n, float('nan')):.1f}x |")
    return "\n".join(lines)


def klom_section(klom: dict[str, dict[str, float] | None], n_seeds: int) -> list[str]:
    """Report lines: KLOM against the retrained stack per stack and split (rows without KLOM —
    e.g. a result cached before KLOM was recorded — are left out; no section when none has it)."""
    rows = {name: k for name, k in klom.items() if k}
    if not rows:
        return []
    splits = list(next(iter(rows.values())))
    lines = ["## KLOM", "",
             f"KL divergence of margins to the retrained models (Georgiev et al. 2024): per example, "
             f"KL(histogram of the stack's {n_seeds} seeds' margins ‖ the retrains'), 20 bins; the 95th "
             "percentile over each split's examples. 0 = indistinguishable from retraining; with few seeds "
             "the histograms are coarse, so compare stacks with each other, not with published values.", "",
             "| stack | " + " | ".join(f"KLOM {s}" for s in splits) + " |", "|---" * (len(splits) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(f"{k[s]:.3f}" for s in splits) + " |" for name, k in rows.items()]
    return lines + [""]


def _tow_cell(metrics: dict[str, np.ndarray]) -> str:
    return _fmt(metrics["tow"], metrics.get("diverged")) if "tow" in metrics else "—"


def _paired_cell(a, b) -> str:
    p = paired(a, b)
    return f"{p.diff.format()}{' *' if p.significant else ''}"


def plot_gaps(path: Path, method: str, metrics: dict[str, np.ndarray], retrain: dict[str, np.ndarray]) -> None:
    """Bar chart of accuracy gaps to retrain, indiscernibility, with error bars over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ["retain_acc", "forget_acc", "val_acc", "test_acc"]
    gaps = [summarize(np.asarray(metrics[k], np.float64) - np.asarray(retrain[k], np.float64)) for k in keys]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    axes[0].bar(range(4), [g.mean for g in gaps], yerr=[g.std for g in gaps], capsize=4)
    axes[0].axhline(0, color="k", lw=0.8)
    axes[0].set_xticks(range(4), ["RA", "FA", "VA", "TA"])
    axes[0].set_title(f"{method}: accuracy - retrain (mean ± std over seeds)")
    ind = [summarize(metrics["indiscernibility"]), summarize(retrain["indiscernibility"])]
    axes[1].bar([0, 1], [v.mean for v in ind], yerr=[v.std for v in ind], capsize=4)
    axes[1].set_xticks([0, 1], [method, "retrain"])
    axes[1].set_ylim(0, 1.05)
    axes[1].set_title("indiscernibility (test MIA)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_rte(path: Path, rte: dict[str, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4, 0.6 * len(rte) + 2), 3.5))
    ax.bar(range(len(rte)), list(rte.values()))
    ax.set_xticks(range(len(rte)), list(rte), rotation=45, ha="right")
    ax.set_yscale("log")
    ax.axhline(1, color="k", lw=0.8)
    ax.set_ylabel("RTE = t_retrain / t_method")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


TUNING_PLOTS = ("history", "importances", "pareto")


def plot_tuning(out_dir: Path, method: str, storage: Any, study_names: Sequence[str]) -> dict[str, str]:
    """Optuna's own plots of a method's tuning studies (``optuna.visualization.matplotlib``):

    * ``history``: the objective norm ‖(|ΔRA|, |ΔFA|, |ΔVA|, |2·ValMIA − 1|)‖₂ (the selection
      score, protocol §7.2) of every trial in order, all tuning seeds' studies together;
    * ``importances``: fANOVA hyperparameter importances for that score (first study);
    * ``pareto``: the Pareto front of the first study in two of its four objectives (the summed
      accuracy gaps against the MIA objective: Optuna draws at most three).

    ``storage``: an Optuna storage object or URL (``tuning.open_storage`` makes one from any URL
    jaxmu accepts, ``journal://`` included).

    Returns ``{kind: file name}`` of the plots written; a plot Optuna cannot draw (e.g. importances
    with fewer than two completed trials, or no searched hyperparameter) is left out and its reason
    recorded under ``{kind}_skipped``.
    """
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as om

    from jaxmu.metrics import objective_score

    score = lambda t: float(objective_score(np.asarray(t.values)))  # noqa: E731
    try:
        studies = [optuna.load_study(study_name=n, storage=storage) for n in study_names]
    except KeyError:  # optuna: "Record does not exist" (no such study in this storage)
        return {f"{k}_skipped": f"no study {list(study_names)} in the storage" for k in TUNING_PLOTS}
    draw = {
        "history": lambda: om.plot_optimization_history(studies, target=score, target_name="objective norm"),
        "importances": lambda: om.plot_param_importances(studies[0], target=score, target_name="objective norm"),
        "pareto": lambda: om.plot_pareto_front(studies[0], targets=lambda t: (sum(t.values[:3]), t.values[3]),
                                               target_names=["accuracy gaps (sum of 3)", "|2 ValMIA - 1|"]),
    }
    out: dict[str, str] = {}
    for kind, fn in draw.items():
        name = f"optuna_{kind}_{method}.png"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna marks its matplotlib backend experimental
                ax = fn()
            fig = np.ravel(ax)[0].figure
            fig.set_size_inches(6, 4)
            fig.tight_layout()
            fig.savefig(out_dir / name, dpi=110)
            plt.close(fig)
            out[kind] = name
        except (ValueError, RuntimeError, ZeroDivisionError) as e:  # too few trials / no parameters
            plt.close("all")
            out[f"{kind}_skipped"] = f"{type(e).__name__}: {e}"
    return out


def plot_pareto(path: Path, method: str, objectives: np.ndarray) -> None:
    """Tuning trials: summed accuracy-gap objectives vs the MIA objective, Pareto front marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    obj = np.asarray(objectives, np.float64)
    ok = np.all(np.isfinite(obj), axis=1)
    x, y = obj[ok, :3].sum(1), obj[ok, 3]
    front = np.array([not np.any((x <= x[i]) & (y <= y[i]) & ((x < x[i]) | (y < y[i]))) for i in range(len(x))],
                     bool) if len(x) else np.zeros(0, bool)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter(x[~front], y[~front], s=14, alpha=0.6, label="trials")
    ax.scatter(x[front], y[front], s=24, color="C3", label="Pareto front")
    ax.set(xlabel="accuracy-gap objectives (sum of 3)", ylabel="|2 ValMIA - 1|", title=f"{method}: tuning")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_learning_curves(path: Path, histories: dict[str, dict[str, np.ndarray]]) -> None:
    """Training loss and accuracy per epoch, one thin line per seed and the mean over seeds per stack.

    ``histories``: ``{stack: {"loss": [seeds, epochs], "accuracy": [seeds, epochs]}}``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for c, (stack, h) in enumerate(histories.items()):
        for ax, key in zip(axes, ("loss", "accuracy")):
            v = np.asarray(h[key], np.float64)
            epochs = np.arange(1, v.shape[1] + 1)
            ax.plot(epochs, v.T, color=f"C{c}", lw=0.6, alpha=0.35)
            ax.plot(epochs, np.nanmean(v, axis=0), color=f"C{c}", lw=1.8, label=stack)
    axes[0].set(xlabel="epoch", ylabel="training loss (CE)", title="training loss")
    axes[1].set(xlabel="epoch", ylabel="training accuracy", title="training accuracy", ylim=(0, 1.02))
    axes[1].legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    """``jaxmu report RUN_DIR... [--out FILE] [--rescore]``: the merged leaderboard (markdown on
    stdout); ``--rescore`` first recomputes every run's per-seed metrics from its cached logits
    (``jaxmu.rescore``: no model is loaded, evaluated or trained)."""
    from jaxmu import merge
    from jaxmu.checkpoint import write_text_atomic
    from jaxmu.paths import absolute_path
    from jaxmu.stats import METHOD_NOTE

    p = argparse.ArgumentParser(prog="python -m jaxmu.report", description=__doc__.split("\n")[0])
    p.add_argument("run_dirs", nargs="+", type=absolute_path, metavar="RUN_DIR",
                   help="run directories (or any folders holding results.csv files, searched recursively)")
    p.add_argument("--out", default=None, type=absolute_path, metavar="FILE", help="also write the leaderboard as CSV")
    p.add_argument("--rescore", action="store_true",
                   help="recompute every per-seed metric from the runs' cached logits (scores.npz) and rewrite "
                        "their results.csv/json first; nothing is trained or evaluated")
    args = p.parse_args(argv)
    if args.rescore:
        from jaxmu.rescore import rescore_run

        for d in args.run_dirs:
            print(rescore_run(d).line())
    rows = merge.load_rows(args.run_dirs)
    board = merge.leaderboard_rows(rows)
    metrics = merge.present_metrics(board)
    lines = [f"# jaxmu report — {len(args.run_dirs)} run directories, {len(rows)} rows", ""]
    if board:
        lines += ["## Leaderboard", "", f"Grouped by dataset, model and method; {METHOD_NOTE}; `runs` counts the "
                  "run hashes pooled.", "", merge.leaderboard_markdown(board, metrics), ""]
    attack = merge.attack_markdown(rows)
    if attack:
        lines += ["## U-LiRA attacks", "", attack, ""]
    print("\n".join(lines))
    if args.out is not None:
        if args.out.is_dir():
            raise merge.ResultsError(f"--out {args.out} is a directory: name a CSV file")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(args.out, merge.leaderboard_csv(board, metrics))
        print(f"leaderboard: {args.out}")
    return 0


if __name__ == "__main__":
    from jaxmu.cli import run_cli

    run_cli(main)
