"""The method contract suite, for the built-in methods and a researcher's own: ``check_method``.

    >>> import jaxmu.methods as M
    >>> from jaxmu.testing import check_method
    >>> check_method(MY_SPEC)      # raises AssertionError / MethodError naming the broken rule

On a tiny built-in setting (``TinySetting``: a digits CNN stack of 2 models trained 3 epochs,
small splits) and with every epoch count at 1 (``fast_hparams``), a method must:

* be well formed (``jaxmu.methods.check_spec``: defaults and search ranges inside their domains);
* refuse a value just outside each domain when bound (``check_refuses_out_of_domain``);
* compile once: a second call with other hyperparameter values does not retrace (``check_no_retrace``);
* give under ``vmap`` over the models axis what a Python loop over the same models gives, each
  with its own hyperparameters (``check_vmap_equals_loop``);
* give bit-identical results for the same key, with the input's shapes and dtypes
  (``check_deterministic``), and finite models with its defaults (``check_finite``);
* run ragged epochs as a program compiled for each count (``check_ragged``), if it declares any.

``tests/test_methods_contract.py`` runs these same functions over every built-in method, and
``tests/conftest.py``'s ``tiny`` fixture is a ``TinySetting``. Compile cost stays small: one
stack program (2 models) per method serves the first five checks, plus one 1-model program and
one ragged program.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Mapping

import chex
import jax
import jax.numpy as jnp
import numpy as np

import jaxmu.methods as M
from jaxmu.data import Dataset, Splits
from jaxmu.methods.stack import Unlearner, stack_hparams, unlearning_key

K = 2
"""Models in the contract's stack."""

TOLERANCE = {"rtol": 2e-4, "atol": 2e-4}
"""vmap versus loop (programs fuse differently; Adam amplifies last-bit differences)."""


class TinySetting:
    """A small digits CNN stack for method tests: 2 models trained 3 epochs, small splits.

    Attributes: ``ctx`` (StaticContext), ``data`` (SplitData with 240 retain, 60 forget,
    60 val indices), ``params``/``batch_stats`` (stacked, 2 models), ``test_idx``, ``model``.

        >>> tiny = TinySetting.build()              # loads digits and its split itself
        >>> tiny = TinySetting(digits, splits, arch="mlp", num_models=3)
    """

    def __init__(self, digits: Dataset, splits: Splits, arch: str = "cnn", num_models: int = 2):
        from jaxmu.training import Trainer
        from jaxmu.types import DeviceData
        from jaxmu.models import build_model

        self.model = build_model(arch, digits.num_classes, digits.images.shape[1:])
        self.ctx = M.StaticContext(self.model, digits.num_classes, digits.mean, digits.std, "flip")
        retain, forget, val = splits.retain[:240], splits.forget[:60], splits.val[:60]
        self.data = M.SplitData(jnp.asarray(digits.images), jnp.asarray(digits.labels),
                                jnp.asarray(retain), jnp.asarray(forget), jnp.asarray(val))
        self.test_idx = splits.test[:200]
        tr = Trainer(self.model, 32, 3, "none", digits.mean, digits.std)
        keys = jnp.stack([jax.random.PRNGKey(s) for s in range(num_models)])
        st = tr.init(keys, 0.05, 0.9, 5e-4)
        train_idx = jnp.concatenate([self.data.retain, self.data.forget])
        st = tr.run_epochs(st, train_idx, jax.random.PRNGKey(123), jnp.int32(3),
                           DeviceData(self.data.images, self.data.labels))
        self.params, self.batch_stats = st.params, st.batch_stats

    @classmethod
    def build(cls, arch: str = "cnn", num_models: int = 2) -> "TinySetting":
        """The setting on the embedded digits dataset and its default split."""
        from jaxmu.data import load_dataset, make_splits

        digits = load_dataset("digits")
        return cls(digits, make_splits(digits), arch=arch, num_models=num_models)

    def accuracy(self, params, batch_stats, idx):
        """Accuracy ``[models]`` of a stack on index set ``idx`` (eval mode)."""
        from jaxmu.engine.evaluate import Evaluator
        from jaxmu.types import DeviceData
        from jaxmu.metrics import accuracy

        ev = Evaluator(self.model, self.ctx.mean, self.ctx.std, batch_size=256)
        logits = ev.logits(params, batch_stats, np.asarray(idx), DeviceData(self.data.images, self.data.labels))
        return np.asarray(accuracy(logits, self.data.labels[np.asarray(idx)]))


def fast_hparams(spec: M.MethodSpec) -> dict[str, Any]:
    """Defaults with every epoch count at 1 (keeps each method's program small).

    BT's incompetent ResNet-18 teacher costs about a minute of compilation per program on
    2 CPU cores; the contract (vmap, retrace, determinism) does not depend on the teacher's
    architecture, so it runs with ``same_arch`` here (test_method_bad_teacher covers resnet18).
    """
    out: dict[str, Any] = {}
    if "incompetent_teacher" in spec.defaults:
        out["incompetent_teacher"] = "same_arch"
    for name in spec.static:
        v = spec.defaults[name]
        if isinstance(v, (int, float)) and not isinstance(v, bool) and "epoch" in name:
            out[name] = type(v)(1)
        if name == "msteps":
            out[name] = 1
    return out


