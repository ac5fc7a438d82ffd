"""Score once, attack many: a stack's per-model, per-example logits, cached beside its checkpoint.

Every per-seed metric of a stage (accuracies, population MIA, indiscernibility, RetDev, ToW,
offline RMIA) and KLOM's margins are computed from one ``Scores``: the logits ``[models, n,
classes]`` of every model on D_r, D_f, D_v and D_t, the labels, and which models have finite
parameters. ``pipeline.stack_evaluation`` evaluates a stack once and writes them to
``<checkpoint>/scores.npz``; any later stage, or ``jaxmu report --rescore RUN_DIR``, reads them
back, so adding a metric or re-scoring an old run never re-evaluates (let alone re-trains) a
model.

The file is keyed by the checkpoint's own checksum and a hash of the split indices and labels:
a cache made for other weights or another split is ignored (and rewritten), never used.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import zipfile
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from jaxmu.attacks.klom import klom, klom_summary
from jaxmu.attacks.population_mia import model_mias_stacked
from jaxmu.attacks.rmia import stack_rmia_auc
from jaxmu.engine.finite import finite_loss_rows
from jaxmu.metrics import indiscernibility, on_finite_rows, retdev, tug_of_war

SCORES_FILE = "scores.npz"
SPLIT_NAMES = ("retain", "forget", "val", "test")
METRICS = ("retain_acc", "forget_acc", "val_acc", "test_acc", "val_mia", "test_mia", "indiscernibility")
AGAINST_RETRAIN = ("retdev", "tow", "rmia_auc")  # scored_metrics adds them to METRICS
KLOM_SPLITS = ("forget", "retain", "val")
RMIA_SPLITS = ("forget", "val", "test")


@dataclasses.dataclass(frozen=True)
class Scores:
    """The logits of a stack on the four splits (``{split: [models, n, classes]}`` float32), the
    labels (``{split: [n]}``) and ``params_ok`` (``[models]`` bool: every parameter finite)."""

    logits: Mapping[str, np.ndarray]
    labels: Mapping[str, np.ndarray]
    params_ok: np.ndarray

    @property
    def num_models(self) -> int:
        return int(self.params_ok.shape[0])

    @functools.cached_property
    def evaluation(self) -> dict[str, dict[str, np.ndarray]]:
        """``{split: {"accuracy": [M], "loss": [M, n], "margin": [M, n]}}`` (``evaluate_splits``'s
        layout): accuracy, per-example cross-entropy and LiRA's margin φ from the logits."""
        from jaxmu.engine.evaluate import scores_of_logits

        return {s: scores_of_logits(self.logits[s], self.labels[s], margins=True) for s in SPLIT_NAMES}

    def true_class_probability(self, split: str) -> np.ndarray:
        """softmax(logits)_y ``[M, n]`` (RMIA's Pr(x | θ))."""
        from jaxmu.attacks.rmia import true_class_probability

        return true_class_probability(self.logits[split], self.labels[split])


def cache_key(checksum: str, labels: Mapping[str, np.ndarray], indices: Mapping[str, np.ndarray]) -> str:
    """sha256 of the checkpoint's checksum, the split indices and their labels."""
    h = hashlib.sha256(checksum.encode())
    for s in SPLIT_NAMES:
        h.update(s.encode())
        h.update(np.ascontiguousarray(indices[s], np.int64).tobytes())
        h.update(np.ascontiguousarray(labels[s], np.int64).tobytes())
    return h.hexdigest()


def write_arrays(path: Path, key: str, arrays: Mapping[str, np.ndarray]) -> None:
    """``arrays`` and their ``key`` to ``path`` (``.npz``, uncompressed: logits barely compress),
    through a temporary file and a rename."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}.npz")
    np.savez(tmp, key=np.array(key), **arrays)
    os.replace(tmp, path)


def read_arrays(path: Path, key: str | None = None) -> dict[str, np.ndarray] | None:
    """The arrays at ``path``; None when absent, unreadable, or made for another ``key``
    (``key=None`` accepts any)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if key is not None and str(z["key"]) != key:
                return None
            return {k: z[k] for k in z.files if k != "key"}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):  # truncated or foreign file: compute again
        return None


def cached_arrays(path: Path, key: str, compute: Callable[[], dict[str, np.ndarray]],
                  write: bool = True) -> dict[str, np.ndarray]:
    """The arrays cached at ``path`` for ``key``, or ``compute()``'s, written there when ``write``."""
    hit = read_arrays(path, key)
    if hit is not None:
        return hit
    arrays = compute()
    if write:
        write_arrays(path, key, arrays)
    return arrays


def save_scores(path: Path, scores: Scores, key: str) -> None:
    """Write ``scores`` to ``path`` (``write_arrays``)."""
    arrays = {"params_ok": np.asarray(scores.params_ok, bool)}
    for s in SPLIT_NAMES:
        arrays[f"logits_{s}"] = np.asarray(scores.logits[s], np.float32)
        arrays[f"labels_{s}"] = np.asarray(scores.labels[s])
    write_arrays(path, key, arrays)


def load_scores(path: Path, key: str | None = None) -> Scores | None:
    """The cached scores at ``path``; None when absent, unreadable, or made for another ``key``
    (``key=None`` accepts any: ``jaxmu report --rescore`` reads what a finished run left)."""
    z = read_arrays(path, key)
    if z is None or not all(f"{p}_{s}" in z for p in ("logits", "labels") for s in SPLIT_NAMES) or "params_ok" not in z:
        return None
    return Scores({s: z[f"logits_{s}"] for s in SPLIT_NAMES}, {s: z[f"labels_{s}"] for s in SPLIT_NAMES}, z["params_ok"])


