"""The vectorized engine: optimizers, model-axis execution, training and evaluation."""
