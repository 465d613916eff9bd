"""TF-IDF + logistic regression (train/text_baseline.py): known figures on a hand-made set, fitted
on the training split only, C chosen on validation, and in results.json of a run on a file."""
import json

import numpy as np
import pytest

from jaxreviews.data import corpus
from jaxreviews.data.types import Review
from jaxreviews.train import text_baseline
from tests.training import run_here, tiny

pytest.importorskip("sklearn")

WORDS = {1.0: ("awful", "broken"), 3.0: ("okay", "average"), 5.0: ("great", "lovely")}


def reviews(count: int, seed: int, extra: str = "") -> list[Review]:
    """Each review says its rating's words (and filler), so the text decides the rating."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        rating = float(rng.choice([1.0, 3.0, 5.0]))
        words = (*WORDS[rating], "the", "item", "was") + ((extra,) if extra else ())
        out.append(Review(f"u{i % 4}", f"p{i % 3}", rating, (tuple(rng.permutation(words)),)))
    return out


def encoded(train, *others):
    collected = corpus.collect(train + [r for split in others for r in split])
    n = len(train)
    vocab = collected.build_vocabulary(np.arange(n))
    users, products = collected.build_id_maps(np.arange(n))
    splits, start = [], 0
    for size in (len(train), *map(len, others)):
        splits.append(collected.encode(np.arange(start, start + size), vocab, users, products).arrays)
        start += size
    return splits, len(vocab), len(users), len(products)


def test_the_text_decides_and_the_baseline_reads_it():
    (train, valid, test), vocab, users, products = encoded(reviews(60, 0), reviews(20, 1), reviews(20, 2))
    found = text_baseline.fit_and_score(train, valid, test, vocab_size=vocab, rating_range=(1.0, 5.0),
                                        rating_step=1.0)
    assert found["accuracy"] == 1.0 and found["macro_f1"] == 1.0
    assert found["rmse"] < 0.6 and found["mae"] < 0.6  # the expected rating, from the probabilities
    # C is the grid's lowest validation log-loss, and every C was tried there.
    tried = found["validation_log_loss_by_C"]
    assert list(tried) == [str(c) for c in text_baseline.C_GRID]
    assert found["C"] == min(text_baseline.C_GRID, key=lambda c: tried[str(c)])
    with_ids = text_baseline.fit_and_score(train, valid, test, vocab_size=vocab, rating_range=(1.0, 5.0),
                                           rating_step=1.0, with_ids=True, num_users=users, num_products=products)
    assert with_ids["features"] == found["features"] + users + products
    # the same figures every time (saga's row order is seeded), and the probabilities they come from
    again = text_baseline.fit_and_score(train, valid, test, vocab_size=vocab, rating_range=(1.0, 5.0),
                                        rating_step=1.0)
    assert {k: v for k, v in again.items() if k != "seconds"} == {k: v for k, v in found.items() if k != "seconds"}
    fitted = text_baseline.fit(train, valid, vocab_size=vocab, rating_range=(1.0, 5.0), rating_step=1.0)
    probabilities = fitted.probabilities(test, 5)
    np.testing.assert_allclose(probabilities.sum(1), 1.0)
    assert np.all(probabilities[:, [1, 3]] == 0)  # ratings 2 and 4 never occur in training
    assert fitted.C == found["C"]


def test_the_features_come_from_the_training_split_only():
    """A word only the test split has is no column, whatever it says; n-grams in one training
    review only (below MIN_DF) are none either."""
    (train, valid, test), vocab, *_ = encoded(reviews(60, 0), reviews(20, 1), reviews(20, 2, extra="zebra"))
    features = text_baseline.Features(train, vocab)
    rows, keys = text_baseline.ngram_keys(train, vocab)
    counted = {k: len(set(rows[keys == k])) for k in np.unique(keys)}
    assert sorted(features.columns.tolist()) == sorted(k for k, n in counted.items() if n >= text_baseline.MIN_DF)
    test_rows, test_keys = text_baseline.ngram_keys(test, vocab)
    only_in_test = set(test_keys.tolist()) - set(keys.tolist())
    assert only_in_test and not only_in_test & set(features.columns.tolist())
    matrix = features(test)
    assert matrix.shape == (len(test), len(features.columns))
    np.testing.assert_allclose(np.sqrt(matrix.multiply(matrix).sum(1)).A1, 1.0)  # rows L2-normalised


def test_a_run_on_a_file_reports_it_and_the_synthetic_corpus_says_why_not(tmp_path):
    """An Amazon file: results.json's baselines hold text_logreg and text_logreg_user_product;
    the synthetic corpus has its reference models instead (skipped, with the reason)."""
    lines = []
    for i, review in enumerate(reviews(300, 3)):
        text = " ".join(review.sentences[0])
        lines.append(json.dumps({"reviewerID": review.user, "asin": review.product, "overall": review.rating,
                                 "reviewText": f"{text}. number {i % 7}."}))
    path = tmp_path / "reviews.json"
    path.write_text("\n".join(lines) + "\n")
    config = tiny("mf", **{"data.name": "files", "data.format": "amazon", "data.path": str(path),
                           "train.epochs": 1})
    found = run_here(tmp_path / "run", config).baselines
    for name in ("text_logreg", "text_logreg_user_product"):
        assert found[name]["accuracy"] > 0.9 and found[name]["C"] in text_baseline.C_GRID
    synthetic = run_here(tmp_path / "synthetic", tiny("mf", **{"train.epochs": 1})).baselines
    assert synthetic["text_logreg"] == {"skipped": "synthetic corpus: see its reference models"}
