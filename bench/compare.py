"""Training throughput, each side in its own process, interleaved: jaxmu vs the PyTorch baselines.

Usage::

    PYTHONPATH=. python bench/compare.py                       # digits cnn, M=10, 5 epochs, 3 rounds
    PYTHONPATH=. python bench/compare.py --net mlp --models 64 --rounds 5
    PYTHONPATH=. python bench/compare.py --smoke               # every side, tiny, seconds (CI)

Why separate processes: a framework that has computed in a process slows the next one in the same
process (measured: PyTorch's loop ran at 18.5 model-epochs/s after JAX in one process and 33.8 in
a fresh one, so in-process ratios flatter jaxmu). Here every measurement is a fresh
``python bench/compare.py --worker SIDE`` process; the sides run interleaved (A B C D, A B C D, ...)
so slow drifts of a shared machine hit all of them, and each side reports the median and the
min-max spread over ``--rounds``.

Sides (same data, batch 64, SGD momentum 0.9, weight decay 5e-4, lr 0.1, partial last batch kept,
data reshuffled each epoch, shared data order across models as jaxmu's faithful mode):

* ``jaxmu-vmap`` / ``jaxmu-loop``: one compiled program for the stack (``model_axis``); compile
  time is measured apart and excluded from the rate;
* ``torch-loop``: the PyTorch user's loop, one model after another (CPU, 2 threads);
* ``torch-func``: the best a PyTorch user has for many models — ``torch.func.stack_module_state`` +
  ``functional_call`` + ``vmap(grad(loss))`` with the SGD update written on the stacked tensors.
  BatchNorm runs without running statistics there (``replace_all_batch_norm_modules_``: vmap cannot
  update buffers in place), which makes that side slightly cheaper than the others.

The table: model-epochs per second (median, [min-max]), the ratio of each side's median to the
PyTorch loop's, compile seconds and peak RSS of the worker. The machine is shared: compare within
one table. The process runner, the interleaving and the median/spread are ``bench/harness.py``'s,
shared with ``bench/gpu.py``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import harness  # noqa: E402

SIDES = ("jaxmu-vmap", "jaxmu-loop", "torch-loop", "torch-func")


# ----------------------------------------------------------------------------- workers


def _data(net: str):
    """Digits train split as jaxmu device data and as a normalized NHWC array (numpy)."""
    from bench.train_throughput import digits_setup

    return digits_setup()


def work_jaxmu(mode: str, net: str, m: int, epochs: int) -> dict[str, float]:
    from bench.train_throughput import peak_rss_mb, time_jaxmu

    ds, data, subset, _, _, mean, std = _data(net)
    sec, compile_s = time_jaxmu(net, ds, data, subset, m, epochs, mode, 1, mean, std)
    return {"rate": m * epochs / sec, "compile_s": compile_s, "rss_mb": peak_rss_mb()}


def work_torch_loop(net: str, m: int, epochs: int) -> dict[str, float]:
    from bench.train_throughput import peak_rss_mb, time_torch

    ds, _, _, xn, yn, _, _ = _data(net)
    sec = time_torch(net, xn, yn, m, epochs, ds.num_classes)
    return {"rate": m * epochs / sec, "compile_s": 0.0, "rss_mb": peak_rss_mb()}


def work_torch_func(net: str, m: int, epochs: int, batch: int = 64) -> dict[str, float]:
    import copy

    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch.func import functional_call, grad, replace_all_batch_norm_modules_, stack_module_state, vmap

    from bench.train_throughput import peak_rss_mb, torch_net

    torch.set_num_threads(2)
    ds, _, _, xn, yn, _, _ = _data(net)
    x = torch.tensor(np.ascontiguousarray(xn.transpose(0, 3, 1, 2)))
    y = torch.tensor(yn).long()
    n, cin, hw = x.shape[0], x.shape[1], x.shape[2]
    models = []
    for s in range(m):
        torch.manual_seed(s)
        models.append(replace_all_batch_norm_modules_(torch_net(net, hw, cin, ds.num_classes)).train())
    params, buffers = stack_module_state(models)
    params = {k: v.detach() for k, v in params.items()}
    base = copy.deepcopy(models[0]).to("meta")

    def loss(p, b, xb, yb):
        return F.cross_entropy(functional_call(base, (p, b), (xb,)), yb)

    grads_of = vmap(grad(loss), in_dims=(0, 0, None, None))  # one batch shared by every model
    momentum = {k: torch.zeros_like(v) for k, v in params.items()}

    def step(xb, yb):
        g = grads_of(params, buffers, xb, yb)
        with torch.no_grad():
            for k, p in params.items():
                d = g[k] + 5e-4 * p
                momentum[k].mul_(0.9).add_(d)
                p.sub_(0.1 * momentum[k])

    step(x[:batch], y[:batch])  # first-call costs untimed, as for the loop
    t0 = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(n)
        for i in range(0, n, batch):
            idx = perm[i:i + batch]
            step(x[idx], y[idx])
    sec = time.perf_counter() - t0
    return {"rate": m * epochs / sec, "compile_s": 0.0, "rss_mb": peak_rss_mb()}


def worker(side: str, net: str, m: int, epochs: int) -> dict[str, float]:
    if side.startswith("jaxmu-"):
        return work_jaxmu(side.split("-", 1)[1], net, m, epochs)
    if side == "torch-loop":
        return work_torch_loop(net, m, epochs)
    if side == "torch-func":
        return work_torch_func(net, m, epochs)
    raise ValueError(f"unknown side {side!r}: choose from {', '.join(SIDES)}")


# ----------------------------------------------------------------------------- driver


def run_side(side: str, net: str, m: int, epochs: int, timeout: float) -> dict[str, float] | str:
    """One measurement in a fresh process (``bench.harness.run_worker``): its numbers, or why it gave none."""
    return harness.run_worker(__file__, side, ["--net", net, "--models", str(m), "--epochs", str(epochs)], timeout)


def table(results: dict[str, list[dict[str, float]]], notes: dict[str, str]) -> list[dict[str, object]]:
    base = harness.spread(r["rate"] for r in results["torch-loop"])[0] if results.get("torch-loop") else None
    rows = []
    for side, runs in results.items():
        if not runs:
            rows.append({"side": side, "note": notes.get(side, "no run")})
            continue
        med, lo, hi = harness.spread(r["rate"] for r in runs)
        rows.append({"side": side, "rate_median": med, "rate_min": lo, "rate_max": hi,
                     "vs_torch_loop": med / base if base else None, "rounds": len(runs),
                     "compile_s": statistics.median(r["compile_s"] for r in runs),
                     "rss_mb": max(r["rss_mb"] for r in runs)})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    p.add_argument("--net", default="cnn", choices=("mlp", "cnn"))
    p.add_argument("--models", type=int, default=10)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--sides", default=",".join(SIDES))
    p.add_argument("--smoke", action="store_true", help="mlp, 2 models, 1 epoch, 1 round: the code runs")
    p.add_argument("--json", default=None, help="also write the table as JSON here")
    a = p.parse_args(argv)
    if a.worker:
        print(json.dumps(worker(a.worker, a.net, a.models, a.epochs)))
        return 0
    if a.smoke:
        a.net, a.models, a.epochs, a.rounds = "mlp", 2, 1, 1
    sides = a.sides.split(",")
    results, notes = harness.interleave(
        sides, a.rounds, lambda side, limit: run_side(side, a.net, a.models, a.epochs, limit),
        lambda out: f"{out['rate']:.1f} model-epochs/s", timeout=1800)
    rows = table(results, notes)
    print(f"\n{a.net}, {a.models} models, {a.epochs} epochs, {a.rounds} interleaved rounds, one process per "
          "measurement; model-epochs/s median [min-max]\n")
    cells = []
    for row in rows:
        if "note" in row:
            cells.append((row["side"], row["note"], None, None, None))
            continue
        ratio = None if row["vs_torch_loop"] is None else f"{row['vs_torch_loop']:.2f}"
        cells.append((row["side"], harness.fmt_spread(row["rate_median"], row["rate_min"], row["rate_max"]), ratio,
                      f"{row['compile_s']:.1f}", f"{row['rss_mb']:.0f}"))
    print(harness.markdown(("side", "model-epochs/s", "x PyTorch loop", "compile s", "peak RSS MB"), cells))
    if a.json:
        Path(a.json).write_text(json.dumps({"net": a.net, "models": a.models, "epochs": a.epochs,
                                            "rounds": a.rounds, "rows": rows}, indent=1))
    return 0 if all(results[s] for s in sides if s.startswith("jaxmu")) else 1


if __name__ == "__main__":
    sys.exit(main())
