"""Issue 15 on a GPU, measured in one prepared run: model stacks vs PyTorch, shadow CNNs, FLOP rate.

Usage (from the repository root, on the GPU machine)::

    PYTHONPATH=. python bench/gpu.py                 # the default run: <= ~6 min of device time
    PYTHONPATH=. python bench/gpu.py --smoke         # every side, tiny, on CPU (CI; the code runs)
    PYTHONPATH=. python bench/gpu.py --json t.json   # also the table as JSON ($OUT/gpu_bench.json when OUT is set)

What it measures (each side a fresh ``python bench/gpu.py --worker SIDE`` process, sides
interleaved A B C D E over ``--rounds``, median and min-max spread; ``bench/harness.py``, as
``bench/compare.py``):

1. ``jaxmu-resnet``: 10 CIFAR ResNet-18 (``build_model("resnet18", stem="cifar")``) trained as one
   jaxmu program (``Trainer`` with the engine's model axis for the backend: ``vmap`` on a GPU) vs
   ``torch-resnet-loop``: torchvision's ``resnet18`` with the CIFAR stem (3x3/1 conv, no max-pool)
   trained one model after another, and ``torch-resnet-func``: the same models stacked with
   ``torch.func.stack_module_state`` + ``functional_call`` + ``vmap(grad(loss))`` and the SGD update
   on the stacked tensors (``torch._foreach_*``; BatchNorm without running statistics there, since
   vmap cannot update buffers in place -- slightly less work than the other sides). Targets:
   jaxmu >= 3x the loop, >= 1.5x torch.func.
2. ``jaxmu-cnn-stack`` (64 of jaxmu's ``cnn`` on CIFAR-shaped data, one program) vs
   ``jaxmu-cnn-single`` (one model, the same program for M = 1): "sequential-model equivalents" =
   the stack's time / one model's time. Target: <= 4.
3. The achieved FLOP rate of the jaxmu ResNet-18 stack: FLOPs of one vmapped training step from
   XLA's cost analysis of that step's HLO (``jax.jit(step).lower(...).cost_analysis()``, the
   pre-optimisation module: after optimisation the convolutions are cuDNN custom calls), times
   the steps run, over the measured run time; as a fraction of the card's dense peak for the
   precision used. jaxmu computes in float32 with JAX's default matmul precision, which on recent
   NVIDIA GPUs runs float32 dots and convolutions as TF32; assumed H200 dense peaks: bf16 989, tf32
   494, fp32 67 TFLOP/s (``--peak-tflops`` overrides). Target: >= 40%.

Same work on every side: batch 128, SGD lr 0.1 momentum 0.9 weight decay 5e-4, no augmentation,
data reshuffled every epoch, one data order shared by the models of a stack; an "epoch" is a
fixed ``--steps`` batches (a subset of ``--steps`` x batch examples), not 50,000 examples, to fit
the device budget. PyTorch uses TF32 for convolutions and matmuls (as JAX's default) and
``cudnn.benchmark``. Data: **synthetic** CIFAR-shaped data, 50,000 uint8 32x32x3 images and 10
labels drawn with ``numpy.random.default_rng(0)`` (the set of ``train_throughput.synthetic_cifar``;
the GPU machine has no internet and no CIFAR), resident on the device on every side. Untimed on
every side: model initialisation, compilation (jaxmu's measured apart: "compile s"), and one
warm-up epoch (cuDNN autotuning, allocator). Rates: images/s over all models (and the same as
model-epochs/s of a full 50,000-image CIFAR epoch). Peak memory: the device allocator's peak on a
GPU (``memory_stats()['peak_bytes_in_use']`` / ``torch.cuda.max_memory_allocated``), RSS on CPU.
Workers share a persistent compile cache in a temporary directory, so jaxmu's later rounds load
their program from it ("compile s" is the first, cold round's).

Expected runtime on an H200 (an estimate: never run on one yet): about 5-6 minutes. The default
is sized to it -- 10 ResNets x 2 epochs x 30 steps, 64 CNNs x 2 epochs x 100 steps, 2 rounds --
and capped: ``--budget 330`` s stops launching workers when less than 20 s are left and no
worker may run past it (``--timeout 180`` s per worker), so a run that is slower than expected
prints what it measured, with "skipped" or "timed out" for the rest.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import harness  # noqa: E402

SIDES = ("jaxmu-resnet", "torch-resnet-loop", "torch-resnet-func", "jaxmu-cnn-stack", "jaxmu-cnn-single")
CIFAR_N = 50_000
CLASSES = 10
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
LR, MOMENTUM, WD = 0.1, 0.9, 5e-4
H200_PEAK_TFLOPS = {"bf16": 989.0, "tf32": 494.0, "fp32": 67.0}  # dense, per the H200 data sheet


def synthetic(n: int, hw: int, seed: int = 0):
    """``n`` uint8 ``hw x hw x 3`` images and int32 labels in [0, 10) (for hw=32 and seed 0 the
    arrays of ``bench.train_throughput.synthetic_cifar``)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, hw, hw, 3), dtype=np.uint8)
    labels = rng.integers(0, CLASSES, (n,)).astype(np.int32)
    return images, labels


