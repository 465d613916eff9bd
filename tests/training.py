"""Running a training: in this process (`run_here`, what most tests do: no interpreter start, and
runs of one shape share their compiled programs), or `experiments.train` in a subprocess as a user
does (`train`: for signals, fake devices, several processes and what the command prints); and
reading what a run wrote."""
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = f"--config={REPO}/experiments/configs/han_upa.py:tiny"

# Test runs share compiled programs through JAX's persistent cache: same results, less time.
CACHE = os.path.join(os.environ.get("PYTEST_CACHE_ROOT", "/tmp"), f"jaxreviews-test-jax-cache-{os.getuid()}")


def fake_device_flags(devices: int) -> str:
    """XLA_FLAGS for `devices` fake CPU devices. XLA aborts a process whose CPU collective waits
    over 40 s for its participants; 8 fake devices on 2 busy cores have missed that (an all-reduce
    of the evaluation, 6 of 8 device threads arrived; 2 aborts in 4 runs of test_tune +
    test_ensemble beside a training job), so tests give them 10 minutes, their own timeout."""
    return (f"--xla_force_host_platform_device_count={devices} "
            "--xla_cpu_collective_call_terminate_timeout_seconds=600")


_PROGRAMS = None


def programs():
    """The test session's compiled programs, shared by in-process runs of the same shapes."""
    global _PROGRAMS
    if _PROGRAMS is None:
        from jaxreviews.train import ProgramCache

        _PROGRAMS = ProgramCache(size=64)
    return _PROGRAMS


def tiny(model: str = "han_upa", presets: str = "", **overrides):
    """The `tiny` preset of `model` (then `presets`), with dotted-key overrides
    (`tiny("cnn", **{"train.epochs": 1})`), TensorBoard off."""
    from jaxreviews import options

    config = options.default_config(model, ",".join(["tiny", *filter(None, presets.split(","))]))
    config.train.tensorboard = False
    return set_keys(config, overrides)


def set_keys(config, overrides: dict, separator: str = "."):
    """`config` with each dotted key (`"train.epochs"`) of `overrides` set; returned for chaining."""
    for key, value in overrides.items():
        node = config
        *parents, leaf = key.split(separator)
        for part in parents:
            node = node[part]
        node[leaf] = value
    return config


def run_here(workdir, config, **kwargs):
    """`train_and_evaluate` in this process, sharing the session's programs; its RunResults."""
    from jaxreviews.train import loop

    return loop.train_and_evaluate(config, str(workdir), programs=programs(), **kwargs)


def train(workdir, *flags, config=TINY, wait=True, devices=None):
    """`python -m experiments.train` on `workdir`; `devices`: that many fake CPU devices."""
    command = [sys.executable, "-m", "experiments.train", config, f"--workdir={workdir}", *flags]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": CACHE,
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    if devices:
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {fake_device_flags(devices)}"
    if not wait:
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


def latest_steps(workdir) -> list[int]:
    """The steps of a run's "latest" checkpoints, ascending."""
    latest = os.path.join(workdir, "checkpoints", "latest")
    return sorted(int(n) for n in os.listdir(latest) if n.isdigit()) if os.path.isdir(latest) else []


def wait_for_checkpoint(workdir, processes, minimum_step: int = 10) -> int:
    """Polls until a checkpoint of `minimum_step` or later exists and returns its step; fails as
    soon as a process (one Popen or a list) ends without one, killing the others. No wall-clock
    limit: a busy machine is only slower."""
    import pytest

    processes = processes if isinstance(processes, (list, tuple)) else [processes]
    while True:
        steps = latest_steps(workdir)
        if steps and steps[-1] >= minimum_step:
            return steps[-1]
        for p in processes:
            if p.poll() is not None:
                for q in processes:
                    q.kill()
                pytest.fail("a process ended before a checkpoint appeared:\n" + p.stdout.read())
        time.sleep(0.02)


def results(workdir):
    with open(os.path.join(workdir, "results.json")) as f:
        return json.load(f)


def records(workdir, kind: str) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r["kind"] == kind]
