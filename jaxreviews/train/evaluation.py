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
             finalize: Callable[[dict], dict] = step_lib.finalize_metrics, sums=None) -> dict:
    """Metrics of `params` over `batches` (eval_step from `step.make_eval_step`, usually jitted).

    Batches are built and moved to the device `prefetch` ahead on a background thread. `finalize`
    turns the summed pytree into metrics (an ensemble's sums hold each member's and the ensemble's).
    `sums`: the zero sums of an eval step that adds a batch's sums to its last argument
    (`members.make_eval_step`): the sums then stay on the device in the step's program, and are
    read once at the end; without, each batch's sums are added by jnp.add."""
    accumulating, seen = sums is not None, False
    with batching.prefetching(batches, prefetch, to_device) as on_device:
        for batch in on_device:
            if accumulating:
                out = eval_step(params, model_state, batch, sums)
            else:
                out = eval_step(params, model_state, batch)
                out = out if sums is None else jax.tree.map(jnp.add, sums, out)
            if seen:
                jax.block_until_ready(sums)  # one batch in flight at most (see loop.Trainer.train_step)
            sums, seen = out, True
    if not seen:
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


def num_classes_of(rating_range, rating_step) -> int:
    return int(round((rating_range[1] - rating_range[0]) / rating_step)) + 1


def classes_of(ratings: np.ndarray, rating_range, rating_step) -> np.ndarray:
    """Each rating's class: its nearest step of the scale."""
    classes = np.rint((np.asarray(ratings, np.float64) - rating_range[0]) / rating_step).astype(int)
    return np.clip(classes, 0, num_classes_of(rating_range, rating_step) - 1)


def expected_rating(probabilities: np.ndarray, rating_range, rating_step) -> np.ndarray:
    """[N, C] class probabilities -> [N] the expected rating (sum of p(class) x its rating)."""
    return probabilities @ (rating_range[0] + rating_step * np.arange(probabilities.shape[-1]))


def score_predictions(ratings: np.ndarray, predicted_class, predicted_rating, rating_range, rating_step) -> dict:
    """Accuracy and macro-F1 of the predicted classes, RMSE and MAE of the predicted ratings
    (arrays, or one value for every review)."""
    num_classes = num_classes_of(rating_range, rating_step)
    ratings = np.asarray(ratings, np.float64)
    true_classes = classes_of(ratings, rating_range, rating_step)
    predicted_class = np.broadcast_to(predicted_class, true_classes.shape)
    error = ratings - predicted_rating
    confusion = np.zeros((num_classes, num_classes))
    np.add.at(confusion, (true_classes, predicted_class), 1)
    return {"accuracy": float(np.mean(true_classes == predicted_class)),
            "rmse": float(np.sqrt(np.mean(error ** 2))), "mae": float(np.mean(np.abs(error))),
            "macro_f1": step_lib.macro_f1(confusion)}


def score_constant_predictions(ratings: np.ndarray, predictions: dict[str, float], rating_range,
                               rating_step) -> dict:
    """Each constant rating of `predictions` scored on `ratings` (its class: the nearest step)."""
    return {name: {**score_predictions(ratings, classes_of(prediction, rating_range, rating_step), prediction,
                                       rating_range, rating_step), "prediction": float(prediction)}
            for name, prediction in predictions.items()}
