"""``python -m jaxmu.sweep --method ng_plus``: the benchmark end to end for one method (or all).

    python -m jaxmu.sweep --method ng_plus [--config digits_mlp_half] [--out runs]
        [--seeds 10] [--trials 8] [--set key=value] [--storage URL] [--ulira] [--method all]

Reusing whatever the run directory already holds, it trains the original and retrained stacks,
tunes the method (Optuna NSGA-III, the study's four objectives on seeds 0-2, trials in vmapped
batches, SQLite storage in the run directory), unlearns every seed with the best trial, evaluates
(accuracies, Val/Test MIA, indiscernibility, RetDev, RTE) and writes ``results.csv``,
``results.json``, ``report.md`` and plots. Killed at any point, the same command resumes; a
finished sweep rerun only prints the report.

A seed whose final unlearned model diverged (parameters or losses not finite) costs only
itself: its ``results.csv`` row has ``status`` ``diverged`` and NaN metrics, the report's means
leave it out and say how many (``(2 of 3; 1 diverged)``), the other seeds are saved exactly as
without it, and the sweep ends with one ``warning:`` line naming the seeds and exit code 3
(``jaxmu.unlearn.EXIT_DIVERGED``). A diverged training stage stops the sweep (exit 2).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from jaxmu._faults import checkpoint_reached
from jaxmu.checkpoint import write_text_atomic
from jaxmu.cli import add_config_args, add_original_arg, config_from_args, enable_compile_cache, run_cli
from jaxmu.metrics import summarize
from jaxmu.stats import METHOD_NOTE, separation, separation_table, separation_warnings


def _pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def sweep_method(setting, method, refs: dict, ref_metrics: dict, *, quiet: bool,
                 worker: str = "main", references=None) -> dict[str, Any] | None:
    """Tune, select, unlearn all seeds, evaluate; cached in ``sweep/<method>_<hash>/final.json``.

    ``references`` (``pipeline.References``): given, the tuned stack is scored against the
    retrained stack's scores (RMIA included) and the result carries its KLOM
    (``pipeline.klom_scores``); without, only ``with_retention`` against ``ref_metrics``.
    """
    from jaxmu import report as R
    from jaxmu.pipeline import klom_scores, margins, split_metrics, stack_evaluation, unlearn_stage, with_retention
    from jaxmu.tuning import TrialEvaluator, open_storage, select_best, tune, tuning_method

    cfg = setting.cfg
    method = tuning_method(method)
    blob = json.dumps({"tune": cfg.semantic_dict()["tune"], "hp": dict(method.hparams), "keys": cfg.unlearn_keys},
                      sort_keys=True, default=str)
    sdir = setting.run_dir / "sweep" / f"{method.name}_{hashlib.sha256(blob.encode()).hexdigest()[:12]}"
    sdir.mkdir(parents=True, exist_ok=True)
    final = sdir / "final.json"
    if final.exists():
        return json.loads(final.read_text())
    storage = cfg.tune.storage or f"sqlite:///{sdir / 'optuna.db'}"
    helper = worker != "main"
    n_round = cfg.tune.batch * len([s for s in cfg.tune.seeds if s in cfg.seeds])
    evaluator = TrialEvaluator(setting, method, refs["original"].state, ref_metrics["retrain"],
                               group_size=_pow2(n_round))
    bar = None
    if cfg.engine.progress and not quiet:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.tune.trials * len(cfg.tune.seeds), desc=f"tune {method.name}", unit="trial", leave=False)

    def progress(done: int, total: int, best: float) -> None:
        if bar is not None:  # tqdm shows trials/s itself; the best objective norm rides beside it
            bar.total = total
            bar.set_postfix(best=f"{best:.4f}", refresh=False)
            bar.update(done - bar.n)

    t_tune = time.perf_counter()
    prefix = f"{method.name}_{sdir.name}"
    trials = tune(setting, method, evaluator, storage, prefix, progress,
                  worker=worker, wait=not helper)
    tuning_wall = time.perf_counter() - t_tune
    if bar is not None:
        bar.close()
    if helper:
        return None  # tuning workers contribute trials; the main worker finishes the sweep
    best = select_best(trials)
    seeds = sorted({t.seed for t in trials})
    tuning_plots = R.plot_tuning(sdir, method.name, open_storage(storage), [f"{prefix}_seed{s}" for s in seeds]) \
        if any(t.params for t in trials) else {}
    # protocol §7.2: the reference's best-configuration generator casts every *num_epochs value
    # with int() (truncation): PRMQ's float epochs 3.7 -> 3 in the final runs. Reproduced; both
    # values are recorded (best_trial.params holds the searched one).
    final_params = {k: (float(int(v)) if k.endswith("epochs") and isinstance(v, float) else v)
                    for k, v in best.params.items()}
    tuned = method.replace(**final_params)
    t_final = time.perf_counter()
    res = unlearn_stage(setting, tuned, refs["original"])
    checkpoint_reached("unlearn:saved")
    scores = stack_evaluation(setting, (res.params, res.batch_stats), res.path)
    metrics = (references.score(scores) if references is not None
               else with_retention(split_metrics(scores), ref_metrics["retrain"]))
    rte = refs["retrain"].run_s / res.run_s if res.run_s > 0 else float("inf")
    out = {
        "method": method.name,
        "call": tuned.call_string(),
        "hparams": dict(tuned.hparams),
        "best_trial": {"seed": best.seed, "number": best.number, "params": best.params,
                       "objectives": list(best.objectives), "score": best.score},
        "trials": [{"seed": t.seed, "number": t.number, "params": t.params, "objectives": list(t.objectives)}
                   for t in trials],
        "metrics": {k: np.asarray(v).tolist() for k, v in metrics.items()},  # NaN for diverged seeds
        "status": R.seed_status(metrics),
        "klom": klom_scores(margins(scores), references.margins["retrain"]) if references is not None else None,
        "tuning_plots": {k: (str(sdir / v) if k in R.TUNING_PLOTS else v) for k, v in tuning_plots.items()},
        "unlearn_s": res.run_s, "compile_s": res.compile_s, "rte": rte,
        "tuning_compile_s": evaluator.compile_s, "tuning_run_s": evaluator.run_s,
        "tuning": {**dataclasses.asdict(evaluator.counters), "wall_s": tuning_wall},
        "final_wall_s": time.perf_counter() - t_final,
        "checkpoint": str(res.path),
    }
    write_text_atomic(final, json.dumps(out, indent=1, default=str))
    return out


def _tuning_plot_lines(out_dir: Path, plots: dict[str, str]) -> list[str]:
    """Copy a method's Optuna plots beside the report and link them (``report.plot_tuning``)."""
    import shutil

    from jaxmu import report as R

    lines = []
    for kind in R.TUNING_PLOTS:
        src = plots.get(kind)
        if src and Path(src).exists():
            shutil.copy(src, out_dir / Path(src).name)
            lines.append(f"![{kind}]({Path(src).name})")
        elif f"{kind}_skipped" in plots:
            lines.append(f"(Optuna {kind} plot not drawn: {plots[kind + '_skipped']})")
    return lines + ([""] if lines else [])


