"""Time the U-LiRA attack statistics at the study's scale on synthetic φ (no training).

    PYTHONPATH=. python bench/ulira_stats.py [--splits 64] [--forget-sets 10] [--fraction 0.1]

Builds the shadow layout of ``configs/ulira_digits_cnn.yaml`` with the given S, K and forget
fraction on the real digits pool (``make_shadow_splits``: M = S·K models, N = |pool| examples,
A = 2 queries, 4 folds), draws synthetic φ of those shapes (per-example means, +4 when trained
on x, +1 when forgotten by the unlearned models, σ = 1.5; float32 as ``phi_stack`` returns) and
times each statistic that ``ulira_stage._population`` runs for one candidate population:
``ulira_hayes``, ``ulira_deepunlearn``, ``forgotten_populations`` and ``per_example_epsilon``.
The stage runs them for three populations (method, original, reference retrain), so the
attack's statistics cost about three times the total printed here.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--splits", type=int, default=64)
    ap.add_argument("--forget-sets", type=int, default=10)
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--reps", type=int, default=1)
    args = ap.parse_args()

    import numpy as np

    from jaxmu.attacks.crossfit import holdout_folds
    from jaxmu.attacks.neurips_score import per_example_epsilon
    from jaxmu.attacks.ulira import (
        FORGOTTEN,
        RETAINED,
        forgotten_populations,
        ulira_deepunlearn,
        ulira_hayes,
    )
    from jaxmu.config import AttackConfig
    from jaxmu.data import load_dataset
    from jaxmu.ulira_stage import make_shadow_splits

    cfg = AttackConfig(num_splits=args.splits, forget_sets=args.forget_sets, forget_fraction=args.fraction,
                       folds=args.folds)
    sp = make_shadow_splits(load_dataset("digits"), cfg, 0)
    roles = sp.roles()
    m, n, a = roles.shape[0], roles.shape[1], 2
    g = np.random.default_rng(0)
    mu = g.normal(5.0, 3.0, size=n)
    trained = (roles == RETAINED)[..., None]
    forgot = (roles == FORGOTTEN)[..., None]
    phi_r = (mu[None, :, None] + 4.0 * trained + g.normal(0, 1.5, (m, n, a))).astype(np.float32)
    phi_u = (mu[None, :, None] + 4.0 * trained + 1.0 * forgot + g.normal(0, 1.5, (m, n, a))).astype(np.float32)
    folds = holdout_folds(sp.num_splits, cfg.folds)[sp.split_of_model()]
    print(f"M = {m} models, N = {n} examples, A = {a}, folds = {cfg.folds}; "
          f"forgotten per example: {np.bincount((roles == FORGOTTEN).sum(0)).argmax()}")

    def timed(name, fn):
        best = float("inf")
        for _ in range(args.reps):
            t0 = time.perf_counter()
            out = fn()
            best = min(best, time.perf_counter() - t0)
        print(f"{name:28s} {best:8.2f} s")
        return out, best

    total = 0.0
    hay, t = timed("ulira_hayes", lambda: ulira_hayes(phi_u, roles, phi_r, roles, folds, folds))
    total += t
    du, t = timed("ulira_deepunlearn",
                  lambda: ulira_deepunlearn(phi_u, roles, folds, rng=np.random.RandomState(0)))
    total += t
    (pu, _), t = timed("forgotten_populations (U)", lambda: forgotten_populations(phi_u[..., 0], roles))
    total += t
    (pr, _), t = timed("forgotten_populations (R)", lambda: forgotten_populations(phi_r[..., 0], roles))
    total += t
    eps, t = timed("per_example_epsilon", lambda: per_example_epsilon(pu, pr))
    total += t
    print(f"{'one population':28s} {total:8.2f} s   (x3 populations ~ {3 * total:.0f} s)")
    print(f"hayes auc {hay.summary['auc']:.6f}  du auc {du.summary['auc']:.6f}  "
          f"eps mean {np.nanmean(eps):.6f}  eps shape {eps.shape}")


if __name__ == "__main__":
    main()