# ----------------------------------------------------------------------------- jaxmu workers


def _precision(jax, params) -> tuple[str, str]:
    """(peak key, description) of the arithmetic jaxmu's convolutions and dots use."""
    import jax.numpy as jnp

    dtypes = {x.dtype for x in jax.tree_util.tree_leaves(params)}
    setting = getattr(jax.config, "jax_default_matmul_precision", None)
    if jax.default_backend() == "cpu":
        return "fp32", f"params {sorted(map(str, dtypes))} on CPU (no peak assumed)"
    if dtypes == {jnp.dtype(jnp.bfloat16)} or str(setting).lower() in ("bfloat16", "fastest", "bf16_bf16_f32"):
        return "bf16", f"params {sorted(map(str, dtypes))}, jax_default_matmul_precision={setting}"
    if str(setting).lower() in ("float32", "highest", "f32_f32_f32"):
        return "fp32", f"float32 params, jax_default_matmul_precision={setting}"
    return "tf32", (f"float32 params, jax_default_matmul_precision={setting} (JAX's default: TF32 for float32 "
                    "dots/convolutions on recent NVIDIA GPUs)")


def _step_flops(jax, tr, state, batch: int, data) -> tuple[float, str]:
    """FLOPs of one training step of the whole stack (vmapped ``Trainer.step``), from XLA's cost
    analysis of its HLO; (0, why) when the backend gives none."""
    import jax.numpy as jnp

    spec = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state.state)
    idx = jax.ShapeDtypeStruct((batch,), jnp.int32)
    step = jax.jit(jax.vmap(lambda st, i, k, d: tr.step(st, i, k, d), in_axes=(0, None, None, None)))
    lowered = step.lower(spec, idx, jax.random.PRNGKey(0), data)
    for source, get in (("lowered HLO", lowered.cost_analysis), ("compiled HLO", lambda: lowered.compile().cost_analysis())):
        try:
            cost = get()
        except Exception:  # noqa: BLE001 - not every backend/version implements it
            continue
        if isinstance(cost, (list, tuple)):  # older JAX: one dict per computation
            cost = cost[0] if cost else None
        if cost and cost.get("flops", 0) > 0:
            return float(cost["flops"]), source
    return 0.0, "no cost analysis"


