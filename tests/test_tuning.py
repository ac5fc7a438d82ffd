"""Trial ownership in a shared study: fast checks of ``jaxmu.tuning.tune`` with a fake evaluator.

The end-to-end two-worker run is ``test_sweep.py::test_two_workers_share_one_study``; these
tests pin the two rules it depends on without compiling anything.
"""

from __future__ import annotations

from types import SimpleNamespace

import optuna
import pytest

import jaxmu.methods as M
import jaxmu.tuning as T

RUNNING = optuna.trial.TrialState.RUNNING
COMPLETE = optuna.trial.TrialState.COMPLETE


class CountingEvaluator:
    """Objectives from the learning rate; records every trial it is asked to run."""

    def __init__(self):
        self.calls: list[tuple[int, dict]] = []

    def evaluate(self, trials):
        self.calls += list(trials)
        return [(p["learning_rate"], 0.0, 0.0, 0.0) for _, p in trials]


class OwnershipRecordingStorage(optuna.storages.InMemoryStorage):
    """Records the owner each trial has at the moment it is created (None: not yet owned)."""

    def __init__(self):
        super().__init__()
        self.owner_at_creation: list[str | None] = []

    def create_new_trial(self, study_id, template_trial=None):
        trial_id = super().create_new_trial(study_id, template_trial)
        self.owner_at_creation.append(self.get_trial(trial_id).user_attrs.get(T._WORKER_ATTR))
        return trial_id


def _setting(trials: int = 3, batch: int = 2):
    cfg = SimpleNamespace(seeds=(0,), train=SimpleNamespace(epochs=5), data=SimpleNamespace(name="digits"),
                          tune=SimpleNamespace(seeds=(0,), trials=trials, batch=batch))
    return SimpleNamespace(cfg=cfg)


@pytest.fixture
def storage(monkeypatch):
    store = OwnershipRecordingStorage()
    monkeypatch.setattr(T, "open_storage", lambda url: store)
    return store


def test_a_new_trial_is_owned_from_the_moment_it_exists(storage):
    """A worker starting up must never see another worker's RUNNING trial without its owner
    (it would take it for its own killed trial and rerun it: the CI failure of stop 8)."""
    ev = CountingEvaluator()
    results = T.tune(_setting(), M.get("finetune"), ev, "shared", "s", worker="w2")
    assert len(results) == 3 and len(ev.calls) == 3
    assert storage.owner_at_creation == ["w2"] * 3


def test_a_worker_reruns_only_its_own_running_trials(storage):
    """Left RUNNING: one trial of the helper (still at work) and one of a killed main worker.
    The main worker reruns its own, leaves the helper's alone and fills the rest."""
    method = M.get("finetune")
    study = optuna.create_study(storage=storage, study_name="s_seed0", directions=["minimize"] * 4)
    space = M.resolve_space(method.spec.search_space, M.epoch_cap(5))
    helpers = T._ask_owned(study, storage, space, "w2")
    killed = T._ask_owned(study, storage, space, T.MAIN_WORKER)
    ev = CountingEvaluator()
    T.tune(_setting(trials=3), method, ev, "shared", "s", wait=False)
    states = {t.number: t.state for t in study.get_trials()}
    assert states[helpers.number] == RUNNING  # the helper's trial is still the helper's
    assert states[killed.number] == COMPLETE
    assert ev.calls[0] == (0, killed.params)  # rerun first, with its stored parameters
    assert len(ev.calls) == 2 and list(states.values()).count(COMPLETE) == 2  # 2 done + 1 running = 3


def test_a_trial_told_meanwhile_keeps_its_first_result(storage):
    """Two workers mistakenly started under one name both rerun a killed trial: the second
    to finish keeps the first result instead of failing on Optuna's "Cannot tell"."""
    method = M.get("finetune")
    study = optuna.create_study(storage=storage, study_name="s_seed0", directions=["minimize"] * 4)
    killed = T._ask_owned(study, storage, M.resolve_space(method.spec.search_space, M.epoch_cap(5)), T.MAIN_WORKER)

    class TwinFinishesFirst(CountingEvaluator):
        def evaluate(self, trials):
            if study.get_trials()[killed.number].state == RUNNING:
                study.tell(killed.number, [9.0] * 4)  # the twin worker's result lands first
            return super().evaluate(trials)

    T.tune(_setting(trials=2), method, TwinFinishesFirst(), "shared", "s")
    assert study.get_trials()[killed.number].values == [9.0] * 4
    assert [t.state for t in study.get_trials()] == [COMPLETE, COMPLETE]


