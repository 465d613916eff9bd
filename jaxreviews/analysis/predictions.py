"""One pass of a trained run over one of its own splits, and what the data looks like.

    splits = load_data(run)                         the run's splits, checked against its saved tables
    predictions = predict_split(run, splits)        per-review arrays of the test split (below)
    attention_samples(run, predictions, indices)    those reviews again with word / sentence attention
    data_statistics(splits, results)                reviews, users, products, rating histogram, unseen
                                                    users / products and OOV rate per split, padding

The split is rebuilt from the run's resolved config (`pipeline.load_splits(config.data)` is a pure
function of it), so review i of `predictions` is review i of the split that results.json scored.
Its vocabulary and user / product maps must equal the run's saved ones, or the data changed since
training and `load_data` says so. The reviews then go through `Run.predict`, in the run's own
layout and batch shapes, as any new reviews would.
"""
from __future__ import annotations

import dataclasses

import ml_collections
import numpy as np

from jaxreviews import models
from jaxreviews.data import pipeline, prepared
from jaxreviews.data.corpus import EncodedReviews
from jaxreviews.data.types import OOV_ID, Review
from jaxreviews.data.vocab import IdMap, Vocabulary

SPLITS = ("train", "validation", "test")


def load_data(run, cache: dict | None = None) -> pipeline.DataSplits:
    """The splits `run` was trained and scored on (pretrained vectors are not read again); runs
    with the same data config share one load through `cache` (any dict kept between calls)."""
    config = ml_collections.ConfigDict(run.config.data.to_dict())
    config.pretrained_vectors = ""
    key = config.to_json(sort_keys=True)
    if cache is not None and key in cache:
        splits = cache[key]
    else:
        splits = pipeline.load_splits(config)
        if prepared.is_streamed(splits.test):  # predictions are per review: the scored splits in memory
            splits = dataclasses.replace(splits, validation=splits.validation.materialize(),
                                         test=splits.test.materialize())
        if cache is not None:
            cache[key] = splits
    for name, saved, rebuilt in (("vocab.txt", run.vocab.tokens, splits.vocab.tokens),
                                 ("users.txt", run.users.names, splits.users.names),
                                 ("products.txt", run.products.names, splits.products.names)):
        if saved != rebuilt:
            raise ValueError(f"{run.workdir}: the data of its config.json no longer gives the {name} it was trained "
                             f"with ({len(rebuilt):,} entries, saved {len(saved):,}): the data files changed since "
                             "training. Restore them, or evaluate the run on a file with experiments.evaluate")
    return splits


@dataclasses.dataclass(frozen=True)
class SplitPredictions:
    """A run's predictions on one split, arrays indexed by review in the split's order."""

    split: str
    reviews: list[Review]  # the split's reviews as the run sees them (vocabulary words, <unk> for OOV)
    ratings: np.ndarray  # float64 [N] the true rating
    true_class: np.ndarray  # int64 [N]
    predicted_class: np.ndarray  # int64 [N] argmax class (rounded rating for regression heads)
    expected_rating: np.ndarray  # float64 [N] the model's predicted_rating (what RMSE / MAE score)
    probabilities: np.ndarray | None  # float64 [N, C], classification heads only
    user_train_reviews: np.ndarray  # int64 [N] training reviews of the review's user (0: unseen)
    product_train_reviews: np.ndarray  # int64 [N]
    num_tokens: np.ndarray  # int64 [N]
    num_sentences: np.ndarray  # int64 [N]
    oov_tokens: np.ndarray  # int64 [N]
    rating_range: tuple[float, float]
    rating_step: float

    def __len__(self) -> int:
        return len(self.ratings)

    @property
    def num_classes(self) -> int:
        return int(round((self.rating_range[1] - self.rating_range[0]) / self.rating_step)) + 1

    @property
    def correct(self) -> np.ndarray:
        return self.predicted_class == self.true_class

    @property
    def error(self) -> np.ndarray:
        """Expected rating - rating."""
        return self.expected_rating - self.ratings

    @property
    def confidence(self) -> np.ndarray | None:
        return None if self.probabilities is None else self.probabilities.max(1)


def decode_reviews(data: EncodedReviews, vocab: Vocabulary, users: IdMap, products: IdMap) -> list[Review]:
    """Encoded reviews back to `Review`s of vocabulary words (an OOV id becomes "<unk>", which
    encodes to OOV again; an unseen user or product "<unknown>", which maps to id 0 again)."""
    arrays = data.arrays
    words = np.asarray(vocab.tokens, dtype=object)[arrays.token_ids]
    sentences = [] if arrays.token_offsets.size == 1 else \
        [tuple(s) for s in np.split(words, arrays.token_offsets[1:-1])]  # none at all: rating tables
    offsets = arrays.sentence_offsets
    user_names, product_names = users.names, products.names
    return [Review(user_names[arrays.users[r]], product_names[arrays.products[r]], float(arrays.ratings[r]),
                   tuple(sentences[offsets[r]:offsets[r + 1]])) for r in range(len(arrays))]


