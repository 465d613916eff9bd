"""Ensembles across finished runs: several runs' predictions on their shared split, averaged.

    runs = [load_run(d) for d in ("runs/fasttext", "runs/cnn", "runs/han_upa")]
    combined = combine_runs(runs, selection="equal", text_logreg=True)
    combined["test"]["ensemble"]   # accuracy, macro_f1, rmse, mae, nll of the average

Why: the members of one run are one model kind; runs of different kinds (a bag of n-grams, a
CNN, a hierarchical attention network, the TF-IDF regression) make different errors, so their
average beats each of them more than seeds of one kind do.

What it promises:
  * The same reviews. Each run's splits are rebuilt from its own config (`predictions.load_data`,
    which also checks them against the run's saved tables); the runs must agree review by review
    on user, product, rating and length, else a ValueError names the two runs and the data
    options that differ. A run of K members predicts as its own ensemble (mean probabilities).
  * The combination. A classification run gives class probabilities [N, C], a regression-only run
    (mf) its expected rating. The ensemble's probabilities are the weighted mean over the runs that
    have them, its rating the weighted mean of every run's expected rating (for classification
    runs that is the expected rating of the mean probabilities), its class the most probable (or,
    with no probabilities, the nearest rating step).
  * The weights never see the test split. "equal": 1/M each. "validation": greedy forward
    selection with replacement (Caruana et al. 2004) minimising `selection_metric` on the
    validation split: the weights are how often each run was picked.
  * `text_logreg=True` adds the TF-IDF + logistic-regression baseline as one more member, fitted
    on the training split with C chosen on validation (as every run's results.json does).
"""
from __future__ import annotations

import os

import numpy as np

from jaxreviews.analysis import predictions as predictions_lib
from jaxreviews.train import evaluation

SELECTIONS = ("equal", "validation")
SELECTION_METRICS = ("rmse", "nll", "accuracy", "macro_f1")
_DATA_KEYS = ("name", "path", "train", "valid", "test", "format", "split_fractions", "split_seed", "valid_fraction",
              "folds", "fold", "drop_duplicates", "rating_range", "rating_step", "tfds_name", "manual_dir")


class Member:
    """One run's (or the baseline's) predictions on the validation and test splits."""

    def __init__(self, name: str, validation: tuple[np.ndarray | None, np.ndarray],
                 test: tuple[np.ndarray | None, np.ndarray]):
        self.name = name
        self.splits = {"validation": validation, "test": test}  # (probabilities [N, C] or None, rating [N])

    @property
    def has_probabilities(self) -> bool:
        return self.splits["test"][0] is not None


def _fingerprint(splits, split: str) -> tuple[np.ndarray, ...]:
    arrays = getattr(splits, split).arrays
    users = np.asarray(splits.users.names, dtype=object)[arrays.users]
    products = np.asarray(splits.products.names, dtype=object)[arrays.products]
    return users, products, arrays.ratings.astype(np.float64), arrays.num_tokens


def _check_same_reviews(first, other, splits_first, splits_other) -> None:
    problems = []
    if tuple(splits_first.rating_range) != tuple(splits_other.rating_range) or (
            splits_first.rating_step != splits_other.rating_step):
        problems.append(f"rating scales {splits_first.rating_range} step {splits_first.rating_step} and "
                        f"{splits_other.rating_range} step {splits_other.rating_step}")
    for split in ("validation", "test"):
        a, b = _fingerprint(splits_first, split), _fingerprint(splits_other, split)
        if len(a[0]) != len(b[0]) or not all(np.array_equal(x, y) for x, y in zip(a, b)):
            problems.append(f"{split} splits of {len(a[0]):,} and {len(b[0]):,} reviews that differ")
    if problems:
        differing = [f"data.{key}: {first.config.data.get(key)!r} vs {other.config.data.get(key)!r}"
                     for key in _DATA_KEYS if first.config.data.get(key) != other.config.data.get(key)]
        raise ValueError(f"{other.workdir} and {first.workdir} were not scored on the same reviews ("
                         f"{'; '.join(problems)}){': ' + ', '.join(differing) if differing else ''}. "
                         "Combine runs of one data set and split")


def run_member(run, splits, name: str) -> Member:
    found = {}
    for split in ("validation", "test"):
        predicted = predictions_lib.predict_split(run, splits, split)
        found[split] = (predicted.probabilities, predicted.expected_rating)
    return Member(name, found["validation"], found["test"])


def text_logreg_member(splits) -> Member:
    from jaxreviews.train import text_baseline

    fitted = text_baseline.fit(splits.train.arrays, splits.validation.arrays, vocab_size=len(splits.vocab),
                               rating_range=splits.rating_range, rating_step=splits.rating_step)
    if isinstance(fitted, str):
        raise ValueError(f"text_logreg: {fitted}")
    found = {}
    for split in ("validation", "test"):
        probabilities = fitted.probabilities(getattr(splits, split).arrays, splits.num_classes)
        found[split] = (probabilities, evaluation.expected_rating(probabilities, splits.rating_range,
                                                                  splits.rating_step))
    return Member("text_logreg", found["validation"], found["test"])