@pytest.mark.parametrize("n,cap,mode,devices,expected", [
    (0, 8, "vmap", 1, []), (1, 8, "vmap", 1, [1]), (5, 8, "vmap", 1, [4, 1]), (8, 8, "vmap", 1, [8]),
    (13, 8, "vmap", 1, [8, 4, 1]), (7, 32, "chunked", 1, [4, 2, 1]), (3, 8, "loop", 1, [1, 1, 1]),
    (3, 8, "loop", 2, [2, 2]), (5, 8, "vmap", 2, [4, 2]), (1, 8, "vmap", 2, [2]),
])
def test_groups_are_padded_by_less_than_one_model_per_device(n, cap, mode, devices, expected):
    sizes = T.buckets(n, cap, mode, devices)
    assert sizes == expected and 0 <= sum(sizes) - n < devices
    assert all(s % devices == 0 and (s // devices) & (s // devices - 1) == 0 for s in sizes)  # few shapes


def test_salun_is_tuned_and_finally_run_with_momentum_0_9(tmp_path, monkeypatch):
    """The reference's SalUn HPO fixes the generic momentum at 0.9 (munl/settings.py): every
    trial and the final run of a sweep get 0.9, although SalUn's default is 0 (issue 13)."""
    import numpy as np

    import jaxmu.pipeline as P
    from jaxmu.config import load_config
    from jaxmu.sweep import sweep_method

    seen: dict[str, object] = {}

    class RecordingEvaluator:
        counters = T.TuningCounters()
        compile_s = run_s = 0.0

        def __init__(self, setting, method, *args, **kwargs):
            seen["trials"] = method.hparams["momentum"]

    def fake_tune(setting, method, evaluator, *args, **kwargs):
        return [T.TrialResult(0, 0, {"learning_rate": 0.01}, (0.1, 0.1, 0.1, 0.1))]

    def fake_unlearn_stage(setting, method, original):
        seen["final"] = method.hparams["momentum"]
        return SimpleNamespace(params=None, batch_stats=None, run_s=1.0, compile_s=0.0, path=tmp_path)

    monkeypatch.setattr(T, "TrialEvaluator", RecordingEvaluator)
    monkeypatch.setattr(T, "tune", fake_tune)
    monkeypatch.setattr(P, "unlearn_stage", fake_unlearn_stage)
    monkeypatch.setattr(P, "stack_evaluation", lambda setting, stack, cache=None: None)
    monkeypatch.setattr(P, "split_metrics", lambda scores: {"forget_acc": np.zeros(1)})
    monkeypatch.setattr(P, "with_retention", lambda m, r: m)
    setting = SimpleNamespace(cfg=load_config(None, ["seeds=1", "tune.seeds=[0]"]), run_dir=tmp_path)
    refs = {"original": SimpleNamespace(state=None), "retrain": SimpleNamespace(run_s=1.0)}
    out = sweep_method(setting, M.get("salun"), refs, {"retrain": {}}, quiet=True)
    assert seen == {"trials": 0.9, "final": 0.9} and out["hparams"]["momentum"] == 0.9
    explicit = T.tuning_method(M.get("salun", momentum=0.5))
    assert explicit.hparams["momentum"] == 0.5  # an explicit choice is kept


def test_utkface_prunes_batch_sizes_above_128(storage):
    """protocol §7.1: on UTKFace the reference prunes trials with batch_size > 128; pruned
    trials do not count toward the target and are never evaluated."""
    ev = CountingEvaluator()
    setting = _setting(trials=6, batch=4)
    setting.cfg.data = SimpleNamespace(name="utkface")
    results = T.tune(setting, M.get("finetune"), ev, "shared", "s")
    assert len(results) == 6 and len(ev.calls) == 6
    assert all(p["batch_size"] <= 128 for _, p in ev.calls)
    study = optuna.load_study(study_name="s_seed0", storage=storage)
    pruned = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned and all(t.params["batch_size"] > 128 for t in pruned)


def test_objectives_compute_the_val_mia_of_a_group_in_one_call(monkeypatch):
    """``TrialEvaluator._objectives`` with a faked evaluation: the Val MIA of every finite row
    comes from one ``population_mia_stacked`` call and equals the per-row scikit-learn MIA
    (fresh RandomState(123) each); a row with non-finite parameters, D_f or D_v losses scores
    inf."""
    import numpy as np

    from jaxmu.attacks.population_mia import population_mia
    from jaxmu.metrics import hpo_objectives

    g = np.random.default_rng(0)
    m = 5
    ev = {name: {"loss": g.gamma(1.0 + 0.2 * k, size=(m, 30 + 10 * k)), "accuracy": g.random(m)}
          for k, name in enumerate(("retain", "forget", "val"))}
    ev["val"]["loss"][2, 0] = np.nan
    ev["forget"]["loss"][4, 3] = np.inf
    params = {"w": np.ones((m, 3))}
    params["w"][3, 1] = np.inf
    calls = []
    stacked = T.population_mia_stacked
    monkeypatch.setattr(T, "evaluate_splits", lambda *a, **k: ev)
    monkeypatch.setattr(T, "population_mia_stacked",
                        lambda f, h, **kw: calls.append(len(f)) or stacked(f, h, **kw))
    setting = SimpleNamespace(split_indices=lambda: {"retain": 0, "forget": 1, "val": 2, "test": 3},
                              evaluator=lambda: None, data=None)
    ev_obj = object.__new__(T.TrialEvaluator)
    ev_obj.setting = setting
    ev_obj.evaluator = None
    ev_obj.counters = T.TuningCounters()
    ev_obj.retrain = {k: np.array([0.9, 0.8]) for k in ("retain_acc", "forget_acc", "val_acc")}
    rows = np.array([0, 1, 1, 0, 1])
    out = ev_obj._objectives((params, {}), rows)
    assert calls == [2]  # one call, for the two finite rows
    assert [out[j] for j in (2, 3, 4)] == [(float("inf"),) * 4] * 3
    for j in (0, 1):
        mia = population_mia(ev["forget"]["loss"][j], ev["val"]["loss"][j], rng=np.random.RandomState(123))
        want = hpo_objectives(ev["retain"]["accuracy"][j], ev["forget"]["accuracy"][j], ev["val"]["accuracy"][j],
                              mia, 0.9 - 0.1 * rows[j], 0.9 - 0.1 * rows[j], 0.9 - 0.1 * rows[j])
        np.testing.assert_allclose(out[j], want, atol=1e-6)
