"""Running `experiments.train` in a subprocess, as a user does, and reading what a run wrote."""
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = f"--config={REPO}/experiments/configs/han_upa.py:tiny"

# Test runs share compiled programs through JAX's persistent cache: same results, less time.
CACHE = os.path.join(os.environ.get("PYTEST_CACHE_ROOT", "/tmp"), f"jaxreviews-test-jit-cache-{os.getuid()}")


def train(workdir, *flags, config=TINY, wait=True, devices=None):
    """`python -m experiments.train` on `workdir`; `devices`: that many fake CPU devices."""
    command = [sys.executable, "-m", "experiments.train", config, f"--workdir={workdir}", *flags]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": CACHE,
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    if devices:
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"
    if not wait:
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def results(workdir):
    with open(os.path.join(workdir, "results.json")) as f:
        return json.load(f)


def records(workdir, kind: str) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r["kind"] == kind]