def work_jaxmu(net: str, m: int, a) -> dict:
    from jaxmu.cli import enable_compile_cache

    enable_compile_cache()  # JAXMU_COMPILE_CACHE: the driver's temporary directory
    import jax
    import jax.numpy as jnp

    from jaxmu.engine.execution import choose_model_axis
    from jaxmu.training import Trainer
    from jaxmu.types import DeviceData
    from jaxmu.models import build_model

    backend = jax.default_backend()
    images, labels = synthetic(a.data, a.hw)
    data = DeviceData(jnp.asarray(images), jnp.asarray(labels))
    if net == "resnet18":
        model = build_model("resnet18", CLASSES, (a.hw, a.hw, 3), stem="cifar")
    else:
        model = build_model("cnn", CLASSES, (a.hw, a.hw, 3))
    axis = choose_model_axis(a.model_axis, backend=backend, model_name=net)
    tr = Trainer(model, a.batch, a.epochs, "none", MEAN, STD, shared_data=True, model_axis=axis,
                 chunk_size=m, flat_update=backend == "cpu")  # as the engine configures it
    keys = jnp.stack([jax.random.PRNGKey(s) for s in range(m)])
    subset = jnp.arange(a.steps * a.batch, dtype=jnp.int32)
    dkey = jax.random.PRNGKey(1234)
    state = jax.block_until_ready(tr.init(keys, LR, MOMENTUM, WD))
    flops, flops_source = _step_flops(jax, tr, state, a.batch, data)
    peak_key, precision = _precision(jax, state.params)
    exe, compile_s = tr.compile(state, subset, dkey, data)
    jax.block_until_ready(exe(state, subset, dkey, jnp.int32(1), data))  # warm-up epoch (state donated)
    state = jax.block_until_ready(tr.init(keys, LR, MOMENTUM, WD))
    t0 = time.perf_counter()
    jax.block_until_ready(exe(state, subset, dkey, jnp.int32(a.epochs), data))
    sec = time.perf_counter() - t0
    mem, mem_kind = harness.jax_peak_mb()
    steps = a.steps * a.epochs
    return {"sec": sec, "images_per_s": m * steps * a.batch / sec, "models": m, "compile_s": compile_s,
            "mem_mb": mem, "mem_kind": mem_kind, "model_axis": axis, "backend": backend,
            "device": jax.devices()[0].device_kind, "step_flops": flops, "flops_source": flops_source,
            "tflops": flops * steps / sec / 1e12, "precision": peak_key, "precision_note": precision}


# ----------------------------------------------------------------------------- PyTorch workers


def torch_resnet18(torch):
    """torchvision's ``resnet18(num_classes=10)`` with the CIFAR stem (3x3/1 conv, no max-pool);
    without torchvision, the same architecture written here (the answer says which)."""
    nn = torch.nn
    try:
        import torchvision
    except ImportError:
        torchvision = None
    if torchvision is not None:
        net = torchvision.models.resnet18(num_classes=CLASSES)
        net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        net.maxpool = nn.Identity()
        return net, "torchvision"

    class Block(nn.Module):  # torchvision's BasicBlock, in-place ReLU and ``+=`` included (vmap sees them)
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
            self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                               if stride != 1 or cin != cout else None)

        def forward(self, x):
            identity = x
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            if self.downsample is not None:
                identity = self.downsample(x)
            out += identity
            return self.relu(out)

    layers, cin = [nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True)], 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [Block(cin, cout, stride), Block(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, CLASSES)]
    return nn.Sequential(*layers), "bench copy (torchvision not installed)"


def _torch_setup(a):
    import torch

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cpu":
        torch.set_num_threads(2)
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True  # JAX's default precision for float32 on these GPUs
    torch.backends.cudnn.allow_tf32 = True
    images, labels = synthetic(a.data, a.hw)
    x = torch.from_numpy(images).to(dev).permute(0, 3, 1, 2).float().div_(255.0)
    x = ((x - torch.tensor(MEAN, device=dev).view(1, 3, 1, 1)) / torch.tensor(STD, device=dev).view(1, 3, 1, 1))
    x = x.contiguous()
    y = torch.from_numpy(labels).long().to(dev)
    return torch, dev, x, y


def _sync(torch, dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _batches(torch, dev, a):
    """Index batches of one epoch: a fresh permutation of the ``steps x batch`` subset."""
    perm = torch.randperm(a.steps * a.batch, device=dev)
    return [perm[i * a.batch:(i + 1) * a.batch] for i in range(a.steps)]


def work_torch_loop(m: int, a) -> dict:
    torch, dev, x, y = _torch_setup(a)
    F = torch.nn.functional

    def make(seed):
        torch.manual_seed(seed)
        net, source = torch_resnet18(torch)
        net = net.to(dev).train()
        return net, torch.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WD), source

    def epoch(net, opt):
        for idx in _batches(torch, dev, a):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()

    warm, wopt, source = make(10_000)
    epoch(warm, wopt)  # warm-up epoch on a throwaway model: cuDNN autotuning, allocator
    del warm, wopt
    models = [make(s)[:2] for s in range(m)]  # initialisation untimed, as jaxmu's

    def run():
        for net, opt in models:  # the PyTorch user's loop: one model after another
            for _ in range(a.epochs):
                epoch(net, opt)

    return _torch_timed(torch, dev, a, m, run, source)


