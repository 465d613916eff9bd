"""Trains one model, or an ensemble: `python -m experiments.train --config=experiments/configs/han_upa.py[:arg]
--workdir=DIR [--config.key=value ...]` (`--config.num_seeds=5`: five seeds in one program).

With no flags it trains HAN with user and product attention on the synthetic corpus. Running the
same command again on the same workdir resumes the run, or reports it when it has finished.
"""
from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")

config_flags.DEFINE_config_file("config", os.path.join(CONFIGS, "han_upa.py"), "Experiment config file[:arg].",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Where the run writes its config, metrics, checkpoints and "
                    "results (default: runs/<config name>[-<arg>]).")
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
    if FLAGS.keep_freed_memory:
        from jaxreviews.train import allocator
        allocator.keep_freed_memory()
    from jaxreviews.train import distributed  # before any device is used: joins a multi-process job
    distributed.initialize(FLAGS.config.get("distributed", "auto"))
    from jaxreviews import ensemble  # after flags: importing JAX reads XLA_FLAGS
    from jaxreviews.train import loop

    logging.set_verbosity(logging.WARNING)  # orbax reports every file it writes at INFO

    workdir = FLAGS.workdir or default_workdir(config_flags.get_config_filename(FLAGS["config"]))
    try:
        results = ensemble.train_and_evaluate(FLAGS.config, workdir)  # one model unless num_seeds etc. say more
    except loop.NonFiniteLossError as error:
        print(f"error: {error}", file=sys.stderr)
        return 3
    return 0 if results else 1


if __name__ == "__main__":
    app.run(main)
