"""The baseline a practitioner tries first: TF-IDF word 1-2-grams + logistic regression.

Fitted on the run's own training split, its inverse regularisation C chosen on the validation
split (the lowest log-loss over `C_GRID`: the probabilities the expected rating is made of, and
no ties between Cs that all classify alike), scored on the test split: accuracy and macro-F1 of the most
probable class, RMSE and MAE of the expected rating (sum of p(class) x rating). Features are the
run's encoded tokens (its vocabulary and truncation-free text): unigrams and within-sentence
bigrams seen in at least `MIN_DF` training reviews, sublinear tf (1 + log tf), smoothed idf from
the training split, rows L2-normalised. `with_ids` adds one-hot user and product columns (the
training split's ids; unseen ones are the unknown id 0), as a linear user/product model would.

Needs scikit-learn (the `tune` extra, in `.[all]`); without it the baseline is left out and the
results say why. On 2026-12-04 (issue 23) this baseline beat a single han_upa on a 10k-review Yelp
sample: every run reports it beside the model.
"""
from __future__ import annotations

import copy
import dataclasses
import time

import numpy as np

from jaxreviews.data.corpus import ReviewArrays
from jaxreviews.train import evaluation

C_GRID = (0.25, 1.0, 4.0, 16.0)
MIN_DF = 2


