"""Output heads, losses and metric sums.

Head kinds: "classification" (softmax cross-entropy over C rating classes), "regression" (MSE on a
rating squashed into `rating_range`) and "both" (CE + `regression_weight` * MSE).

Classes and ratings: class c <-> rating lo + c * step with step = (hi - lo) / (C - 1), i.e.
lo + c for the usual integer ratings (1..5 stars: class 0 = 1 star).

Every model's outputs also carry `predicted_rating` [B] and `predicted_class` [B] (int32), which
the metrics read. Predicted rating of a classification-only head (for RMSE/MAE): the EXPECTED
rating under the softmax, sum_c p_c * rating(c): smooth, always in range, and what minimises the
squared error given the predicted distribution. Predicted class of a regression-only head (for
accuracy): the rating rounded to the nearest class. With both, each comes from its own output.

Starting biases (`starting_biases`): the rating pre-activation starts at the training mean
through the inverse of the squash (so an untrained model predicts the mean, the best constant under
MSE) and the C logits at log(training label prior) (so its softmax is the prior, the best constant
under CE). Without those statistics: the middle of the range and uniform logits.

Regularisers: a model may add `penalty` [B] to its TRAINING outputs, a per-example term such as
MF's L2 on the factors and biases the example looked up (what SGD-per-rating libraries apply).
`loss` adds its weighted mean; `per_example_loss` and `metric_sums` ignore it, so evaluation
losses stay comparable across models.

Everything here is a pure function of arrays: jit/vmap friendly. Batches carry `weight` (0 for
padding rows), and every loss and metric is weighted by it.
"""
from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxreviews.models import layers
from jaxreviews.options import reference

Array = jax.Array
KINDS = reference.HEAD_KINDS
RATING_ACTIVATIONS = reference.RATING_ACTIVATIONS


def has_classification(kind: str) -> bool:
    _check_kind(kind)
    return kind in ("classification", "both")


def has_regression(kind: str) -> bool:
    _check_kind(kind)
    return kind in ("regression", "both")


def num_outputs(kind: str, num_classes: int) -> int:
    """Width of the head's output layer: C logits and/or one rating pre-activation."""
    return num_classes * has_classification(kind) + has_regression(kind)


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown head kind {kind!r}; choose one of {KINDS}")


def rating_step(rating_range: tuple[float, float], num_classes: int) -> float:
    lo, hi = rating_range
    return (hi - lo) / max(num_classes - 1, 1)


def class_to_rating(classes: Array, rating_range: tuple[float, float], num_classes: int) -> Array:
    """Class index -> rating: lo + c * step (lo + c for integer star ratings)."""
    return rating_range[0] + jnp.asarray(classes, jnp.float32) * rating_step(rating_range, num_classes)


def rating_to_class(ratings: Array, rating_range: tuple[float, float], num_classes: int) -> Array:
    """Rating -> nearest class index in [0, C-1] (int32)."""
    position = (jnp.asarray(ratings, jnp.float32) - rating_range[0]) / rating_step(rating_range, num_classes)
    return jnp.clip(jnp.round(position), 0, num_classes - 1).astype(jnp.int32)


def squash_rating(z: Array, rating_range: tuple[float, float], activation: str = "sigmoid") -> Array:
    """Pre-activation -> rating inside [lo, hi]."""
    lo, hi = rating_range
    z = layers.upcast(z)
    if activation == "sigmoid":
        return lo + (hi - lo) * jax.nn.sigmoid(z)
    if activation == "clip":
        # Keeps the prediction in range and stops the gradient outside it.
        return jnp.clip(z, lo, hi)
    if activation == "clip_straight_through":
        # The same prediction, but the gradient of the identity: a rating of 4 predicted at 5.3
        # (clipped to 5) still pulls z down, as SGD on the unclipped linear model does (surprise's
        # SVD clips only its predictions). A target at the edge stops pulling once z passes it.
        return z + jax.lax.stop_gradient(jnp.clip(z, lo, hi) - z)
    raise ValueError(f"unknown rating_activation {activation!r}; choose one of {RATING_ACTIVATIONS}")


def rating_offset(rating_range: tuple[float, float], activation: str) -> float:
    """Bias init that starts the rating head at the middle of the range."""
    return rating_preactivation(0.5 * (rating_range[0] + rating_range[1]), rating_range, activation)


# A rating at the very edge of the range has no finite sigmoid pre-activation: start this close.
_EDGE = 1e-3
# Classes absent from the training split start at this probability instead of log(0) = -inf.
SMALLEST_PRIOR = 1e-6


def rating_preactivation(rating: float, rating_range: tuple[float, float], activation: str = "sigmoid") -> float:
    """The inverse of `squash_rating`: the pre-activation whose squashed rating is `rating` (kept
    a hair inside the range for the sigmoid, whose edges are at infinity)."""
    lo, hi = rating_range
    if activation == "sigmoid":
        fraction = min(max((float(rating) - lo) / (hi - lo), _EDGE), 1.0 - _EDGE)
        return float(np.log(fraction) - np.log1p(-fraction))
    if activation in ("clip", "clip_straight_through"):
        return float(min(max(float(rating), lo), hi))
    raise ValueError(f"unknown rating_activation {activation!r}; choose one of {RATING_ACTIVATIONS}")


