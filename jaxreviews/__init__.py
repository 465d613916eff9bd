"""jaxreviews: predict the star rating of a review from its text, its author and its product.

    from jaxreviews import options, train_and_evaluate, load_run
    config = options.default_config("han_upa", "tiny")        # every option: docs/options.md
    results = train_and_evaluate(config, "runs/tiny")          # RunResults, as results.json
    run = load_run("runs/tiny")                                # .predict(reviews), .evaluate(file)

The public names, each documented where it is defined:

    options                      every option in one place, presets, validate(config)
    train_and_evaluate           one loop for one model and K members (jaxreviews.train)
    RunResults                   results.json's schema
    load_run, Run                a trained run: predict, evaluate (jaxreviews.run)
    data                         load_splits, readers, batchers, the synthetic corpus
    models                       Flax modules by name: cnn, rnn, bilstm, han, han_upa, mf
    train                        the loop's parts, the pure steps, optimisers, members, callbacks
    tune.sweep.run_sweep         a hyperparameter search (experiments.sweep): Optuna studies,
                                 batched trials as populations, pruning, folds, report
    analysis.analyze_run         every number of a run's report (experiments.report) as plain dicts
    runtime.configure            process settings for command-line tools (cache, SIGTERM, logs):
                                 the library itself never changes its host process

Layers point one way: options -> data -> models -> train -> tune / analysis -> experiments; `run`
(load_run) sits on train, and `analysis` on it. The library logs through `logging` ("jaxreviews")
and prints nothing.
"""
from jaxreviews import options
from jaxreviews.run import Run, load_run
from jaxreviews.train import RunResults, train_and_evaluate

__version__ = "0.1.0"
__all__ = ["Run", "RunResults", "__version__", "load_run", "options", "train_and_evaluate"]