def _torch_timed(torch, dev, a, m: int, run, source: str) -> dict:
    """Time ``run()`` (``a.epochs`` epochs of ``m`` models) between device syncs; the row's fields."""
    _sync(torch, dev)
    t0 = time.perf_counter()
    run()
    _sync(torch, dev)
    sec = time.perf_counter() - t0
    mem, kind = harness.torch_peak_mb(dev)
    return {"sec": sec, "images_per_s": m * a.steps * a.epochs * a.batch / sec, "models": m, "compile_s": 0.0,
            "mem_mb": mem, "mem_kind": kind, "backend": dev.type, "torch_model": source,
            "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"}


def work_torch_func(m: int, a) -> dict:
    import copy

    torch, dev, x, y = _torch_setup(a)
    F = torch.nn.functional
    from torch.func import functional_call, grad, replace_all_batch_norm_modules_, stack_module_state, vmap

    models = []
    for s in range(m):
        torch.manual_seed(s)
        net, source = torch_resnet18(torch)
        models.append(replace_all_batch_norm_modules_(net.to(dev)).train())
    params, buffers = stack_module_state(models)
    names = list(params)
    ps = [params[k].detach() for k in names]
    base = copy.deepcopy(models[0]).to("meta")
    del models

    def loss(p, b, xb, yb):
        return F.cross_entropy(functional_call(base, (dict(zip(names, p)), b), (xb,)), yb)

    grads_of = vmap(grad(loss), in_dims=(0, 0, None, None))  # one batch shared by every model
    moms = [torch.zeros_like(p) for p in ps]

    def epoch():
        for idx in _batches(torch, dev, a):
            g = list(grads_of(ps, buffers, x[idx], y[idx]))
            with torch.no_grad():  # torch.optim.SGD's update (coupled weight decay), on the stacks
                torch._foreach_add_(g, ps, alpha=WD)
                torch._foreach_mul_(moms, MOMENTUM)
                torch._foreach_add_(moms, g)
                torch._foreach_add_(ps, moms, alpha=-LR)

    epoch()  # warm-up epoch

    def run():
        for _ in range(a.epochs):
            epoch()

    return _torch_timed(torch, dev, a, m, run, source)


def worker(side: str, a) -> dict:
    if side.startswith("torch-"):
        try:
            import torch  # noqa: F401
        except ImportError:
            return {"skip": "torch not installed"}
        return work_torch_loop(a.models, a) if side == "torch-resnet-loop" else work_torch_func(a.models, a)
    if side == "jaxmu-resnet":
        return work_jaxmu("resnet18", a.models, a)
    if side == "jaxmu-cnn-stack":
        return work_jaxmu("cnn", a.cnn_models, a)
    if side == "jaxmu-cnn-single":
        return work_jaxmu("cnn", 1, a)
    raise ValueError(f"unknown side {side!r}: choose from {', '.join(SIDES)}")


# ----------------------------------------------------------------------------- driver


def worker_args(side: str, a) -> list[str]:
    steps, epochs = (a.steps, a.epochs) if "resnet" in side else (a.cnn_steps, a.cnn_epochs)
    args = ["--models", str(a.models), "--cnn-models", str(a.cnn_models), "--steps", str(steps),
            "--epochs", str(epochs), "--batch", str(a.batch), "--hw", str(a.hw), "--data", str(a.data),
            "--model-axis", a.model_axis]
    return args + (["--smoke"] if a.smoke else [])


