"""Population MIA per model: scikit-learn (one model at a time) vs the vectorized stack path.

    PYTHONPATH=. python bench/population_mia.py              # 32 models, 180 vs 180 losses
    PYTHONPATH=. python bench/population_mia.py --models 10 --forget 4500 --heldout 4250

Times ``population_mia`` (scikit-learn ``cross_val_score``, a fresh ``RandomState(123)`` per
model) on ``--sklearn-models`` models and ``population_mia_stacked`` on the whole stack (best
of ``--reps``), after one warm-up call of each (imports). Prints ms per model, the ratio and
the largest difference between the two (0 expected).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from jaxmu.attacks.population_mia import population_mia, population_mia_stacked


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=32)
    ap.add_argument("--forget", type=int, default=180)
    ap.add_argument("--heldout", type=int, default=180)
    ap.add_argument("--sklearn-models", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    g = np.random.default_rng(0)
    f = g.gamma(1.0, size=(a.models, a.forget)) * g.uniform(0.2, 3.0, size=(a.models, 1))
    h = g.gamma(1.5, size=(a.models, a.heldout))
    population_mia(f[0, :12], h[0, :12], rng=np.random.RandomState(123))
    population_mia_stacked(f[:1, :12], h[:1, :12])
    k = min(a.sklearn_models, a.models)
    t0 = time.perf_counter()
    ref = np.array([population_mia(f[i], h[i], rng=np.random.RandomState(123)) for i in range(k)])
    t_sk = (time.perf_counter() - t0) / k
    t_vec = np.inf
    for _ in range(a.reps):
        t0 = time.perf_counter()
        got = population_mia_stacked(f, h)
        t_vec = min(t_vec, (time.perf_counter() - t0) / a.models)
    print(f"{a.models} models, {a.forget} forget vs {a.heldout} held-out losses: "
          f"scikit-learn {t_sk * 1e3:.1f} ms/model, vectorized {t_vec * 1e3:.2f} ms/model, "
          f"ratio {t_sk / t_vec:.0f}x, max |diff| {np.max(np.abs(got[:k] - ref)):.1e}")


if __name__ == "__main__":
    main()
