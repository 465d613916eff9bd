"""Hyperparameter search: `python -m experiments.sweep --config=experiments/configs/<name>.py[:arg]
--workdir=DIR --trials=N [--method=grid|random|tpe|gp|cmaes] [--storage=URL] [--study=NAME]
[--batch_trials=K] [--seeds=S] [--folds=K] [--memory_budget=BYTES] [--next_space=FILE]`

runs N more trials of the study in DIR/study.db (or `--storage`, e.g. postgresql://user@host/db,
shared by every worker that names it) and writes DIR/report.md and DIR/report.html. Every sweep
option is in `config.search` (docs/options.md); the flags above are short aliases of those keys.
The space is `search.space` (a JSON file or text; "" = the model's default space, see
jaxreviews/tune/space.py); every other `--config.` flag sets the base config of every trial. Each
trial is a run directory DIR/trials/NNNN/. Running the same command again continues the study, and
re-runs a trial that a crash or kill interrupted; SIGTERM saves the running trials and stops.
"""
from __future__ import annotations

import os

from absl import app, flags

from experiments import cli
from ml_collections import config_flags

CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")

cli.define_config_file("config", os.path.join(CONFIGS, "han_upa.py"), "Experiment config file[:arg]: "
                                "the base config of every trial, with its search space in search.space.")
flags.DEFINE_string("workdir", None, "The sweep's folder: study.db (without a storage URL), trials/NNNN/, the report.")
# Aliases of config.search.* (docs/options.md): set, they override the config's value.
flags.DEFINE_integer("trials", None, "= --config.search.trials: trials to add to the study (a grid stops when every "
                     "point has run).")
flags.DEFINE_enum("method", None, ["grid", "random", "tpe", "gp", "cmaes"], "= --config.search.method: grid, random, "
                  "tpe (Bayesian, Optuna's TPE), gp (Optuna's Gaussian process; needs torch), cmaes.")
flags.DEFINE_string("storage", None, "= --config.search.storage: Optuna storage URL shared by many workers, e.g. "
                    "postgresql://user:pw@host/db; default sqlite:///DIR/study.db.")
flags.DEFINE_string("study", None, "= --config.search.study: the study's name in the storage (default 'sweep').")
flags.DEFINE_integer("batch_trials", None, "= --config.search.batch_trials: ask K trials at a time; those of the same "
                     "shapes train as one vmapped population (learning rate, weight decay, dropout per member).")
flags.DEFINE_integer("seeds", None, "= --config.search.seeds_per_trial: score each trial by the mean over S seeds "
                     "(members of one program); the std is recorded.")
flags.DEFINE_integer("folds", None, "= --config.search.folds: K-fold cross-validation (K >= 2): a trial's score is "
                     "the mean over folds.")
flags.DEFINE_string("memory_budget", None, "= --config.search.memory_budget: bytes a trial's compiled train step may "
                    "need (8GB, 512MiB); trials over it fail with the reason, untrained. Default: the device's memory.")
flags.DEFINE_string("next_space", None, "= --config.search.next_space: write the proposed next search space (JSON) "
                    "to this file.")
flags.DEFINE_bool("keep_freed_memory", True, "glibc keeps freed memory (faster steps on CPU; "
                  "jaxreviews/train/allocator.py).")
FLAGS = flags.FLAGS

ALIASES = ("trials", "method", "storage", "batch_trials", "seeds", "folds", "memory_budget", "next_space")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.workdir:
        raise app.UsageError("--workdir is required: the sweep's folder (study.db, trials/, report)")
    config = FLAGS.config
    from jaxreviews.tune.sweep import run_sweep  # after flags: importing JAX reads XLA_FLAGS
    from jaxreviews import runtime

    stop = runtime.configure(compilation=config.compilation, keep_freed_memory=FLAGS.keep_freed_memory)
    overrides = {name: FLAGS[name].value for name in ALIASES if FLAGS[name].value is not None}
    if FLAGS.study is not None:
        overrides["study_name"] = FLAGS.study
    result = run_sweep(config, FLAGS.workdir, stop=stop, **overrides)
    return 0 if result["done"] or result["complete"] else 1


if __name__ == "__main__":
    cli.run(main)
