"""tools/bench.py's step-time fit and tools/provenance.py's line: what the GPU check reports."""
import importlib.util
import os

from tests.training import REPO


def load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_step_time_fit_recovers_the_fixed_and_per_member_costs():
    """t(K) = 2.25 + 0.64 K ms (the H200's han_upa, issue 21): K members reach at most
    (a + b) / b = 4.5x the model-docs/s of one."""
    bench = load("bench")
    rows = [{"num_seeds": k, "ms_per_step": 2.25 + 0.64 * k} for k in (1, 4, 16)]
    fit = bench.step_time_fit(rows)
    assert fit == {"fixed_ms": 2.25, "per_member_ms": 0.64, "max_abs_residual_ms": 0.0, "speedup_limit": 4.5}
    assert bench.step_time_fit(rows[:1]) is None


def test_the_provenance_line_names_date_commit_machine_and_command():
    provenance = load("provenance")
    made = provenance.describe([os.path.join(REPO, "tools", "bench.py"), "--all", "--compare"])
    assert made["command"] == "python tools/bench.py --all --compare"
    assert len(made["date"]) == 10 and made["machine"].split()[1] == "cores"
    assert provenance.line(made).startswith(f"Measured {made['date']}, commit ")


def run_bench(*flags):
    import subprocess
    import sys

    from tests.training import CACHE

    small = ["--batch", "4", "--tokens", "16", "--sentences", "3", "--words", "5", "--vocab", "100", "--embed", "8",
             "--hidden", "4", "--users", "10", "--products", "10", "--steps", "2", "--warmup", "1"]
    done = subprocess.run([sys.executable, os.path.join(REPO, "tools", "bench.py"), *small, *flags], cwd=REPO,
                          env={**os.environ, "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": CACHE},
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    import json

    return done.stdout, [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def test_bench_at_fixed_shapes_and_members_runs(tmp_path):
    """The fixed-shape step and the K-member table with its t(K) fit (tools/device_check.sh's stages)."""
    _, (row,) = run_bench("--model", "cnn")
    assert row["docs_per_s"] > 0 and row["mesh"] == {"members": 1, "data": 1, "model": 1}
    out, rows = run_bench("--model", "cnn", "--num_seeds", "1,2")
    assert [r["num_seeds"] for r in rows[:2]] == [1, 2] and "step_time_fit" in rows[-1]
    assert "step time t(K) = " in out and "Measured " in out


def test_bench_on_a_file_moves_batches_in_groups(tmp_path):
    """--data with --steps_per_transfer 3: the library's grouped input path, nothing compiled while timed."""
    from jaxreviews.data import readers, synthetic

    path = tmp_path / "reviews.txt"
    readers.write_tang(path, synthetic.generate(synthetic.default_spec("tiny")).reviews[:120])
    _, rows = run_bench("--data", str(path), "--model", "cnn", "--steps_per_transfer", "3", "--pipeline_passes", "1")
    row = rows[-1]
    assert row["steps_per_transfer"] == 3 and row["reviews"] == 120 and row["compilations_while_timed"] == 0
