"""Private helpers of ``scrub``, ``fcs``, ``kde``, ``cfw`` and ``prmq``.

* ``loss_step``: one PyTorch-SGD step on an arbitrary loss of the parameters (the loss also
  returns the new BatchNorm statistics), reusing ``finetune.TrainState``.
* ``teacher_logits``: frozen teacher forward in eval mode (stop-gradient).
* ``class_counts``: per-class counts of D_r labels, length C (traced).
* Leaf selection by path (``leaf_paths``, ``replace_leaves``), PyTorch default
  re-initialisation of whole modules (``torch_default_reinit``) and the fan-in rule
  (``pytorch_fan_in``) in layout-independent terms (``methods.md`` §2.7).
* ``partial_pass``: the first ``num_steps`` batches of a fresh shuffle (PRMQ's step budget
  crossing pass boundaries), with the key convention of ``_loops.run_pass``.
* ``predict_correct``: eval-mode per-example correctness over an index set (SCRUB's error log).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from jaxmu.engine.optim import torch_sgd
from jaxmu.methods._base import SplitData, StaticContext
from jaxmu.methods._loops import forward, gather, optimizer_step, order
from jaxmu.methods.finetune import TrainState
from jaxmu.models.names import Path, tree_paths

LossFn = Callable[[Any], tuple[jax.Array, Any]]  # params -> (loss, new batch_stats)


def sgd_state(params, hp, prefix: str = "") -> Any:
    """A fresh PyTorch-SGD state (momentum 0) with ``hp[prefix + {learning_rate,...}]`` injected."""
    tx = torch_sgd(hp[prefix + "learning_rate"], hp[prefix + "momentum"], hp[prefix + "weight_decay"])
    return tx.init(params)


def loss_step(state: TrainState, loss_fn: LossFn) -> TrainState:
    """One SGD step (hyperparameters from the injected state) on ``loss_fn``."""
    grads, bs = jax.grad(loss_fn, has_aux=True)(state.params)
    params, opt = optimizer_step(torch_sgd(), state.params, state.opt_state, grads)
    return TrainState(params, bs, opt)


def teacher_logits(ctx: StaticContext, params, batch_stats, x) -> jax.Array:
    """Frozen teacher in eval mode (running statistics untouched, no gradient)."""
    logits, _ = forward(ctx, params, batch_stats, x, train=False)
    return jax.lax.stop_gradient(logits)


def class_counts(data: SplitData, num_classes: int) -> jax.Array:
    """n_c over the labels of D_r, float32 ``[C]`` (0 for absent classes)."""
    return jnp.bincount(data.labels[data.retain], length=num_classes).astype(jnp.float32)


# --------------------------------------------------------------------------- parameter selection


def leaf_paths(tree) -> list[Path]:
    return tree_paths(tree)


def replace_leaves(tree, new: dict[Path, jax.Array]):
    """``tree`` with the leaves at the given paths replaced."""
    paths = tree_paths(tree)
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    out = [new.get(p, leaf) for p, leaf in zip(paths, leaves)]
    return jax.tree_util.tree_unflatten(treedef, out)


def leaf_dict(tree) -> dict[Path, jax.Array]:
    return dict(zip(tree_paths(tree), jax.tree_util.tree_leaves(tree)))


def pytorch_fan_in(kernel_shape: Sequence[int]) -> int:
    """PyTorch fan-in of a jaxmu kernel: conv HWIO ``(I/groups)*kh*kw``; dense ``[in, out]`` -> in."""
    if len(kernel_shape) == 4:
        kh, kw, cin_g, _ = kernel_shape
        return int(kh * kw * cin_g)
    if len(kernel_shape) == 2:
        return int(kernel_shape[0])
    raise ValueError(f"not a conv/dense kernel shape: {tuple(kernel_shape)}")


def is_weight_layer_leaf(path: Path, leaves: dict[Path, jax.Array]) -> str | None:
    """``"conv"``/``"linear"`` for a conv/dense kernel, ``"bias"`` for the bias of such a layer."""
    if path[-1] == "kernel":
        nd = jnp.ndim(leaves[path])
        return "conv" if nd == 4 else "linear" if nd == 2 else None
    if path[-1] == "bias" and path[:-1] + ("kernel",) in leaves:
        return "bias"
    return None


def torch_default_reinit(params, prefixes: Sequence[Path], key) -> Any:
    """Re-initialise every conv/dense layer under ``prefixes`` as PyTorch ``reset_parameters``.

    Kernel and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (kaiming_uniform(a=sqrt(5)) gives exactly
    this bound for the weight). Other leaves under the prefixes (BatchNorm) are left unchanged.
    Leaf ``i`` of the flattening draws from ``fold_in(key, i)``.
    """
    leaves = leaf_dict(params)
    new = {}
    for i, (path, leaf) in enumerate(leaves.items()):
        if not any(path[: len(q)] == tuple(q) for q in prefixes):
            continue
        kind = is_weight_layer_leaf(path, leaves)
        if kind is None:
            continue
        kshape = leaf.shape if kind != "bias" else leaves[path[:-1] + ("kernel",)].shape
        bound = 1.0 / float(pytorch_fan_in(kshape)) ** 0.5
        new[path] = jax.random.uniform(jax.random.fold_in(key, i), leaf.shape, leaf.dtype, -bound, bound)
    return replace_leaves(params, new)


# --------------------------------------------------------------------------- data passes


def partial_pass(carry, idx, batch_size: int, key, step, num_steps: int):
    """The first ``num_steps`` (static, < ceil(n/B)) full batches of a shuffle drawn from ``key``.

    Same conventions as ``_loops.run_pass``: permutation from ``fold_in(key, 0)``, batch ``b``
    gets ``fold_in(key, b + 1)``.
    """
    if num_steps <= 0:
        return carry
    n = idx.shape[0]
    if num_steps * batch_size > n:
        raise ValueError("partial_pass: only full batches may be taken")
    seq = order(idx, jax.random.fold_in(key, 0), True)
    batches = seq[: num_steps * batch_size].reshape(num_steps, batch_size)
    keys = jax.vmap(lambda b: jax.random.fold_in(key, b + 1))(jnp.arange(num_steps))
    carry, _ = jax.lax.scan(lambda c, xs: (step(c, xs[0], xs[1]), None), carry, (batches, keys))
    return carry


def predict_correct(ctx: StaticContext, data: SplitData, params, batch_stats, idx,
                    batch_size: int = 256) -> jax.Array:
    """Eval-mode top-1 correctness ``[n]`` (bool) of the examples ``idx`` (stored order)."""
    n = idx.shape[0]
    b = max(1, min(batch_size, n))
    n_full, rem = divmod(n, b)

    def one(ix):
        x, y = gather(ctx, data, ix)
        logits, _ = forward(ctx, params, batch_stats, x, train=False)
        return jnp.argmax(logits, axis=-1) == y

    parts = []
    if n_full:
        parts.append(jax.lax.map(one, idx[: n_full * b].reshape(n_full, b)).reshape(-1))
    if rem:
        parts.append(one(idx[n_full * b:]))
    return jnp.concatenate(parts) if len(parts) > 1 else parts[0]
