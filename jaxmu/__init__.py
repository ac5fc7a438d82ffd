"""jaxmu: a vectorized engine for benchmarking machine unlearning.

Every stage (train, retrain, unlearn, attack) runs a *stack* of models (a pytree whose
leaves carry a leading ``models`` axis) as one compiled program. See ``README.md``.
"""

from jaxmu.version import __version__

__all__ = ["Experiment", "ResultTable", "Tuned", "__version__"]


def __getattr__(name: str):
    """``jaxmu.Experiment`` and friends, imported on first use (``import jaxmu`` stays light)."""
    if name in ("Experiment", "Tuned"):
        from jaxmu import experiment

        return getattr(experiment, name)
    if name == "ResultTable":
        from jaxmu.results_table import ResultTable

        return ResultTable
    raise AttributeError(f"module 'jaxmu' has no attribute {name!r}")
