"""The U-LiRA protocol end to end on the engine (protocol §8.3), checkpointed and reusable.

``run_ulira(setting, method)`` trains (or loads) the shadow originals, the retrained shadows and
an independent second retrain population — all shared by every method — then unlearns every
(split, forget set) pair with ``method``, computes φ for every model on the pool and scores three
candidate "unlearned" populations against the retrained shadows:

* the method's unlearned models,
* the originals (no unlearning: the attack should separate them clearly),
* the second retrain population (perfect unlearning: the attack should be near chance),

with both U-LiRA formulations (Hayes et al.; Deep Unlearn) and the NeurIPS-2023 ε score.

A diverged candidate model (parameters or φ not finite, e.g. an unlearned shadow after a
learning rate of 1e30) is excluded from its population's scores, ε and accuracies and counted
in ``Population.n_diverged``; the other models are scored as usual. A diverged shadow *training*
stage stops the attack with ``DivergedError`` (``run_training_stage``).

Shadow layout (protocol §8.3 items 1–4):

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

The statistics it feeds (``jaxmu.attacks``) see arrays only; this stage trains, checkpoints and
evaluates. Score once: each candidate's φ, pool logits and test logits are cached beside its
checkpoint (``ulira_scores.npz``, keyed by the checkpoint's checksum, the pool, the test indices
and the queries; ``jaxmu.scores.cached_arrays``), so running the attack again — another
``--bootstrap``, a statistic added or fixed — evaluates no model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxmu.attacks.crossfit import holdout_folds
from jaxmu.attacks.klom import klom, klom_summary
from jaxmu.attacks.neurips_score import forget_score, per_example_epsilon
from jaxmu.attacks.lira import logit_scaled_confidence
from jaxmu.attacks.ulira import FORGOTTEN, NEVER_SEEN, RETAINED, forgotten_populations, ulira_deepunlearn, ulira_hayes
from jaxmu.attacks.ulira_study import ulira_study
from jaxmu.checkpoint import load_tree, read_metadata, save_tree
from jaxmu.metrics import accuracy
from jaxmu.engine.finite import finite_rows
from jaxmu.config import AttackConfig
from jaxmu.data import Dataset
from jaxmu.engine.evaluate import Evaluator
from jaxmu.training import Trainer
from jaxmu.types import DeviceData
from jaxmu.methods import SplitData
from jaxmu.methods.stack import unlearn_stack, unlearning_key
from jaxmu.pipeline import Setting, method_context
from jaxmu.scores import cached_arrays
from jaxmu.stages import StageResult, environment, run_training_stage

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
    return phi_and_logits(evaluator, params, batch_stats, idx, data, queries)[0]


def phi_and_logits(evaluator: Evaluator, params, batch_stats, idx: np.ndarray, data: DeviceData, queries: int):
    """``phi_stack`` and the identity query's logits ``[M, N, C]`` it was computed from (so the
    accuracies on ``idx`` need no second evaluation of the stack)."""
    labels = jnp.asarray(np.asarray(data.labels)[idx])
    out, first = [], None
    views = [data] if queries == 1 else [data, DeviceData(jnp.flip(data.images, axis=2), data.labels)]
    for view in views:
        logits = evaluator.logits(params, batch_stats, idx, view)
        first = logits if first is None else first
        out.append(np.asarray(jax.jit(logit_scaled_confidence)(logits, labels)))
    return np.stack(out, axis=-1).astype(np.float32), first


def repeat_models(tree, times: int):
    """Each model of a stack repeated ``times`` times (model m -> rows m·times .. m·times+times-1)."""
    return jax.tree_util.tree_map(lambda x: jnp.repeat(x, times, axis=0), tree)


_FIXED = {"auto": "auto", "on": True, "off": False}


@dataclasses.dataclass
class Population:
    """One candidate 'unlearned' population and what the attacks say about it."""

    name: str
    phi: np.ndarray  # [M, N, A] (NaN rows: diverged models)
    hayes: object  # ULiraResult; None when fewer than 2 models are finite
    deepunlearn: object
    eps: np.ndarray
    forget_score: float
    n_models_eps: int
    retain_acc: float
    forget_acc: float
    test_acc: float
    n_diverged: int = 0  # models left out: parameters or φ not finite
    klom: np.ndarray | None = None  # per forgotten example: KLOM vs the retrains that forgot it
    klom_forget: float = math.nan  # its 95th percentile (the published summary)
    study: object = None  # StudyULiRA: the reference study's own variant (protocol §8.1)


@dataclasses.dataclass
class ULiraReport:
    populations: list[Population]
    timings: dict[str, dict[str, float]]
    splits: ShadowSplits
    roles: np.ndarray
    phi_retrain: np.ndarray
    out_dir: Path


def _trainer(setting: Setting) -> Trainer:
    """The setting's trainer with per-model subsets and data keys (every shadow has its own)."""
    return dataclasses.replace(setting.trainer(), shared_data=False)


