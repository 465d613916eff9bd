"""Training: one loop for one model and for K members, and its parts.

    train_and_evaluate(config, workdir)  the run `experiments.train` makes: returns `RunResults`
    RunResults                           results.json's one schema (`results`)
    Callback                             hooks a caller attaches to a run (the tuner's reports)
    Trainer, restore_or_create           the loop's moving parts (`loop`)
    build_experiment, ProgramCache       data, model, optimiser and compiled programs of a config
    RunDirectory                         a run directory: lock, resume policy, files (`workdir`)
    step                                 init_state, make_train_step, make_eval_step: pure, jit- and vmap-able
    optimizers.make_optimizer            optax chains from config (schedules, clipping, freezing)
    evaluation.evaluate                  the metrics of results.json over any batches
    members, population                  K members in one program; populations of hyperparameters

Nothing here configures the process (caches, signals, allocator): the command-line tools do that
through `jaxreviews.runtime.configure`.
"""
from jaxreviews.train import evaluation, members, optimizers, population, step
from jaxreviews.train.experiment import Experiment, ProgramCache, build as build_experiment
from jaxreviews.train.loop import Callback, NonFiniteLossError, Trainer, param_checksum, restore_or_create, \
    train_and_evaluate
from jaxreviews.train.results import RunResults, format_results
from jaxreviews.train.workdir import RunDirectory, WorkdirError

__all__ = ["Callback", "Experiment", "NonFiniteLossError", "ProgramCache", "RunDirectory", "RunResults", "Trainer",
           "WorkdirError", "build_experiment", "evaluation", "format_results", "members", "optimizers",
           "param_checksum", "population", "restore_or_create", "step", "train_and_evaluate"]