def summarize(results: dict[str, list[dict]], notes: dict[str, str], a) -> tuple[list[dict], list[dict]]:
    """Rows (one per side) and the three targets, from the workers' answers."""
    rows, med = [], {}
    for side, runs in results.items():
        if not runs:
            rows.append({"side": side, "note": notes.get(side, "no run")})
            continue
        m, lo, hi = harness.spread(r["images_per_s"] for r in runs)
        med[side] = m
        first = runs[0]
        row = {"side": side, "models": first["models"], "rounds": len(runs), "images_per_s_median": m,
               "images_per_s_min": lo, "images_per_s_max": hi, "cifar_model_epochs_per_s": m / CIFAR_N,
               "compile_s_cold": first["compile_s"], "mem_mb": max(r["mem_mb"] for r in runs),
               "mem_kind": first["mem_kind"], "backend": first["backend"], "device": first["device"]}
        for k in ("model_axis", "torch_model", "precision", "precision_note", "flops_source"):
            if k in first:
                row[k] = first[k]
        if first.get("step_flops"):
            row["step_flops"] = first["step_flops"]
            row["tflops_median"] = harness.spread(r["tflops"] for r in runs)[0]
            peak = a.peak_tflops or (H200_PEAK_TFLOPS[first["precision"]] if first["backend"] == "gpu" else None)
            row["peak_tflops"] = peak
            row["peak_fraction"] = row["tflops_median"] / peak if peak else None
        rows.append(row)
    by = {r["side"]: r for r in rows}
    loop = med.get("torch-resnet-loop")
    for side in ("jaxmu-resnet", "torch-resnet-loop", "torch-resnet-func"):
        if side in med and loop:
            by[side]["vs_torch_loop"] = med[side] / loop
    if "jaxmu-cnn-stack" in med and "jaxmu-cnn-single" in med:
        # time of the stack / time of one model (each trains the same steps per model)
        by["jaxmu-cnn-stack"]["sequential_equivalents"] = (
            by["jaxmu-cnn-stack"]["models"] * med["jaxmu-cnn-single"] / med["jaxmu-cnn-stack"])

    def target(name, value, goal, ok):
        return {"target": name, "value": value, "goal": goal,
                "met": None if value is None else bool(ok(value))}

    jr = med.get("jaxmu-resnet")
    targets = [
        target("jaxmu ResNet-18 stack / PyTorch loop", jr / loop if jr and loop else None, ">= 3", lambda v: v >= 3),
        target("jaxmu ResNet-18 stack / torch.func", jr / med["torch-resnet-func"]
               if jr and med.get("torch-resnet-func") else None, ">= 1.5", lambda v: v >= 1.5),
        target(f"{a.cnn_models} CNNs in sequential-model equivalents",
               by.get("jaxmu-cnn-stack", {}).get("sequential_equivalents"), "<= 4", lambda v: v <= 4),
        target("jaxmu ResNet-18 stack, fraction of dense peak", by.get("jaxmu-resnet", {}).get("peak_fraction"),
               ">= 0.40", lambda v: v >= 0.40),
    ]
    return rows, targets


