"""The contract every built-in method meets (docs/architecture.md#adding-a-method), parameterized over the registry.

The checks are ``jaxmu.testing``'s (the same code ``check_method`` runs on a researcher's method);
this file adds the benchmark's own rules (momentum fixed, every architecture, goldens). For each
method, on the tiny digits CNN stack (2 models): the jitted stack program does not
retrace on a second call with other hyperparameter values; vmap over the models equals a Python
loop over single-model stacks with each model's own hyperparameters (so hyperparameters may
differ along the models axis); the same key gives bit-identical results; output shapes and
dtypes equal the input's; nothing is NaN with default hyperparameters. A method is covered by
being registered.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmu.methods as M
from jaxmu import testing as T
from jaxmu.methods.stack import unlearning_key

K = T.K
PARAMS = M.builtin_names()  # a researcher's registered methods are checked by jaxmu.testing.check_method


@pytest.fixture(scope="module", params=PARAMS)
def contract(request, tiny):
    return T.contract_run(M.METHODS[request.param], tiny)


def test_no_retrace_on_second_call(contract, tiny):
    """The run is wrapped in ``chex.assert_max_traces(n=1)``: a retrace raises here."""
    T.check_no_retrace(contract, tiny)


# MSG re-initialises the entries whose |gradient| ranks lowest. The 1-model program sums in
# another order than the 2-model one, and a last-bit gradient difference can move an entry on
# the rank threshold across it (seen: 2 of 4608 kernel entries), after which the trajectories
# part. For MSG each model therefore runs alone in a stack of K copies of itself (the same
# program as the stack's): its result must not depend on the other models nor on their
# hyperparameters, to float tolerance.
RANK_THRESHOLD = {"msg"}


def test_vmap_equals_python_loop_with_per_model_hparams(contract, tiny):
    T.check_vmap_equals_loop(contract, tiny, copies=K if contract.spec.name in RANK_THRESHOLD else 1)


def test_same_key_same_result_and_stable_shapes(contract, tiny):
    T.check_deterministic(contract, tiny)


def test_defaults_give_finite_models(contract):
    T.check_finite(contract)


def test_ragged_epochs_equal_a_program_compiled_for_the_count(contract, tiny):
    """Ragged epochs (docs/methods.md §6.2, issue 13): a method compiled for 2 epochs with per-model
    counts [1, 2] (``Phase.count``) gives model 0 the result of the 1-epoch program, and model 1
    one more epoch. Under vmap the two programs fuse differently, so the tolerance is the
    vmap-versus-loop one (Adam in BT amplifies last-bit differences); in a loop over models the
    results are bit-identical (``test_ragged_epochs.py``). Every name in ``spec.ragged`` is some phase's count; methods without ragged
    counts have none (their epochs stay static)."""
    T.check_ragged(contract, tiny)


def test_spec_is_well_formed(contract):
    """``check_spec``: searched and static names have defaults, dead ones are never searched (and
    more, below); the benchmark's own rule on top: momentum is fixed."""
    spec = contract.spec
    M.check_spec(spec)
    assert "momentum" not in spec.search_space, "momentum is fixed at 0.9 (docs/methods.md §2.4)"


def test_registry_api():
    assert "finetune" in M.names()
    m = M.get("finetune(learning_rate=0.01)", epochs=2)
    assert m.hparams["learning_rate"] == 0.01 and m.static["epochs"] == 2
    with pytest.raises(M.MethodError, match="unknown method 'nope': valid are"):
        M.get("nope")
    with pytest.raises(M.MethodError, match="no hyperparameter 'alpha'"):
        M.get("finetune", alpha=0.5)
    with pytest.raises(M.MethodError, match="must be an integer"):
        M.get("finetune", epochs=1.5)
    with pytest.raises(M.MethodError, match="cannot parse"):
        M.get("finetune(")


@pytest.mark.parametrize("arch", ["mlp", "resnet18"])
@pytest.mark.parametrize("name", PARAMS)
def test_every_architecture_runs_or_says_why(name, arch, digits, tiny):
    """Each method traces on each architecture, or raises a MethodError that says why (no compile)."""
    from jaxmu.models import build_model

    model = build_model(arch, digits.num_classes, digits.images.shape[1:])
    ctx = M.StaticContext(model, digits.num_classes, digits.mean, digits.std, "flip")
    m = M.get(name, **T.fast_hparams(M.METHODS[name]))
    params, bs = jax.eval_shape(model.init, jax.random.PRNGKey(0))
    hp = {k: jnp.float32(v) for k, v in m.arrays.items()}
    try:
        out = jax.eval_shape(lambda p, b: m.spec.unlearn_one(ctx, tiny.data, p, b, hp, unlearning_key(), static=m.static),
                             params, bs)
    except M.MethodError as e:
        assert arch == "mlp" and "conv" in str(e).lower(), str(e)  # only conv-based methods refuse the MLP
        return
    assert jax.tree_util.tree_structure(out[0]) == jax.tree_util.tree_structure(params)


