"""Hyperparameter search as the study did it, with trials run in vectorized batches (protocol §7).

* One Optuna study per tuning seed (0, 1, 2), four objectives, all minimised (§7.1):
  ``|RA_u - RA_R|/3, |FA_u - FA_R|/3, |VA_u - VA_R|/3, |2 ValMIA_u - 1|`` against the *same*
  seed's retrained model; D_t is never used. A trial whose model, D_f losses or D_v losses are not
  finite scores inf (as the reference scores a trial whose evaluation raises).
* Sampler: ``NSGAIIISampler`` (population 50). To make a killed-and-resumed search identical to
  an uninterrupted one, the sampler is re-created before every round with the seed
  ``seed * 100003 + number of trials so far`` (the sampler's in-memory RNG is not persisted by
  Optuna; the stored trials are).
* **Rounds**: each round asks up to ``batch`` trials from every study (ask/tell). The asked
  trials are grouped by their static settings (epochs, batch size, ...); each group runs as
  one vmapped program, every trial an entry along the models axis with its own continuous
  hyperparameters. Groups are not padded to a fixed size (``buckets``): a loop over models runs
  one model per device per call; a vmapped group runs in stacks of power-of-two sizes, each
  compiled once; only the last stack of a group is rounded up to the device count, and padded
  models are never evaluated.
* **Resume**: trials left RUNNING by a killed round are re-run with their stored parameters
  before new ones are asked, so no trial is lost or run twice.
* **Selection** (§7.2): the trial with the smallest L2 norm of its objectives over all studies;
  ties go to the lower seed, then the lower trial number.
* Epoch cap E_max = ceil(0.2 x training epochs) bounds every epoch hyperparameter (§7.1).
* UTKFace: trials with ``batch_size`` > 128 are told PRUNED unevaluated and do not count (§7.1).
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from typing import Any, Callable, Sequence

import jax
import numpy as np
import optuna

from jaxmu._faults import checkpoint_reached
from jaxmu.attacks.population_mia import population_mia_stacked
from jaxmu.engine.evaluate import evaluate_splits
from jaxmu.engine.finite import finite_rows
from jaxmu.methods import Choice, Float, Int, Method, epoch_cap, resolve_space
from jaxmu.methods.driver import with_stream_sizes
from jaxmu.methods.stack import ProgramCache, unlearn_stack, unlearning_key
from jaxmu.metrics import hpo_objectives, objective_score
from jaxmu.pipeline import Setting, method_context, method_data

optuna.logging.set_verbosity(optuna.logging.WARNING)


@dataclasses.dataclass(frozen=True)
class TrialResult:
    seed: int
    number: int
    params: dict[str, Any]
    objectives: tuple[float, float, float, float]

    @property
    def score(self) -> float:
        return float(objective_score(np.asarray(self.objectives)))


def tuning_method(method: Method) -> Method:
    """The method as the reference's HPO runs it: ``spec.tune_overrides`` applied to every
    hyperparameter the caller left at its default (SalUn's momentum 0.9, RNI's scalar fine
    learning rate). Every trial and the final run of a sweep use this method."""
    spec = method.spec
    return method.replace(**{k: v for k, v in spec.tune_overrides.items()
                             if method.hparams.get(k) == spec.defaults.get(k)})


def suggest(trial: optuna.Trial, space: dict) -> dict[str, Any]:
    """Draw a trial's hyperparameters from a resolved search space."""
    out = {}
    for name, d in space.items():
        if isinstance(d, Float):
            out[name] = trial.suggest_float(name, d.low, d.high, log=d.log)
        elif isinstance(d, Int):
            out[name] = trial.suggest_int(name, d.low, d.high)
        elif isinstance(d, Choice):
            out[name] = trial.suggest_categorical(name, list(d.choices))
        else:  # pragma: no cover
            raise TypeError(f"unknown distribution {d!r}")
    return out


