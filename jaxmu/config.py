"""Typed configuration: YAML into frozen dataclasses, dotted overrides, a content hash.

A config file is a YAML mapping whose sections mirror ``Config``. Unknown keys and values of
the wrong type are errors naming the key (``ConfigError``). Overrides use dotted paths:
``--set train.epochs=5 --set data.name=mnist`` (values parsed as YAML scalars).

Semantic settings (data, model, train, seeds, method) are hashed into ``Config.hash()`` and key
the run directory; performance flags (``engine``) are not hashed: they change how the model
axis executes, not the results (within float tolerance; docs/sharp_edges.md).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from jaxmu.paths import shipped_config, shipped_configs


class ConfigError(ValueError):
    """A bad configuration file or override (message names the key and the fix)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataConfig:
    """Which data and which split.

    Attributes:
      name: dataset id (``jaxmu.data.DATASETS``); ``digits`` needs no download.
      data_dir: tensorflow-datasets directory (prepared array_record data).
      path: folder (utkface) or file (npz) for local datasets.
      val_ratio, forget_ratio, split_seed: protocol §2 (0.15, 0.10, 123).
      forget_mode: ``random`` (the benchmark) or ``class`` (all/a fraction of one class).
      forget_class, forget_class_fraction: for ``forget_mode: class``.
      augment: ``auto`` (the dataset's protocol augmentation), ``none``, ``flip``, ``crop_flip``.
    """

    name: str = "digits"
    data_dir: str | None = None
    path: str | None = None
    val_ratio: float = 0.15
    forget_ratio: float = 0.10
    split_seed: int = 123
    forget_mode: Literal["random", "class"] = "random"
    forget_class: int | None = None
    forget_class_fraction: float = 1.0
    augment: Literal["auto", "none", "flip", "crop_flip"] = "auto"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Architecture. ``stem`` applies to resnet18 (``imagenet`` as the study, or ``cifar``)."""

    name: str = "cnn"
    stem: Literal["imagenet", "cifar"] = "imagenet"


@dataclasses.dataclass(frozen=True, kw_only=True)
class OriginalConfig:
    """Originals trained elsewhere (``jaxmu.originals``; README "Start from your own trained model").

    Attributes:
      path: empty: jaxmu trains the original stack. Else one ``state_dict`` file per seed in seed
        order (a list, or a glob pattern whose matches are sorted by name, e.g.
        ``originals/seed*.pt``), or one Orbax checkpoint directory holding the whole stack. The
        retrained references are still trained by jaxmu; the run directory is keyed by the
        weights' content hash, not by these paths.
      format: ``auto`` (a directory with meta.json is Orbax, a file a state_dict), ``torch``
        (``.pt``/``.pth``/``.npz`` state_dicts) or ``orbax``.
    """

    path: tuple[str, ...] | str = ()
    format: Literal["auto", "torch", "orbax"] = "auto"


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Recipe of the original and retrained models (protocol §4.1).

    Attributes:
      epochs, batch_size: static; partial last batches are kept.
      learning_rate, momentum, weight_decay: PyTorch SGD, coupled decay, cosine to 0 per epoch.
      data_seed: key of data order and augmentation (protocol §4.2: 123).
      shared_data_order: faithful mode (True): every seed sees the same data order and
        augmentation draws, only the initialisation differs; False: per-seed data keys.
    """

    epochs: int = 20
    batch_size: int = 64
    learning_rate: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    data_seed: int = 123
    shared_data_order: bool = True


