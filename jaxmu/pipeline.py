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
import functools
import hashlib
import json
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

import jaxmu.methods as M
from jaxmu.checkpoint import load_tree, read_metadata, save_tree
from jaxmu.config import Config
from jaxmu.data import Dataset, Splits, load_dataset, splits_for
from jaxmu.data import fingerprint as data_fingerprint
from jaxmu.data import is_builtin as data_is_builtin
from jaxmu.engine.evaluate import Evaluator, split_logits
from jaxmu.engine.execution import auto_chunk, choose_model_axis, memory_budget
from jaxmu.engine.finite import finite_rows
from jaxmu.engine.state import TrainProgress
from jaxmu.methods.stack import unlearn_stack, unlearning_key
from jaxmu.models import Model, build_model
from jaxmu.models import fingerprint as model_fingerprint
from jaxmu.models import is_builtin as model_is_builtin
from jaxmu.originals import load_original, stack_hash
from jaxmu.paths import absolute_path
from jaxmu.training import Trainer
from jaxmu.types import DeviceData
from jaxmu.scores import (AGAINST_RETRAIN, KLOM_SPLITS, METRICS, SCORES_FILE, SPLIT_NAMES, Scores, cache_key, klom_scores,  # noqa: F401
                          load_scores, margins, save_scores, scored_metrics, split_metrics, with_retention)
from jaxmu.stages import StageResult, environment, run_dir_for, run_training_stage

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


def prepare(cfg: Config, out: str | Path, check: Callable[[Setting], None] | None = None) -> Setting:
    """The ``Setting`` of ``cfg`` under ``out``: dataset, splits, model, run directory, engine.

    Nothing is written until the dataset, the model, an imported original and ``check`` (called
    on the setting before its run directory exists; it raises to refuse, e.g. a method that
    cannot apply to the model) have passed: a refused command leaves no run directory and no
    split file behind.
    """
    d = cfg.data
    ds = load_dataset(d.name, data_dir=d.data_dir, path=d.path)
    model = build_model(cfg.model.name, ds.num_classes, ds.images.shape[1:3] + (ds.images.shape[3],),
                        conv_impl=cfg.engine.conv_impl, stem=cfg.model.stem)
    original = None
    if cfg.original.path:
        original = load_original(cfg.original.path, cfg.original.format, arch=model.name,
                                 num_classes=model.num_classes, input_shape=model.input_shape,
                                 stem=cfg.model.stem, num_seeds=len(cfg.seeds))
    split_args = dict(val_ratio=d.val_ratio, forget_ratio=d.forget_ratio, seed=d.split_seed,
                      forget_mode=d.forget_mode, forget_class=d.forget_class,
                      forget_class_fraction=d.forget_class_fraction)
    split_dir = absolute_path(out) / "splits"
    data = DeviceData(jnp.asarray(ds.images), jnp.asarray(ds.labels, jnp.int32))
    axis = choose_model_axis(cfg.engine.model_axis, backend=jax.default_backend(), model_name=model.name)
    if check is not None:
        check(Setting(cfg, ds, splits_for(ds, split_dir, write=False, **split_args), data, model,
                      absolute_path(out), axis, original))
    run_dir = run_dir_for(out, cfg, content_key(cfg, ds, model),
                          original=None if original is None else stack_hash(original))
    splits = splits_for(ds, split_dir, **split_args)  # run_dir.parent / "splits"
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


def stack_evaluation(setting: Setting, state: TrainProgress | tuple, cache: Path | None = None) -> Scores:
    """The stack's logits on the four splits (``jaxmu.scores``), evaluated once.

    ``cache``: the stack's checkpoint directory. Its ``scores.npz`` is used when it was made for
    this checkpoint (its checksum) and this split; otherwise the stack is evaluated and the file
    (re)written, so every later stage — and ``jaxmu report --rescore`` — reads the logits back.
    """
    params, bs = (state.params, state.batch_stats) if isinstance(state, TrainProgress) else state
    idx = setting.split_indices()
    all_labels = np.asarray(setting.data.labels)
    labels = {n: all_labels[idx[n]] for n in SPLIT_NAMES}
    key = None
    if cache is not None:
        key = cache_key(read_metadata(cache)["checksum"], labels, idx)
        hit = load_scores(Path(cache) / SCORES_FILE, key)
        if hit is not None:
            return hit
    logits = split_logits(setting.evaluator(), params, bs, idx, setting.data)
    scores = Scores(logits, labels, finite_rows((params, bs)))
    if cache is not None and jax.process_index() == 0:
        save_scores(Path(cache) / SCORES_FILE, scores, key)
    return scores