def predict_split(run, splits: pipeline.DataSplits, split: str = "test", *, chunk_size: int = 4096) -> SplitPredictions:
    """`run`'s predictions on split `split` of `splits` (from `load_data(run)`)."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r}: one of {SPLITS}")
    data: EncodedReviews = getattr(splits, split)
    reviews = decode_reviews(data, splits.vocab, splits.users, splits.products)
    predicted = list(run.predict(reviews, chunk_size=chunk_size))
    arrays, train = data.arrays, splits.train.arrays
    low, step = splits.rating_range[0], splits.rating_step
    ratings = arrays.ratings.astype(np.float64)
    user_counts = np.bincount(train.users, minlength=len(splits.users))
    product_counts = np.bincount(train.products, minlength=len(splits.products))
    user_counts[0] = product_counts[0] = 0  # id 0: unseen in training
    token_review = np.repeat(np.arange(len(arrays)), arrays.num_tokens)
    has_probabilities = bool(predicted) and "probabilities" in predicted[0]
    return SplitPredictions(
        split=split, reviews=reviews, ratings=ratings,
        true_class=np.rint((ratings - low) / step).astype(np.int64),
        predicted_class=np.array([p["predicted_class"] for p in predicted], np.int64),
        expected_rating=np.array([p["expected_rating"] for p in predicted], np.float64),
        probabilities=np.array([p["probabilities"] for p in predicted], np.float64) if has_probabilities else None,
        user_train_reviews=user_counts[arrays.users].astype(np.int64),
        product_train_reviews=product_counts[arrays.products].astype(np.int64),
        num_tokens=arrays.num_tokens.astype(np.int64), num_sentences=arrays.num_sentences.astype(np.int64),
        oov_tokens=np.bincount(token_review[arrays.token_ids == OOV_ID], minlength=len(arrays)).astype(np.int64),
        rating_range=tuple(splits.rating_range), rating_step=float(splits.rating_step))


def attention_samples(run, predictions: SplitPredictions, samples: dict[str, list[int]]) -> list[dict]:
    """The reviews of `samples` ({kind: [index, ...]}, from `scores.select_samples`) predicted
    again with attention: per review its kind, index, user, product, rating, predicted class
    rating, expected rating, confidence, training reviews of its user and product, and (HAN
    models) tokens [sentences][words], word_attention (same shape) and sentence_attention
    [sentences]; `has_attention` False for models without attention weights."""
    order = [(kind, index) for kind, indices in samples.items() for index in indices]
    if not order:
        return []
    # Only the hierarchical models sow word and sentence attention weights.
    attention = models.input_layout(run.config.model.name) == "hierarchical"
    outputs = list(run.predict([predictions.reviews[index] for _, index in order], attention=attention))
    low, step = predictions.rating_range[0], predictions.rating_step
    out = []
    for (kind, index), predicted in zip(order, outputs):
        review = predictions.reviews[index]
        confidence = predictions.confidence
        out.append({
            "kind": kind, "index": index, "user": review.user, "product": review.product,
            "rating": float(predictions.ratings[index]),
            "predicted_rating": low + step * int(predictions.predicted_class[index]),
            "expected_rating": float(predictions.expected_rating[index]),
            "confidence": None if confidence is None else float(confidence[index]),
            "user_train_reviews": int(predictions.user_train_reviews[index]),
            "product_train_reviews": int(predictions.product_train_reviews[index]),
            "has_attention": "word_attention" in predicted,
            "tokens": predicted.get("tokens") or [list(s) for s in review.sentences],
            "word_attention": predicted.get("word_attention"),
            "sentence_attention": predicted.get("sentence_attention")})
    return out


def data_statistics(splits: pipeline.DataSplits, results: dict | None = None) -> dict:
    """{"splits": {split: {reviews, users, products (distinct, unseen included as one), rating
    histogram [C], unseen_user / unseen_product (reviews) and their shares, tokens, oov_tokens,
    oov_rate, mean / median tokens, mean sentences}}, "vocab_size", "users", "products" (of the
    training maps), "ratings" (the class ratings), "source", and from results.json "padding_efficiency"
    and "layout" when recorded}."""
    low, step = splits.rating_range[0], splits.rating_step
    num_classes = splits.num_classes
    out = {"splits": {}, "vocab_size": len(splits.vocab), "users": len(splits.users) - 1,
           "products": len(splits.products) - 1, "source": splits.report.get("source"),
           "ratings": [low + step * k for k in range(num_classes)]}
    for name in SPLITS:
        arrays = getattr(splits, name).arrays
        n = len(arrays)
        classes = np.clip(np.rint((arrays.ratings - low) / step).astype(np.int64), 0, num_classes - 1)
        tokens = arrays.num_tokens
        unseen_user, unseen_product = int((arrays.users == 0).sum()), int((arrays.products == 0).sum())
        oov = int((arrays.token_ids == OOV_ID).sum())
        out["splits"][name] = {
            "reviews": n, "users": int(np.unique(arrays.users).size), "products": int(np.unique(arrays.products).size),
            "rating_histogram": np.bincount(classes, minlength=num_classes).tolist(),
            "unseen_user": unseen_user, "unseen_product": unseen_product,
            "unseen_user_share": unseen_user / n if n else None,
            "unseen_product_share": unseen_product / n if n else None,
            "tokens": int(tokens.sum()), "oov_tokens": oov, "oov_rate": oov / max(int(tokens.sum()), 1),
            "mean_tokens": float(tokens.mean()) if n else None,
            "median_tokens": float(np.median(tokens)) if n else None,
            "mean_sentences": float(arrays.num_sentences.mean()) if n else None}
    if results:
        for key in ("padding_efficiency", "layout"):
            if key in results:
                out[key] = results[key]
    return out
