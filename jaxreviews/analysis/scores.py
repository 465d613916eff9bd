"""The numbers behind a run's report, from per-review predictions: plain numpy in, dicts out.

Every function takes arrays indexed by review (the test split, usually) and returns lists and
dicts of Python numbers, so a notebook can print, plot or `json.dump` them directly:

    confusion_matrix(true_class, predicted_class, C)  int [C, C], rows = truth, columns = prediction
    per_class_scores(confusion)                        precision / recall / F1 / support per class,
                                                       accuracy and macro-F1 (as results.json counts it)
    rating_calibration(expected, ratings, ...)         mean observed rating per bin of predicted rating
    reliability(probabilities, true_class)             accuracy per confidence bin, and the ECE
    count_buckets(train_counts, ...)                   accuracy / RMSE / MAE by how many training reviews
                                                       a review's user (or product) has: 0, 1-2, 3-5, 6-20, >20
    by_length(num_tokens, ...)                         accuracy / RMSE by review length (quantile bins)
    select_samples(...)                                review indices worth reading: most confident right,
                                                       most confident wrong, largest rating errors

A bucket or bin without reviews has `reviews` 0 and None for its means (not NaN: JSON-safe).
Errors are of the expected rating (`predicted_rating`, what results.json's RMSE and MAE score);
accuracy is of the predicted class.
"""
from __future__ import annotations

import numpy as np

from jaxreviews.train import step as step_lib

# (low, high) training-review counts, both inclusive; None = no upper end.
COUNT_BUCKETS: tuple[tuple[int, int | None], ...] = ((0, 0), (1, 2), (3, 5), (6, 20), (21, None))


def bucket_label(low: int, high: int | None) -> str:
    if high is None:
        return f">{low - 1}"
    return str(low) if low == high else f"{low}-{high}"


def _means(correct: np.ndarray, error: np.ndarray) -> dict:
    """reviews, accuracy (and its binomial standard error), rmse, mae of one group (None when empty)."""
    n = int(correct.size)
    if n == 0:
        return {"reviews": 0, "accuracy": None, "accuracy_se": None, "rmse": None, "mae": None}
    accuracy = float(correct.mean())
    return {"reviews": n, "accuracy": accuracy, "accuracy_se": float(np.sqrt(accuracy * (1 - accuracy) / n)),
            "rmse": float(np.sqrt(np.mean(error ** 2))), "mae": float(np.mean(np.abs(error)))}


# -- classes -----------------------------------------------------------------------------------------