def ngram_keys(arrays: ReviewArrays, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(review index, n-gram key) of every unigram and within-sentence bigram: a unigram's key is
    its token id, a bigram's vocab_size + a * vocab_size + b."""
    tokens = arrays.token_ids.astype(np.int64)
    sentence_of_token = np.repeat(np.arange(len(arrays.sentence_lengths)), arrays.sentence_lengths)
    review_of_sentence = np.repeat(np.arange(len(arrays)), arrays.num_sentences)
    review_of_token = review_of_sentence[sentence_of_token]
    same = sentence_of_token[:-1] == sentence_of_token[1:]
    bigrams = vocab_size + tokens[:-1][same] * vocab_size + tokens[1:][same]
    return (np.concatenate([review_of_token, review_of_token[:-1][same]]), np.concatenate([tokens, bigrams]))


def _counts(rows: np.ndarray, keys: np.ndarray, columns: np.ndarray, num_rows: int):
    """The sparse [num_rows, len(columns)] counts of the n-grams that are columns."""
    from scipy import sparse

    index = np.searchsorted(columns, keys)
    index = np.minimum(index, len(columns) - 1)
    kept = columns[index] == keys
    return sparse.csr_matrix((np.ones(kept.sum()), (rows[kept], index[kept])), shape=(num_rows, len(columns)))


class Features:
    """TF-IDF n-gram features with the columns and idf of one training split. A split's text
    matrix is made once: the training split's with the columns, and those the variant with ids
    (`with_ids_added`) shares."""

    def __init__(self, train: ReviewArrays, vocab_size: int, *, with_ids: bool = False, num_users: int = 0,
                 num_products: int = 0):
        self.vocab_size, self.with_ids = vocab_size, with_ids
        self.num_users, self.num_products = num_users, num_products
        rows, keys = ngram_keys(train, vocab_size)
        pairs = np.unique(rows * (2 * vocab_size * vocab_size + 1) + keys)  # one per (review, n-gram)
        seen, document_frequency = np.unique(pairs % (2 * vocab_size * vocab_size + 1), return_counts=True)
        self.columns = seen[document_frequency >= MIN_DF]
        df = document_frequency[document_frequency >= MIN_DF]
        self.idf = np.log((1 + len(train)) / (1 + df)) + 1.0
        self._text: list = []  # (split, its TF-IDF matrix)
        if len(self.columns):
            self._text.append((train, self._tfidf(rows, keys, len(train))))

    def with_ids_added(self, num_users: int, num_products: int) -> Features:
        """These features with one-hot user and product columns, sharing the text matrices."""
        other = copy.copy(self)
        other.with_ids, other.num_users, other.num_products = True, num_users, num_products
        return other

    def _tfidf(self, rows: np.ndarray, keys: np.ndarray, num_rows: int):
        from scipy import sparse
        from sklearn.preprocessing import normalize

        counts = _counts(rows, keys, self.columns, num_rows)
        counts.data = 1.0 + np.log(counts.data)  # sublinear tf
        return normalize(counts @ sparse.diags(self.idf))

    def text(self, arrays: ReviewArrays):
        for split, matrix in self._text:
            if split is arrays:
                return matrix
        matrix = self._tfidf(*ngram_keys(arrays, self.vocab_size), len(arrays))
        self._text.append((arrays, matrix))
        return matrix

    def __call__(self, arrays: ReviewArrays):
        from scipy import sparse

        matrix = self.text(arrays)
        if not self.with_ids:
            return matrix
        n = len(arrays)
        ids = [sparse.csr_matrix((np.ones(n), (np.arange(n), np.asarray(values))), shape=(n, size))
               for values, size in ((arrays.users, self.num_users), (arrays.products, self.num_products))]
        return sparse.hstack([matrix, *ids], format="csr")


def score(probabilities: np.ndarray, ratings: np.ndarray, rating_range, rating_step) -> dict:
    """Accuracy and macro-F1 of the most probable class, RMSE / MAE of the expected rating, of
    [N, C] probabilities over every class of the scale."""
    expected = evaluation.expected_rating(probabilities, rating_range, rating_step)
    return evaluation.score_predictions(ratings, probabilities.argmax(1), expected, rating_range, rating_step)


@dataclasses.dataclass(frozen=True)
class FittedBaseline:
    """The logistic regression chosen on validation, with the features it reads."""

    model: object  # sklearn LogisticRegression
    features: Features
    C: float
    validation_log_loss_by_C: dict[float, float]
    num_features: int  # columns of the training matrix

    def probabilities(self, arrays: ReviewArrays, num_classes: int) -> np.ndarray:
        """[N, num_classes] class probabilities (a class the training split never had: 0)."""
        full = np.zeros((len(arrays), num_classes))
        full[:, self.model.classes_] = self.model.predict_proba(self.features(arrays))
        return full


def fit(train: ReviewArrays, validation: ReviewArrays, *, vocab_size: int, rating_range, rating_step,
        with_ids: bool = False, num_users: int = 0, num_products: int = 0,
        features: Features | None = None) -> FittedBaseline | str:
    """The baseline fitted on `train` with C chosen by `validation` log-loss, or why there is
    nothing to fit. `features`: of `train`, made before (shared by variants)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    if min(len(train), len(validation)) == 0:
        return "an empty split: nothing to fit or choose C on"
    if features is None:
        features = Features(train, vocab_size, with_ids=with_ids, num_users=num_users, num_products=num_products)
    labels = evaluation.classes_of(train.ratings, rating_range, rating_step)
    if len(features.columns) == 0 or len(np.unique(labels)) < 2:
        return (f"nothing to fit: {len(features.columns)} n-grams in {MIN_DF}+ training reviews, "
                f"{len(np.unique(labels))} rating classes")
    x_train, x_valid = features(train), features(validation)
    valid_labels = evaluation.classes_of(validation.ratings, rating_range, rating_step)
    tried = {}
    best = None
    for c in C_GRID:
        # saga on the L2-normalised sparse rows: the lbfgs log-losses, 6x faster (Musical Instruments,
        # 77k features: 2.5 s for the grid against 16 s); saga visits the rows in a random order: seeded.
        model = LogisticRegression(C=c, solver="saga", tol=1e-3, max_iter=1000, random_state=0).fit(x_train, labels)
        tried[c] = float(log_loss(valid_labels, model.predict_proba(x_valid), labels=model.classes_))
        if best is None or tried[c] < tried[best[0]]:
            best = (c, model)
    return FittedBaseline(best[1], features, best[0], tried, int(x_train.shape[1]))


def fit_and_score(train: ReviewArrays, validation: ReviewArrays, test: ReviewArrays, *, vocab_size: int,
                  rating_range, rating_step, with_ids: bool = False, num_users: int = 0,
                  num_products: int = 0, features: Features | None = None) -> dict:
    """The baseline's test figures, the C chosen on validation (with every C's validation
    log-loss) and the seconds it took. `features`: of `train`, made before (shared by variants)."""
    began = time.perf_counter()
    fitted = fit(train, validation, vocab_size=vocab_size, rating_range=rating_range, rating_step=rating_step,
                 with_ids=with_ids, num_users=num_users, num_products=num_products, features=features)
    if isinstance(fitted, str):
        return {"skipped": fitted}
    probabilities = fitted.probabilities(test, evaluation.num_classes_of(rating_range, rating_step))
    figures = score(probabilities, test.ratings, rating_range, rating_step)
    return {**figures, "C": fitted.C,
            "validation_log_loss_by_C": {str(k): round(v, 5) for k, v in fitted.validation_log_loss_by_C.items()},
            "features": fitted.num_features,
            "seconds": round(time.perf_counter() - began, 2)}


def baselines(splits) -> dict:
    """{"text_logreg", "text_logreg_user_product"} of a run's splits (`pipeline.DataSplits`), or
    {"text_logreg": {"skipped": why}} without scikit-learn or without validation reviews."""
    try:
        import sklearn  # noqa: F401
    except ImportError:
        return {"text_logreg": {"skipped": "scikit-learn is not installed (pip install 'jaxreviews[tune]')"}}
    if min(len(splits.train), len(splits.validation), len(splits.test)) == 0:
        return {"text_logreg": {"skipped": "an empty split: nothing to fit, choose C on or score"}}
    common = dict(vocab_size=len(splits.vocab), rating_range=splits.rating_range, rating_step=splits.rating_step)
    arrays = splits.train.arrays, splits.validation.arrays, splits.test.arrays
    began = time.perf_counter()
    text = Features(arrays[0], len(splits.vocab))
    made = time.perf_counter() - began  # the text features: counted in the first variant's seconds
    found = {"text_logreg": fit_and_score(*arrays, **common, features=text)}
    if "seconds" in found["text_logreg"]:
        found["text_logreg"]["seconds"] = round(found["text_logreg"]["seconds"] + made, 2)
    found["text_logreg_user_product"] = fit_and_score(
        *arrays, **common, features=text.with_ids_added(len(splits.users), len(splits.products)))
    return found