@pytest.mark.parametrize("name", PARAMS)
def test_every_hyperparameter_has_a_domain_holding_its_default_and_search_space(name):
    """Domains (what a user may set) cover every default and every search range, for several E_max
    (``check_spec``, the check every registered method passes too)."""
    spec = M.METHODS[name]
    assert set(spec.domains) == set(spec.defaults)
    assert M.E_MAX_PROBES == (1, 2, 10, 19, 37)
    M.check_spec(spec)


@pytest.mark.parametrize("name", PARAMS)
def test_values_outside_a_domain_are_refused_when_bound(name):
    """Just past each finite bound (or a value not among the choices) is a MethodError naming the domain."""
    T.check_refuses_out_of_domain(M.METHODS[name])


def test_domain_error_names_the_domain():
    with pytest.raises(M.MethodError, match=r"ng_plus.alpha = 2.0 is outside its domain \[0, 1\] \(a weight"):
        M.get("ng_plus(alpha=2.0)")
    with pytest.raises(M.MethodError, match=r"bn_mode = 'evl' is outside its domain \{'eval', 'train'\}"):
        M.get("ng_plus(bn_mode='evl')")
    M.get("ng_plus(alpha=1.0, learning_rate=0.5)")  # beyond the searched range, inside the domain


GOLDENS = Path(__file__).parent / "fixtures" / "method_goldens.json"


def _golden_summary(tree) -> dict:
    """A digest of an unlearned stack: sha256 of every leaf's bytes, and float64 sums to compare
    within tolerance where the bytes cannot (another jax/XLA version)."""
    leaves = T.leaves(tree)
    digest = hashlib.sha256(b"".join(np.ascontiguousarray(x).tobytes() for x in leaves)).hexdigest()
    flat = np.concatenate([x.astype(np.float64).ravel() for x in leaves])
    return {"sha256": digest, "sum": float(flat.sum()), "abs_sum": float(np.abs(flat).sum()),
            "sq_sum": float(np.square(flat).sum()), "size": int(flat.size)}


def _platform() -> str:
    """What XLA:CPU's generated code depends on besides the jax version: the machine and its CPU
    model and instruction-set flags (the same program gives other bytes on another CPU)."""
    import platform

    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else platform.processor()
    pick = lambda key: next((ln.split(":", 1)[1].strip() for ln in info.splitlines()  # noqa: E731
                             if ln.startswith(key)), "")
    blob = json.dumps([platform.machine(), pick("model name"), sorted(pick("flags").split())])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def test_golden_outputs(contract):
    """The stack each method returns with its defaults (epoch counts 1) on the tiny digits CNN
    stack (2 models) equals the recorded golden: within 1e-5 relative everywhere (float64 sums),
    and bit-identical under the jax version and on the CPU platform (``_platform``) that recorded
    its bytes — XLA:CPU compiles for the host's instruction set, so another CPU may round
    differently (seen: 4 of 18 methods on an AMD EPYC without AVX-512). ``JAXMU_RECORD_GOLDENS=1``
    records this platform's bytes (and, with ``JAXMU_RECORD_GOLDENS=sums``, new sums: only when a
    change of numerics is intended and stated in the commit)."""
    name = contract.spec.name
    got = _golden_summary(contract.default_out)
    record = os.environ.get("JAXMU_RECORD_GOLDENS")
    table = json.loads(GOLDENS.read_text()) if GOLDENS.exists() else {"methods": {}, "platforms": {}}
    if record:
        if table.get("jax") != jax.__version__:
            table["platforms"] = {}  # bytes recorded under another jax version no longer apply
        table["jax"] = jax.__version__
        if record == "sums" or name not in table["methods"]:
            table["methods"][name] = {k: got[k] for k in ("sum", "abs_sum", "sq_sum", "size")}
            for recorded in table.get("platforms", {}).values():  # other platforms' bytes are of the old numerics
                recorded.pop(name, None)
        table.setdefault("platforms", {}).setdefault(_platform(), {})[name] = got["sha256"]
        GOLDENS.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
        return
    want = table["methods"][name]
    assert got["size"] == want["size"]
    for k in ("sum", "abs_sum", "sq_sum"):
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, err_msg=f"{name}: {k}")
    recorded = table.get("platforms", {}).get(_platform(), {})
    if jax.__version__ == table["jax"] and name in recorded:
        assert got["sha256"] == recorded[name], f"{name}: not bit-identical to the golden recorded on this platform"
