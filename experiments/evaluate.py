"""Evaluates a trained run on a file: `python -m experiments.evaluate --workdir=RUN --input=FILE
[--format=tang|amazon|ratings] [--output=FILE.json]`.

Prints the metrics of results.json (accuracy, macro-F1, RMSE, MAE, NLL) beside the majority and
mean-rating baselines fitted on the run's training split, and the reviews whose user or product the
run never saw and its OOV tokens; writes them as JSON (default: RUN/evaluation-<input name>.json).
The file is read in chunks: a file larger than memory works.
"""
from __future__ import annotations

import json
import os

import numpy as np
from absl import app, flags

from experiments import cli

flags.DEFINE_string("workdir", None, "A run directory written by experiments.train.", required=True)
flags.DEFINE_string("input", None, "Reviews with ratings: a file in the literature, Amazon or ratings format.",
                    required=True)
flags.DEFINE_string("format", "", "tang | amazon | ratings ('' = detect from the file).")
flags.DEFINE_string("output", "", "Where to write the metrics (default: RUN/evaluation-<input name>.json).")
flags.DEFINE_enum("which", "best", ["best", "latest"], "The run's best or latest parameters.")
FLAGS = flags.FLAGS


def format_evaluation(name: str, result: dict) -> str:
    columns = ("accuracy", "macro_f1", "rmse", "mae")
    members = result.get("members")
    label = f"{name}{f' ensemble of {len(members)}' if members else ''} on {os.path.basename(FLAGS.input)}"
    rows = [(label, {c: f"{v:.4f}" for c, v in result["metrics"].items() if c in columns})]
    if members:  # an ensemble: its members as mean ± std
        rows.append(("members (mean ± std)", {c: f"{np.mean([m[c] for m in members]):.4f}±"
                                                 f"{np.std([m[c] for m in members], ddof=1):.4f}" for c in columns}))
    rows += [(f"baseline: {key}", {c: f"{v:.4f}" for c, v in values.items() if c in columns})
             for key, values in result.get("baselines", {}).items()]
    width = 16 if members else 10
    lines = [f"{'':44}" + "".join(f"{c:>{width}}" for c in columns)]
    for label, values in rows:
        lines.append(f"{label:44}" + "".join(f"{values.get(c, '-'):>{width}}" for c in columns))
    data = result.get("data")
    if data:
        lines.append(f"{data['reviews']:,} reviews: {data['unseen_user']:,} with a user and {data['unseen_product']:,} "
                     f"with a product unseen in training; {data['oov_tokens']:,} of {data['tokens']:,} tokens OOV")
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from jaxreviews.run import load_run  # after flags: importing JAX reads XLA_FLAGS

    from jaxreviews import runtime

    runtime.configure_logging()

    run = load_run(FLAGS.workdir, FLAGS.which)
    stem = os.path.basename(FLAGS.input).split(".")[0]
    output = FLAGS.output or os.path.join(run.workdir, f"evaluation-{stem}.json")
    with cli.written(output) as f:  # a directory it cannot write fails here, before the evaluation
        result = run.evaluate(FLAGS.input, format=FLAGS.format or None)
        json.dump({"input": os.path.abspath(FLAGS.input), "which": FLAGS.which, "step": run.step, **result}, f,
                  indent=2, sort_keys=True)
    print(format_evaluation(run.config.model.name, result))
    print(f"-> {output}")
    return 0


if __name__ == "__main__":
    cli.run(main)