def render(rows: list[dict], targets: list[dict], a) -> str:
    cells = []
    for r in rows:
        if "note" in r:
            cells.append((r["side"], None, r["note"], *([None] * 7)))
            continue
        ratio = r.get("vs_torch_loop")
        extra = (f"{ratio:.2f}" if ratio is not None else
                 f"{r['sequential_equivalents']:.2f} seq. models" if "sequential_equivalents" in r else None)
        tfl = f"{r['tflops_median']:.3g}" if r.get("tflops_median") else None
        frac = f"{100 * r['peak_fraction']:.0f}% of {r['peak_tflops']:.0f}" if r.get("peak_fraction") else None
        cells.append((r["side"], r["models"], harness.fmt_spread(r["images_per_s_median"], r["images_per_s_min"],
                                                                 r["images_per_s_max"], 0),
                      f"{r['cifar_model_epochs_per_s']:.3g}", extra, tfl, frac, f"{r['compile_s_cold']:.1f}",
                      f"{r['mem_mb']:.0f} ({r['mem_kind']})", r["rounds"]))
    table = harness.markdown(("side", "models", "images/s median [min-max]", "CIFAR model-epochs/s",
                              "x torch loop / seq. equiv.", "TFLOP/s", "% of peak", "compile s (cold)",
                              "peak mem MB", "rounds"), cells)
    lines = [table, ""]
    for t in targets:
        v = t["value"]
        verdict = ("not measured" if v is None else "not judged (smoke run: the code runs, no performance)"
                   if a.smoke else "met" if t["met"] else "missed")
        lines.append(f"target: {t['target']}: {'-' if v is None else f'{v:.2f}'} (goal {t['goal']}): {verdict}")
    jr = next((r for r in rows if r["side"] == "jaxmu-resnet" and "note" not in r), None)
    if jr is not None:
        lines.append(f"jaxmu precision: {jr.get('precision')} -- {jr.get('precision_note')}; step FLOPs "
                     f"{jr.get('step_flops', 0):.3g} ({jr.get('flops_source')}); model axis {jr.get('model_axis')}; "
                     f"device {jr['device']}")
        if jr.get("backend") == "gpu" and a.peak_tflops is None and "H200" not in str(jr["device"]):
            lines.append(f"warning: the peak assumed is an H200's, the device is {jr['device']}: pass --peak-tflops")
    for r in rows:
        if r.get("torch_model") and r["side"] == "torch-resnet-loop":
            lines.append(f"PyTorch ResNet-18: {r['torch_model']}; device {r['device']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    p.add_argument("--models", type=int, default=10, help="ResNet-18 seeds in the stack")
    p.add_argument("--steps", type=int, default=30, help="ResNet batches per epoch")
    p.add_argument("--epochs", type=int, default=2, help="ResNet epochs timed")
    p.add_argument("--cnn-models", type=int, default=64)
    p.add_argument("--cnn-steps", type=int, default=100)
    p.add_argument("--cnn-epochs", type=int, default=2)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--hw", type=int, default=32, help="image height and width")
    p.add_argument("--data", type=int, default=CIFAR_N, help="synthetic examples resident on the device")
    p.add_argument("--model-axis", default="auto", help="jaxmu's model axis (auto: the engine's choice)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--sides", default=",".join(SIDES))
    p.add_argument("--timeout", type=float, default=180.0, help="seconds per worker")
    p.add_argument("--budget", type=float, default=330.0, help="seconds for the whole run (0: none)")
    p.add_argument("--peak-tflops", type=float, default=None, help="dense peak of the card (default: H200's)")
    p.add_argument("--smoke", action="store_true", help="tiny everything, 1 round, CPU: the code runs")
    p.add_argument("--json", default=None, help="also write the table as JSON here (default $OUT/gpu_bench.json)")
    a = p.parse_args(argv)
    if a.smoke and not a.worker:
        a.models, a.steps, a.epochs, a.cnn_models, a.cnn_steps, a.cnn_epochs = 2, 2, 1, 4, 2, 1
        a.batch, a.hw, a.data, a.rounds, a.budget = 8, 8, 256, 1, 0
    if a.worker:
        harness.emit(worker(a.worker, a))
        return 0
    sides = [s for s in a.sides.split(",") if s]
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="jaxmu-gpu-bench-cache-") as cache:
        # A fresh cache, so compile seconds are first-run seconds; a smoke run judges nothing and
        # reuses the caller's cache when it names one (the tests' cache, shared suite-wide).
        env = {"JAXMU_COMPILE_CACHE": (a.smoke and os.environ.get("JAXMU_COMPILE_CACHE")) or cache}
        results, notes = harness.interleave(
            sides, a.rounds, lambda side, limit: harness.run_worker(__file__, side, worker_args(side, a), limit, env),
            lambda out: f"{out['images_per_s']:.0f} images/s ({out['sec']:.2f} s timed, compile {out['compile_s']:.1f} s)",
            timeout=a.timeout, budget=a.budget or None)
    rows, targets = summarize(results, notes, a)
    if a.smoke:
        for t in targets:
            t["met"] = None
    print(f"\nResNet-18: {a.models} models x {a.epochs} epochs x {a.steps} steps; CNN: {a.cnn_models} models x "
          f"{a.cnn_epochs} epochs x {a.cnn_steps} steps; batch {a.batch}, synthetic {a.hw}x{a.hw}x3 data "
          f"({a.data} examples, numpy seed 0); {a.rounds} interleaved rounds, one process per measurement; "
          f"wall {time.monotonic() - start:.0f} s\n")
    print(render(rows, targets, a))
    out = a.json or (str(Path(os.environ["OUT"]) / "gpu_bench.json") if os.environ.get("OUT") else None)
    if out:
        config = {k: getattr(a, k) for k in ("models", "steps", "epochs", "cnn_models", "cnn_steps", "cnn_epochs",
                                             "batch", "hw", "data", "rounds", "smoke")}
        Path(out).write_text(json.dumps({"config": config, "synthetic_data": True, "rows": rows,
                                         "targets": targets}, indent=1))
    return 0 if all(results.get(s) for s in sides if s.startswith("jaxmu")) else 1


if __name__ == "__main__":
    sys.exit(main())