@dataclasses.dataclass(frozen=True, kw_only=True)
class AttackConfig:
    """U-LiRA shadow models and scoring (protocol §8.3).

    Attributes:
      num_splits: S, even: complementary pairs of half-splits of the pool, so every pool
        example is in the train half of exactly S/2 splits.
      forget_sets: K forget sets per split, disjoint inside the train half.
      forget_fraction: size of each forget set as a fraction of the train half
        (K x fraction = 1 makes the K forget sets a partition).
      val_fraction: share of the official train set held out as a fixed validation set.
      queries: 1 (identity) or 2 (identity and horizontal mirror) inference queries.
      folds: hold-out folds of split pairs for cross-fitting (no in-sample scoring).
      mode: ``online`` (IN/OUT likelihood ratio) or ``offline`` (OUT only, two-sided).
      fixed_variance: ``auto`` (fixed below 64 members), ``on`` or ``off``.
    """

    num_splits: int = 16
    forget_sets: int = 4
    forget_fraction: float = 0.25
    val_fraction: float = 0.05
    queries: int = 2
    folds: int = 4
    mode: Literal["online", "offline"] = "online"
    fixed_variance: Literal["auto", "on", "off"] = "auto"


@dataclasses.dataclass(frozen=True, kw_only=True)
class TuneConfig:
    """Hyperparameter search (protocol §7).

    Attributes:
      trials: completed trials per seed study (the study: 100).
      batch: trials asked from each study per round; a round's trials that share their static
        settings run as one vmapped program.
      seeds: the seeds with a study (the study: 0, 1, 2; those also in ``Config.seeds`` are
        used); each trial unlearns that seed's original and is compared with the same seed's
        retrained model.
      storage: Optuna storage URL; empty = an SQLite file in the run directory. Several sweep
        workers may share one study through a shared URL.
    """

    trials: int = 100
    batch: int = 8
    seeds: tuple[int, ...] = (0, 1, 2)
    storage: str = ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class EngineConfig:
    """Performance flags: never change results beyond float tolerance, not hashed.

    Attributes:
      model_axis: how the models of a stack execute: ``vmap`` (all at once), ``loop`` (one
        at a time inside one compiled program), ``chunked`` (vmapped chunks of ``chunk_size``),
        or ``auto`` (chosen per backend and model, ``jaxmu.engine.execution``).
      chunk_size: chunk length for ``chunked``.
      conv_impl: ``auto``, ``im2col`` (fast on CPU) or ``xla`` (cuDNN on GPU).
      eval_batch_size: examples per evaluation batch. 128: the CPU convolution (``im2col``)
        slows down on large batches — digits CNN forward, per 1,024 examples: 25 ms in batches
        of 64, 39 ms of 256, 123 ms of 1,024 (one jitted forward on the 2-core machine) — and the
        default sweep evaluates every trial.
      checkpoint_every: epochs between resumable checkpoints of a training stage.
      progress: show progress bars.
      ragged_epochs: tuning compiles a method once per batch size for the search's maximum
        epoch count, each trial stopping at its own (``Phase.count``, identical results), instead
        of once per (epochs, batch size); ``bench/sweep.py`` measures both.
      host_devices: CPU host devices the command-line tools ask XLA for before JAX starts
        (0 = one per CPU core, at most 8; 1 = no split). With several devices the models axis
        is split across them (``jaxmu.engine.sharding``): on 2 CPU cores 2 devices run the
        digits CNN stack ~1.3x and the MLP stack ~1.5x faster than one.
    """

    model_axis: Literal["auto", "vmap", "loop", "chunked"] = "auto"
    chunk_size: int = 8
    conv_impl: Literal["auto", "im2col", "xla"] = "auto"
    eval_batch_size: int = 128
    checkpoint_every: int = 5
    progress: bool = True
    ragged_epochs: bool = True
    host_devices: int = 0


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """A whole jaxmu setting.

    Attributes:
      seeds: model-initialisation indices (protocol §5); an integer N in YAML means 0..N-1.
      method: ``{type: ng_plus, alpha: 0.95}``: the method and its hyperparameters.
      unlearn_keys: ``shared`` (faithful, docs/methods.md §2.3: every seed sees the same unlearning
        randomness) or ``per_model`` (seed-to-seed variance includes unlearning randomness).
    """

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    original: OriginalConfig = dataclasses.field(default_factory=OriginalConfig)
    engine: EngineConfig = dataclasses.field(default_factory=EngineConfig)
    attack: AttackConfig = dataclasses.field(default_factory=AttackConfig)
    tune: TuneConfig = dataclasses.field(default_factory=TuneConfig)
    seeds: tuple[int, ...] = tuple(range(10))
    method: dict[str, Any] = dataclasses.field(default_factory=dict)
    unlearn_keys: Literal["shared", "per_model"] = "shared"
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))

    def semantic_dict(self) -> dict[str, Any]:
        """The parts that determine results (everything but ``engine``, ``description`` and the
        paths of ``original``: an imported original is keyed by its content hash instead)."""
        d = self.to_dict()
        d.pop("engine")
        d.pop("description")
        d.pop("original")
        return d

    def hash(self, *sections: str) -> str:
        """sha256 (16 hex chars) of the semantic config, or of the named sections only."""
        d = self.semantic_dict()
        if sections:
            d = {k: d[k] for k in sections}
        blob = json.dumps(d, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def replace(self, **changes: Any) -> "Config":
        return dataclasses.replace(self, **changes)


def _to_plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _to_plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_to_plain(v) for v in x]
    return x


