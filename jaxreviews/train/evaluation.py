"""Evaluating parameters on batches, and the baselines every result is read beside.

`evaluate(eval_step, params, model_state, batches)` adds up the step's weighted metric sums over
any iterable of batches (weight-0 padding rows count nothing) and turns them into the metrics of
`results.json`: accuracy, macro-F1, RMSE, MAE, NLL, loss and the number of reviews. A batcher's
`evaluation()` visits every review once, so the figures are exact.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np

from jaxreviews.data import batching
from jaxreviews.train import step as step_lib


class NoBatches(ValueError):
    """`evaluate` was given no batch (the caller names its source)."""


def evaluate(eval_step: Callable, params, model_state, batches: Iterable[dict], *,
             to_device: Callable = jax.device_put, prefetch: int = 2,
             finalize: Callable[[dict], dict] = step_lib.finalize_metrics) -> dict:
    """Metrics of `params` over `batches` (eval_step from `step.make_eval_step`, usually jitted).

    Batches are built and moved to the device `prefetch` ahead on a background thread. `finalize`
    turns the summed pytree into metrics (an ensemble's sums hold each member's and the ensemble's)."""
    sums = None
    with batching.prefetching(batches, prefetch, to_device) as on_device:
        for batch in on_device:
            out = eval_step(params, model_state, batch)
            if sums is not None:
                jax.block_until_ready(sums)  # one batch in flight at most (see loop.Trainer.train_step)
            sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
    if sums is None:
        raise NoBatches("evaluate: no batches to evaluate")
    return finalize(jax.device_get(sums))


def baselines(train_ratings: np.ndarray, test_ratings: np.ndarray, rating_range, rating_step) -> dict:
    """Majority class and mean rating, fitted on train, scored on test."""
    lo = rating_range[0]
    classes = np.rint((train_ratings - lo) / rating_step).astype(int)
    majority = lo + np.bincount(classes).argmax() * rating_step
    mean = float(train_ratings.mean())
    return score_constant_predictions(test_ratings, {"majority": majority, "mean_rating": mean},
                                      rating_range, rating_step)


def score_constant_predictions(ratings: np.ndarray, predictions: dict[str, float], rating_range,
                               rating_step) -> dict:
    """Each constant rating of `predictions` scored on `ratings` (its class: the nearest step)."""
    lo = rating_range[0]
    num_classes = int(round((rating_range[1] - lo) / rating_step)) + 1
    ratings = np.asarray(ratings, np.float64)
    true_classes = np.clip(np.rint((ratings - lo) / rating_step).astype(int), 0, num_classes - 1)
    out = {}
    for name, prediction in predictions.items():
        error = ratings - prediction
        predicted_class = int(np.clip(round((prediction - lo) / rating_step), 0, num_classes - 1))
        confusion = np.zeros((num_classes, num_classes))
        np.add.at(confusion, (true_classes, predicted_class), 1)
        out[name] = {"accuracy": float(np.mean(true_classes == predicted_class)),
                     "rmse": float(np.sqrt(np.mean(error ** 2))), "mae": float(np.mean(np.abs(error))),
                     "macro_f1": step_lib.macro_f1(confusion), "prediction": float(prediction)}
    return out
