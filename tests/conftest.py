"""Shared test set-up: the persistent compile cache and small shared fixtures.

Compilation dominates the suite's time on 2 CPU cores, so the persistent XLA cache is on
(``~/.cache/jaxmu/xla-tests`` unless ``JAXMU_TEST_CACHE`` says otherwise) and expensive
objects (the digits dataset, its split, trained tiny stacks) are session-scoped fixtures.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
import pytest

_CACHE = os.environ.get("JAXMU_TEST_CACHE", str(Path.home() / ".cache" / "jaxmu" / "xla-tests"))
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def digits():
    from jaxmu.data import load_dataset

    return load_dataset("digits")


@pytest.fixture(scope="session")
def digits_splits(digits):
    from jaxmu.data import make_splits

    return make_splits(digits)


class TinySetting:
    """A small digits CNN stack for method tests: 2 models trained 3 epochs, small splits.

    Attributes: ``ctx`` (StaticContext), ``data`` (SplitData with 240 retain, 60 forget,
    60 val indices), ``params``/``batch_stats`` (stacked, 2 models), ``test_idx``, ``model``.
    """

    def __init__(self, digits, splits, arch="cnn", num_models=2):
        import jax.numpy as jnp

        from jaxmu.engine.trainer import DeviceData, Trainer
        from jaxmu.methods import SplitData, StaticContext
        from jaxmu.models import build_model

        self.model = build_model(arch, digits.num_classes, digits.images.shape[1:])
        self.ctx = StaticContext(self.model, digits.num_classes, digits.mean, digits.std, "flip")
        retain, forget, val = splits.retain[:240], splits.forget[:60], splits.val[:60]
        self.data = SplitData(jnp.asarray(digits.images), jnp.asarray(digits.labels),
                              jnp.asarray(retain), jnp.asarray(forget), jnp.asarray(val))
        self.test_idx = splits.test[:200]
        tr = Trainer(self.model, 32, 3, "none", digits.mean, digits.std)
        keys = jnp.stack([jax.random.PRNGKey(s) for s in range(num_models)])
        st = tr.init(keys, 0.05, 0.9, 5e-4)
        train_idx = jnp.concatenate([self.data.retain, self.data.forget])
        st = tr.run_epochs(st, train_idx, jax.random.PRNGKey(123), jnp.int32(3),
                           DeviceData(self.data.images, self.data.labels))
        self.params, self.batch_stats = st.params, st.batch_stats

    def accuracy(self, params, batch_stats, idx):
        """Accuracy ``[models]`` of a stack on index set ``idx`` (eval mode)."""
        import numpy as np

        from jaxmu.engine.evaluate import Evaluator
        from jaxmu.metrics import accuracy
        from jaxmu.engine.trainer import DeviceData

        ev = Evaluator(self.model, self.ctx.mean, self.ctx.std, batch_size=256)
        logits = ev.logits(params, batch_stats, np.asarray(idx), DeviceData(self.data.images, self.data.labels))
        return np.asarray(accuracy(logits, self.data.labels[np.asarray(idx)]))


@pytest.fixture(scope="session")
def tiny(digits, digits_splits) -> TinySetting:
    return TinySetting(digits, digits_splits)
