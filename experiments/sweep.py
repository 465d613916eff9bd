"""Hyperparameter search: `python -m experiments.sweep --config=experiments/configs/<name>.py[:arg]
--workdir=DIR --trials=N [--method=grid|random|tpe|gp|cmaes] [--storage=URL] [--study=NAME]
[--batch_trials=K] [--seeds=S] [--folds=K] [--memory_budget=BYTES] [--next_space=FILE]`

runs N more trials of the study in DIR/study.db (or `--storage`, e.g. postgresql://user@host/db,
shared by every worker that names it) and writes DIR/report.md and DIR/report.html. The space is
the config's `search.space` (a JSON file or text; "" = the model's default space, see
jaxreviews/tune/space.py); every other `--config.` flag sets the base config of every trial. Each
trial is a run directory DIR/trials/NNNN/. Running the same command again continues the study, and
re-runs a trial that a crash or kill interrupted.
"""
from __future__ import annotations

import os

from absl import app, flags, logging
from ml_collections import config_flags

CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")

config_flags.DEFINE_config_file("config", os.path.join(CONFIGS, "han_upa.py"), "Experiment config file[:arg]: "
                                "the base config of every trial, with its search space in search.space.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "The sweep's folder: study.db (without --storage), trials/NNNN/, the report.")
flags.DEFINE_integer("trials", 8, "Trials to add to the study (a grid stops when every point has run).")
flags.DEFINE_enum("method", "tpe", ["grid", "random", "tpe", "gp", "cmaes"],
                  "grid, random, tpe (Bayesian, Optuna's TPE), gp (Optuna's Gaussian process; needs torch), cmaes.")
flags.DEFINE_string("storage", "", "Optuna storage URL shared by many workers, e.g. postgresql://user:pw@host/db; "
                    "default sqlite:///DIR/study.db.")
flags.DEFINE_string("study", "", "The study's name in the storage (default 'sweep').")
flags.DEFINE_integer("batch_trials", 1, "Ask K trials at a time; those of the same shapes train as one vmapped "
                     "population (learning rate, weight decay, dropout per member).")
flags.DEFINE_integer("seeds", 1, "Score each trial by the mean over S seeds (members of one program); the std is "
                     "recorded.")
flags.DEFINE_integer("folds", 0, "K-fold cross-validation (K >= 2): a trial's score is the mean over folds.")
flags.DEFINE_string("memory_budget", "", "Bytes a trial's compiled train step may need (8GB, 512MiB); trials over "
                    "it fail with the reason, untrained. Default: the device's memory.")
flags.DEFINE_string("next_space", "", "Write the proposed next search space (JSON) to this file.")
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from jaxreviews.train import allocator
    allocator.keep_freed_memory()
    from jaxreviews.tune.sweep import run_sweep  # after flags: importing JAX reads XLA_FLAGS

    logging.set_verbosity(logging.WARNING)
    if not FLAGS.workdir:
        raise app.UsageError("--workdir is required: the sweep's folder (study.db, trials/, report)")
    result = run_sweep(FLAGS.config, FLAGS.workdir, trials=FLAGS.trials, method=FLAGS.method, storage=FLAGS.storage,
                       study_name=FLAGS.study, batch_trials=FLAGS.batch_trials, folds=FLAGS.folds,
                       memory_budget=FLAGS.memory_budget, seeds=FLAGS.seeds, next_space=FLAGS.next_space)
    return 0 if result["done"] or result["complete"] else 1


if __name__ == "__main__":
    app.run(main)
