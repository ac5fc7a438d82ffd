"""Multi-host start-up: ``jax.distributed.initialize`` when the environment says so.

Decision (``init_kwargs``), in order:

1. explicit options (``--coordinator HOST:PORT --num-processes N --process-id I``) win;
2. ``JAX_COORDINATOR_ADDRESS`` with ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` (any launcher);
3. a SLURM job with more than one task (``SLURM_NTASKS`` > 1): JAX reads SLURM itself;
4. a Cloud TPU pod slice (``TPU_WORKER_HOSTNAMES`` with more than one host, or
   ``MEGASCALE_COORDINATOR_ADDRESS``): JAX's TPU cluster detection;
5. otherwise a single process: nothing to initialise.

After initialisation ``jax.devices()`` lists every process's devices, so the ``models`` mesh of
``jaxmu.engine.sharding`` spans all hosts and each process holds and trains its share of the
models.
"""

from __future__ import annotations

import os
from typing import Any, Mapping


def init_kwargs(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None,
                environ: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """Keyword arguments for ``jax.distributed.initialize``, or None for a single process."""
    env = os.environ if environ is None else environ
    if coordinator or num_processes is not None or process_id is not None:
        if not (coordinator and num_processes is not None and process_id is not None):
            raise ValueError("multi-host: give --coordinator, --num-processes and --process-id together")
        if not 0 <= process_id < num_processes:
            raise ValueError(f"multi-host: --process-id {process_id} must be in [0, {num_processes})")
        return {"coordinator_address": coordinator, "num_processes": num_processes, "process_id": process_id}
    if env.get("JAX_COORDINATOR_ADDRESS"):
        try:
            return {"coordinator_address": env["JAX_COORDINATOR_ADDRESS"],
                    "num_processes": int(env["JAX_NUM_PROCESSES"]), "process_id": int(env["JAX_PROCESS_ID"])}
        except (KeyError, ValueError):
            raise ValueError("JAX_COORDINATOR_ADDRESS is set: also set JAX_NUM_PROCESSES and JAX_PROCESS_ID "
                             "to integers") from None
    if int(env.get("SLURM_NTASKS", "1") or 1) > 1:
        return {}  # jax detects the SLURM cluster
    hosts = [h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]
    if len(hosts) > 1 or env.get("MEGASCALE_COORDINATOR_ADDRESS"):
        return {}  # jax detects the TPU pod slice
    return None


def maybe_initialize(coordinator: str | None = None, num_processes: int | None = None,
                     process_id: int | None = None) -> bool:
    """Initialise JAX's distributed runtime if ``init_kwargs`` says so; True if it did."""
    kwargs = init_kwargs(coordinator, num_processes, process_id)
    if kwargs is None:
        return False
    import jax

    # CPU processes exchange shards over gloo (GPUs and TPUs use their own collectives)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**kwargs)
    return True
