"""U-LiRA shadow models on the engine: splits, stacks, φ arrays and roles (protocol §8.3).

Layout (items 1–4 of §8.3):

* **Pool**: the official train set minus a fixed validation set (``val_fraction``, drawn with
  ``default_rng(split_seed)``), trimmed to an even size.
* **Splits**: ``S`` half-splits in complementary pairs: split ``2i`` is the first half of
  ``default_rng(i).permutation(pool)``, split ``2i+1`` the second. Every model trains on exactly
  |pool|/2 examples and every example is in the train half of exactly S/2 splits.
* **Forget sets**: ``K`` disjoint sets of ``floor(fraction · |half|)`` examples inside each train
  half (``default_rng(1000 + s)``); ``K · fraction = 1`` makes them a partition.
* **Models** (all per-model stacks, vmap ``in_axes=0`` on the index arrays): one original per
  split (init ``PRNGKey(s)``); one retrain per (split, forget set) on half ∖ F (same init as its
  split's original, like O and R of a seed in the main benchmark); an independent second retrain
  population (init ``fold_in(PRNGKey(s), 1 + f)``) used as the *perfect unlearning* baseline;
  one unlearned model per (split, forget set): the method applied to that split's original with
  per-model unlearning keys (the ε score needs unlearning randomness, §9.3). Model ``m = s·K + f``.
* **φ** ``[M, N_pool, A]`` from logits with a masked logsumexp (``lira.logit_scaled_confidence``),
  A = identity (+ horizontal mirror); **roles** ``[M, N_pool]`` never-seen / retained / forgotten.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxmu.attacks.lira import logit_scaled_confidence
from jaxmu.attacks.ulira import FORGOTTEN, NEVER_SEEN, RETAINED
from jaxmu.config import AttackConfig
from jaxmu.data import Dataset
from jaxmu.engine.evaluate import Evaluator
from jaxmu.engine.trainer import DeviceData


@dataclasses.dataclass(frozen=True, eq=False)
class ShadowSplits:
    """Index arrays of the U-LiRA protocol (all int32, into the dataset).

    Attributes:
      pool: ``[N]`` attackable examples; val: ``[n_val]`` fixed validation set.
      halves: ``[S, N/2]`` train half of each split.
      forget: ``[S, K, n_f]`` forget sets; retain: ``[S, K, N/2 - n_f]``.
    """

    pool: np.ndarray
    val: np.ndarray
    halves: np.ndarray
    forget: np.ndarray
    retain: np.ndarray

    @property
    def num_splits(self) -> int:
        return self.halves.shape[0]

    @property
    def forget_sets(self) -> int:
        return self.forget.shape[1]

    def roles(self) -> np.ndarray:
        """Role ``[S·K, N]`` of every pool example for the model of (split s, forget set f)."""
        s_, k_ = self.num_splits, self.forget_sets
        pos = {int(x): i for i, x in enumerate(self.pool)}
        roles = np.full((s_ * k_, len(self.pool)), NEVER_SEEN, np.int8)
        for s in range(s_):
            half_cols = [pos[int(x)] for x in self.halves[s]]
            for f in range(k_):
                m = s * k_ + f
                roles[m, half_cols] = RETAINED
                roles[m, [pos[int(x)] for x in self.forget[s, f]]] = FORGOTTEN
        return roles

    def split_of_model(self) -> np.ndarray:
        return np.repeat(np.arange(self.num_splits), self.forget_sets)


def make_shadow_splits(ds: Dataset, cfg: AttackConfig, seed: int) -> ShadowSplits:
    """The pool, complementary half-splits and disjoint forget sets of §8.3 items 1–2."""
    n = ds.n_train
    perm = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(cfg.val_fraction * n)))
    val, pool = perm[n - n_val:], perm[: n - n_val]
    pool = np.sort(pool[: len(pool) // 2 * 2])
    half = len(pool) // 2
    halves = []
    for i in range(cfg.num_splits // 2):
        p = np.random.default_rng(i).permutation(len(pool))
        halves += [pool[p[:half]], pool[p[half:]]]
    n_f = int(np.floor(cfg.forget_fraction * half))
    if n_f < 1:
        raise ValueError(f"attack.forget_fraction {cfg.forget_fraction} gives empty forget sets of a {half}-example half")
    forget, retain = [], []
    for s, h in enumerate(halves):
        p = np.random.default_rng(1000 + s).permutation(half)
        fs = [h[p[f * n_f:(f + 1) * n_f]] for f in range(cfg.forget_sets)]
        forget.append(fs)
        retain.append([np.setdiff1d(h, fset) for fset in fs])
    as32 = lambda a: np.asarray(a, np.int32)  # noqa: E731
    return ShadowSplits(as32(pool), as32(np.sort(val)), as32(halves), as32(forget), as32(retain))


def phi_stack(evaluator: Evaluator, params, batch_stats, idx: np.ndarray, data: DeviceData, queries: int) -> np.ndarray:
    """φ ``[M, N, A]`` of every model on ``data.images[idx]``: identity (and mirrored) queries."""
    labels = jnp.asarray(np.asarray(data.labels)[idx])
    out = []
    views = [data] if queries == 1 else [data, DeviceData(jnp.flip(data.images, axis=2), data.labels)]
    for view in views:
        logits = evaluator.logits(params, batch_stats, idx, view)
        out.append(np.asarray(jax.jit(logit_scaled_confidence)(logits, labels)))
    return np.stack(out, axis=-1).astype(np.float32)


def repeat_models(tree, times: int):
    """Each model of a stack repeated ``times`` times (model m -> rows m·times .. m·times+times-1)."""
    return jax.tree_util.tree_map(lambda x: jnp.repeat(x, times, axis=0), tree)


def forgotten_populations(phi: np.ndarray, roles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-example φ over the models that forgot it: ``[n_per_example, n_examples]`` and the columns.

    Keeps the examples forgotten by the most common number of models (S/2 for a partition),
    so the populations are rectangular for the NeurIPS ε score.
    """
    forgot = roles == FORGOTTEN
    counts = forgot.sum(0)
    target = np.bincount(counts[counts > 0]).argmax() if (counts > 0).any() else 0
    cols = np.flatnonzero(counts == target)
    mat = np.stack([phi[forgot[:, c], c] for c in cols], axis=1) if len(cols) else np.zeros((0, 0))
    return mat, cols
