"""Predicts with a trained run: `python -m experiments.predict --workdir=RUN --input=FILE
[--format=tang|amazon|ratings] --output=predictions.jsonl [--attention]`.

One JSON object a review, in the input's order: user, product, rating (when the file has one),
predicted_class, predicted_class_rating, expected_rating, probabilities (classification heads),
unseen_user / unseen_product, oov_tokens; with --attention the tokens and the word and sentence
attention weights (HAN models). The input is read in chunks: a file larger than memory works. The
output appears whole or not at all (written beside it, then renamed).
"""
from __future__ import annotations

import contextlib
import json
import sys
import time

from absl import app, flags

from experiments import cli

flags.DEFINE_string("workdir", None, "A run directory written by experiments.train.", required=True)
flags.DEFINE_string("input", None, "Reviews to predict: a file in the literature, Amazon or ratings format.",
                    required=True)
flags.DEFINE_string("format", "", "tang | amazon | ratings ('' = detect from the file).")
flags.DEFINE_string("output", "predictions.jsonl", "Where to write the predictions ('-' = stdout).")
flags.DEFINE_enum("which", "best", ["best", "latest"], "The run's best or latest parameters.")
flags.DEFINE_bool("attention", False, "Add the word and sentence attention weights (HAN models).")
flags.DEFINE_integer("chunk_size", 4096, "Reviews read and predicted at a time.")
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from jaxreviews.run import load_run  # after flags: importing JAX reads XLA_FLAGS

    from jaxreviews import runtime

    runtime.configure_logging()

    run = load_run(FLAGS.workdir, FLAGS.which)
    started, count = time.perf_counter(), 0
    with (contextlib.nullcontext(sys.stdout) if FLAGS.output == "-" else cli.written(FLAGS.output)) as out:
        for prediction in run.predict(FLAGS.input, format=FLAGS.format or None, attention=FLAGS.attention,
                                      chunk_size=FLAGS.chunk_size):
            out.write(json.dumps(prediction) + "\n")
            count += 1
    seconds = time.perf_counter() - started
    print(f"{count:,} predictions in {seconds:.1f}s ({count / max(seconds, 1e-9):,.0f}/s) -> {FLAGS.output}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    cli.run(main)
