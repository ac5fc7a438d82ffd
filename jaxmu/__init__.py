"""jaxmu: a vectorized engine for benchmarking machine unlearning.

Every stage (train, retrain, unlearn, attack) runs a *stack* of models (a pytree whose
leaves carry a leading ``models`` axis) as one compiled program. See ``README.md``.
"""

__version__ = "0.1.0"
