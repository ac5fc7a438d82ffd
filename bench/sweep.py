"""Time the default sweep, cold and warm, with where the time goes (issue 13 item 5).

    PYTHONPATH=. python bench/sweep.py                          # ng_plus: trials 8 (old default) vs 100
    PYTHONPATH=. python bench/sweep.py --method all --trials 8  # every method
    PYTHONPATH=. python bench/sweep.py --variants ragged,per_count --trials 100

Each run is ``python -m jaxmu.sweep --method M --trials T`` in its own process and its own
output directory. *Cold*: an empty persistent compile cache; *warm*: the cache the cold run of
the same variant filled (a new output directory, so the reference stacks train again). Variants
(``--variants``): ``ragged`` (the default: one program per batch size, ``engine.ragged_epochs``)
and ``per_count`` (one program per epoch count and batch size). Runs are interleaved
(variant A cold, B cold, A warm, B warm, ... per repetition) and every figure is the median over
``--reps`` repetitions with its spread (min-max).

Columns, from the sweep's ``timings.json`` (``jaxmu.sweep``) and the tuner's counters
(``jaxmu.tuning.TuningCounters``): total wall; references (train + retrain + their metrics);
tuning wall and its parts: compile, unlearning, evaluation, MIA, Optuna + the rest (tuning wall
minus the four); the final 10-seed run; models unlearned and models evaluated per trial; the
number of compiled tuning programs. The machine is shared: compare within one table only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COLUMNS = ("total_s", "references_s", "tuning_s", "compile_s", "unlearn_s", "eval_s", "mia_s", "optuna_s",
           "final_s", "models_per_trial", "evaluated_per_trial", "programs")


def run_sweep(method: str, trials: int, variant: str, cache: Path, work: Path) -> dict[str, float]:
    """One sweep in a fresh process; its timings and counters."""
    out = Path(tempfile.mkdtemp(dir=work))
    cmd = [sys.executable, "-m", "jaxmu.sweep", "--method", method, "--trials", str(trials), "--out", str(out),
           "--quiet", "--set", f"engine.ragged_epochs={'true' if variant == 'ragged' else 'false'}"]
    env = {**os.environ, "JAXMU_COMPILE_CACHE": str(cache)}
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"sweep failed ({' '.join(cmd)}):\n{res.stderr[-2000:]}")
    timings = json.loads(next(out.rglob("timings.json")).read_text())
    tun = [m["tuning"] for m in timings["methods"].values()]
    total = lambda k: sum(t[k] for t in tun)  # noqa: E731
    parts = total("compile_s") + total("run_s") + total("eval_s") + total("mia_s")
    return {"total_s": wall, "references_s": timings["references_s"], "tuning_s": total("wall_s"),
            "compile_s": total("compile_s"), "unlearn_s": total("run_s"), "eval_s": total("eval_s"),
            "mia_s": total("mia_s"), "optuna_s": total("wall_s") - parts,
            "final_s": sum(m["final_wall_s"] for m in timings["methods"].values()),
            "models_per_trial": total("models") / max(1, total("trials")),
            "evaluated_per_trial": total("evaluated") / max(1, total("trials")),
            "programs": total("programs")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--method", default="ng_plus")
    p.add_argument("--trials", default="8,100", help="comma-separated tune.trials values (8 = the previous default)")
    p.add_argument("--variants", default="ragged", help="comma-separated: ragged, per_count")
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--json", default=None, help="also write the table as JSON here")
    args = p.parse_args()
    configs = [(int(t), v) for t in args.trials.split(",") for v in args.variants.split(",")]
    rows: dict[tuple, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for rep in range(args.reps):
            caches = {c: work / f"cache_{c[0]}_{c[1]}_{rep}" for c in configs}
            for phase in ("cold", "warm"):
                for trials, variant in configs:
                    r = run_sweep(args.method, trials, variant, caches[(trials, variant)], work)
                    rows.setdefault((trials, variant, phase), []).append(r)
                    print(f"  rep {rep} {phase} trials={trials} {variant}: {r['total_s']:.1f} s", file=sys.stderr)
    print(f"# sweep --method {args.method}: median over {args.reps} rep(s) [min-max]\n")
    print("| trials/seed | variant | cache | " + " | ".join(COLUMNS) + " |")
    print("|---" * (3 + len(COLUMNS)) + "|")
    table = []
    for (trials, variant, phase), rs in rows.items():
        cells = []
        for c in COLUMNS:
            vals = [r[c] for r in rs]
            med = statistics.median(vals)
            cells.append(f"{med:.2f}" + (f" [{min(vals):.1f}-{max(vals):.1f}]" if len(vals) > 1 else ""))
        print(f"| {trials} | {variant} | {phase} | " + " | ".join(cells) + " |")
        table.append({"trials": trials, "variant": variant, "cache": phase, "runs": rs})
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
