"""Multi-process (multi-host) jobs through JAX's multi-controller runtime.

Every host runs the same command. `initialize(mode)` connects the processes (`jax.distributed`)
before JAX touches a device, after which `jax.devices()` lists every device of the job and one
jitted program spans them all: the batch is sharded over the mesh's `data` axis and XLA inserts the
collectives. On CPU the processes exchange data through Gloo.

`mode` (`--config.distributed`):
  auto  initialise when the environment says this process is one of several: JAX_COORDINATOR_ADDRESS
        with JAX_NUM_PROCESSES and JAX_PROCESS_ID, a Slurm job step of several tasks, an Open MPI
        job of several ranks, or a Cloud TPU VM of a multi-host slice; else run as one process.
  on    always initialise (the same variables, or JAX's own detection of TPU / Slurm / Open MPI).
  off   never: N hosts then run N independent jobs.

What each process does in a run (jaxreviews.train.loop): it builds its own slice of every global
batch; data preparation (TFDS builders, pretrained vectors) runs on process 0 first while the
others wait at a barrier (`main_process_first`), then they read what it prepared; only process 0
writes config.json, the tables, model.json, metrics.jsonl, TensorBoard and results.json, and only
it prints the log; every process takes part in each orbax checkpoint (orbax writes each array
shard once, from the process that holds it). A SIGTERM on any host is agreed on through a
collective (loop.Preemption), so every process saves the same step and exits 0.

Nothing here imports JAX at module level: `experiments.train` imports this before JAX reads its
flags.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping

MODES = ("auto", "on", "off")
BARRIER_TIMEOUT_MS = 2 * 60 * 60 * 1000  # data preparation of a large corpus on process 0 may take long


def cluster_environment(environ: Mapping[str, str] = os.environ) -> str | None:
    """The multi-process environment this process runs in, or None when it runs alone."""
    if environ.get("JAX_COORDINATOR_ADDRESS") and int(environ.get("JAX_NUM_PROCESSES", "0") or 0) > 1:
        return "JAX_COORDINATOR_ADDRESS"
    if environ.get("SLURM_JOB_ID") and int(environ.get("SLURM_NTASKS", environ.get("SLURM_NPROCS", "1")) or 1) > 1:
        return "slurm"
    if environ.get("OMPI_MCA_orte_hnp_uri") and int(environ.get("OMPI_COMM_WORLD_SIZE", "1") or 1) > 1:
        return "open_mpi"
    hosts = environ.get("TPU_WORKER_HOSTNAMES", "") or environ.get("TPU_PROCESS_ADDRESSES", "")
    if len([h for h in hosts.split(",") if h.strip()]) > 1 or environ.get("MEGASCALE_COORDINATOR_ADDRESS"):
        return "cloud_tpu"
    return None


def initialize_arguments(environ: Mapping[str, str] = os.environ) -> dict:
    """`jax.distributed.initialize` keywords from JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and
    JAX_PROCESS_ID; empty where they are not set (JAX then detects TPU, Slurm and Open MPI)."""
    arguments = {}
    if environ.get("JAX_COORDINATOR_ADDRESS"):
        arguments["coordinator_address"] = environ["JAX_COORDINATOR_ADDRESS"]
    for variable, keyword in (("JAX_NUM_PROCESSES", "num_processes"), ("JAX_PROCESS_ID", "process_id")):
        if environ.get(variable, "") != "":
            try:
                arguments[keyword] = int(environ[variable])
            except ValueError as error:
                raise ValueError(f"{variable}={environ[variable]!r}: expected an integer") from error
    return arguments


def initialize(mode: str = "auto", environ: Mapping[str, str] = os.environ) -> bool:
    """Connects this process to the others of its job (see the module docstring); True when it
    did. Call it before anything uses a JAX device."""
    if mode not in MODES:
        raise ValueError(f"distributed={mode!r}: choose one of {', '.join(MODES)}")
    if mode == "off" or (mode == "auto" and cluster_environment(environ) is None):
        return False
    import jax

    if jax.distributed.is_initialized():
        return True
    arguments = initialize_arguments(environ)
    if "JAX_COORDINATOR_ADDRESS" in environ and not {"num_processes", "process_id"} <= set(arguments):
        raise ValueError("JAX_COORDINATOR_ADDRESS is set: set JAX_NUM_PROCESSES (the number of processes) and "
                         "JAX_PROCESS_ID (this process's index, 0 on the coordinator's host) as well")
    # Collectives between the CPU devices of different processes (the default of recent JAX; the
    # setting is ignored by GPU and TPU devices, which use NCCL / the ICI).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**arguments)
    return True


def is_main() -> bool:
    import jax

    return jax.process_index() == 0


def barrier(name: str, timeout_ms: int = BARRIER_TIMEOUT_MS) -> None:
    """Every process waits here until all have arrived (nothing to do for one process). Uses the
    coordination service, not a device collective, so a long wait times out only after `timeout_ms`."""
    import jax

    if jax.process_count() == 1:
        return
    # The coordination service's barrier, which JAX does not export: the public
    # multihost_utils.sync_global_devices is a device collective, which XLA's CPU collectives abort
    # after 40 s, too short for a data preparation.
    from jax._src import distributed as jax_distributed

    client = jax_distributed.global_state.client
    if client is None:  # processes connected some other way
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
        return
    client.wait_at_barrier(f"jaxreviews:{name}", timeout_ms)


@contextlib.contextmanager
def main_process_first(name: str):
    """Process 0 runs the block first (preparing what the others then read: TFDS data, cached word
    vectors); the others run it once process 0 has finished it."""
    import jax

    if jax.process_count() == 1:
        yield
        return
    if not is_main():
        barrier(name)
    yield
    if is_main():
        barrier(name)


def host_array(x):
    """A jax.Array's whole value as numpy on every process. Fully replicated or local arrays are
    read where they lie; an array split over processes is gathered (a collective: every process
    must call this for it)."""
    import jax
    import numpy as np

    if not isinstance(x, jax.Array) or x.is_fully_addressable or x.is_fully_replicated:
        return np.asarray(jax.device_get(x))
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