# --------------------------------------------------------------------------- parsing


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


_YAML11_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it converted (tuples, floats)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"config key {key!r}: {value!r} is not a {_type_name(tp)}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"config key {key!r}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key!r}: expected a list, got {value!r}")
        elem = args[0] if args else Any
        return tuple(_coerce(v, elem, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key!r}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key {key!r}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key {key!r}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and _YAML11_FLOAT.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads 1e30 / 1e-3 (no dot) as strings
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key {key!r}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key {key!r}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"config key {key!r}: unsupported type {tp}")  # pragma: no cover


def _build(cls: type, raw: Any, prefix: str = "") -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config section {prefix or '<top>'!r} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in raw.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in fields:
            raise ConfigError(
                f"unknown config key {key!r}: valid keys here are {', '.join(sorted(fields))}"
            )
        kwargs[k] = _coerce(v, hints[k], key)
    return cls(**kwargs)


def config_from_dict(raw: dict[str, Any]) -> Config:
    """Build and validate a ``Config`` from a plain mapping."""
    if isinstance(raw.get("seeds"), int) and not isinstance(raw.get("seeds"), bool):
        raw = {**raw, "seeds": list(range(raw["seeds"]))}
    cfg = _build(Config, raw)
    validate(cfg)
    return cfg


def parse_override(text: str) -> tuple[str, Any]:
    """``"train.epochs=5"`` -> ``("train.epochs", 5)`` (value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"bad override {text!r}: use KEY=VALUE, e.g. train.epochs=5")
    key, _, val = text.partition("=")
    key = key.strip()
    if not key:
        raise ConfigError(f"bad override {text!r}: empty key")
    try:
        value = yaml.safe_load(val) if val.strip() else ""
    except yaml.YAMLError:
        value = val
    return key, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply dotted ``KEY=VALUE`` overrides to a raw (unvalidated) mapping."""
    raw = json.loads(json.dumps(raw))  # deep copy of plain data
    for text in overrides:
        key, value = parse_override(text)
        node = raw
        parts = key.split(".")
        for p in parts[:-1]:
            nxt = node.get(p)
            if nxt is None:
                nxt = node[p] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"bad override {text!r}: {p!r} is not a section")
            node = nxt
        node[parts[-1]] = value
    return raw


