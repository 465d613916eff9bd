"""Trains one model, or K members in one program: `python -m experiments.train
--config=experiments/configs/han_upa.py[:presets] --workdir=DIR [--config.key=value ...]`
(`--config.num_seeds=5`: five seeds in one program; every option: docs/options.md).

With no flags it trains HAN with user and product attention on the synthetic corpus. Running the
same command again on the same workdir resumes the run, or reports it when it has finished; a
finished run continues when only train.epochs / train.patience grew.
"""
from __future__ import annotations

import os
import sys

from absl import app, flags

from experiments import cli
from ml_collections import config_flags

CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")

cli.define_config_file("config", os.path.join(CONFIGS, "han_upa.py"), "Experiment config file[:presets].")
flags.DEFINE_string("workdir", None, "Where the run writes its config, metrics, checkpoints and "
                    "results (default: runs/<config name>[-<presets>]).")
flags.DEFINE_bool("keep_freed_memory", True, "glibc keeps freed memory instead of re-mapping XLA's per-step "
                  "temporaries (about 1.5x faster steps on CPU; see jaxreviews/train/allocator.py).")
FLAGS = flags.FLAGS


def default_workdir(config_flag_value: str) -> str:
    path, _, arg = config_flag_value.partition(":")
    name = os.path.splitext(os.path.basename(path))[0]
    return os.path.join("runs", name + (f"-{arg.replace(',', '-')}" if arg else ""))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = FLAGS.config
    from jaxreviews.train import distributed  # before any device is used: joins a multi-process job
    distributed.initialize(config.get("distributed", "auto"))
    from jaxreviews import runtime  # after flags: importing JAX reads XLA_FLAGS
    stop = runtime.configure(compilation=config.compilation, keep_freed_memory=FLAGS.keep_freed_memory)
    from jaxreviews.train import loop, results as results_lib

    workdir = FLAGS.workdir or default_workdir(config_flags.get_config_filename(FLAGS["config"]))
    try:
        results = loop.train_and_evaluate(config, workdir, stop=stop, progress_stream=sys.stderr)
    except loop.NonFiniteLossError as error:
        print(f"error: {error}", file=sys.stderr)
        return 3
    if results is not None and distributed.is_main():
        print(results_lib.format_results(results))
    return 0


if __name__ == "__main__":
    cli.run(main)