def write_outputs(out_dir: Path, setting, results: list[dict], ref_metrics: dict, refs: dict,
                  ulira: dict | None = None, klom_original: dict | None = None) -> Path:
    """``results.csv`` (one row per method and seed: the identifying columns of ``jaxmu.results``,
    ``status`` ok/diverged, the metrics, timings and ``hp_*``), ``results.json``, ``report.md``
    (means over the finite seeds, diverged ones counted) and the plots."""
    from jaxmu import report as R
    from jaxmu.results import identity, write_results

    out_dir.mkdir(parents=True, exist_ok=True)
    ident = identity(setting.cfg, "sweep", setting.run_dir)
    rows = []
    for r in results:
        m = r["metrics"]
        status = r.get("status") or R.seed_status(m)
        for i, seed in enumerate(setting.cfg.seeds):
            row = {**ident, "method": r["method"], "call": r["call"], "seed": seed, "status": status[i],
                   **{k: m[k][i] for k in R.CSV_METRICS if k in m},  # a cached older result may lack one
                   "unlearn_s": r["unlearn_s"], "compile_s": r["compile_s"], "rte": r["rte"]}
            row.update({f"hp_{k}": v for k, v in r["hparams"].items()})
            rows.append(row)
    meta = {
        "config": setting.cfg.to_dict(), "config_hash": setting.cfg.hash(), "run_dir": str(setting.run_dir),
        "methods": {r["method"]: {k: r[k] for k in ("call", "hparams", "best_trial", "unlearn_s", "compile_s",
                                                     "rte", "tuning_compile_s", "tuning_run_s")} for r in results},
        "retrain_run_s": refs["retrain"].run_s, "ulira": ulira,
        "klom": {"original": klom_original, **{r["method"]: r.get("klom") for r in results}},
    }
    lines = [f"# jaxmu sweep — {setting.cfg.data.name} / {setting.cfg.model.name}", "",
             f"Config hash `{setting.cfg.hash()}`, {len(setting.cfg.seeds)} seeds, "
             f"{setting.cfg.tune.trials} trials per tuning seed {list(setting.cfg.tune.seeds)}; "
             f"run directory `{setting.run_dir}`. Means over seeds; {METHOD_NOTE} "
             "(t with n−1 degrees of freedom; the leaderboard's differences are paired over seeds).", ""]
    gaps = separation(ref_metrics["original"], ref_metrics["retrain"],
                      [*R.CSV_METRICS[:6], *(["rmia_auc"] if "rmia_auc" in ref_metrics["original"] else [])])
    lines += ["## Can this setting tell the original from the retrained model?", "",
              "The original − retrain gap of each metric, paired over seeds. A tuning objective "
              "whose gap is within noise cannot reward unlearning.", "", separation_table(gaps), ""]
    warned = separation_warnings(gaps)
    lines += warned + ([""] if warned else [])
    for r in results:
        m = {k: np.asarray(v) for k, v in r["metrics"].items()}
        lines += [f"## {r['method']}", "", f"Best trial (seed {r['best_trial']['seed']}, #{r['best_trial']['number']},"
                  f" objective norm {r['best_trial']['score']:.4f}): `{r['call']}`", "",
                  R.summary_table({r["method"]: m, "retrain": ref_metrics["retrain"],
                                   "original": ref_metrics["original"]}), "",
                  f"Unlearning: {r['unlearn_s']:.3f} s for {len(setting.cfg.seeds)} models (compile "
                  f"{r['compile_s']:.2f} s apart); retrain {refs['retrain'].run_s:.2f} s; RTE {r['rte']:.1f}x.", ""]
        R.plot_gaps(out_dir / f"gaps_{r['method']}.png", r["method"], m, ref_metrics["retrain"])
        if r["trials"]:
            R.plot_pareto(out_dir / f"pareto_{r['method']}.png", r["method"],
                          np.array([t["objectives"] for t in r["trials"]]))
        lines += _tuning_plot_lines(out_dir, r.get("tuning_plots") or {})
    rte = {r["method"]: r["rte"] for r in results}
    R.plot_rte(out_dir / "rte.png", rte)
    if len(results) > 1:
        lines += ["## Leaderboard", "", R.leaderboard({r["method"]: {k: np.asarray(v) for k, v in
                                                                      r["metrics"].items()} for r in results}, rte), ""]
    lines += R.klom_section({"original": klom_original, **{r["method"]: r.get("klom") for r in results}},
                            len(setting.cfg.seeds))
    if ulira:
        lines += ["## U-LiRA", "", ulira["table"], ""]
    return write_results(out_dir, rows, columns=R.CSV_COLUMNS, meta=meta, report=lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jaxmu.sweep", description=__doc__.split("\n")[0])
    add_config_args(p)
    add_original_arg(p)
    p.add_argument("--method", required=True, help='method id, call string, or "all"')
    p.add_argument("--trials", type=int, default=None, help="completed trials per tuning seed (tune.trials)")
    p.add_argument("--storage", default=None, help="Optuna storage URL shared by workers (tune.storage)")
    p.add_argument("--ulira", action="store_true", help="also run the U-LiRA attack with the tuned method")
    p.add_argument("--worker", default="main",
                   help="tuning worker name; workers other than 'main' only add trials to the shared "
                        "study (--storage) and exit; 'main' waits for them and finishes the sweep")
    args = p.parse_args(argv)
    if args.trials is not None:
        args.overrides.append(f"tune.trials={args.trials}")
    if args.storage is not None:
        args.overrides.append(f"tune.storage={json.dumps(args.storage)}")
    cfg = config_from_args(args, multihost=False)
    import jaxmu.methods as M
    from jaxmu.pipeline import applicability_error, klom_scores, method_from_config, prepare, scored_references

    methods = [M.get(n) for n in M.names()] if args.method == "all" else [method_from_config(cfg, args.method)]
    if cfg.tune.storage:
        from jaxmu.tuning import check_storage

        check_storage(cfg.tune.storage)  # a bad or unreachable URL fails here, before any training
    enable_compile_cache()
    t_start = time.perf_counter()
    refused: dict[str, str] = {}

    def check(pending) -> None:  # before the run directory exists: a refusal writes nothing
        refused.update({m.name: why for m in methods if (why := applicability_error(pending, m))})
        if refused and args.method != "all":
            raise M.MethodError(next(iter(refused.values())))

    setting = prepare(cfg, args.out, check=check)
    print(f"run directory: {setting.run_dir}  (model axis: {setting.model_axis}, {len(cfg.seeds)} seeds)")
    for why in refused.values():  # --method all: the others run
        print(f"skipped: {why}")
    methods = [m for m in methods if m.name not in refused]
    scored = scored_references(setting)
    refs, ref_metrics = scored.stacks, scored.metrics
    ref_margins = scored.margins
    klom_original = klom_scores(ref_margins["original"], ref_margins["retrain"])
    references_s = time.perf_counter() - t_start
    results = []
    for m in methods:
        r = sweep_method(setting, m, refs, ref_metrics, quiet=args.quiet, worker=args.worker, references=scored)
        if r is None:
            print(f"worker {args.worker}: no trials of {m.name} left to run")
            continue
        results.append(r)
        rm = results[-1]["metrics"]
        print(f"{m.name}: {results[-1]['call']}  RetDev {summarize(rm['retdev']).mean:.4f}  "
              f"Indisc {summarize(rm['indiscernibility']).mean:.4f}  RTE {results[-1]['rte']:.1f}x")
    if not results:
        return 0
    ulira = None
    if args.ulira:
        from jaxmu.attack import write_attack_results
        from jaxmu.ulira_stage import run_ulira

        tables = []
        for r in results:
            tuned = M.get(r["method"], **r["hparams"])
            attack_report = write_attack_results(setting, run_ulira(setting, tuned), tuned)
            body = attack_report.read_text().split("\n", 1)[1]  # its table and interval note, under our heading
            tables.append(f"### `{tuned.call_string()}`\n{body}\nAttack results: `{attack_report.parent}`")
        ulira = {"table": "\n\n".join(tables)}
    tag = "all" if args.method == "all" else methods[0].name
    path = write_outputs(setting.run_dir / f"sweep_{tag}", setting, results, ref_metrics, refs, ulira,
                         klom_original)
    timings = {"references_s": references_s, "total_s": time.perf_counter() - t_start,
               "methods": {r["method"]: {"tuning": r.get("tuning"), "final_wall_s": r.get("final_wall_s")}
                           for r in results}}
    write_text_atomic(path.parent / "timings.json", json.dumps(timings, indent=1))  # bench/sweep.py reads it
    print(path.read_text())
    print(f"outputs: {path.parent}")
    from jaxmu.report import seed_status
    from jaxmu.unlearn import EXIT_DIVERGED, diverged_warning

    warnings = [diverged_warning(r["call"], cfg.seeds, [s == "diverged" for s in r.get("status") or
                                                        seed_status(r["metrics"])]) for r in results]
    for w in filter(None, warnings):
        print(w, file=sys.stderr)
    return EXIT_DIVERGED if any(warnings) else 0


if __name__ == "__main__":
    run_cli(main)
