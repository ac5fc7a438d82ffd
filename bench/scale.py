"""Scaling of the models axis: models per second on 1 vs 4 devices, memory per model.

    python bench/scale.py [--models 1,8,64,256] [--devices 1,4] [--net mlp] [--epochs 2]

For each device count it starts a subprocess with ``--xla_force_host_platform_device_count``
(XLA fixes the device count at start-up) that trains stacks of M models of ``--net`` on digits
with the models axis sharded over the devices (``jaxmu.engine.sharding``), and reports models x
epochs per second (compile apart), the compiled program's memory per model
(``memory_analysis``: arguments + outputs + temporaries, divided by M) and the largest M that
fits in the memory available now at that per-model cost. On a 2-core CPU, 4 forced devices
oversubscribe the cores: the point of the 4-device row there is correctness at scale, the
speed-up shows on real multi-device hosts. Quote ratios; the machines are shared.
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


def worker(models: list[int], net: str, epochs: int) -> None:
    import time

    import jax
    import jax.numpy as jnp

    from jaxmu.data import load_dataset, make_splits
    from jaxmu.engine.trainer import DeviceData, Trainer
    from jaxmu.models import build_model

    ds = load_dataset("digits")
    sub = jnp.asarray(make_splits(ds).train)
    data = DeviceData(jnp.asarray(ds.images), jnp.asarray(ds.labels))
    mode = "vmap" if net == "mlp" else "loop"
    for m in models:
        tr = Trainer(build_model(net, 10, ds.images.shape[1:]), 64, epochs, "none", ds.mean, ds.std, model_axis=mode,
                     flat_update=jax.default_backend() == "cpu")
        keys = jnp.stack([jax.random.PRNGKey(i) for i in range(m)])
        state = tr.init(keys, 0.1, 0.9, 5e-4)
        exe, compile_s = tr.compile(state, sub, jax.random.PRNGKey(0), data)
        mem = exe.memory_analysis()
        total = sum(getattr(mem, a, 0) or 0 for a in ("argument_size_in_bytes", "output_size_in_bytes",
                                                      "temp_size_in_bytes")) if mem is not None else 0
        t0 = time.perf_counter()
        jax.block_until_ready(exe(state, sub, jax.random.PRNGKey(0), jnp.int32(epochs), data))
        run_s = time.perf_counter() - t0
        # memory_analysis of a sharded program is per device: every device holds M / devices models
        per_model = total * jax.device_count() / (-(-m // jax.device_count()) * jax.device_count())
        print(json.dumps({"devices": jax.device_count(), "M": m, "compile_s": compile_s, "run_s": run_s,
                          "models_epochs_per_s": m * epochs / run_s, "bytes_per_model": per_model}), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="1,8,64,256")
    p.add_argument("--devices", default="1,4")
    p.add_argument("--net", default="mlp", choices=["mlp", "cnn"])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    models = [int(x) for x in args.models.split(",")]
    if args.worker:
        worker(models, args.net, args.epochs)
        return
    rows = []
    for d in (int(x) for x in args.devices.split(",")):
        env = {**os.environ, "PYTHONPATH": str(REPO),
               "XLA_FLAGS": f"--xla_force_host_platform_device_count={d}"}
        out = subprocess.run([sys.executable, __file__, "--worker", "--models", args.models, "--net", args.net,
                              "--epochs", str(args.epochs)], env=env, capture_output=True, text=True, check=True)
        rows += [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    avail = _available_bytes()
    base = {r["M"]: r["models_epochs_per_s"] for r in rows if r["devices"] == rows[0]["devices"]}
    print(f"{args.net}, digits, {args.epochs} epochs; memory available now {avail / 2**30:.1f} GiB\n")
    print("| devices | M | model-epochs/s | x first device count | compile s | MiB per model | largest M that fits |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        per = r["bytes_per_model"]
        fits = int(avail // per) if per else 0
        print(f"| {r['devices']} | {r['M']} | {r['models_epochs_per_s']:.1f} | "
              f"{r['models_epochs_per_s'] / base[r['M']]:.2f} | {r['compile_s']:.1f} | {per / 2**20:.2f} | {fits} |")


if __name__ == "__main__":
    main()
