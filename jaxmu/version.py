"""The package version (one place; ``jaxmu.__version__`` re-exports it) and the trainer's recipe."""

__version__ = "0.1.0"

TRAINER_RECIPE = 2
"""Version of the original/retrain training recipe and its key convention (``jaxmu.training``),
part of every run directory's key (``results.run_hash``), so a model trained under another
recipe is never resumed or reused under this one. 1: the trainer's own epoch loop (permutation
from the epoch key, batch ``b`` on ``fold_in(k_e, b)``); 2: the driver's plan (the methods' key
convention)."""