def _train(setting: Setting, base: Path, name: str, init_keys, subsets: np.ndarray, data_keys) -> StageResult:
    t = setting.cfg.train
    tr = _trainer(setting)
    init = tr.init(init_keys, t.learning_rate, t.momentum, t.weight_decay)
    return run_training_stage(base / name, tr, init, subsets, data_keys, setting.data,
                              checkpoint_every=setting.cfg.engine.checkpoint_every,
                              metadata={"stage": f"ulira/{name}", "config": setting.cfg.to_dict()},
                              progress=setting.cfg.engine.progress, label=f"ulira {name}")


def shadow_stacks(setting: Setting, sp: ShadowSplits, base: Path) -> dict[str, StageResult]:
    """Originals [S], retrains [S·K] and reference retrains [S·K] (shared by every method)."""
    s_, k_ = sp.num_splits, sp.forget_sets
    root = jax.random.PRNGKey(setting.cfg.train.data_seed)
    split_keys = [jax.random.PRNGKey(s) for s in range(s_)]
    orig = _train(setting, base, "original", jnp.stack(split_keys), sp.halves,
                  jnp.stack([jax.random.fold_in(root, s) for s in range(s_)]))
    models = [(s, f) for s in range(s_) for f in range(k_)]
    subsets = sp.retain.reshape(s_ * k_, -1)
    retrain = _train(setting, base, "retrain", jnp.stack([split_keys[s] for s, _ in models]), subsets,
                     jnp.stack([jax.random.fold_in(jax.random.fold_in(root, s), 1 + f) for s, f in models]))
    reference = _train(setting, base, "retrain_reference",
                       jnp.stack([jax.random.fold_in(split_keys[s], 1 + f) for s, f in models]), subsets,
                       jnp.stack([jax.random.fold_in(jax.random.fold_in(root, s), 1000 + f) for s, f in models]))
    return {"original": orig, "retrain": retrain, "retrain_reference": reference}


def unlearned_stack(setting: Setting, sp: ShadowSplits, base: Path, method, original: StageResult):
    """The method applied to every (split, forget set); per-model splits and unlearning keys."""
    s_, k_ = sp.num_splits, sp.forget_sets
    m = s_ * k_
    blob = json.dumps(dict(method.hparams), sort_keys=True, default=str).encode()
    path = base / "unlearn" / f"{method.name}_{hashlib.sha256(blob).hexdigest()[:12]}"
    params, bs = repeat_models(original.state.params, k_), repeat_models(original.state.batch_stats, k_)
    if (path / "meta.json").exists():
        (p, b), meta = load_tree(path, jax.eval_shape(lambda: (params, bs)))
        return p, b, meta["compile_s"], meta["run_s"], path
    data = SplitData(setting.data.images, setting.data.labels, jnp.asarray(sp.retain.reshape(m, -1)),
                     jnp.asarray(sp.forget.reshape(m, -1)), jnp.asarray(np.broadcast_to(sp.val, (m, len(sp.val)))))
    ukey = unlearning_key(range(m), per_model=True)  # the eps score needs unlearning randomness (§9.3)
    res = unlearn_stack(method.spec, method.static, method.arrays, method_context(setting), data, params, bs, ukey,
                        per_model_splits=True, model_axis=setting.model_axis,
                        chunk_size=setting.cfg.engine.chunk_size)
    save_tree(path, (res.params, res.batch_stats), {"method": method.name, "hparams": dict(method.hparams),
                                                   "compile_s": res.compile_s, "run_s": res.run_s,
                                                   "environment": environment()})
    return res.params, res.batch_stats, res.compile_s, res.run_s, path


