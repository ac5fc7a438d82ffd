"""Scaling of the models axis: models per second on 1 vs 4 devices, memory per model.

    python bench/scale.py [--models 1,8,64,256] [--devices 1,4] [--processes 1,2] [--net mlp] [--epochs 2]

For each device count it starts a subprocess with ``--xla_force_host_platform_device_count``
(XLA fixes the device count at start-up) that trains stacks of M models of ``--net`` on digits
with the models axis sharded over the devices (``jaxmu.engine.sharding``), and reports models x
epochs per second (compile apart), the compiled program's memory per model
(``memory_analysis``: arguments + outputs + temporaries, divided by M) and the largest M that
fits in the memory available now at that per-model cost. On a 2-core CPU, 4 forced devices
oversubscribe the cores: the point of the 4-device row there is correctness at scale, the
speed-up shows on real multi-device hosts. ``--processes 1,2`` adds, for each device count P
divides, a run of P processes (``jax.distributed`` on localhost, gloo collectives) holding
devices / P devices each: the same stack split across processes, the cost of the multi-host
path against one process with as many devices. Quote ratios; the machines are shared.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _available_bytes() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30


def worker(models: list[int], net: str, epochs: int, coordinator: str | None, processes: int, pid: int) -> None:
    import time

    import jax
    import jax.numpy as jnp

    from jaxmu.distributed import maybe_initialize
    from jaxmu.engine.sharding import place

    if coordinator:
        maybe_initialize(coordinator, processes, pid)
    from jaxmu.data import load_dataset, make_splits
    from jaxmu.training import Trainer
    from jaxmu.types import DeviceData
    from jaxmu.models import build_model

    ds = load_dataset("digits")
    sub = jnp.asarray(make_splits(ds).train)
    data = DeviceData(jnp.asarray(ds.images), jnp.asarray(ds.labels))
    mode = "vmap" if net == "mlp" else "loop"
    for m in models:
        tr = Trainer(build_model(net, 10, ds.images.shape[1:]), 64, epochs, "none", ds.mean, ds.std, model_axis=mode,
                     flat_update=jax.default_backend() == "cpu")
        keys = jnp.stack([jax.random.PRNGKey(i) for i in range(m)])
        state = place(tr.init(keys, 0.1, 0.9, 5e-4))
        exe, compile_s = tr.compile(state, sub, jax.random.PRNGKey(0), data)
        mem = exe.memory_analysis()
        total = sum(getattr(mem, a, 0) or 0 for a in ("argument_size_in_bytes", "output_size_in_bytes",
                                                      "temp_size_in_bytes")) if mem is not None else 0
        t0 = time.perf_counter()
        jax.block_until_ready(exe(state, sub, jax.random.PRNGKey(0), jnp.int32(epochs), data))
        run_s = time.perf_counter() - t0
        # memory_analysis of a sharded program is per device: every device holds M / devices models
        per_model = total * jax.device_count() / (-(-m // jax.device_count()) * jax.device_count())
        if jax.process_index() == 0:
            print(json.dumps({"processes": jax.process_count(), "devices": jax.device_count(), "M": m, "compile_s": compile_s, "run_s": run_s,
                              "models_epochs_per_s": m * epochs / run_s, "bytes_per_model": per_model}),
                  flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="1,8,64,256")
    p.add_argument("--devices", default="1,4")
    p.add_argument("--net", default="mlp", choices=["mlp", "cnn"])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--processes", default="1", help="process counts, e.g. 1,2 (each divides the device count)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--coordinator", default=None, help=argparse.SUPPRESS)
    p.add_argument("--num-processes", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--process-id", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    models = [int(x) for x in args.models.split(",")]
    if args.worker:
        worker(models, args.net, args.epochs, args.coordinator, args.num_processes, args.process_id)
        return
    rows = []
    for d in (int(x) for x in args.devices.split(",")):
        for n_proc in (int(x) for x in args.processes.split(",")):
            if d % n_proc == 0:
                rows += _run_layout(args, d, n_proc)
    avail = _available_bytes()
    base = {r["M"]: r["models_epochs_per_s"] for r in rows if r["devices"] == rows[0]["devices"]}
    print(f"{args.net}, digits, {args.epochs} epochs; memory available now {avail / 2**30:.1f} GiB\n")
    print("| processes | devices | M | model-epochs/s | x first device count | compile s | MiB per model | "
          "largest M that fits |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        per = r["bytes_per_model"]
        fits = int(avail // per) if per else 0
        print(f"| {r['processes']} | {r['devices']} | {r['M']} | {r['models_epochs_per_s']:.1f} | "
              f"{r['models_epochs_per_s'] / base[r['M']]:.2f} | {r['compile_s']:.1f} | {per / 2**20:.2f} | {fits} |")


def _run_layout(args: argparse.Namespace, devices: int, processes: int) -> list[dict]:
    """Rows of one layout: ``processes`` worker processes with ``devices / processes`` devices each."""
    import socket

    env = {**os.environ, "PYTHONPATH": str(REPO),
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices // processes}"}
    cmd = [sys.executable, __file__, "--worker", "--models", args.models, "--net", args.net,
           "--epochs", str(args.epochs)]
    if processes > 1:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            cmd += ["--coordinator", f"127.0.0.1:{s.getsockname()[1]}", "--num-processes", str(processes)]
    procs = [subprocess.Popen(cmd + (["--process-id", str(i)] if processes > 1 else []), env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(processes)]
    outs = [p.communicate() for p in procs]
    for p, (_, err) in zip(procs, outs):
        if p.returncode:
            raise SystemExit(f"worker failed ({processes} processes x {devices // processes} devices):\n{err[-2000:]}")
    return [json.loads(line) for line in outs[0][0].splitlines() if line.startswith("{")]


if __name__ == "__main__":
    main()
