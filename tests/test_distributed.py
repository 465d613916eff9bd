"""Multi-process jobs for real: two `experiments.train` processes on this machine joined through
`jax.distributed` (CPU collectives over Gloo), one CPU device each, as two hosts of a cluster run.

They train as one process on two devices does (the same global batches: `data.batch_parts=2`),
resume exactly after both are killed, and a SIGTERM sent to one of them stops both at the same
step, saved, with exit status 0.
"""
import json
import os
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest

from jaxreviews.train import distributed
from tests.training import CACHE, REPO, TINY, latest_steps, results, train, wait_for_checkpoint

BACKGROUND = "--config.train.async_checkpoints=background"  # blocking on CPU unless asked
EPOCHS = "--config.train.epochs=1"  # 30 steps of the tiny config, checkpoints every 10: room to stop in the middle


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_processes(workdir, *flags, count: int = 2, wait: bool = True):
    """`count` processes of `python -m experiments.train` joined as one job on `workdir` (the
    environment variables `--config.distributed=auto` reads); returns them, finished if `wait`."""
    port = free_port()
    processes = []
    for index in range(count):
        env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": CACHE,
               "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
               "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": str(count),
               "JAX_PROCESS_ID": str(index)}
        env.pop("XLA_FLAGS", None)  # one CPU device per process
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "experiments.train", TINY, f"--workdir={workdir}", *flags], cwd=REPO, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    if wait:
        outputs = [p.communicate(timeout=900)[0] for p in processes]
        for p, out in zip(processes, outputs):
            assert p.returncode == 0, out
        return outputs
    return processes


def train_losses(workdir) -> dict[int, float]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    steps = [r["step"] for r in records if r["kind"] == "train"]
    assert len(steps) == len(set(steps)), "a step is recorded twice"
    return {r["step"]: r["loss"] for r in records if r["kind"] == "train"}


# -- the environment --------------------------------------------------------------------------------

def test_auto_joins_a_job_only_when_the_environment_names_one():
    assert distributed.cluster_environment({}) is None
    assert distributed.cluster_environment({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "1"}) is None
    assert distributed.cluster_environment({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "4",
                                            "JAX_PROCESS_ID": "2"}) == "JAX_COORDINATOR_ADDRESS"
    assert distributed.cluster_environment({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}) is None
    assert distributed.cluster_environment({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "16"}) == "slurm"
    assert distributed.cluster_environment({"TPU_WORKER_HOSTNAMES": "t1k-0"}) is None
    assert distributed.cluster_environment({"TPU_WORKER_HOSTNAMES": "t1k-0,t1k-1,t1k-2,t1k-3"}) == "cloud_tpu"
    assert distributed.initialize_arguments({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2",
                                             "JAX_PROCESS_ID": "1"}) == dict(coordinator_address="h:1", num_processes=2,
                                                                             process_id=1)
    # Nothing to join: no initialisation, whatever JAX state this process has.
    assert distributed.initialize("auto", {}) is False and distributed.initialize("off", {"SLURM_JOB_ID": "1"}) is False
    with pytest.raises(ValueError, match="JAX_PROCESS_ID"):
        distributed.initialize("on", {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2"})
    with pytest.raises(ValueError, match="auto, on, off"):
        distributed.initialize("yes", {})


# -- two processes ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """An uninterrupted two-process run: its workdir and each process's output. Its checkpoints
    are written in the background (an accelerator's default), its one-process twin's blocking."""
    workdir = tmp_path_factory.mktemp("two-processes")
    outputs = train_processes(workdir, EPOCHS, BACKGROUND)
    return workdir, outputs


def test_two_processes_train_as_one_process_on_two_devices(two_processes, tmp_path):
    workdir, outputs = two_processes
    assert "2 devices (cpu)" in outputs[0] and "2 processes" in outputs[0]
    assert "param_checksum" in outputs[0] and "param_checksum" not in outputs[1]  # only process 0 reports
    assert not [line for line in outputs[1].splitlines() if line.startswith(("epoch", "step", "model", "data"))]
    one = train(tmp_path, EPOCHS, "--config.data.batch_parts=2", devices=2)
    assert one.returncode == 0, one.stdout + one.stderr
    two_results, one_results = results(workdir), results(tmp_path)
    assert two_results["best_step"] == one_results["best_step"] and two_results["steps"] == one_results["steps"]
    import jax
    import jaxreviews

    two_params, one_params = (jaxreviews.load_run(path).params for path in (workdir, tmp_path))
    for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(one_params)[0], jax.tree.leaves(two_params)):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6, err_msg=jax.tree_util.keystr(path))
    np.testing.assert_allclose(list(train_losses(workdir).values()), list(train_losses(tmp_path).values()), rtol=1e-5)


@pytest.mark.slow  # two more two-process runs (~2 min on 2 busy cores); resume itself is tested in one process
def test_both_processes_killed_then_restarted_end_as_the_uninterrupted_run(two_processes, tmp_path):
    workdir, _ = two_processes
    processes = train_processes(tmp_path, EPOCHS, wait=False)
    wait_for_checkpoint(tmp_path, processes, minimum_step=10)
    for p in processes:
        p.kill()
    for p in processes:
        p.communicate(timeout=900)
        assert p.returncode == -signal.SIGKILL
    assert not os.path.exists(tmp_path / "results.json")
    outputs = train_processes(tmp_path, EPOCHS)
    assert "resumed from step" in outputs[0]
    assert results(tmp_path)["param_checksum"] == results(workdir)["param_checksum"]
    assert train_losses(tmp_path) == train_losses(workdir)


def test_sigterm_to_one_process_stops_both_at_the_same_saved_step(two_processes, tmp_path):
    # Checks every 2 steps (default 10): the run is short, and steps between checks are tested so.
    processes = train_processes(tmp_path, EPOCHS, "--config.train.preemption_check_every_steps=2", BACKGROUND,
                                wait=False)
    wait_for_checkpoint(tmp_path, processes, minimum_step=10)
    processes[1].send_signal(signal.SIGTERM)  # not the coordinator's process: the others learn of it
    outputs = [p.communicate(timeout=900)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    saved = []
    for index, out in enumerate(outputs):
        lines = [line for line in out.splitlines() if f"process {index}: stopped: saved step" in line]
        assert len(lines) == 1, out
        saved.append(int(lines[0].split("saved step ")[1].split()[0]))
    assert saved[0] == saved[1] and latest_steps(tmp_path)[-1] == saved[0]
    assert saved[0] < 30 and not os.path.exists(tmp_path / "results.json")