@dataclasses.dataclass
class References:
    """The reference stacks with their scores (``jaxmu.scores``) and per-seed metrics.

    ``scores``/``metrics``/``margins``: ``{"original", "retrain": ...}``; ``metrics`` holds
    ``scored_metrics`` (against the retrained stack: RetDev, ToW, RMIA AUC included) and
    ``margins`` KLOM's per-example margins. ``klom_original`` = KLOM of the original stack.
    """
    stacks: dict[str, StageResult]
    scores: dict[str, Scores]
    metrics: dict[str, dict[str, np.ndarray]]

    @functools.cached_property
    def margins(self) -> dict[str, dict[str, np.ndarray]]:
        return {k: margins(v) for k, v in self.scores.items()}

    @property
    def retrain_split_metrics(self) -> dict[str, np.ndarray]:
        return {k: v for k, v in self.metrics["retrain"].items() if k not in AGAINST_RETRAIN}

    def score(self, scores: Scores) -> dict[str, np.ndarray]:
        """``scored_metrics`` of another stack of the same seeds against the retrained stack."""
        return scored_metrics(scores, self.scores["retrain"], self.retrain_split_metrics)


def scored_references(setting: Setting, refs: dict[str, StageResult] | None = None) -> References:
    """``reference_stacks`` (unless given), each scored once from its cached logits."""
    refs = reference_stacks(setting) if refs is None else refs
    scores = {k: stack_evaluation(setting, refs[k].state, refs[k].path) for k in REFERENCE_STAGES}
    retrain = split_metrics(scores["retrain"])
    return References(refs, scores, {k: scored_metrics(scores[k], scores["retrain"], retrain)
                                     for k in REFERENCE_STAGES})


def stack_metrics(setting: Setting, state: TrainProgress | tuple, cache: Path | None = None) -> dict[str, np.ndarray]:
    """Every per-seed metric of protocol §6 for a stack (``scores.split_metrics``), from its
    (cached) evaluation: ``{name: [models]}`` plus ``diverged``."""
    return split_metrics(stack_evaluation(setting, state, cache))


def stack_scores(setting: Setting, state: TrainProgress | tuple,
                 cache: Path | None = None) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``stack_metrics`` and, from the same evaluation, the per-example margins (``scores.margins``)."""
    ev = stack_evaluation(setting, state, cache)
    return split_metrics(ev), margins(ev)


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


def applicability_error(setting: Setting, method) -> str | None:
    """Why ``method`` cannot run on the setting's model (``MethodError``'s message), or None.

    Traces the method once on abstract values (``jax.eval_shape``: nothing is compiled or run),
    so a structural refusal — CT and MSG on an architecture without convolutions — surfaces
    before any stack is trained, for built-in and registered methods alike.
    """
    params, bs = jax.eval_shape(setting.model.init, jax.random.PRNGKey(0))
    hp = {k: jnp.float32(v) for k, v in method.arrays.items()}
    try:
        jax.eval_shape(lambda p, b: method.spec.unlearn_one(method_context(setting), method_data(setting), p, b, hp,
                                                            unlearning_key(), static=method.static), params, bs)
    except M.MethodError as e:
        return str(e)
    return None


def require_applicable(method) -> Callable[[Setting], None]:
    """A ``prepare`` check: ``MethodError`` (``applicability_error``'s message) when ``method``
    cannot apply to the setting's model, before the run directory is made."""
    def check(setting: Setting) -> None:
        why = applicability_error(setting, method)
        if why:
            raise M.MethodError(why)
    return check


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
