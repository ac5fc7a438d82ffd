"""Subprocess probe for test_sharding.py: train, unlearn and evaluate a 3-model stack.

Run as ``python tests/sharding_probe.py OUT.npz MODE`` with or without
``XLA_FLAGS=--xla_force_host_platform_device_count=4``; saves every result and the device count.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np

from jaxmu.data import load_dataset, make_splits
from jaxmu.engine.evaluate import Evaluator
from jaxmu.training import Trainer
from jaxmu.types import DeviceData
from jaxmu.methods import SplitData, StaticContext, get
from jaxmu.methods.stack import unlearn_stack, unlearning_key
from jaxmu.models import build_model


def main(out: str, mode: str) -> None:
    ds = load_dataset("digits")
    sp = make_splits(ds)
    model = build_model("cnn", 10, ds.images.shape[1:])
    data = DeviceData(jnp.asarray(ds.images), jnp.asarray(ds.labels))
    tr = Trainer(model, 64, 2, "flip", ds.mean, ds.std, model_axis=mode, chunk_size=2)
    keys = jnp.stack([jax.random.PRNGKey(s) for s in range(3)])
    st = tr.init(keys, jnp.array([0.1, 0.05, 0.02]), 0.9, 5e-4)
    st = tr.run_epochs(st, jnp.asarray(sp.retain[:256]), jax.random.PRNGKey(1), jnp.int32(2), data)
    m = get("finetune", epochs=1, batch_size=64)
    ctx = StaticContext(model, 10, ds.mean, ds.std)
    split = SplitData(data.images, data.labels, jnp.asarray(sp.retain[:128]), jnp.asarray(sp.forget[:32]),
                      jnp.asarray(sp.val[:32]))
    un = unlearn_stack(m.spec, m.static, m.arrays, ctx, split, st.params, st.batch_stats, unlearning_key(),
                       model_axis=mode)
    logits = Evaluator(model, ds.mean, ds.std, 100, mode).logits(un.params, un.batch_stats, sp.test[:150], data)
    leaves = {f"train_{i}": np.asarray(x) for i, x in enumerate(jax.tree_util.tree_leaves(st.params))}
    leaves.update({f"unlearn_{i}": np.asarray(x) for i, x in enumerate(jax.tree_util.tree_leaves(un.params))})
    np.savez(out, logits=np.asarray(logits), devices=jax.device_count(), **leaves)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