def confusion_matrix(true_class, predicted_class, num_classes: int) -> np.ndarray:
    """int64 [C, C]: entry [t, p] counts reviews of true class t predicted as p."""
    true_class = np.asarray(true_class, np.int64)
    predicted_class = np.asarray(predicted_class, np.int64)
    if true_class.shape != predicted_class.shape:
        raise ValueError(f"confusion_matrix: {true_class.shape} true classes, {predicted_class.shape} predictions")
    for name, values in (("true", true_class), ("predicted", predicted_class)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"confusion_matrix: a {name} class outside 0..{num_classes - 1}")
    return np.bincount(true_class * num_classes + predicted_class,
                       minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_scores(confusion) -> dict:
    """precision, recall, f1, support ([C] lists; a class never predicted has precision 0),
    accuracy and macro-F1 (mean F1 over the classes present in truth or predictions, as
    `train.step.macro_f1` and so results.json count it)."""
    confusion = np.asarray(confusion, np.float64)
    true_positive = np.diag(confusion)
    support, predicted = confusion.sum(1), confusion.sum(0)
    precision = np.divide(true_positive, predicted, out=np.zeros_like(true_positive), where=predicted > 0)
    recall = np.divide(true_positive, support, out=np.zeros_like(true_positive), where=support > 0)
    f1 = np.divide(2 * true_positive, support + predicted, out=np.zeros_like(true_positive),
                   where=(support + predicted) > 0)
    total = confusion.sum()
    return {"precision": precision.tolist(), "recall": recall.tolist(), "f1": f1.tolist(),
            "support": support.astype(int).tolist(), "predicted": predicted.astype(int).tolist(),
            "accuracy": float(true_positive.sum() / total) if total else None,
            "macro_f1": step_lib.macro_f1(confusion)}


# -- calibration -------------------------------------------------------------------------------------

def rating_calibration(expected_rating, ratings, *, rating_range: tuple[float, float], rating_step: float) -> dict:
    """Predicted against observed rating: the expected ratings binned by the nearest class
    (bins of width `rating_step` centred on each class), per bin the mean predicted and mean
    observed rating and the count. A calibrated model has observed = predicted in every bin."""
    expected_rating = np.asarray(expected_rating, np.float64)
    ratings = np.asarray(ratings, np.float64)
    low, high = rating_range
    num_classes = int(round((high - low) / rating_step)) + 1
    centers = low + rating_step * np.arange(num_classes)
    which = np.clip(np.rint((expected_rating - low) / rating_step).astype(np.int64), 0, num_classes - 1)
    bins = []
    for k, center in enumerate(centers):
        members = which == k
        n = int(members.sum())
        bins.append({"center": float(center), "reviews": n,
                     "predicted": float(expected_rating[members].mean()) if n else None,
                     "observed": float(ratings[members].mean()) if n else None})
    return {"bins": bins, "mean_predicted": float(expected_rating.mean()) if ratings.size else None,
            "mean_observed": float(ratings.mean()) if ratings.size else None}


def reliability(probabilities, true_class, *, num_bins: int = 10) -> dict:
    """Reliability of the top class: reviews binned by confidence (the largest probability) into
    `num_bins` equal bins of [0, 1]; per bin the mean confidence, the accuracy and the count.
    ECE = sum over bins of (reviews in bin / reviews) * |accuracy - confidence| (Guo et al. 2017);
    0 for a calibrated model. MCE is the largest bin gap."""
    probabilities = np.asarray(probabilities, np.float64)
    true_class = np.asarray(true_class, np.int64)
    if probabilities.ndim != 2 or probabilities.shape[0] != true_class.shape[0]:
        raise ValueError(f"reliability: probabilities {probabilities.shape} for {true_class.shape[0]} reviews")
    confidence = probabilities.max(1)
    correct = probabilities.argmax(1) == true_class
    # bin k holds (k/B, (k+1)/B]; a confidence of exactly 0 joins the first bin
    which = np.clip(np.ceil(confidence * num_bins).astype(np.int64) - 1, 0, num_bins - 1)
    total = max(len(true_class), 1)
    bins, ece, mce = [], 0.0, 0.0
    for k in range(num_bins):
        members = which == k
        n = int(members.sum())
        entry = {"low": k / num_bins, "high": (k + 1) / num_bins, "reviews": n, "confidence": None, "accuracy": None}
        if n:
            entry["confidence"] = float(confidence[members].mean())
            entry["accuracy"] = float(correct[members].mean())
            gap = abs(entry["accuracy"] - entry["confidence"])
            ece += n / total * gap
            mce = max(mce, gap)
        bins.append(entry)
    return {"bins": bins, "ece": float(ece), "mce": float(mce),
            "mean_confidence": float(confidence.mean()) if confidence.size else None,
            "accuracy": float(correct.mean()) if correct.size else None}


# -- breakdowns ----------------------------------------------------------------------------------------

def count_buckets(train_counts, *, correct, error, buckets=COUNT_BUCKETS) -> list[dict]:
    """Reviews grouped by `train_counts` (how many training reviews the review's user, or
    product, has; 0 = unseen in training): per bucket its label, low, high, reviews, accuracy,
    accuracy_se (binomial standard error: read a difference between buckets against it), rmse and mae. `correct` [N] bool (predicted class = true class), `error` [N] (expected rating
    - rating)."""
    train_counts = np.asarray(train_counts, np.int64)
    correct = np.asarray(correct, bool)
    error = np.asarray(error, np.float64)
    out = []
    for low, high in buckets:
        members = (train_counts >= low) & (True if high is None else train_counts <= high)
        out.append({"label": bucket_label(low, high), "low": low, "high": high,
                    **_means(correct[members], error[members])})
    return out


def by_length(num_tokens, *, correct, error, num_bins: int = 5) -> list[dict]:
    """Reviews grouped by length in tokens into (about) equally full bins, by quantiles of the
    lengths (fewer bins when many reviews share a length): per bin low and high (tokens,
    inclusive), reviews, accuracy, rmse, mae."""
    num_tokens = np.asarray(num_tokens, np.int64)
    correct = np.asarray(correct, bool)
    error = np.asarray(error, np.float64)
    if num_tokens.size == 0:
        return []
    edges = np.unique(np.quantile(num_tokens, np.linspace(0, 1, num_bins + 1), method="higher"))
    # bin k: edges[k] <= length < edges[k + 1], the last bin closed
    which = np.clip(np.searchsorted(edges, num_tokens, side="right") - 1, 0, max(len(edges) - 2, 0))
    out = []
    for k in range(max(len(edges) - 1, 1)):
        members = which == k
        if not members.any():
            continue
        out.append({"low": int(num_tokens[members].min()), "high": int(num_tokens[members].max()),
                    **_means(correct[members], error[members])})
    return out


def select_samples(*, true_class, predicted_class, expected_rating, ratings, probabilities=None,
                   per_kind: int = 2) -> dict[str, list[int]]:
    """Review indices to read: `confident_right` and `confident_wrong` (the highest probability of
    the predicted class among right / wrong predictions; only with probabilities), and
    `largest_errors` (the largest |expected rating - rating|). No review is picked twice."""
    true_class = np.asarray(true_class)
    predicted_class = np.asarray(predicted_class)
    error = np.abs(np.asarray(expected_rating, np.float64) - np.asarray(ratings, np.float64))
    taken: set[int] = set()

    def pick(order: np.ndarray) -> list[int]:
        chosen = []
        for index in order:
            if len(chosen) == per_kind:
                break
            if int(index) not in taken:
                chosen.append(int(index))
                taken.add(int(index))
        return chosen

    samples: dict[str, list[int]] = {}
    if probabilities is not None:
        confidence = np.asarray(probabilities, np.float64).max(1)
        right = predicted_class == true_class
        by_confidence = np.argsort(-confidence, kind="stable")
        samples["confident_right"] = pick(by_confidence[right[by_confidence]])
        samples["confident_wrong"] = pick(by_confidence[~right[by_confidence]])
    samples["largest_errors"] = pick(np.argsort(-error, kind="stable"))
    return samples
