"""Hyperparameter search: spaces, Optuna's methods by ask-and-tell, pruning, batched trials as
vmapped populations, shared studies, K-fold scores, and a report that says where to look next.

    python -m experiments.sweep --config=experiments/configs/han_upa.py:tiny --workdir=runs/sweep --trials=8

    space       search spaces (log / linear floats, ints, powers of two, choices, conditions) from JSON
    methods     Optuna's samplers (grid, random, tpe, gp, cmaes) and pruners (median, halving, hyperband)
    study       the study's storage (SQLite in the sweep's folder, or a PostgreSQL URL), heartbeats,
                interrupted trials run again
    runner      trials through the fit loop's parts: programs shared across trials, batches of trials
                as one population, the memory check, pruning, divergence, folds, run directories
    sweep       the worker loop (`run_sweep`), what experiments.sweep runs
    analysis    best trials, edges, proposed ranges, fANOVA importance
    report      report.md / report.html with the figures

Importing this package imports neither Optuna nor JAX; `jaxreviews.tune.sweep.run_sweep` does.
"""
from jaxreviews.tune.space import load_space, parse_space

__all__ = ["load_space", "parse_space"]