def _config_text(path: str | Path) -> tuple[str, str]:
    """(name for messages, YAML text) of a config path or shipped config name; an existing file wins."""

    p = Path(path)
    if p.is_file():
        return str(p), p.read_text()
    shipped = shipped_config(str(path))
    if shipped is not None:
        return str(path), shipped.read_text()
    choices = f"pass a YAML path or one of the shipped configs: {', '.join(shipped_configs())}"
    if len(p.parts) == 1:
        raise ConfigError(f"unknown config {str(path)!r}: {choices}")
    raise ConfigError(f"config file {str(p)!r} not found: {choices}")


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (or the defaults when ``path`` is None) and apply overrides.

    ``path`` is a YAML file or the name of a config shipped with the package
    (``jaxmu.paths.shipped_configs()``: ``"digits_cnn"`` or ``"digits_cnn.yaml"``); an existing
    file wins. Relative paths are taken as they are (the command-line tools make them absolute).
    """
    raw: dict[str, Any] = {}
    if path is not None:
        p, text = _config_text(path)
        try:
            raw = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            first = str(e).splitlines()[0]
            raise ConfigError(f"config file {p!r} is not valid YAML ({first})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {p!r} must hold a mapping of sections")
    raw = apply_overrides(raw, overrides or [])
    return config_from_dict(raw)


def validate(cfg: Config) -> None:
    """Range checks that types cannot express."""
    t, d, e = cfg.train, cfg.data, cfg.engine
    checks = [
        (t.epochs >= 1, "train.epochs must be >= 1"),
        (t.batch_size >= 1, "train.batch_size must be >= 1"),
        (t.learning_rate > 0, "train.learning_rate must be > 0"),
        (0 <= t.momentum < 1, "train.momentum must be in [0, 1)"),
        (t.weight_decay >= 0, "train.weight_decay must be >= 0"),
        (0 < d.val_ratio < 1, "data.val_ratio must be in (0, 1)"),
        (0 < d.forget_ratio < 1, "data.forget_ratio must be in (0, 1)"),
        (0 < d.forget_class_fraction <= 1, "data.forget_class_fraction must be in (0, 1]"),
        (d.forget_mode != "class" or d.forget_class is not None,
         "data.forget_class must be set when data.forget_mode is 'class'"),
        (len(cfg.seeds) >= 1, "seeds must name at least one seed"),
        (len(set(cfg.seeds)) == len(cfg.seeds), "seeds must not repeat"),
        (all(s >= 0 for s in cfg.seeds), "seeds must be >= 0"),
        (e.chunk_size >= 1, "engine.chunk_size must be >= 1"),
        (cfg.attack.num_splits >= 4 and cfg.attack.num_splits % 2 == 0,
         "attack.num_splits must be even and >= 4 (complementary pairs)"),
        (cfg.tune.trials >= 1 and cfg.tune.batch >= 1, "tune.trials and tune.batch must be >= 1"),
        (bool(set(cfg.tune.seeds) & set(cfg.seeds)),
         "tune.seeds must share at least one seed with seeds (tuning runs on their intersection)"),
        (cfg.attack.forget_sets >= 1, "attack.forget_sets must be >= 1"),
        (0 < cfg.attack.forget_fraction and cfg.attack.forget_sets * cfg.attack.forget_fraction <= 1 + 1e-9,
         "attack.forget_fraction must be > 0 with forget_sets x forget_fraction <= 1 (disjoint forget sets)"),
        (0 < cfg.attack.val_fraction < 0.5, "attack.val_fraction must be in (0, 0.5)"),
        (cfg.attack.queries in (1, 2), "attack.queries must be 1 (identity) or 2 (identity + mirror)"),
        (2 <= cfg.attack.folds <= cfg.attack.num_splits // 2,
         "attack.folds must be in [2, num_splits / 2]"),
        # an example is in S/2 train halves and forgotten in a forget_sets x forget_fraction share
        # of them; the NeurIPS eps score needs at least 2 unlearned models per example
        (cfg.attack.num_splits // 2 * cfg.attack.forget_sets * cfg.attack.forget_fraction >= 2 - 1e-9,
         "attack: each example would be forgotten by fewer than 2 models (the eps score needs 2): "
         "raise attack.num_splits or attack.forget_sets x attack.forget_fraction"),
        (e.eval_batch_size >= 1, "engine.eval_batch_size must be >= 1"),
        (e.checkpoint_every >= 1, "engine.checkpoint_every must be >= 1"),
        (e.host_devices >= 0, "engine.host_devices must be >= 0 (0 = one per CPU core)"),
    ]
    for ok, msg in checks:
        if not ok:
            raise ConfigError(msg)