ULIRA_SCORES = "ulira_scores.npz"


def pool_scores(evaluator: Evaluator, params, batch_stats, checkpoint: Path, pool: np.ndarray,
                test_idx: np.ndarray | None, data: DeviceData, queries: int) -> dict[str, np.ndarray]:
    """``{"phi": [M, N, A], "pool_logits": [M, N, C], "test_logits": [M, n_test, C]}`` of a stack
    (no test logits when ``test_idx`` is None), evaluated once and cached beside ``checkpoint``."""
    h = hashlib.sha256(read_metadata(checkpoint)["checksum"].encode())
    h.update(np.ascontiguousarray(pool, np.int64).tobytes())
    h.update(b"none" if test_idx is None else np.ascontiguousarray(test_idx, np.int64).tobytes())
    h.update(str(queries).encode())

    def compute() -> dict[str, np.ndarray]:
        phi, pool_logits = phi_and_logits(evaluator, params, batch_stats, pool, data, queries)
        out = {"phi": phi, "pool_logits": np.asarray(pool_logits, np.float32)}
        if test_idx is not None:
            out["test_logits"] = np.asarray(evaluator.logits(params, batch_stats, test_idx, data), np.float32)
        return out

    return cached_arrays(Path(checkpoint) / ULIRA_SCORES, h.hexdigest(), compute, write=jax.process_index() == 0)


def _population(name, phi, roles, phi_r, folds, cfg, accs: tuple[float, float, float],
                correct: np.ndarray | None = None) -> Population:
    """Both U-LiRA formulations, the ε score, KLOM and the study's own variant of one population.

    KLOM (``attacks/klom.py``) compares, per forgotten example, the φ of the models that
    unlearned it with the φ of the retrains that never saw it — the same two populations as ε —
    and reports the 95th percentile. The study's variant (``attacks/ulira_study.py``, §8.1) scores
    the finite models' 0/1 correctness ``correct`` ``[M_ok, N]`` (in-sample, forgotten vs never seen).

    Rows of ``phi`` that are not finite (diverged models) are excluded by the statistics
    (``cross_fitted_scores``) and dropped before the ε populations are formed; ε is computed on
    the examples forgotten by the usual number of models both with and without them. With
    fewer than two finite models there is nothing to score (``hayes``/``deepunlearn`` None).
    """
    ok = np.isfinite(phi).all(axis=(1, 2))
    if ok.sum() < 2:
        return Population(name, phi, None, None, np.full(0, np.nan), math.nan, 0, *accs, n_diverged=int((~ok).sum()))
    fixed = _FIXED[cfg.fixed_variance]
    hayes = ulira_hayes(phi, roles, phi_r, roles, folds, folds, mode=cfg.mode, fixed_variance=fixed)
    du = ulira_deepunlearn(phi, roles, folds, rng=np.random.RandomState(0), mode=cfg.mode, fixed_variance=fixed)
    pu, cu = forgotten_populations(phi[ok][..., 0], roles[ok])
    pr, cr = forgotten_populations(phi_r[..., 0], roles)
    common = np.intersect1d(cu, cr)  # all columns when no model diverged
    pu_c, pr_c = pu[:, np.searchsorted(cu, common)], pr[:, np.searchsorted(cr, common)]
    eps = per_example_epsilon(pu_c, pr_c)
    k = klom(pu_c, pr_c) if common.size else np.full(0, np.nan)
    klom_forget = klom_summary(k, {"forget": np.arange(k.size)})["forget"]
    study = ulira_study(correct, roles[ok]) if correct is not None else None
    return Population(name, phi, hayes, du, eps, forget_score(eps, pu.shape[0]), pu.shape[0], *accs,
                      n_diverged=int((~ok).sum()), klom=k, klom_forget=klom_forget, study=study)


def _mean(x: np.ndarray) -> float:
    """Mean of the finite models' values; NaN when every model diverged."""
    return float(np.mean(x)) if np.size(x) else math.nan