# --------------------------------------------------------------------------- metrics from scores


def split_metrics(scores: Scores) -> dict[str, np.ndarray]:
    """Every per-seed metric of protocol §6 for a stack: ``{name: [models]}`` plus ``diverged``.

    Accuracies on D_r, D_f, D_v, D_t; population MIA of D_f against D_v ("val MIA") and D_t
    ("test MIA") with the reference procedure (§6.2); indiscernibility of the test MIA (the
    paper tables' convention, §6.3). ok_m = params_ok_m ∧ (every per-example loss of model m on
    the four splits is finite); metrics are computed on the ok rows exactly as for a stack
    without the others (the population MIA reseeds per model), NaN on the rest; ``diverged`` = ¬ok.
    """
    ev = scores.evaluation
    ok = diverged_free(scores)
    nan_unless_ok = lambda a: np.where(ok, np.asarray(a, np.float64), np.nan)  # noqa: E731
    val_mia, test_mia = model_mias_stacked(*(np.where(ok[:, None], ev[n]["loss"], np.nan)
                                             for n in ("forget", "val", "test")))
    out = {f"{n}_acc": nan_unless_ok(ev[n]["accuracy"]) for n in SPLIT_NAMES}
    out.update(val_mia=val_mia, test_mia=test_mia, indiscernibility=on_finite_rows(indiscernibility, ok, test_mia),
               diverged=~ok)
    return out


def diverged_free(scores: Scores) -> np.ndarray:
    """``[models]`` bool: finite parameters and every per-example loss finite."""
    ev = scores.evaluation
    return np.asarray(scores.params_ok, bool) & finite_loss_rows(*(ev[n]["loss"] for n in SPLIT_NAMES))


def margins(scores: Scores) -> dict[str, np.ndarray]:
    """Per-example margins ``{split: [models, n]}`` float64, NaN rows for diverged models (KLOM's input)."""
    bad = ~diverged_free(scores)[:, None]
    return {n: np.where(bad, np.nan, np.asarray(scores.evaluation[n]["margin"], np.float64)) for n in SPLIT_NAMES}


def rmia_auc(scores: Scores, retrain: Scores) -> np.ndarray:
    """Offline RMIA AUC ``[models]`` of D_f against D_t with the retrained models (leave-one-out)
    as references and D_v as population (``attacks/rmia.py``; an adaptation of the attack to
    unlearning). NaN for a diverged model, and for every model when fewer than 2 seeds exist."""
    def probs(sc: Scores) -> dict[str, np.ndarray]:
        bad = ~diverged_free(sc)[:, None]
        return {n: np.where(bad, np.nan, sc.true_class_probability(n)) for n in RMIA_SPLITS}

    return stack_rmia_auc(probs(scores), probs(retrain))


def with_retention(metrics: dict[str, np.ndarray], retrain: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Add the scores against the same seed's R: RetDev = |RA/RA_R - 1| + |FA/FA_R - 1| +
    |TA/TA_R - 1| (§6.4) and ToW = Π (1 - |acc - acc_R|) over retain, forget, test (Zhao et al.
    2024, ``metrics.tug_of_war``).

    NaN for a seed where either model diverged (its accuracies are NaN). RetDev divides by R's
    accuracies, so it is also NaN for a seed whose R scores 0 on a split — class-wise forgetting,
    where R never saw the class and FA_R = 0 (the reference asserts FA_R > 0 and stops); ToW
    stays defined there.
    """
    keys = ("retain_acc", "forget_acc", "test_acc")
    ok = np.all([~np.isnan(np.asarray(d[k], np.float64)) for d in (metrics, retrain) for k in keys], axis=0)
    positive = np.all([np.asarray(retrain[k], np.float64) > 0 for k in keys], axis=0)
    pair = (*(metrics[k] for k in keys), *(retrain[k] for k in keys))
    return {**metrics, "retdev": on_finite_rows(retdev, ok & positive, *pair),
            "tow": on_finite_rows(tug_of_war, ok, *pair)}


def scored_metrics(scores: Scores, retrain: Scores, retrain_metrics: dict[str, np.ndarray] | None = None
                   ) -> dict[str, np.ndarray]:
    """Everything per seed against the retrained stack: ``split_metrics`` + RetDev, ToW
    (``with_retention``) + ``rmia_auc``. ``retrain_metrics`` (``split_metrics(retrain)``) saves
    recomputing the retrained stack's population MIA when the caller has it."""
    retrain_metrics = split_metrics(retrain) if retrain_metrics is None else retrain_metrics
    own = retrain_metrics if scores is retrain else split_metrics(scores)
    return {**with_retention(own, retrain_metrics), "rmia_auc": rmia_auc(scores, retrain)}


def klom_scores(margins: dict[str, np.ndarray], oracle: dict[str, np.ndarray]) -> dict[str, float]:
    """KLOM of a stack against the retrained stack (the oracles), per split: the 95th percentile
    over the split's examples of KL(margins of the stack's seeds ‖ margins of the retrains')
    (``attacks/klom.py``; Georgiev et al. 2024). Diverged models (NaN rows) are left out; a split
    with no finite model on either side is NaN. With S seeds each side has S samples per example,
    so KLOM is coarse for small S (the published setting uses ~100 models).
    """
    out = {}
    for n in KLOM_SPLITS:
        u, o = (m[n][~np.isnan(m[n]).any(axis=1)] for m in (margins, oracle))
        out[n] = (klom_summary(klom(u, o), {n: np.arange(u.shape[1])})[n]
                  if len(u) and len(o) and u.shape[1] else float("nan"))
    return out
