"""The notebook's front door: one setting, its reference stacks, and what you do with them.

    >>> import jaxmu
    >>> exp = jaxmu.Experiment("digits_mlp_half", seeds=3, out="runs")      # shipped name, path or Config
    >>> exp.references()                        # original + retrain stacks (Orbax, cached, resumable)
    >>> r = exp.unlearn("ng_plus", alpha=[0.80, 0.90, 0.95, 0.99])   # a list: one program, 4 x 3 models
    >>> r                                       # a table in a notebook: means ± 95% t-intervals
    >>> best = exp.tune("ng_plus", trials=20)   # the sweep's tuning: same storage, cache and resume
    >>> exp.ulira(best.method)                  # U-LiRA populations, AUCs, ε score, KLOM

Everything runs through the same stages as the command lines (``pipeline``, ``sweep``,
``ulira_stage``), so a notebook and ``python -m jaxmu.sweep`` share checkpoints: the references
trained here are the sweep's, a tuned method is the sweep's ``final.json``.

A hyperparameter given as a list makes a grid (the product of all lists); every combination is
applied to every seed, and the whole grid runs as one stack per static signature — searched
epoch counts of ragged methods are arrays (``docs/methods.md`` §6.2), so a grid over ``epochs``
is one program too. A single combination is exactly ``python -m jaxmu.unlearn``'s stage (same
checkpoint); a grid is checkpointed as one stack under ``run_dir/grid/``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import jax
import numpy as np

import jaxmu.methods as M
from jaxmu.config import Config, load_config, validate
from jaxmu.results_table import ResultTable

__all__ = ["Experiment", "Tuned"]


@dataclasses.dataclass(frozen=True)
class Tuned:
    """The outcome of ``Experiment.tune``: the selected method, its 10-seed results, the trials."""

    method: M.Method
    results: ResultTable
    trials: list[dict[str, Any]]
    best_trial: dict[str, Any]

    def _repr_markdown_(self) -> str:
        return f"**{self.method.call_string()}** (best of {len(self.trials)} trials)\n\n" + self.results.table()


def _grid(hparams: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The product of list-valued hyperparameters (scalars fixed): ``alpha=[.8, .9], epochs=[1, 2]``
    gives 4 combinations, in the order of ``itertools.product``."""
    names = list(hparams)
    values = [v if isinstance(v, (list, tuple, np.ndarray)) else [v] for v in hparams.values()]
    for n, v in zip(names, values):
        if len(v) == 0:
            raise M.MethodError(f"hyperparameter {n!r} is an empty list: give at least one value")
    return [dict(zip(names, combo)) for combo in itertools.product(*values)]