def varied(arrays: Mapping[str, float]) -> dict[str, np.ndarray]:
    """Model 0 keeps the value, model 1 gets half of it (stays inside every search range)."""
    return {k: np.array([v, 0.5 * v], np.float32) for k, v in arrays.items()}


def leaves(tree) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def bind(spec: M.MethodSpec, **hparams: Any) -> M.Method:
    """``spec`` bound to ``hparams``: through the registry (``M.get``) when it is registered under
    its name, else exactly as ``M.get`` binds (``check_hparams``)."""
    if M.METHODS.get(spec.name) is spec:
        return M.get(spec.name, **hparams)
    return M.Method(spec, spec.check_hparams(hparams))


@dataclasses.dataclass(frozen=True)
class ContractRun:
    """One method run on the tiny stack, shared by the checks (one compiled stack program).

    Attributes:
      spec: the method; ``method``: it bound to ``fast_hparams``; ``static``: its static part.
      un: the stack program (vmap over ``K`` models), its ``init`` allowed one trace.
      hp: per-model array hyperparameters (``varied``); ``key``: the unlearning key.
      out: the unlearned stack with ``hp``; ``default_out``: with the defaults on every model.
    """

    spec: M.MethodSpec
    method: M.Method
    un: Unlearner
    hp: dict[str, Any]
    key: Any
    out: Any
    default_out: Any
    static: tuple


def contract_run(spec: M.MethodSpec, tiny: TinySetting, hparams: Mapping[str, Any] | None = None) -> ContractRun:
    """Run ``spec`` (bound to ``fast_hparams`` updated by ``hparams``) on ``tiny``'s stack twice:
    with per-model hyperparameters and with the defaults."""
    method = bind(spec, **{**fast_hparams(spec), **(hparams or {})})
    # fails (AssertionError) at a second trace of the method (its init runs once per trace);
    # chex keys its counters by source, and methods share init functions: start from zero
    chex.clear_trace_counter()
    counted = dataclasses.replace(spec, init=chex.assert_max_traces(spec.init, n=1))
    static = tuple(sorted(method.static.items()))
    hp = stack_hparams(varied(method.arrays), K)
    key = unlearning_key()
    un = Unlearner(counted, static, tiny.ctx, model_axis="vmap")
    out = un(tiny.data, tiny.params, tiny.batch_stats, hp, key)
    default_out = un(tiny.data, tiny.params, tiny.batch_stats, stack_hparams(method.arrays, K), key)
    jax.block_until_ready((out, default_out))
    return ContractRun(spec, method, un, hp, key, out, default_out, static)


def _row(t, i: int, n: int = 1):
    """Model ``i`` of a stack as a stack of ``n`` copies (``n=0``: the bare model)."""
    if n == 0:
        return jax.tree_util.tree_map(lambda x: x[i], t)
    return jax.tree_util.tree_map(lambda x: jnp.concatenate([x[i : i + 1]] * n), t)


def check_no_retrace(run: ContractRun, tiny: TinySetting) -> None:
    """A second call with other hyperparameter values reuses the program (a retrace raises)."""
    hp2 = {k: v * 0.9 for k, v in run.hp.items()}
    jax.block_until_ready(run.un(tiny.data, tiny.params, tiny.batch_stats, hp2, run.key))


def check_vmap_equals_loop(run: ContractRun, tiny: TinySetting, *, copies: int = 1) -> None:
    """Each model of the vmapped stack equals that model run alone with its own hyperparameters.

    ``copies``: how many copies of the model the single run stacks (``K`` for methods whose
    result is sensitive to summation order at a rank threshold, as MSG: the same program as the
    stack's then; its result must not depend on the other models nor their hyperparameters).
    """
    single = Unlearner(run.spec, run.static, tiny.ctx, model_axis="vmap")
    for i in range(K):
        hp_i = _row(run.hp, i, copies)
        p, bs = single(tiny.data, _row(tiny.params, i, copies), _row(tiny.batch_stats, i, copies), hp_i, run.key)
        chex.assert_trees_all_close(_row(run.out, i), _row((p, bs), 0), **TOLERANCE)


def check_deterministic(run: ContractRun, tiny: TinySetting) -> None:
    """The same key gives bit-identical results, with the input's shapes and dtypes."""
    again = run.un(tiny.data, tiny.params, tiny.batch_stats, run.hp, run.key)
    chex.assert_trees_all_equal(run.out, again)
    chex.assert_trees_all_equal_shapes_and_dtypes((tiny.params, tiny.batch_stats), run.out)


