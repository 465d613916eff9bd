"""Trials per hour of a sweep, one trial at a time against batches of K trials in one program.

    python tools/bench_sweep.py --config=experiments/configs/han_upa.py:tiny --trials=8 --batch 1 4 8
    python tools/bench_sweep.py --config=experiments/configs/han_upa.py --trials=8 --epochs=1 --batch 1 4 8

Each setting runs `--trials` random trials over learning rate (log 1e-4..1e-2) and head dropout
(0..0.5) in a fresh study, in this process, and prints: the sweep's wall time and trials/hour;
the trials' own seconds (what `run_program` spent: data, setup, training, evaluation, checkpoints);
compilation (JAX's trace + lower + compile, and cache reads, summed over the runs' results); and
the study's bookkeeping (ask, tell, recovering interrupted trials, writing trial.json: the wall
time outside the runs), per trial and as a share of a trial. The first setting warms the
persistent compilation cache of nothing but its own program: each K compiles its own once.
"""
from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SPACE = {"optimizer.learning_rate": {"log": [1e-4, 1e-2]}, "model.head_dropout": {"float": [0.0, 0.5]}}


def load_config(spec: str):
    path, _, arg = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("bench_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg or None)


def run(config_spec: str, trials: int, batch: int, epochs: int, workdir: str, execution: str = "auto") -> dict:
    from jaxreviews.tune import runner as runner_lib
    from jaxreviews.tune.sweep import Sweep

    config = load_config(config_spec)
    if epochs:
        config.train.epochs = epochs
    config.search.space = json.dumps(SPACE)
    config.search.pruner = "none"
    config.member_execution = execution
    sweep = Sweep(config, workdir, method="random", batch_trials=batch, log=lambda *_: None)
    inside = [0.0]
    original = runner_lib.Runner.run

    def timed(self, plans):
        began = time.perf_counter()
        try:
            return original(self, plans)
        finally:
            inside[0] += time.perf_counter() - began

    runner_lib.Runner.run = timed
    began = time.perf_counter()
    try:
        sweep.run(trials)
    finally:
        runner_lib.Runner.run = original
    wall = time.perf_counter() - began
    compile_seconds, runs = 0.0, set()
    for path in glob.glob(os.path.join(workdir, "trials", "*", "results.json")) + \
            glob.glob(os.path.join(workdir, "batches", "*", "results.json")):
        results = json.load(open(path))
        if results.get("trained_in"):  # a batch member's copy: counted with its batch
            continue
        compile_seconds += results["compile"]["seconds"]
        runs.add(path)
    seconds = [t.user_attrs["seconds"] for t in sweep.study.get_trials()]
    complete = sum(t.state.name == "COMPLETE" for t in sweep.study.get_trials())
    return {"batch": batch, "execution": execution, "trials": trials, "complete": complete, "wall": wall, "per_hour": trials * 3600 / wall,
            "run_seconds": inside[0], "trial_seconds": sum(seconds), "compile": compile_seconds,
            "bookkeeping": wall - inside[0], "runs": len(runs)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="experiments/configs/han_upa.py:tiny")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--epochs", type=int, default=0, help="override train.epochs (0: the config's)")
    parser.add_argument("--workdir", default="", help="where the sweeps go (default: a temporary folder)")
    parser.add_argument("--execution", default="auto", choices=["auto", "vmap", "map"],
                        help="member_execution of the batches (auto: map on CPU)")
    args = parser.parse_args()
    from jaxreviews.train import allocator
    allocator.keep_freed_memory()
    root = args.workdir or tempfile.mkdtemp(prefix="bench-sweep-")
    rows = []
    for batch in args.batch:
        workdir = os.path.join(root, f"batch{batch}")
        shutil.rmtree(workdir, ignore_errors=True)
        rows.append(run(args.config, args.trials, batch, args.epochs, workdir, args.execution))
        print(json.dumps(rows[-1]), flush=True)
    base = rows[0]["per_hour"]
    print(f"\n{args.config}, {args.trials} random trials a setting (lr, head dropout), epochs "
          f"{args.epochs or 'as configured'}; {time.strftime('%Y-%m-%d')}")
    warm_base = rows[0]["trials"] * 3600 / (rows[0]["wall"] - rows[0]["compile"])
    print(f"{'batch':>5} {'runs':>8} {'wall s':>8} {'trials/h':>9} {'vs 1':>6} {'compile s':>9} "
          f"{'trials/h w/o compile':>20} {'vs 1':>6} {'bookkeeping s/trial':>19} {'bookkeeping %':>13}")
    for r in rows:
        warm = r["trials"] * 3600 / (r["wall"] - r["compile"])
        print(f"{r['batch']:>5} {r['runs']:>8} {r['wall']:>8.1f} {r['per_hour']:>9.0f} "
              f"{r['per_hour'] / base:>5.2f}x {r['compile']:>9.1f} {warm:>20.0f} {warm / warm_base:>5.2f}x "
              f"{r['bookkeeping'] / r['trials']:>19.3f} {100 * r['bookkeeping'] / r['wall']:>12.1f}%")


if __name__ == "__main__":
    main()
