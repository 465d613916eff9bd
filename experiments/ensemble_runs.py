"""Averages finished runs into one ensemble: `python -m experiments.ensemble_runs --workdir=A
--workdir=B [...] [--selection=equal|validation] [--text_logreg] [--output=FILE.json]`.

Runs of different kinds on one data set and split (fasttext, cnn, han_upa, mf, ...): each run's
predictions on the validation and test splits (its best parameters; a K-member run as its own
ensemble), averaged with equal weights or weights chosen on validation (greedy selection with
replacement), optionally with the TF-IDF + logistic-regression baseline as one more member.
Prints each member's and the ensemble's test figures beside the runs' baselines, and writes them
as JSON (--output). Runs whose splits differ are refused with the data options that differ.
"""
from __future__ import annotations

import contextlib
import json
import os

from absl import app, flags

from experiments import cli

flags.DEFINE_multi_string("workdir", None, "A run directory written by experiments.train; repeat for each member.",
                          required=True)
flags.DEFINE_enum("which", "best", ["best", "latest"], "Each run's best or latest parameters.")
flags.DEFINE_enum("selection", "equal", ["equal", "validation"],
                  "equal weights, or weights chosen on the validation split (greedy selection with replacement).")
flags.DEFINE_enum("selection_metric", "rmse", ["rmse", "nll", "accuracy", "macro_f1"],
                  "What --selection=validation minimises (or maximises).")
flags.DEFINE_bool("text_logreg", False, "Add the TF-IDF + logistic-regression baseline (fitted on the training "
                  "split, C chosen on validation) as one more member.")
flags.DEFINE_string("output", "", "Where to write the figures as JSON ('' = print only).")
FLAGS = flags.FLAGS

COLUMNS = ("accuracy", "macro_f1", "rmse", "mae", "nll")


def format_table(combined: dict, baselines: dict) -> str:
    weights = dict(zip(combined["members"], combined["weights"]))
    lines = [f"{'test (' + format(combined['reviews']['test'], ',') + ' reviews)':44}{'weight':>8}"
             + "".join(f"{c:>10}" for c in COLUMNS)]
    rows = [(name, f"{weights[name]:.3f}", combined["test"][name]) for name in combined["members"]]
    rows.append((f"ensemble ({combined['selection']} weights)", "", combined["test"]["ensemble"]))
    rows += [(f"baseline: {key}", "", values) for key, values in baselines.items() if "rmse" in values]
    for label, weight, values in rows:
        lines.append(f"{label:44}{weight:>8}" + "".join(
            f"{values[c]:>10.4f}" if c in values else f"{'-':>10}" for c in COLUMNS))
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from jaxreviews import runtime
    from jaxreviews.analysis import analyze, combine_runs  # after flags: importing JAX reads XLA_FLAGS
    from jaxreviews.run import load_run
    from jaxreviews.train.results import RunResults

    runtime.configure_logging()
    for workdir in FLAGS.workdir:
        if not os.path.isdir(os.path.expanduser(workdir)):
            raise FileNotFoundError(f"--workdir={workdir}: no such directory (train one with experiments.train)")
    runs = [load_run(os.path.expanduser(w), FLAGS.which) for w in FLAGS.workdir]
    runtime.enable_compilation_cache(runs[0].config.compilation.get("cache_dir", "auto"))
    finished = os.path.join(runs[0].workdir, "results.json")  # the baselines of its split, once it finished
    found = RunResults.load(finished).baselines if os.path.exists(finished) else {}
    baselines = {key: {c: v for c, v in values.items() if c in COLUMNS}
                 for key, values in found.items() if isinstance(values, dict)}
    # an --output that cannot be written fails before the work
    with cli.written(FLAGS.output) if FLAGS.output else contextlib.nullcontext() as f:
        combined = combine_runs.combine_runs(runs, names=analyze.unique_names(FLAGS.workdir),
                                             selection=FLAGS.selection, selection_metric=FLAGS.selection_metric,
                                             text_logreg=FLAGS.text_logreg)
        combined.update(workdirs=[os.path.abspath(os.path.expanduser(w)) for w in FLAGS.workdir],
                        which=FLAGS.which, baselines=baselines)
        if f is not None:
            json.dump(combined, f, indent=2, sort_keys=True)
    print(format_table(combined, baselines))
    if FLAGS.output:
        print(f"-> {FLAGS.output}")
    return 0


if __name__ == "__main__":
    cli.run(main)
