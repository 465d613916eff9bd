"""jaxreviews: predict the star rating of a review from its text, its author and its product.

The public names, each documented where it is defined:

    load_run(workdir)            a trained run: `.predict(reviews)`, `.evaluate(file)`   (jaxreviews.run)
    models.build_model(...)      Flax modules by name: cnn, rnn, bilstm, han, han_upa, mf (jaxreviews.models)
    models.default_model_config  every option of a model, as an ml_collections.ConfigDict
    data.pipeline.load_splits    a data config -> train / validation / test with vocabulary and id maps
    data.packing.PackedBatcher   fixed-shape packed batches (data.batching.Batcher: [B, S, W] buckets)
    train.step                   init_state, make_train_step, make_eval_step: pure, jit- and vmap-able
    train.optimizers             make_optimizer: optax chains from config (schedules, clipping, freezing)
    train.evaluation.evaluate    the metrics of results.json over any batches
    train.loop                   the fit loop in parts (setup, restore_or_create, Fit, final_results)
                                 and train_and_evaluate(config, workdir), what experiments.train runs
    analysis.analyze_run(workdir)  every number of a run's report (experiments.report) as plain dicts
    tune.sweep.run_sweep(config, workdir, trials=N)  a hyperparameter search (experiments.sweep): Optuna
                                 studies, batched trials as populations, pruning, folds, report

Layers point one way: data -> models -> train -> experiments; `run` (load_run) sits on top, and
`analysis` on it.
"""
from jaxreviews.run import Run, load_run

__version__ = "0.1.0"
__all__ = ["Run", "__version__", "load_run"]