def average(members: list[Member], weights: np.ndarray, split: str) -> tuple[np.ndarray | None, np.ndarray]:
    """(probabilities or None, expected rating) of the weighted members on `split`."""
    weights = np.asarray(weights, np.float64)
    rating = sum(w * m.splits[split][1] for w, m in zip(weights, members)) / weights.sum()
    with_probabilities = [(w, m.splits[split][0]) for w, m in zip(weights, members)
                          if m.splits[split][0] is not None and w > 0]
    if not with_probabilities:
        return None, rating
    total = sum(w for w, _ in with_probabilities)
    return sum(w * p for w, p in with_probabilities) / total, rating


def score(probabilities: np.ndarray | None, rating: np.ndarray, ratings: np.ndarray, rating_range,
          rating_step) -> dict:
    """accuracy, macro-F1 (most probable class, else the nearest step), RMSE, MAE (expected rating),
    and NLL when there are probabilities."""
    if probabilities is not None:
        predicted = probabilities.argmax(1)
    else:
        predicted = evaluation.classes_of(rating, rating_range, rating_step)
    figures = evaluation.score_predictions(ratings, predicted, rating, rating_range, rating_step)
    if probabilities is not None:
        true = evaluation.classes_of(ratings, rating_range, rating_step)
        figures["nll"] = float(-np.mean(np.log(np.maximum(probabilities[np.arange(len(true)), true], 1e-12))))
    return figures


def _loss(figures: dict, metric: str) -> float:
    value = figures.get(metric, np.inf)
    return -value if metric in ("accuracy", "macro_f1") else value


def greedy_weights(members: list[Member], ratings: np.ndarray, rating_range, rating_step, *,
                   metric: str = "rmse", rounds: int | None = None) -> np.ndarray:
    """Caruana et al. (2004): add, with replacement, the member that most improves `metric` on
    the validation split; the weights of the best prefix (counts / picks)."""
    if metric not in SELECTION_METRICS:
        raise ValueError(f"selection metric {metric!r}: one of {SELECTION_METRICS}")
    if metric == "nll" and not any(m.has_probabilities for m in members):
        raise ValueError("selection metric nll: no member has class probabilities (regression runs only); "
                         "choose rmse")
    counts = np.zeros(len(members))
    best_counts, best_loss = None, np.inf
    for _ in range(rounds or 4 * len(members)):
        losses = []
        for i in range(len(members)):
            trial = counts.copy()
            trial[i] += 1
            losses.append(_loss(score(*average(members, trial, "validation"), ratings, rating_range, rating_step),
                                metric))
        pick = int(np.argmin(losses))
        counts[pick] += 1
        if losses[pick] < best_loss - 1e-12:
            best_loss, best_counts = losses[pick], counts.copy()
    if best_counts is None:  # no finite score (non-finite predictions): nothing to prefer
        return np.full(len(members), 1.0 / len(members))
    return best_counts / best_counts.sum()


def combine_runs(runs: list, *, names: list[str] | None = None, selection: str = "equal",
                 selection_metric: str = "rmse", text_logreg: bool = False) -> dict:
    """{"members": [names], "weights": [...], "validation"/"test": {name: figures, "ensemble": figures}}
    for `runs` (from `load_run`), see the module docstring."""
    if selection not in SELECTIONS:
        raise ValueError(f"selection {selection!r}: one of {SELECTIONS}")
    if len(runs) + int(text_logreg) < 2:
        raise ValueError("an ensemble across runs needs two or more members (runs, or a run and text_logreg)")
    names = list(names or [os.path.basename(os.path.normpath(run.workdir)) for run in runs])
    reserved = {"ensemble"} | ({"text_logreg"} if text_logreg else set())
    if len(names) != len(runs) or len(set(names)) != len(names) or reserved & set(names):
        raise ValueError(f"member names {names}: one distinct name per run, none of {sorted(reserved)}")
    cache: dict = {}
    all_splits = [predictions_lib.load_data(run, cache) for run in runs]
    for run, splits in zip(runs[1:], all_splits[1:]):
        _check_same_reviews(runs[0], run, all_splits[0], splits)
    members = [run_member(run, splits, name) for run, splits, name in zip(runs, all_splits, names)]
    first = all_splits[0]
    if text_logreg:
        members.append(text_logreg_member(first))
    scale = (first.rating_range, first.rating_step)
    ratings = {split: getattr(first, split).arrays.ratings.astype(np.float64) for split in ("validation", "test")}
    if selection == "equal":
        weights = np.full(len(members), 1.0 / len(members))
    else:
        weights = greedy_weights(members, ratings["validation"], *scale, metric=selection_metric)
    out = {"members": [m.name for m in members], "weights": [round(float(w), 4) for w in weights],
           "selection": selection, "selection_metric": selection_metric if selection == "validation" else None,
           "reviews": {split: int(len(r)) for split, r in ratings.items()}}
    for split in ("validation", "test"):
        figures = {m.name: score(*m.splits[split], ratings[split], *scale) for m in members}
        figures["ensemble"] = score(*average(members, weights, split), ratings[split], *scale)
        out[split] = figures
    return out
