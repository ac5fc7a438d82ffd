"""Training throughput of model stacks: jaxmu vmapped, jaxmu one model at a time, PyTorch loop.

Usage::

    PYTHONPATH=. python bench/train_throughput.py                 # M in 1,10,64; mlp, cnn, resnet18
    PYTHONPATH=. python bench/train_throughput.py --quick         # smoke run (seconds)
    PYTHONPATH=. python bench/train_throughput.py --models 10 --nets cnn --epochs 5

For each network and model count M it trains M models (a) ``model_axis="vmap"``, (b)
``model_axis="loop"`` (``lax.map`` over models in one program) and (c) with PyTorch on the CPU
in a plain Python loop over models (same architecture, initialisation family, SGD momentum 0.9,
weight decay 5e-4, batch 64, partial last batch kept, data reshuffled each epoch). Compilation
is timed apart; the best of ``--reps`` runs is reported. PyTorch's cost per model is
independent of M, so it is measured on ``min(M, --torch-models)`` models and reported per
model-epoch. The table gives models x epochs per second, the ratio to the PyTorch loop, for
conv nets the achieved GFLOP/s (analytic: 3 x forward MACs x 2) against a float32 2048x2048
``jax.jit`` matmul measured in the same run, and the process's peak RSS so far.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _early_host_devices() -> None:
    """``--host-devices N`` must act before JAX starts: split the CPU into N XLA devices."""
    if "--host-devices" in sys.argv:
        n = int(sys.argv[sys.argv.index("--host-devices") + 1])
        from jaxmu.cli import request_host_devices

        request_host_devices(n)


_early_host_devices()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxmu.data import load_dataset
from jaxmu.data.splits import make_splits
from jaxmu.training import Trainer
from jaxmu.types import DeviceData
from jaxmu.models import build_model

BATCH = 64


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def matmul_gflops(n: int = 2048, reps: int = 5) -> float:
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    f = jax.jit(lambda a, b: a @ b)
    f(a, a).block_until_ready()
    best = min(_timed(lambda: f(a, a).block_until_ready()) for _ in range(reps))
    return 2 * n**3 / best / 1e9


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


# ----------------------------------------------------------------------------- FLOPs


def forward_macs(net: str, hw: int, cin: int, classes: int) -> int:
    """Forward multiply-accumulates per example (conv / dense layers only)."""
    if net == "mlp":
        return hw * hw * cin * 128 + 128 * 128 + 128 * classes
    if net == "cnn":
        px = hw * hw
        return px * 9 * cin * 16 + px * 9 * 16 * 32 + (hw // 2) ** 2 * 32 * classes
    return 0


# ----------------------------------------------------------------------------- jaxmu


def time_jaxmu(net, ds, data, subset, m, epochs, mode, reps, mean, std):
    model = build_model(net, ds_classes(ds), tuple(data.images.shape[1:]))
    tr = Trainer(model, BATCH, epochs, "none", mean, std, shared_data=True, model_axis=mode,
                 flat_update=jax.default_backend() == "cpu")  # as the engine configures it
    keys = jnp.stack([jax.random.PRNGKey(s) for s in range(m)])
    dkey = jax.random.PRNGKey(1234)
    state = tr.init(keys, 0.1, 0.9, 5e-4)
    exe, compile_s = tr.compile(state, subset, dkey, data)
    best = float("inf")
    for _ in range(reps):
        state = tr.init(keys, 0.1, 0.9, 5e-4)
        jax.block_until_ready(state)
        t = time.perf_counter()
        out = exe(state, subset, dkey, jnp.int32(epochs), data)
        jax.block_until_ready(out)
        best = min(best, time.perf_counter() - t)
    return best, compile_s


def ds_classes(ds):
    return getattr(ds, "num_classes", 10)


# ----------------------------------------------------------------------------- PyTorch


def torch_net(net, hw, cin, classes):
    import torch.nn as nn

    if net == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(hw * hw * cin, 128), nn.ReLU(), nn.Linear(128, 128),
                             nn.ReLU(), nn.Linear(128, classes))
    if net == "cnn":
        return nn.Sequential(
            nn.Conv2d(cin, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
            nn.AvgPool2d(2), nn.Flatten(), nn.Linear(32 * (hw // 2) ** 2, classes),
        )
    import torchvision

    return torchvision.models.resnet18(num_classes=classes)


def time_torch(net, x_nhwc, y, m, epochs, classes):
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(2)
    x = torch.tensor(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2)))
    yt = torch.tensor(y).long()
    n, cin, hw = x.shape[0], x.shape[1], x.shape[2]
    warm = torch_net(net, hw, cin, classes)  # first-call costs (allocator, kernels) untimed
    F.cross_entropy(warm(x[:BATCH]), yt[:BATCH]).backward()
    t0 = time.perf_counter()
    for s in range(m):
        torch.manual_seed(s)
        model = torch_net(net, hw, cin, classes)
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        for _ in range(epochs):
            perm = torch.randperm(n)
            for i in range(0, n, BATCH):
                idx = perm[i : i + BATCH]
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(x[idx]), yt[idx]).backward()
                opt.step()
    return time.perf_counter() - t0


# ----------------------------------------------------------------------------- main


def digits_setup():
    ds = load_dataset("digits")
    data = DeviceData(jnp.asarray(ds.images), jnp.asarray(ds.labels))
    subset = jnp.asarray(make_splits(ds).train)
    idx = np.asarray(subset)
    xn = ((ds.images[idx].astype(np.float32) / 255.0 - np.asarray(ds.mean, np.float32))
          / np.asarray(ds.std, np.float32))
    return ds, data, subset, xn, ds.labels[idx], tuple(ds.mean), tuple(ds.std)


def synthetic_cifar(n):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, (n,)).astype(np.int32)
    data = DeviceData(jnp.asarray(images), jnp.asarray(labels))
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    xn = (images.astype(np.float32) / 255.0 - 0.5) / 0.25
    return data, jnp.arange(n, dtype=jnp.int32), xn, labels, mean, std


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny smoke run")
    p.add_argument("--models", default="1,10,64", help="comma-separated model counts M")
    p.add_argument("--nets", default="mlp,cnn,resnet18")
    p.add_argument("--modes", default="vmap,loop")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--torch-models", type=int, default=3, help="models PyTorch trains per row (cost/model is flat in M)")
    p.add_argument("--resnet-models", default="1,2")
    p.add_argument("--resnet-examples", type=int, default=256)
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--host-devices", type=int, default=1,
                   help="CPU host devices for jaxmu (the CLIs default to one per core); models split across them")
    a = p.parse_args(argv)
    if a.quick:
        a.models, a.epochs, a.reps, a.torch_models = "1,2", 1, 1, 1
        a.resnet_models, a.resnet_examples = "1", 128
    models = [int(v) for v in a.models.split(",")]
    nets = a.nets.split(",")
    modes = a.modes.split(",")

    peak = matmul_gflops()
    print(f"jax {jax.__version__} backend={jax.default_backend()}  f32 2048^2 matmul: {peak:.0f} GFLOP/s", flush=True)
    ds, data, subset, xn, yn, mean, std = digits_setup()
    n = int(subset.shape[0])
    rows = []

    def run(net, m, epochs, data, subset, xn, yn, mean, std, classes):
        hw, cin = xn.shape[1], xn.shape[3]
        flops_me = 3 * 2 * forward_macs(net, hw, cin, classes) * subset.shape[0]
        torch_me = None
        if not a.no_torch:
            try:
                tm = min(m, a.torch_models)
                torch_me = time_torch(net, xn, yn, tm, epochs, classes) / (tm * epochs)
            except ImportError as e:  # torchvision for resnet18
                print(f"  (PyTorch {net} skipped: {e})")
        for mode in modes:
            sec, cs = time_jaxmu(net, ds, data, subset, m, epochs, mode, a.reps, mean, std)
            per = sec / (m * epochs)
            gf = flops_me / per / 1e9 if flops_me else float("nan")
            rows.append((net, m, mode, m * epochs / sec, (torch_me / per) if torch_me else float("nan"),
                         gf, gf / peak if flops_me else float("nan"), cs, peak_rss_mb()))
            print(f"  {net:8s} M={m:3d} {mode:5s} {m * epochs / sec:8.1f} model-epochs/s  "
                  f"x{rows[-1][4]:.2f} vs torch loop  compile {cs:.1f}s", flush=True)
        if torch_me:
            rows.append((net, m, "torch", 1 / torch_me, 1.0,
                         flops_me / torch_me / 1e9 if flops_me else float("nan"),
                         flops_me / torch_me / 1e9 / peak if flops_me else float("nan"), 0.0, peak_rss_mb()))

    for net in nets:
        if net == "resnet18":
            try:
                build_model("resnet18", 10, (32, 32, 3))
            except Exception as e:  # noqa: BLE001 - optional model
                print(f"resnet18 skipped: {e}")
                continue
            rdata, rsub, rxn, ryn, rmean, rstd = synthetic_cifar(a.resnet_examples)
            for m in [int(v) for v in a.resnet_models.split(",")]:
                run(net, m, 1, rdata, rsub, rxn, ryn, rmean, rstd, 10)
            continue
        for m in models:
            run(net, m, a.epochs, data, subset, xn, yn, mean, std, ds.num_classes)

    print(f"\n{n} digits train examples, batch {BATCH}, {a.epochs} epochs; matmul peak {peak:.0f} GFLOP/s\n")
    print("| net | M | mode | model-epochs/s | x PyTorch loop | GFLOP/s | % of matmul | compile s | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        net, m, mode, thr, ratio, gf, frac, cs, rss = r
        gfs = "" if np.isnan(gf) else f"{gf:.0f}"
        fr = "" if np.isnan(frac) else f"{100 * frac:.0f}%"
        rt = "" if np.isnan(ratio) else f"{ratio:.2f}"
        print(f"| {net} | {m} | {mode} | {thr:.1f} | {rt} | {gfs} | {fr} | {cs:.1f} | {rss:.0f} |")
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