def starting_biases(kind: str, num_classes: int, rating_range: tuple[float, float], activation: str, *,
                    rating_mean: float | None = None,
                    label_prior: Sequence[float] | np.ndarray | None = None) -> np.ndarray:
    """float32 [num_outputs] output biases an untrained head starts from: log(label_prior) for the
    C logits (uniform without a prior) and the pre-activation of `rating_mean` for the rating (the
    middle of the range without a mean). See the module docstring."""
    biases = np.zeros(num_outputs(kind, num_classes), np.float32)
    if has_classification(kind) and label_prior is not None:
        prior = np.asarray(label_prior, np.float64)
        if prior.shape != (num_classes,) or not np.all(np.isfinite(prior)) or np.any(prior < 0) or prior.sum() <= 0:
            raise ValueError(f"label_prior must be {num_classes} non-negative class frequencies, got {prior}")
        prior = np.maximum(prior / prior.sum(), SMALLEST_PRIOR)
        biases[:num_classes] = np.log(prior / prior.sum())
    if has_regression(kind):
        middle = 0.5 * (rating_range[0] + rating_range[1])
        biases[-1] = rating_preactivation(middle if rating_mean is None else rating_mean, rating_range, activation)
    return biases


class Head(nn.Module):
    """features [B, D] (+ optional additive pre-activations [B, num_outputs]) -> outputs dict.

    One Dense layer produces the C logits and/or the rating pre-activation; `offsets` lets a model
    add per-user / per-product biases (UPNN-style) to exactly those outputs. Its bias starts at
    `starting_biases` of the training statistics `rating_mean` and `label_prior` when given.
    """

    kind: str
    num_classes: int
    rating_range: tuple[float, float]
    rating_activation: str = "sigmoid"
    kernel_init: str = "glorot_uniform"
    dtype: layers.Dtype = jnp.float32
    rating_mean: float | None = None  # training mean rating
    label_prior: tuple[float, ...] | None = None  # training class frequencies [C]

    @nn.compact
    def __call__(self, features: Array, offsets: Array | None = None) -> dict[str, Array]:
        n = num_outputs(self.kind, self.num_classes)
        start = starting_biases(self.kind, self.num_classes, self.rating_range, self.rating_activation,
                                rating_mean=self.rating_mean, label_prior=self.label_prior)

        def bias_init(key, shape, dtype=jnp.float32):
            del key
            return jnp.asarray(start, dtype).reshape(shape)

        z = nn.Dense(n, kernel_init=layers.initializer(self.kernel_init), bias_init=bias_init,
                     dtype=self.dtype, name="output")(features)
        z = layers.upcast(z)
        if offsets is not None:
            z = z + offsets.astype(z.dtype)
        return split_outputs(z, self.kind, self.num_classes, self.rating_range, self.rating_activation)


def split_outputs(z: Array, kind: str, num_classes: int, rating_range: tuple[float, float],
                  rating_activation: str) -> dict[str, Array]:
    """[B, num_outputs] pre-activations -> {"logits": [B, C]} and/or {"rating": [B]}."""
    outputs = {}
    if has_classification(kind):
        outputs["logits"] = layers.upcast(z[:, :num_classes])
    if has_regression(kind):
        outputs["rating"] = squash_rating(z[:, -1], rating_range, rating_activation)
    return with_predictions(outputs, rating_range, num_classes)


def with_predictions(outputs: dict[str, Array], rating_range: tuple[float, float],
                     num_classes: int) -> dict[str, Array]:
    """Adds `predicted_rating` [B] float32 (the regression output, else the expected rating under
    the softmax) and `predicted_class` [B] int32 (argmax of the logits, else the rounded rating)."""
    outputs = dict(outputs)
    if "rating" in outputs:
        outputs["predicted_rating"] = outputs["rating"]
    else:
        ratings = class_to_rating(jnp.arange(num_classes), rating_range, num_classes)
        outputs["predicted_rating"] = jax.nn.softmax(outputs["logits"], axis=-1) @ ratings
    if "logits" in outputs:
        outputs["predicted_class"] = jnp.argmax(outputs["logits"], axis=-1).astype(jnp.int32)
    else:
        outputs["predicted_class"] = rating_to_class(outputs["rating"], rating_range, num_classes)
    return outputs


def combine_outputs(outputs: dict[str, Array], rating_range: tuple[float, float], num_classes: int) -> dict:
    """Members' outputs [K, B, ...] -> the ensemble's [B, ...]: logits = log of the mean class
    probabilities (the softmax of which is that mean), rating = the mean rating."""
    combined = {}
    if "logits" in outputs:
        probabilities = jax.nn.softmax(outputs["logits"].astype(jnp.float32), axis=-1).mean(0)
        combined["logits"] = jnp.log(jnp.maximum(probabilities, jnp.finfo(jnp.float32).tiny))
    if "rating" in outputs:
        combined["rating"] = outputs["rating"].astype(jnp.float32).mean(0)
    return with_predictions(combined, rating_range, num_classes)