def run_ulira(setting: Setting, method) -> ULiraReport | None:
    """Shadow stacks, the unlearned stack, φ of every candidate, then the attack statistics.

    Multi-host: every process runs the stacks (its share of the models); the statistics are
    computed once, by process 0, and the other processes return None.
    """
    cfg = setting.cfg.attack
    sp = make_shadow_splits(setting.dataset, cfg, setting.cfg.data.split_seed)
    base = setting.run_dir / f"ulira_{setting.cfg.hash('attack')}"
    base.mkdir(parents=True, exist_ok=True)
    stacks = shadow_stacks(setting, sp, base)
    timings = {k: {"compile_s": v.compile_s, "run_s": v.run_s, "models": int(jax.tree_util.tree_leaves(
        v.state.params)[0].shape[0])} for k, v in stacks.items()}
    up, ub, uc, ur, upath = unlearned_stack(setting, sp, base, method, stacks["original"])
    timings[f"unlearn:{method.name}"] = {"compile_s": uc, "run_s": ur, "models": sp.num_splits * sp.forget_sets}

    t0 = time.perf_counter()
    ev = setting.evaluator()
    k_ = sp.forget_sets
    roles = sp.roles()
    test_idx = np.arange(setting.dataset.n_train, len(setting.dataset.labels), dtype=np.int32)
    y_pool = np.asarray(setting.dataset.labels)[sp.pool]
    y_test = jnp.asarray(np.asarray(setting.dataset.labels)[test_idx])
    # (params, batch_stats, repeats): the originals stand for their K (split, forget set) rows,
    # so the S distinct models are evaluated once and their rows repeated (model m = s·K + f)
    candidates = {
        method.name: (up, ub, 1, upath),
        "original": (stacks["original"].state.params, stacks["original"].state.batch_stats, k_,
                     stacks["original"].path),
        "retrain (perfect)": (stacks["retrain_reference"].state.params,
                              stacks["retrain_reference"].state.batch_stats, 1, stacks["retrain_reference"].path),
    }
    r_state = stacks["retrain"].state
    phi_r = pool_scores(ev, r_state.params, r_state.batch_stats, stacks["retrain"].path, sp.pool, None,
                        setting.data, cfg.queries)["phi"]
    split_folds = holdout_folds(sp.num_splits, cfg.folds)
    folds = split_folds[sp.split_of_model()]
    measured = {}
    for name, (p, b, reps, ckpt) in candidates.items():
        got = pool_scores(ev, p, b, ckpt, sp.pool, test_idx, setting.data, cfg.queries)
        phi, pool_logits = got["phi"], got["pool_logits"]
        test_accs = np.asarray(accuracy(jnp.asarray(got["test_logits"]), y_test))
        ok = finite_rows((p, b)) & np.isfinite(phi).all(axis=(1, 2))  # diverged models: left out
        phi, ok, test_accs = (np.repeat(x, reps, axis=0) for x in (phi, ok, test_accs))
        if not ok.all():
            phi = np.where(ok[:, None, None], phi, np.nan).astype(phi.dtype)
        correct = np.repeat(np.asarray(jnp.argmax(pool_logits, -1)) == y_pool, reps, axis=0)[ok]
        test_acc = _mean(test_accs[ok])
        accs = (_mean(correct[roles[ok] == RETAINED]), _mean(correct[roles[ok] == FORGOTTEN]), test_acc)
        measured[name] = (phi, accs, correct)
    t1 = time.perf_counter()
    n_eval = phi_r.shape[0] + sum(jax.tree_util.tree_leaves(p)[0].shape[0] for p, *_ in candidates.values())
    timings["attack: phi"] = {"compile_s": 0.0, "run_s": t1 - t0, "models": n_eval}
    if jax.process_index() != 0:
        return None  # the statistics are host work without collectives: process 0 computes them
    pops = [_population(name, phi, roles, phi_r, folds, cfg, accs, correct)
            for name, (phi, accs, correct) in measured.items()]
    timings["attack: statistics"] = {"compile_s": 0.0, "run_s": time.perf_counter() - t1, "models": 0}
    return ULiraReport(pops, timings, sp, roles, phi_r, base)
