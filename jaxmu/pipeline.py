"""From a config to trained reference stacks: the setting every stage starts from.

``prepare(cfg, out)`` loads the dataset, computes (or reuses) the split index files, puts the
data on device, builds the model and opens the run directory. ``reference_stacks`` trains (or
loads) the ``original`` stack on D_r u D_f and the ``retrain`` stack on D_r, both from the
same initialisation per seed (protocol §3.3, §4), as checkpointed stages. With ``original.path``
the original stack is the user's (``jaxmu.originals``), written once as the ``original`` stage;
only the retrain stack is trained.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxmu.methods as M
from jaxmu.attacks.klom import klom, klom_summary
from jaxmu.attacks.population_mia import model_mias_stacked
from jaxmu.checkpoint import load_tree, save_tree
from jaxmu.config import Config
from jaxmu.data import Dataset, Splits, load_dataset, splits_for
from jaxmu.data import fingerprint as data_fingerprint
from jaxmu.data import is_builtin as data_is_builtin
from jaxmu.engine.evaluate import Evaluator, evaluate_splits
from jaxmu.engine.execution import auto_chunk, choose_model_axis, memory_budget
from jaxmu.engine.finite import finite_loss_rows, finite_rows
from jaxmu.engine.trainer import DeviceData, Trainer, TrainProgress
from jaxmu.methods.stack import unlearn_stack, unlearning_key
from jaxmu.metrics import indiscernibility, on_finite_rows, retdev, tug_of_war
from jaxmu.models import Model, build_model
from jaxmu.models import fingerprint as model_fingerprint
from jaxmu.models import is_builtin as model_is_builtin
from jaxmu.originals import load_original, stack_hash
from jaxmu.stages import StageResult, environment, run_dir_for, run_training_stage

SPLIT_NAMES = ("retain", "forget", "val", "test")
REFERENCE_STAGES = ("original", "retrain")


@dataclasses.dataclass
class Setting:
    """Everything derived from a config: data, split, model, run directory, engine choices."""
    cfg: Config
    dataset: Dataset
    splits: Splits
    data: DeviceData
    model: Model
    run_dir: Path
    model_axis: str
    original: tuple | None = None  # the user's (params, batch_stats) stack, when original.path is set

    @property
    def augment(self) -> str:
        a = self.cfg.data.augment
        return self.dataset.augment if a == "auto" else a

    def split_indices(self) -> dict[str, np.ndarray]:
        return {n: np.asarray(getattr(self.splits, n)) for n in SPLIT_NAMES}

    def init_keys(self) -> jax.Array:
        """One initialisation key per seed: ``PRNGKey(seed)`` (O and R of a seed share it)."""
        return jnp.stack([jax.random.PRNGKey(s) for s in self.cfg.seeds])

    def evaluator(self) -> Evaluator:
        e = self.cfg.engine
        return Evaluator(self.model, self.dataset.mean, self.dataset.std, e.eval_batch_size,
                         self.model_axis, e.chunk_size)

    def trainer(self, num_epochs: int | None = None) -> Trainer:
        t, e = self.cfg.train, self.cfg.engine
        return Trainer(
            model=self.model, batch_size=t.batch_size, num_epochs=num_epochs or t.epochs,
            augment=self.augment, mean=self.dataset.mean, std=self.dataset.std,
            shared_data=t.shared_data_order, model_axis=self.model_axis, chunk_size=e.chunk_size,
            flat_update=jax.default_backend() == "cpu",
        )

    def data_key(self) -> jax.Array:
        """Shared data key (faithful) or one per seed (``train.shared_data_order: false``)."""
        base = jax.random.PRNGKey(self.cfg.train.data_seed)
        if self.cfg.train.shared_data_order:
            return base
        return jnp.stack([jax.random.fold_in(base, s) for s in self.cfg.seeds])


def content_key(cfg: Config, ds: Dataset, model: Model) -> dict[str, str]:
    """Fingerprints of the registered (not built-in) dataset and model of a setting: their names
    alone do not say what they hold, so these key the run directory (``stages.run_dir_for``)."""
    key = {}
    if not data_is_builtin(cfg.data.name):
        key["data"] = data_fingerprint(ds)
    if not model_is_builtin(cfg.model.name):
        key["model"] = model_fingerprint(model)
    return key


def prepare(cfg: Config, out: str | Path) -> Setting:
    d = cfg.data
    ds = load_dataset(d.name, data_dir=d.data_dir, path=d.path)
    # the model is built before anything is written: a model that cannot apply leaves no run directory
    model = build_model(cfg.model.name, ds.num_classes, ds.images.shape[1:3] + (ds.images.shape[3],),
                        conv_impl=cfg.engine.conv_impl, stem=cfg.model.stem)
    original = None
    if cfg.original.path:
        original = load_original(cfg.original.path, cfg.original.format, arch=model.name,
                                 num_classes=model.num_classes, input_shape=model.input_shape,
                                 stem=cfg.model.stem, num_seeds=len(cfg.seeds))
    run_dir = run_dir_for(out, cfg, content_key(cfg, ds, model),
                          original=None if original is None else stack_hash(original))
    splits = splits_for(
        ds, run_dir.parent / "splits", val_ratio=d.val_ratio, forget_ratio=d.forget_ratio,
        seed=d.split_seed, forget_mode=d.forget_mode, forget_class=d.forget_class,
        forget_class_fraction=d.forget_class_fraction,
    )
    data = DeviceData(jnp.asarray(ds.images), jnp.asarray(ds.labels, jnp.int32))
    axis = choose_model_axis(cfg.engine.model_axis, backend=jax.default_backend(), model_name=model.name)
    setting = Setting(cfg, ds, splits, data, model, run_dir, axis, original)
    if cfg.engine.model_axis == "auto" and axis == "vmap":
        # a vmapped stack that would not fit in memory runs in vmapped chunks instead
        per_model = setting.trainer().bytes_per_model(data)
        axis, chunk = auto_chunk(axis, len(cfg.seeds), 2 * per_model, memory_budget())
        if axis == "chunked":
            setting = dataclasses.replace(setting, model_axis=axis,
                                          cfg=cfg.replace(engine=dataclasses.replace(cfg.engine, chunk_size=chunk)))
    return setting


def _subset_for(setting: Setting, stage: str) -> np.ndarray:
    s = setting.splits
    idx = np.concatenate([s.retain, s.forget]) if stage == "original" else np.asarray(s.retain)
    if not setting.cfg.train.shared_data_order:
        idx = np.broadcast_to(idx, (len(setting.cfg.seeds), idx.shape[0]))
    return idx.astype(np.int32)


def train_stage(setting: Setting, stage: str) -> StageResult:
    """Train (or load, or resume) the ``original`` or ``retrain`` stack."""
    if stage not in REFERENCE_STAGES:
        raise ValueError(f"unknown stage {stage!r}: choose one of {REFERENCE_STAGES}")
    t = setting.cfg.train
    trainer = setting.trainer()
    init = trainer.init(setting.init_keys(), t.learning_rate, t.momentum, t.weight_decay)
    meta = {"stage": stage, "config": setting.cfg.to_dict(), "split_hash": setting.splits.content_hash,
            "seeds": list(setting.cfg.seeds), "model_axis": setting.model_axis}
    return run_training_stage(
        setting.run_dir / stage, trainer, init, _subset_for(setting, stage), setting.data_key(),
        setting.data, checkpoint_every=setting.cfg.engine.checkpoint_every, metadata=meta,
        progress=setting.cfg.engine.progress, label=stage, model_names=setting.cfg.seeds,
    )


def write_imported_original(setting: Setting) -> None:
    """Store the user's original stack as the finished ``original`` stage (once), so that
    ``train_stage`` loads it like a trained one. Its optimizer state is a fresh one."""
    final = setting.run_dir / "original" / "final"
    if (final / "meta.json").exists():
        return
    t = setting.cfg.train
    init = setting.trainer().init(setting.init_keys(), t.learning_rate, t.momentum, t.weight_decay)
    params, batch_stats = jax.tree_util.tree_map(jnp.asarray, setting.original)
    state = init._replace(state=init.state.replace(params=params, batch_stats=batch_stats))
    save_tree(final, state, {"stage": "original", "imported": {"path": setting.cfg.original.path,
                                                                "sha256": stack_hash(setting.original)},
                             "config": setting.cfg.to_dict(), "seeds": list(setting.cfg.seeds),
                             "compile_s": 0.0, "run_s": 0.0, "done": True, "environment": environment()})


def reference_stacks(setting: Setting) -> dict[str, StageResult]:
    """The ``original`` and ``retrain`` stacks, trained or loaded (an imported original is loaded)."""
    if setting.original is not None:
        write_imported_original(setting)
    return {stage: train_stage(setting, stage) for stage in REFERENCE_STAGES}


def evaluate_state(setting: Setting, state: TrainProgress | tuple) -> dict[str, dict[str, np.ndarray]]:
    """Accuracy and per-example losses of every model of a stack on the four splits."""
    params, bs = (state.params, state.batch_stats) if isinstance(state, TrainProgress) else state
    return evaluate_splits(setting.evaluator(), params, bs, setting.split_indices(), setting.data, margins=True)


METRICS = ("retain_acc", "forget_acc", "val_acc", "test_acc", "val_mia", "test_mia", "indiscernibility")


def stack_metrics(setting: Setting, state: TrainProgress | tuple) -> dict[str, np.ndarray]:
    """Every per-seed metric of protocol §6 for a stack: ``{name: [models]}`` plus ``diverged``.

    Accuracies on D_r, D_f, D_v, D_t; population MIA of D_f against D_v ("val MIA") and D_t
    ("test MIA") with the reference procedure (§6.2); indiscernibility of the test MIA (the
    paper tables' convention, §6.3). A model whose parameters or losses are not finite is
    ``diverged`` (bool ``[models]``) and gets NaN for every metric (``split_metrics``).
    """
    return stack_scores(setting, state)[0]


def stack_scores(setting: Setting, state: TrainProgress | tuple) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``stack_metrics`` and, from the same evaluation, the per-example margins
    ``{split: [models, n]}`` (NaN rows for diverged models) that KLOM compares (``klom_scores``)."""
    params, bs = (state.params, state.batch_stats) if isinstance(state, TrainProgress) else state
    ev = evaluate_state(setting, (params, bs))
    metrics = split_metrics(ev, finite_rows((params, bs)))
    bad = metrics["diverged"][:, None]
    return metrics, {n: np.where(bad, np.nan, np.asarray(ev[n]["margin"], np.float64)) for n in SPLIT_NAMES}


KLOM_SPLITS = ("forget", "retain", "val")


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


def split_metrics(ev: dict[str, dict[str, np.ndarray]], params_ok: np.ndarray) -> dict[str, np.ndarray]:
    """The metrics of ``stack_metrics`` from an evaluation (``evaluate_splits``) of the four splits.

    ok_m = params_ok_m ∧ (every per-example loss of model m on D_r, D_f, D_v, D_t is finite).
    Metrics are computed on the ok rows exactly as for a stack without the others (the
    population MIA reseeds per model) and are NaN on the rest; ``diverged`` = ¬ok.
    """
    ok = np.asarray(params_ok, bool) & finite_loss_rows(*(ev[n]["loss"] for n in SPLIT_NAMES))
    nan_unless_ok = lambda a: np.where(ok, np.asarray(a, np.float64), np.nan)  # noqa: E731
    val_mia, test_mia = model_mias_stacked(*(np.where(ok[:, None], ev[n]["loss"], np.nan)
                                             for n in ("forget", "val", "test")))
    out = {f"{n}_acc": nan_unless_ok(ev[n]["accuracy"]) for n in SPLIT_NAMES}
    out.update(val_mia=val_mia, test_mia=test_mia, indiscernibility=on_finite_rows(indiscernibility, ok, test_mia),
               diverged=~ok)
    return out


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


# --------------------------------------------------------------------------- unlearning


def method_from_config(cfg: Config, method: str | None = None):
    """The method named by ``--method`` (a name or call string) and/or ``cfg.method``.

    ``cfg.method`` is ``{type: NAME, **hyperparameters}``; a ``--method`` call string's
    arguments win over the config's, which win over the defaults.
    """
    raw = dict(cfg.method)
    name = raw.pop("type", None)
    if method:
        base, args = M.parse_call(method)
        if name is not None and base != name:
            raw = {}  # the config's hyperparameters belong to another method
        name = base
        raw.update(args)
    if not name:
        raise M.MethodError(f"no method given: pass --method NAME (one of {', '.join(M.names())})")
    return M.get(name, **raw)


def method_context(setting: Setting):
    return M.StaticContext(setting.model, setting.dataset.num_classes, setting.dataset.mean,
                           setting.dataset.std, setting.augment)


def method_data(setting: Setting):
    s = setting.splits
    return M.SplitData(setting.data.images, setting.data.labels, jnp.asarray(s.retain),
                       jnp.asarray(s.forget), jnp.asarray(s.val))


@dataclasses.dataclass
class UnlearnStageResult:
    params: object
    batch_stats: object
    compile_s: float
    run_s: float
    skipped: bool
    path: Path


def unlearn_stage(setting: Setting, method, original: StageResult) -> UnlearnStageResult:
    """Unlearn every seed of the original stack in one program; checkpointed and reused.

    The checkpoint lives in ``run_dir/unlearn/<method>_<hash of its hyperparameters>/`` (and, for
    a registered method, of its code: ``jaxmu.methods.fingerprint``).
    """
    blob = {"hp": dict(method.hparams), "keys": setting.cfg.unlearn_keys}
    if method.name not in M.builtin_names():
        blob["code"] = M.fingerprint(method.spec)  # a registered method: keyed by its code too
    hp_blob = json.dumps(blob, sort_keys=True, default=str)
    key = hashlib.sha256(hp_blob.encode()).hexdigest()[:12]
    path = setting.run_dir / "unlearn" / f"{method.name}_{key}"
    template = jax.eval_shape(lambda s: (s.params, s.batch_stats), original.state)
    if (path / "meta.json").exists():
        (params, bs), meta = load_tree(path, template)
        return UnlearnStageResult(params, bs, meta["compile_s"], meta["run_s"], True, path)
    ukey = unlearning_key(setting.cfg.seeds, per_model=setting.cfg.unlearn_keys == "per_model")
    res = unlearn_stack(method.spec, method.static, method.arrays, method_context(setting), method_data(setting),
                        original.state.params, original.state.batch_stats, ukey,
                        model_axis=setting.model_axis, chunk_size=setting.cfg.engine.chunk_size)
    save_tree(path, (res.params, res.batch_stats), {
        "stage": "unlearn", "method": method.name, "hparams": dict(method.hparams),
        "call": method.call_string(), "unlearn_keys": setting.cfg.unlearn_keys,
        "compile_s": res.compile_s, "run_s": res.run_s, "seeds": list(setting.cfg.seeds),
        "environment": environment(),
    })
    return UnlearnStageResult(res.params, res.batch_stats, res.compile_s, res.run_s, False, path)
