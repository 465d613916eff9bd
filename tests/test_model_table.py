"""tools/model_table.py: a row is a K-seed run whose members' mean ± std and ensemble it reports,
beside the baselines of the same split; a finished row is read, not trained again."""
import json
import os
import subprocess
import sys

import numpy as np

from tests.training import CACHE, REPO


def test_a_row_reports_its_members_mean_and_std_and_is_not_rerun(tmp_path):
    command = [sys.executable, os.path.join(REPO, "tools", "model_table.py"), "--data", "synthetic",
               "--workdir", str(tmp_path), "--seeds", "2", "--only", "mf", "--ensemble", "mf,fasttext", "--",
               "--config.data.synthetic_size=tiny", "--config.train.epochs=1"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": CACHE}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    table = json.loads(done.stdout.strip().splitlines()[-1])
    with open(tmp_path / "mf" / "results.json") as f:
        results = json.load(f)
    row, together = table["rows"]
    assert row["seeds"] == 2 and table["baselines"] == results["baselines"]
    rmse = [m["rmse"] for m in results["members"]]
    assert row["rmse"] == round(float(np.mean(rmse)), 4) and row["rmse_std"] == round(float(np.std(rmse, ddof=1)), 4)
    assert results["num_members"] == 2 and row["ensemble"]["rmse"] == round(results["test"]["rmse"], 4)
    assert "| mf | " in done.stdout and "| majority | " in done.stdout
    # the cross-model ensemble row: the mf and fasttext runs averaged by experiments.ensemble_runs
    written, = [name for name in os.listdir(tmp_path) if name.startswith("ensemble_runs-") and "wall" not in name]
    with open(tmp_path / written) as f:
        combined = json.load(f)
    assert together["model"] == "ensemble of the mf and fasttext runs" and together["weights"] == {"mf": 0.5, "fasttext": 0.5}
    assert together["rmse"] == round(combined["test"]["ensemble"]["rmse"], 4) and together["rmse_std"] is None
    assert together["wall_seconds"] > row["wall_seconds"]  # the members' runs and the average
    # The table says when, on which commit and machine, and by which command it was made.
    made = table["provenance"]
    assert made["command"].startswith("python tools/model_table.py --data synthetic --workdir")
    assert f"Measured {made['date']}, commit {made['commit']}, on {made['machine']}: `" in done.stdout
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "experiments.train" not in again.stdout  # read, not trained
    again_table = json.loads(again.stdout.strip().splitlines()[-1])
    assert again_table["rows"] == table["rows"] and again_table["baselines"] == table["baselines"]
