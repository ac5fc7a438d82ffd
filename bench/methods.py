"""Time every registered method on the digits CNN stack: vmapped stack vs a loop over seeds.

    python bench/methods.py [--seeds 10] [--methods finetune,ng_plus] [--epochs-cap 0]

For each method (default hyperparameters; ``--epochs-cap N`` caps every epoch count at N to
shorten the run) it unlearns the 10-seed original stack of ``configs/digits_cnn.yaml``
(trained or loaded from ``runs/``) (a) as one program over the models axis, with the engine's
model-axis choice for this backend, and (b) one seed at a time in a Python loop of single-model
programs, as the reference does. Compile time is measured apart. Prints per-method run seconds,
the speed-up (b)/(a), and run-time efficiency RTE = t_retrain / t_method against the retrained
stack's run time measured the same way. Quote ratios: the machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _early_host_devices() -> None:
    """``--host-devices N`` (default 1) acts before JAX starts; 0 = one per core, as the CLIs."""
    n = int(sys.argv[sys.argv.index("--host-devices") + 1]) if "--host-devices" in sys.argv else 1
    from jaxmu.cli import request_host_devices

    request_host_devices(n)


_early_host_devices()

import jax  # noqa: E402

from jaxmu.cli import enable_compile_cache, format_table  # noqa: E402
from jaxmu.config import load_config  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--methods", default="", help="comma-separated ids (default: all)")
    p.add_argument("--epochs-cap", type=int, default=0)
    p.add_argument("--out", default="runs")
    p.add_argument("--host-devices", type=int, default=1, help="XLA CPU host devices (0 = one per core)")
    args = p.parse_args()
    enable_compile_cache()
    import jaxmu.methods as M
    from jaxmu.methods.stack import Unlearner, stack_hparams, unlearning_key
    from jaxmu.pipeline import method_context, method_data, prepare, reference_stacks

    cfg = load_config("configs/digits_cnn.yaml", [f"seeds={args.seeds}", "engine.progress=false"])
    setting = prepare(cfg, args.out)
    refs = reference_stacks(setting)
    t_retrain = refs["retrain"].run_s
    ctx, data, key = method_context(setting), method_data(setting), unlearning_key()
    orig = refs["original"].state
    names = args.methods.split(",") if args.methods else M.names()
    rows = []
    for name in names:
        spec = M.METHODS[name]
        caps = {k: type(v)(min(v, args.epochs_cap)) for k, v in spec.defaults.items()
                if args.epochs_cap and "epoch" in k and isinstance(v, (int, float)) and not isinstance(v, bool)}
        m = M.get(name, **caps)
        static = tuple(sorted(m.static.items()))
        timings = {}
        for label, n_models, mode in (("stack", args.seeds, setting.model_axis), ("loop", 1, "vmap")):
            un = Unlearner(spec, static, ctx, model_axis=mode)
            hp = stack_hparams(m.arrays, n_models)
            parts = range(args.seeds) if n_models == 1 else [slice(None)]
            compile_s = run_s = 0.0
            for i, part in enumerate(parts):
                sel = (lambda t: jax.tree_util.tree_map(lambda x: x[i:i + 1], t)) if n_models == 1 else (lambda t: t)
                call = (data, sel(orig.params), sel(orig.batch_stats), hp, key)
                if i == 0:
                    t0 = time.perf_counter()
                    exe = un.fn.lower(*un._args(*call)).compile()
                    compile_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                jax.block_until_ready(exe(*un._args(*call)))
                run_s += time.perf_counter() - t0
            timings[label] = (compile_s, run_s)
        (c_s, r_s), (_, r_l) = timings["stack"], timings["loop"]
        rows.append([name, m.call_string()[len(name):] or "()", c_s, r_s, r_l, r_l / r_s, t_retrain / r_s])
        print(f"{name}: stack {r_s:.3f} s, loop {r_l:.3f} s", file=sys.stderr)
    print(f"retrain stack ({args.seeds} seeds, {cfg.train.epochs} epochs): {t_retrain:.2f} s; "
          f"{jax.device_count()} {jax.devices()[0].platform} device(s); model axis {setting.model_axis}")
    print(format_table(["method", "settings", "compile s", "stack run s", "loop run s", "loop/stack", "RTE"], rows))


if __name__ == "__main__":
    main()