def buckets(n: int, cap: int, model_axis: str, devices: int = 1) -> list[int]:
    """Sizes of the stacks that run a group of ``n`` trials, in units of ``devices``.

    The models axis is split over ``devices`` (``engine.sharding``), so a stack is a multiple of
    the device count: only the last stack is padded, by fewer than ``devices`` models, which run
    on otherwise idle devices and are dropped before evaluation. ``loop``: stacks of one model per
    device (a loop over models does the same work whatever the stack size, so one program per
    static signature serves every group and round). ``vmap`` / ``chunked``: chunks of ``cap``
    models, the rest in its binary decomposition (largest first; 13 with cap 8 -> 8, 4, 1), so a
    signature compiles at most ``log2(cap) + 1`` stack sizes over the whole sweep.
    """
    if n <= 0:
        return []
    units = -(-n // max(1, devices))
    if model_axis == "loop":
        sizes = [1] * units
    else:
        cap = max(1, cap // max(1, devices))
        sizes = [cap] * (units // cap)
        rest = units % cap
        bit = 1 << max(0, rest.bit_length() - 1)
        while rest:
            if rest & bit:
                sizes.append(bit)
                rest -= bit
            bit >>= 1
    return [s * max(1, devices) for s in sizes]


@dataclasses.dataclass
class TuningCounters:
    """Where tuning time goes, and how many models it ran (``bench/sweep.py`` reads these).

    ``models`` counts unlearned models (padding included: fewer than one per device per group),
    ``evaluated`` the rows that reached evaluation and the MIA (counted there), ``trials`` the
    trials asked for: ``evaluated / trials`` is 1.0 when no padded row is evaluated
    (``buckets``); ``programs`` the compiled unlearning programs.
    """

    compile_s: float = 0.0
    run_s: float = 0.0
    eval_s: float = 0.0
    mia_s: float = 0.0
    models: int = 0
    evaluated: int = 0
    trials: int = 0
    programs: int = 0


def ragged_maxima(method: Method, cfg) -> dict[str, int | float]:
    """The compiled epoch count of each searched ragged epoch hyperparameter: its search
    range's top (E_max for ``EP``; PRMQ's float ``EPF`` too). Trials differing only in those
    counts share one program."""
    space = resolve_space(method.spec.search_space, epoch_cap(cfg.train.epochs))
    return {k: space[k].high for k in method.spec.ragged if isinstance(space.get(k), (Int, Float))}


class TrialEvaluator:
    """Evaluates groups of trials as vmapped programs against the retrained stack.

    ``original``/``retrain_metrics`` cover every seed of the setting; a trial of seed ``s``
    unlearns row ``seeds.index(s)`` of the original stack. ``group_size`` caps the models of one
    vmapped stack (``buckets``); with ``model_axis="loop"`` every call runs one model per device.
    """

    def __init__(self, setting: Setting, method: Method, original_state, retrain_metrics: dict[str, np.ndarray],
                 group_size: int):
        self.setting = setting
        self.method = method
        self.original = original_state
        self.retrain = retrain_metrics
        self.group_size = group_size
        self.ctx = method_context(setting)
        self.data = method_data(setting)
        self.evaluator = setting.evaluator()  # one instance: its jitted programs are reused by every group
        self.seed_row = {s: i for i, s in enumerate(setting.cfg.seeds)}
        self.epoch_maxima = ragged_maxima(method, setting.cfg) if setting.cfg.engine.ragged_epochs else {}
        self.counters = TuningCounters()
        self._programs = ProgramCache()  # compiled once per static signature and stack size
        self._size = with_stream_sizes(self.ctx, self.data).size

    @property
    def compile_s(self) -> float:
        return self.counters.compile_s

    @property
    def run_s(self) -> float:
        return self.counters.run_s

    def evaluate(self, trials: Sequence[tuple[int, dict[str, Any]]]) -> list[tuple[float, float, float, float]]:
        """Objectives of ``(seed, params)`` trials, in order; grouped by static settings.

        Each group runs through ``unlearn_stack`` in unpadded stacks (``buckets``), each
        compiled once per static signature and size and reused by every round (searched epoch
        counts are not part of the signature: ``ragged_maxima``), with the
        setting's unlearning-key convention: a trial of seed ``s`` gets the key the final run
        gives seed ``s``.
        """
        cfg = self.setting.cfg
        groups: dict[tuple, list[int]] = {}
        hps = []
        for i, (_, params) in enumerate(trials):
            hp = self.method.spec.check_hparams({**self.method.hparams, **params})
            st, arr = self.method.spec.ragged_split(hp, self.epoch_maxima, self._size)
            hps.append((st, arr))
            groups.setdefault(tuple(sorted(st.items())), []).append(i)
        out: list[Any] = [None] * len(trials)
        mode = self.setting.model_axis
        for sig, members in groups.items():
            start = 0
            for size in buckets(len(members), self.group_size, mode, jax.device_count()):
                chunk = members[start:start + size]
                start += size
                real = len(chunk)
                chunk = chunk + [chunk[-1]] * (size - real)  # < one model per device, never evaluated
                rows = np.array([self.seed_row[trials[i][0]] for i in chunk])
                take = lambda t: jax.tree_util.tree_map(lambda x: x[rows], t)  # noqa: E731
                arrays = {k: np.array([hps[i][1][k] for i in chunk], np.float32) for k in hps[chunk[0]][1]}
                key = unlearning_key([trials[i][0] for i in chunk], per_model=cfg.unlearn_keys == "per_model")
                res = unlearn_stack(self.method.spec, dict(sig), arrays, self.ctx, self.data,
                                    take(self.original.params), take(self.original.batch_stats), key,
                                    model_axis=mode, chunk_size=cfg.engine.chunk_size,
                                    programs=self._programs)
                c = self.counters
                c.compile_s += res.compile_s
                c.run_s += res.run_s
                c.models += size
                c.trials += real
                c.programs = self._programs.compiled
                kept = jax.tree_util.tree_map(lambda x: x[:real], (res.params, res.batch_stats))
                for i, o in zip(chunk[:real], self._objectives(kept, rows[:real])):
                    out[i] = o
        return out

    def _objectives(self, stack, rows: np.ndarray) -> list[tuple[float, float, float, float]]:
        s = self.setting
        t0 = time.perf_counter()
        idx = {k: v for k, v in s.split_indices().items() if k != "test"}  # D_t never used in HPO
        ev = evaluate_splits(self.evaluator, stack[0], stack[1], idx, s.data)
        finite = finite_rows(stack[0])
        t1 = time.perf_counter()
        self.counters.eval_s += t1 - t0
        self.counters.evaluated += len(rows)
        forget, val = np.asarray(ev["forget"]["loss"], np.float64), np.asarray(ev["val"]["loss"], np.float64)
        finite &= np.isfinite(forget).all(axis=1) & np.isfinite(val).all(axis=1)
        # Val MIA of every finite row in one vectorized call (a fresh RandomState(123) per model,
        # as population_mia(..., rng=RandomState(123)) row by row; protocol §6.2)
        val_mia = np.full(len(rows), np.nan)
        if finite.any():
            val_mia[finite] = population_mia_stacked(forget[finite], val[finite], seed=123)
        res = []
        for j, r in enumerate(rows):
            if not finite[j]:  # a diverged trial, or one whose MIA cannot be evaluated, scores inf
                res.append((math.inf,) * 4)
                continue
            o = hpo_objectives(ev["retain"]["accuracy"][j], ev["forget"]["accuracy"][j], ev["val"]["accuracy"][j],
                               val_mia[j], self.retrain["retain_acc"][r], self.retrain["forget_acc"][r],
                               self.retrain["val_acc"][r])
            res.append(tuple(float(v) for v in np.asarray(o)))
        self.counters.mia_s += time.perf_counter() - t1
        return res


MAIN_WORKER = "main"
_WORKER_ATTR = "jaxmu_worker"


def open_storage(url: str):
    """An Optuna storage from a URL: any RDB URL (``sqlite:///``, ``postgresql://``,
    ``mysql://``) or ``journal:///PATH`` for a journal file (safe for several processes on one
    machine, where SQLite may report "database is locked").

    SQLite files run in write-ahead-log mode with ``synchronous=NORMAL``: every suggested
    parameter is a transaction, and a full fsync per commit made Optuna's bookkeeping ~40% of
    the default sweep's tuning time (5,500 commits at ~6 ms for 300 trials). WAL commits are
    atomic and survive a killed process (the sweep's kill-and-resume guarantee); only an OS
    crash or power loss may lose the last transactions, which the resume logic reruns.
    """
    if url.startswith("journal://"):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        return JournalStorage(JournalFileBackend(url[len("journal://"):]))
    if url.startswith("sqlite:"):
        return _sqlite_storage(url)
    return url


def _sqlite_storage(url: str) -> optuna.storages.RDBStorage:
    import sqlalchemy

    store = optuna.storages.RDBStorage(url)
    store.engine.dispose()  # connections opened while creating the tables: reopened with the pragmas

    def pragmas(conn, _record) -> None:
        cur = conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    sqlalchemy.event.listen(store.engine, "connect", pragmas)
    return store


_DRIVER_PACKAGES = {"psycopg2": "psycopg2-binary", "pymysql": "PyMySQL", "MySQLdb": "mysqlclient",
                    "psycopg": "'psycopg[binary]'", "asyncpg": "asyncpg"}
# the connect-timeout keyword of each network driver (seconds)
_TIMEOUT_ARGS = {"psycopg2": "connect_timeout", "psycopg": "connect_timeout", "pymysql": "connect_timeout",
                 "mysqldb": "connect_timeout", "pg8000": "timeout", "mysqlconnector": "connection_timeout"}
_URL_HELP = "use sqlite:///PATH, postgresql://USER@HOST/DB, mysql+pymysql://USER@HOST/DB or journal:///PATH"


def check_storage(url: str, timeout_s: float = 5.0) -> None:
    """Open the Optuna storage ``url`` once (creating its tables), or raise ``ConfigError``.

    Run by the sweep before any training, so a typo, a missing database driver or an
    unreachable server is one line naming the URL (its password hidden) rather than a
    traceback after the reference stacks are trained. A network database waits at most about
    ``timeout_s`` seconds to connect (the driver's ``connect_timeout``).
    """
    import sqlalchemy
    import sqlalchemy.exc

    from jaxmu.config import ConfigError

    shown = url
    try:
        if url.startswith("journal://"):
            open_storage(url)
            return
        parsed = sqlalchemy.engine.make_url(url)
        shown = parsed.render_as_string(hide_password=True)
        try:
            parsed.get_dialect().import_dbapi()
        except ImportError as e:
            mod = getattr(e, "name", None) or str(e)
            pkg = _DRIVER_PACKAGES.get(mod.split(".")[0], mod)
            raise ConfigError(f"storage {shown!r}: its database driver {mod!r} is not installed "
                              f"(pip install {pkg})") from None
        arg = _TIMEOUT_ARGS.get(parsed.get_driver_name())
        connect_args = {arg: max(1, round(timeout_s))} if arg else {}
        store = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": connect_args} if connect_args else None)
        store.engine.dispose()
    except ConfigError:
        raise
    except sqlalchemy.exc.NoSuchModuleError:
        raise ConfigError(f"storage {shown!r}: unknown database kind: {_URL_HELP}") from None
    except sqlalchemy.exc.ArgumentError:
        raise ConfigError(f"storage {shown!r} is not a database URL: {_URL_HELP}") from None
    except sqlalchemy.exc.DBAPIError as e:
        reason = " ".join(str(e.orig).split()) or type(e.orig).__name__
        raise ConfigError(f"storage {shown!r} cannot be opened ({reason}): check the server, the "
                          "path and the credentials, or drop --storage for a local SQLite file") from None
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, OSError, ValueError, RuntimeError) as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        raise ConfigError(f"storage {shown!r} cannot be opened ({reason}): {_URL_HELP}") from None


def tune(setting: Setting, method: Method, evaluator: TrialEvaluator, storage: str, study_prefix: str,
         progress: Callable[[int, int, float], None] | None = None, *, worker: str = MAIN_WORKER,
         wait: bool = True, poll_s: float = 2.0) -> list[TrialResult]:
    """Run (or resume) the studies until each has ``tune.trials`` complete trials.

    Several workers may share the studies through one storage (``worker`` names each; every
    trial records its worker). A worker reruns only its *own* trials left RUNNING by a kill, and
    asks new trials only while complete + running (all workers) is below the target; a trial
    asked past the target by a race is told PRUNED unevaluated (it does not count). With
    ``wait``, the worker then waits for other workers' running trials before returning.

    ``progress(done, total, best)`` is called after every round: complete trials over all
    studies, the target, and the best (lowest) objective norm so far (inf before any).
    """
    cfg = setting.cfg
    seeds = [s for s in cfg.tune.seeds if s in cfg.seeds]
    space = resolve_space(method.spec.search_space, epoch_cap(cfg.train.epochs))
    if not space:
        return [TrialResult(s, 0, {}, tuple(evaluator.evaluate([(s, {})])[0])) for s in seeds]
    store = optuna.storages.get_storage(open_storage(storage))
    studies = {s: optuna.create_study(storage=store, study_name=f"{study_prefix}_seed{s}", load_if_exists=True,
                                      directions=["minimize"] * 4) for s in seeds}
    total = cfg.tune.trials * len(seeds)
    salt = 0 if worker == MAIN_WORKER else int.from_bytes(worker.encode()[:4].ljust(4, b"\0"), "little")

    def done() -> int:
        return sum(_n_complete(st) for st in studies.values())

    def running(study, mine: bool):
        trials = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        return [t for t in trials if not mine or t.user_attrs.get(_WORKER_ATTR, MAIN_WORKER) == worker]

    def best_so_far() -> float:
        scores = [objective_score(np.asarray(t.values)) for st in studies.values()
                  for t in st.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))]
        return float(min(scores, default=math.inf))

    def run_round(pending) -> None:
        objs = evaluator.evaluate([(s, p) for s, _, p in pending])
        checkpoint_reached("tune:round")
        for (s, t, _), o in zip(pending, objs):
            study_id = store.get_study_id_from_name(studies[s].study_name)
            if store.get_trial(store.get_trial_id_from_study_id_trial_number(study_id, t.number)).state.is_finished():
                continue  # told meanwhile by another worker started under the same name: keep its result
            studies[s].tell(t.number, list(o))
        if progress:
            progress(done(), total, best_so_far())

    # Recovery: this worker's trials left RUNNING by a killed round are rerun (and told) before
    # anything new is asked, so the sampler then sees the history an uninterrupted run would.
    stale = [(s, ft, dict(ft.params)) for s, study in studies.items() for ft in running(study, mine=True)]
    if stale:
        run_round(stale)
    while True:
        pending: list[tuple[int, optuna.Trial, dict]] = []
        for s, study in studies.items():
            n_all, occupied = _counts(study)
            need = cfg.tune.trials - occupied
            if need <= 0:
                continue
            study.sampler = _nsga3(seed=s * 100003 + n_all + salt)
            asked = []
            for _ in range(min(need, cfg.tune.batch)):
                t = _ask_owned(study, store, space, worker)
                if pruned_by_reference(cfg.data.name, t.params):
                    study.tell(t, state=optuna.trial.TrialState.PRUNED)  # does not count; asked again
                    continue
                asked.append(t)
            excess = _counts(study)[1] - cfg.tune.trials  # other workers asked meanwhile
            for t in asked[len(asked) - max(0, excess):]:
                study.tell(t, state=optuna.trial.TrialState.PRUNED)  # another worker took the slot
            pending += [(s, t, dict(t.params)) for t in asked[:len(asked) - max(0, excess)]]
        if pending:
            run_round(pending)
            continue
        if not wait or all(_n_complete(st) >= cfg.tune.trials for st in studies.values()):
            break
        time.sleep(poll_s)  # other workers' trials are still running
    results = []
    for s, study in studies.items():
        complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
        for t in sorted(complete, key=lambda t: t.number)[: cfg.tune.trials]:
            results.append(TrialResult(s, t.number, dict(t.params), tuple(t.values)))
    return results