class Experiment:
    """One setting (dataset, model, training recipe, seeds) and the stacks trained for it.

    Args:
      config: a shipped config name (``"digits_cnn"``), a YAML path, or a ``Config``.
      seeds: an int N (seeds 0..N-1) or a list of seeds; None keeps the config's.
      out: the output directory (run directories go under it, as with ``--out``).
      overrides: ``"section.key=value"`` strings, as ``--set`` on the command line.
      progress: show progress bars (``tqdm.auto``: notebook-friendly).
    """

    def __init__(self, config: str | Path | Config = "digits_mlp_half", *, seeds: int | Sequence[int] | None = None,
                 out: str | Path = "runs", overrides: Sequence[str] = (), progress: bool = True):
        cfg = config if isinstance(config, Config) else load_config(config, list(overrides))
        if isinstance(config, Config) and overrides:
            raise ValueError("overrides apply to a config name or path; change a Config with Config.replace")
        if seeds is not None:
            cfg = cfg.replace(seeds=tuple(range(seeds)) if isinstance(seeds, int) else tuple(int(s) for s in seeds))
        cfg = cfg.replace(engine=dataclasses.replace(cfg.engine, progress=progress))
        validate(cfg)
        self.cfg = cfg
        self.out = Path(out)

    def __repr__(self) -> str:
        c = self.cfg
        return f"Experiment({c.data.name}/{c.model.name}, seeds={list(c.seeds)}, out={str(self.out)!r})"

    @functools.cached_property
    def setting(self):
        """The prepared setting (data loaded, splits made, run directory created)."""
        from jaxmu.cli import enable_compile_cache
        from jaxmu.pipeline import prepare

        enable_compile_cache()
        return prepare(self.cfg, self.out)

    @property
    def run_dir(self) -> Path:
        return self.setting.run_dir

    @functools.cached_property
    def _references(self) -> dict[str, Any]:
        from jaxmu.pipeline import scored_references

        scored = scored_references(self.setting)
        return {"stacks": scored.stacks, "margins": scored.margins, "metrics": scored.metrics, "scored": scored}

    def references(self) -> ResultTable:
        """Train (or load) the original and retrained stacks; their per-seed metrics."""
        m = self._references["metrics"]
        return ResultTable.from_stacks({"original": m["original"], "retrain": m["retrain"]}, self.cfg.seeds,
                                       title="reference stacks")

    def _with_references(self, stacks: dict[str, dict[str, np.ndarray]], title: str,
                         params: dict[str, dict[str, Any]] | None = None) -> ResultTable:
        ref = self._references["metrics"]
        return ResultTable.from_stacks({**stacks, "retrain": ref["retrain"], "original": ref["original"]},
                                       self.cfg.seeds, title=title, params=params)

    def unlearn(self, method: str | M.Method, **hparams: Any) -> ResultTable:
        """Unlearn every seed with ``method`` (a name, call string or bound ``Method``); list-valued
        hyperparameters make a grid run as one stack (see module). Rows: one per (combination, seed),
        beside the retrained and original stacks."""
        base = method if isinstance(method, M.Method) else M.get(method)
        methods = [base.replace(**c) for c in _grid(hparams)]  # every combination validated first
        refs = self._references
        if len(methods) == 1:
            from jaxmu.pipeline import unlearn_stage

            res = unlearn_stage(self.setting, methods[0], refs["stacks"]["original"])
            stacks, caches = [(res.params, res.batch_stats)], [res.path]
        else:
            stacks, caches = self._unlearn_grid(methods), [None] * len(methods)
        from jaxmu.pipeline import stack_evaluation

        out, params = {}, {}
        for m, st, cache in zip(methods, stacks, caches):
            out[m.call_string()] = refs["scored"].score(stack_evaluation(self.setting, st, cache))
            params[m.call_string()] = dict(m.hparams)
        return self._with_references(out, f"{base.name} on {self.cfg.data.name}/{self.cfg.model.name}", params)

    def _unlearn_grid(self, methods: list[M.Method]) -> list[tuple[Any, Any]]:
        """Every combination x seed in one stack per static signature; checkpointed as a whole."""
        from jaxmu.checkpoint import load_tree, save_tree
        from jaxmu.methods.driver import with_stream_sizes
        from jaxmu.methods.stack import unlearn_stack, unlearning_key
        from jaxmu.pipeline import method_context, method_data

        s, spec = self.setting, methods[0].spec
        original = self._references["stacks"]["original"].state
        n_seeds = len(self.cfg.seeds)
        blob = json.dumps({"grid": [dict(m.hparams) for m in methods], "keys": self.cfg.unlearn_keys},
                          sort_keys=True, default=str)
        path = s.run_dir / "grid" / f"{spec.name}_{hashlib.sha256(blob.encode()).hexdigest()[:12]}"
        one = jax.eval_shape(lambda st: (st.params, st.batch_stats), original)
        template = jax.tree_util.tree_map(
            lambda x: jax.ShapeDtypeStruct((len(methods) * x.shape[0], *x.shape[1:]), x.dtype), one)
        if (path / "meta.json").exists():
            (params, bs), _ = load_tree(path, template)
        else:
            # ragged epoch counts that differ across the grid become arrays compiled for their maximum
            varying = {k for k in spec.ragged if len({m.hparams[k] for m in methods}) > 1}
            maxima = {k: max(m.hparams[k] for m in methods) for k in varying}
            size = with_stream_sizes(method_context(s), method_data(s)).size
            split = [spec.ragged_split(m.hparams, maxima, size) for m in methods]
            groups: dict[tuple, list[int]] = {}
            for i, (st, _) in enumerate(split):
                groups.setdefault(tuple(sorted(st.items())), []).append(i)
            pieces: dict[int, Any] = {}
            for sig, members in groups.items():
                rows = np.tile(np.arange(n_seeds), len(members))
                take = lambda t: jax.tree_util.tree_map(lambda x: x[rows], t)  # noqa: E731
                arrays = {k: np.repeat([split[i][1][k] for i in members], n_seeds).astype(np.float32)
                          for k in split[members[0]][1]}
                key = unlearning_key(list(self.cfg.seeds) * len(members),
                                     per_model=self.cfg.unlearn_keys == "per_model")
                res = unlearn_stack(spec, dict(sig), arrays, method_context(s), method_data(s),
                                    take(original.params), take(original.batch_stats), key,
                                    model_axis=s.model_axis, chunk_size=self.cfg.engine.chunk_size)
                for j, i in enumerate(members):
                    pieces[i] = jax.tree_util.tree_map(lambda x: x[j * n_seeds:(j + 1) * n_seeds],
                                                       (res.params, res.batch_stats))
            params, bs = jax.tree_util.tree_map(lambda *xs: np.concatenate(xs), *[pieces[i] for i in range(len(methods))])
            save_tree(path, (params, bs), {"stage": "grid", "method": spec.name,
                                           "calls": [m.call_string() for m in methods],
                                           "seeds": list(self.cfg.seeds), "unlearn_keys": self.cfg.unlearn_keys})
        return [jax.tree_util.tree_map(lambda x: x[i * n_seeds:(i + 1) * n_seeds], (params, bs))
                for i in range(len(methods))]

    def tune(self, method: str | M.Method, *, trials: int | None = None, storage: str | None = None) -> Tuned:
        """The sweep's tuning and final run for one method (``python -m jaxmu.sweep --method``):
        NSGA-III over the method's search space, ``trials`` per tuning seed (default: the config's),
        the lowest-norm trial applied to every seed. Cached and resumable exactly as the sweep's."""
        from jaxmu.sweep import sweep_method

        base = method if isinstance(method, M.Method) else M.get(method)
        tune_cfg = dataclasses.replace(self.cfg.tune, **({"trials": int(trials)} if trials is not None else {}),
                                       **({"storage": storage} if storage is not None else {}))
        cfg = self.cfg.replace(tune=tune_cfg)
        validate(cfg)
        setting = dataclasses.replace(self.setting, cfg=cfg)
        refs = self._references
        out = sweep_method(setting, base, refs["stacks"], refs["metrics"], quiet=not self.cfg.engine.progress,
                           references=refs["scored"])
        tuned = M.get(out["method"], **out["hparams"])
        metrics = {k: np.asarray(v, np.float64) for k, v in out["metrics"].items()}
        table = self._with_references({tuned.call_string(): metrics}, f"tuned {tuned.name}",
                                      {tuned.call_string(): dict(tuned.hparams)})
        return Tuned(tuned, table, out["trials"], out["best_trial"])

    def ulira(self, method: str | M.Method | Tuned) -> ResultTable:
        """U-LiRA (``python -m jaxmu.attack``) for ``method`` with the config's ``attack`` section:
        the attack's own result rows (``attack.population_rows``): per (population, formulation)
        accuracy, AUC and TPRs with bootstrap intervals, the ε forget score, KLOM and the study's
        own variant."""
        from jaxmu.attack import population_rows
        from jaxmu.results import identity
        from jaxmu.ulira_stage import run_ulira

        m = method.method if isinstance(method, Tuned) else method if isinstance(method, M.Method) else M.get(method)
        rep = run_ulira(self.setting, m)
        if rep is None:  # another process of a multi-host run reports
            return ResultTable([], title="U-LiRA (reported by process 0)", group_by=("population", "formulation"))
        rows = population_rows(rep, m.name, m.call_string(), identity(self.cfg, "attack", self.run_dir))
        return ResultTable(rows, title=f"U-LiRA: {m.call_string()}", group_by=("population", "formulation"))
