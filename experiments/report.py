"""Writes a run's report, or compares several: `python -m experiments.report --workdir=RUN
[--workdir=RUN2 ...] [--output=FILE]`.

One self-contained report.html (figures inlined, no script, nothing fetched; prints well) in the
first run's directory unless --output says otherwise: the run (config or the keys that differ, data
statistics, timing, parameters by module), learning curves, test metrics beside the baselines
(and an ensemble's members when the run has them), confusion matrix, calibration, cold start
(accuracy and RMSE by the training reviews of the user and of the product), accuracy by review
length and attention heat-maps of chosen test reviews. The numbers come from one pass of each run
over its test split (`jaxreviews.analysis.analyze_run`); the last line printed is the report's path.
"""
from __future__ import annotations

import os
import sys
import time

from absl import app, flags

from experiments import cli

flags.DEFINE_multi_string("workdir", None, "A run directory written by experiments.train; repeat to compare runs.",
                          required=True)
flags.DEFINE_string("output", "", "Where to write the report (default: <first workdir>/report.html).")
flags.DEFINE_integer("samples", 2, "Test reviews shown with their attention per kind (most confident right, "
                     "most confident wrong, largest rating error).")
flags.DEFINE_string("compilation_cache_dir", None, "JAX's persistent compilation cache ('' = off; default: the "
                    "first run's compilation_cache_dir, where its training programs are).")
FLAGS = flags.FLAGS


def build_report(workdirs: list[str], output: str = "", *, samples: int = 2, command: str = "",
                 compilation_cache_dir: str | None = None) -> tuple[str, list[dict], dict]:
    """Analyses the runs, writes the page; returns (its path, the analyses, seconds per phase)."""
    from jaxreviews import runtime
    from jaxreviews.analysis import analyze, html, run_files  # after flags: importing JAX reads XLA_FLAGS

    started = time.perf_counter()
    for workdir in workdirs:
        if not os.path.isdir(os.path.expanduser(workdir)):
            raise FileNotFoundError(f"--workdir={workdir}: no such directory (train one with experiments.train)")
    if compilation_cache_dir is None:
        config = run_files.read_json(os.path.expanduser(workdirs[0]), "config.json")
        compilation_cache_dir = config.get("compilation", {}).get("cache_dir", "auto")
    runtime.enable_compilation_cache(compilation_cache_dir)
    analyses = analyze.analyze_runs(workdirs, samples_per_kind=samples)
    analysed = time.perf_counter()
    page = html.render(analyses, command=command)
    output = output or os.path.join(analyses[0]["workdir"], "report.html")
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output, "w", encoding="utf-8") as f:
        f.write(page)
    seconds = {key: round(sum(a["seconds"].get(key, 0.0) for a in analyses), 2)
               for key in analyses[0]["seconds"]}
    seconds["figures_and_html"] = round(time.perf_counter() - analysed, 2)
    seconds["total"] = round(time.perf_counter() - started, 2)
    return os.path.abspath(output), analyses, seconds


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from jaxreviews import runtime

    runtime.configure_logging()
    command = "python -m experiments.report " + " ".join(f"--workdir={w}" for w in FLAGS.workdir)
    path, _, seconds = build_report(FLAGS.workdir, FLAGS.output, samples=FLAGS.samples, command=command,
                                 compilation_cache_dir=FLAGS.compilation_cache_dir)
    print("report built in " + ", ".join(f"{key} {value:.1f}s" for key, value in seconds.items()), file=sys.stderr)
    print(path)
    return 0


if __name__ == "__main__":
    cli.run(main)