UTKFACE_MAX_BATCH = 128


def pruned_by_reference(dataset: str, params: dict[str, Any]) -> bool:
    """The reference's HPO prunes UTKFace trials whose ``batch_size`` exceeds 128 (protocol
    §7.1, ``pipeline/optuna_search_hp.py``). Only that field is read: SCRUB's retain/forget batch
    sizes are not checked, as in the reference."""
    return dataset == "utkface" and params.get("batch_size", 0) > UTKFACE_MAX_BATCH


def _nsga3(seed: int) -> optuna.samplers.BaseSampler:
    """The study's sampler (§7.1), without Optuna's "experimental" warning on every round."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.NSGAIIISampler(seed=seed)


def _ask_owned(study: optuna.Study, store, space: dict, worker: str) -> optuna.Trial:
    """``study.ask`` for a trial created already owned by ``worker``, its ``space`` suggested.

    The owner must be stored *with* the new RUNNING trial: ``ask`` followed by
    ``set_user_attr`` leaves a moment in which another worker starting up sees an unowned
    RUNNING trial, takes it for its own trial left by a kill, reruns it and fails telling a
    trial the owner has meanwhile completed (seen in CI).
    """
    template = optuna.trial.create_trial(state=optuna.trial.TrialState.RUNNING, user_attrs={_WORKER_ATTR: worker})
    trial_id = store.create_new_trial(store.get_study_id_from_name(study.study_name), template_trial=template)
    trial = optuna.Trial(study, trial_id)
    suggest(trial, space)
    return trial


def _counts(study: optuna.Study) -> tuple[int, int]:
    """(all trials, trials COMPLETE or RUNNING) of ``study``, from one read of the storage."""
    trials = study.get_trials(deepcopy=False)
    return len(trials), sum(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING)
                            for t in trials)


def _n_complete(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))


def select_best(results: Sequence[TrialResult]) -> TrialResult:
    """Lowest L2 norm of the objectives; ties: lower seed, then lower trial number (§7.2)."""
    return min(results, key=lambda r: (r.score, r.seed, r.number))