def per_example_loss(outputs: dict[str, Array], batch: dict[str, Array],
                     head_config: ml_collections.ConfigDict | None = None) -> Array:
    """[B] loss of each example: CE and/or MSE (weighted sum of both for kind "both")."""
    regression_weight = 1.0 if head_config is None else float(head_config.regression_weight)
    smoothing = 0.0 if head_config is None else float(head_config.get("label_smoothing", 0.0))
    loss = 0.0
    if "logits" in outputs:
        loss = loss + cross_entropy(outputs["logits"], batch["label"], smoothing)
    if "rating" in outputs:
        squared = jnp.square(outputs["rating"] - batch["rating"].astype(outputs["rating"].dtype))
        loss = loss + (regression_weight if "logits" in outputs else 1.0) * squared
    if isinstance(loss, float):
        raise ValueError(f"outputs have neither 'logits' nor 'rating': {sorted(outputs)}")
    return loss


def cross_entropy(logits: Array, labels: Array, smoothing: float = 0.0) -> Array:
    """[B] -log p(label), or with `smoothing` s the cross-entropy against (1 - s) one-hot + s / C."""
    logits = layers.upcast(logits)
    log_z = jax.nn.logsumexp(logits, axis=-1)
    nll = log_z - jnp.take_along_axis(logits, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]
    if not smoothing:
        return nll
    return (1.0 - smoothing) * nll + smoothing * (log_z - jnp.mean(logits, axis=-1))


def _weight(batch: dict[str, Array], like: Array) -> Array:
    if "weight" in batch:
        return batch["weight"].astype(jnp.float32)
    return jnp.ones(like.shape[:1], jnp.float32)


def loss(outputs: dict[str, Array], batch: dict[str, Array],
         head_config: ml_collections.ConfigDict | None = None) -> Array:
    """Scalar training loss: the mean of the per-example loss (+ the model's `penalty` [B] when its
    outputs carry one) weighted by `batch["weight"]`.

    Padding rows (weight 0) contribute nothing; an all-padding batch gives 0, not NaN.
    """
    per_example = per_example_loss(outputs, batch, head_config)
    if "penalty" in outputs:
        per_example = per_example + outputs["penalty"].astype(per_example.dtype)
    weight = _weight(batch, per_example)
    return jnp.sum(weight * per_example) / jnp.maximum(jnp.sum(weight), 1e-12)


def metric_sum_names(kind: str) -> tuple[str, ...]:
    """The keys of `metric_sums` for a head of `kind` (nll with a classification output): what a
    running sum kept on the device is made of, known before any step is traced."""
    names = ("weight", "loss", "correct", "squared_error", "absolute_error")
    return names + ("nll",) if has_classification(kind) else names


def metric_sums(outputs: dict[str, Array], batch: dict[str, Array],
                head_config: ml_collections.ConfigDict | None = None) -> dict[str, Array]:
    """Weighted SUMS over the batch, so evaluation can add batches up and divide by `weight`:
    weight, loss, correct, squared_error, absolute_error (+ nll with a classification head).

    The predicted rating and class are the model's `predicted_rating` / `predicted_class` outputs
    (see the module docstring). For hand-made outputs without them, the rating of class c is read
    off the batch (lo = rating - label for integer classes).
    """
    per_example = per_example_loss(outputs, batch, head_config)
    weight = _weight(batch, per_example)
    label = batch["label"].astype(jnp.int32)
    rating = batch["rating"].astype(jnp.float32)
    lo = jnp.min(jnp.where(weight > 0, rating - label, jnp.inf))
    lo = jnp.where(jnp.isfinite(lo), lo, 0.0)

    if "predicted_rating" in outputs:
        rating_hat = outputs["predicted_rating"]
    elif "rating" in outputs:
        rating_hat = outputs["rating"]
    else:
        logits = outputs["logits"]
        probabilities = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
        rating_hat = probabilities @ (lo + jnp.arange(logits.shape[-1], dtype=jnp.float32))
    if "logits" in outputs:
        predicted = jnp.argmax(outputs["logits"], axis=-1).astype(jnp.int32)
    elif "predicted_class" in outputs:
        predicted = outputs["predicted_class"]
    else:
        predicted = jnp.round(rating_hat - lo).astype(jnp.int32)
    error = rating_hat.astype(jnp.float32) - rating
    sums = {
        "weight": jnp.sum(weight),
        "loss": jnp.sum(weight * per_example),
        "correct": jnp.sum(weight * (predicted == label)),
        "squared_error": jnp.sum(weight * jnp.square(error)),
        "absolute_error": jnp.sum(weight * jnp.abs(error)),
    }
    if "logits" in outputs:
        sums["nll"] = jnp.sum(weight * cross_entropy(outputs["logits"], label))
    return sums