def check_finite(run: ContractRun) -> None:
    """Nothing is NaN or infinite with the default hyperparameters."""
    p, bs = run.default_out
    for leaf in leaves(p) + leaves(bs):
        assert np.all(np.isfinite(leaf)), f"{run.spec.name}: non-finite values with default hyperparameters"


def check_ragged(run: ContractRun, tiny: TinySetting) -> None:
    """Ragged epochs (docs/methods.md §6.2): every count a phase or pass of the plan names is in
    ``spec.ragged`` (so tuning passes it per model); compiled for 2 with per-model counts [1, 2]
    (every ragged name at once), model 0 gets the result of the program compiled for 1
    (vmap-versus-loop tolerance) and model 1 something else."""
    from jaxmu.methods.driver import with_stream_sizes

    spec = run.spec
    plan = spec.plan(with_stream_sizes(tiny.ctx.with_static(dict(run.static)), tiny.data))
    counts = {ph.count for ph in plan if ph.count} | {p.count for ph in plan for p in ph.passes if p.count}
    assert counts <= set(spec.ragged), f"{spec.name}: plan counts {sorted(counts - set(spec.ragged))} not ragged"
    if not spec.ragged:
        return
    size = with_stream_sizes(tiny.ctx, tiny.data).size
    full = spec.check_hparams(dict(run.static))
    rows = [spec.ragged_split({**full, **{k: type(spec.defaults[k])(n) for k in spec.ragged}},
                              {k: 2 for k in spec.ragged}, size) for n in (1, 2)]
    static = rows[0][0]
    hp = {**run.hp, **{k: jnp.array([r[1][k] for r in rows], jnp.float32) for k in spec.ragged}}
    un = Unlearner(spec, tuple(sorted(static.items())), tiny.ctx, model_axis="vmap")
    out = un(tiny.data, tiny.params, tiny.batch_stats, hp, run.key)
    chex.assert_trees_all_close(_row(out, 0, 0), _row(run.out, 0, 0), **TOLERANCE)
    assert any(np.any(a != b) for a, b in zip(leaves(_row(out[0], 1, 0)), leaves(_row(run.out[0], 1, 0)))), \
        "model 1's second epoch did not run"


def _refused(bind_fn: Callable[[], Any], pattern: str) -> None:
    """``bind_fn()`` raises a ``MethodError`` whose message matches ``pattern`` (``re.search``)."""
    try:
        bind_fn()
    except M.MethodError as e:
        assert re.search(pattern, str(e)), f"MethodError {str(e)!r} does not match {pattern!r}"
        return
    raise AssertionError(f"no MethodError matching {pattern!r}: the value was accepted")


def check_refuses_out_of_domain(spec: M.MethodSpec) -> None:
    """Just past each finite bound (or a value not among the choices) is a ``MethodError`` naming
    the domain, when bound and when replaced."""
    for k, dom in spec.domains.items():
        d = spec.defaults[k]
        bad = []
        if isinstance(dom, M.OneOf):
            bad.append(not d if isinstance(d, bool) else "bogus")
        else:
            step = 1 if isinstance(d, int) else 1e-3
            if np.isfinite(dom.low):
                bad.append(dom.low if dom.low_open else type(d)(dom.low - step))
            if np.isfinite(dom.high):
                bad.append(dom.high if dom.high_open else type(d)(dom.high + step))
        for v in bad:
            if dom.contains(v):  # a boolean switch: both values are legal
                continue
            _refused(lambda: bind(spec, **{k: v}), f"{spec.name}.{k} = .* outside its domain")
            m = bind(spec)
            _refused(lambda: m.replace(**{k: v}), "outside its domain")


def check_method(spec: M.MethodSpec, tiny: TinySetting | None = None, *, hparams: Mapping[str, Any] | None = None,
                 copies: int = 1) -> ContractRun:
    """Run the whole contract suite on ``spec`` (registered or not); returns the shared run.

    Args:
      spec: the method.
      tiny: the setting (default: ``TinySetting.build()``, a few seconds of training).
      hparams: hyperparameters over ``fast_hparams`` (e.g. a smaller batch size).
      copies: see ``check_vmap_equals_loop``.
    Raises:
      MethodError: the spec is malformed; AssertionError: a contract rule is broken.
    """
    M.check_spec(spec)
    check_refuses_out_of_domain(spec)
    tiny = tiny if tiny is not None else TinySetting.build()
    run = contract_run(spec, tiny, hparams)
    check_no_retrace(run, tiny)
    check_vmap_equals_loop(run, tiny, copies=copies)
    check_deterministic(run, tiny)
    check_finite(run)
    check_ragged(run, tiny)
    return run


__all__ = [
    "K", "TOLERANCE", "ContractRun", "TinySetting", "bind", "check_deterministic", "check_finite", "check_method",
    "check_no_retrace", "check_ragged", "check_refuses_out_of_domain", "check_vmap_equals_loop", "contract_run",
    "fast_hparams", "leaves", "varied",
]
