"""The synthetic corpus: deterministic, well-formed, and the rating depends on what it should."""
from collections import Counter
import dataclasses
import importlib.util
from pathlib import Path
import sys

import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest
from scipy.stats import spearmanr

from jaxreviews.data import synthetic
from jaxreviews.data.types import Review


@pytest.fixture(scope="module")
def tiny():
    return synthetic.generate(synthetic.default_spec("tiny"))


@pytest.fixture(scope="module")
def medium():
    """Default text shape and rating story, fewer reviews (~0.1 s)."""
    return synthetic.generate(synthetic.default_spec(num_reviews=5000, num_users=200,
                                                     num_products=150))


def test_same_seed_same_corpus_other_seed_other_corpus(tiny):
    again = synthetic.generate(synthetic.default_spec("tiny"))
    assert again.reviews == tiny.reviews
    for field in ("user_leniency", "product_quality", "latent_score", "sentiment",
                  "text_has_signal", "text_sentiment", "label", "class_thresholds"):
        np.testing.assert_array_equal(getattr(again, field), getattr(tiny, field))
    other = synthetic.generate(synthetic.default_spec("tiny", seed=1))
    assert other.reviews != tiny.reviews
    assert sum(a.sentences != b.sentences for a, b in zip(other.reviews, tiny.reviews)) > 500


def test_generation_leaves_global_random_state_alone():
    np.random.seed(123)
    expected = np.random.random()
    np.random.seed(123)
    synthetic.generate(synthetic.default_spec("tiny"))
    assert np.random.random() == expected


def test_records_and_counts(tiny):
    spec = tiny.spec
    assert len(tiny.reviews) == spec.num_reviews == 600
    assert all(isinstance(r, Review) for r in tiny.reviews)
    users = Counter(r.user for r in tiny.reviews)
    products = Counter(r.product for r in tiny.reviews)
    assert sorted(users) == [f"u{i:04d}" for i in range(spec.num_users)]
    assert sorted(products) == [f"p{i:04d}" for i in range(spec.num_products)]
    assert min(users.values()) >= spec.min_reviews_per_user
    assert min(products.values()) >= spec.min_reviews_per_product
    ratings = np.array([r.rating for r in tiny.reviews])
    assert all(isinstance(r.rating, float) for r in tiny.reviews)
    assert set(ratings) == {1.0, 2.0, 3.0, 4.0, 5.0}
    np.testing.assert_array_equal(ratings, tiny.label + 1)
    vocabulary = set(tiny.vocabulary)
    assert len(tiny.vocabulary) == spec.vocab_size == len(vocabulary)
    assert all(w in vocabulary for r in tiny.reviews for s in r.sentences for w in s)


def test_latent_truth_is_consistent(tiny):
    np.testing.assert_array_equal(
        np.searchsorted(tiny.class_thresholds, tiny.latent_score), tiny.label)
    num_classes = tiny.spec.num_classes
    np.testing.assert_array_equal(
        np.floor((tiny.sentiment + 2.5) / 5.0 * num_classes).astype(int), tiny.label)
    np.testing.assert_array_equal(
        tiny.text_sentiment, np.where(tiny.text_has_signal, tiny.sentiment, 0.0))
    # Leniency is a property of the user, quality of the product.
    for name, values in (("user", tiny.user_leniency), ("product", tiny.product_quality)):
        by_id = {}
        for review, value in zip(tiny.reviews, values):
            assert by_id.setdefault(getattr(review, name), value) == value


def test_class_shares_are_skewed_towards_high_stars(medium):
    shares = np.bincount(medium.label, minlength=5) / medium.num_reviews
    np.testing.assert_allclose(shares, medium.spec.resolved_class_shares(), atol=1e-3)
    assert shares[3] + shares[4] > 0.55 > shares[4]  # more 4/5 stars, but not Amazon's 88 %
    assert shares[0] + shares[1] < shares[3]
    assert shares.min() > 0.05


def test_text_shape(tiny, medium):
    for corpus in (tiny, medium):
        spec = corpus.spec
        sentences = np.array([len(r.sentences) for r in corpus.reviews])
        lengths = np.array([len(s) for r in corpus.reviews for s in r.sentences])
        assert sentences.min() >= 1 and sentences.max() <= spec.max_sentences
        assert lengths.min() >= spec.min_sentence_length
        assert lengths.max() <= spec.max_sentence_length
    sentences = np.array([len(r.sentences) for r in medium.reviews])
    lengths = np.array([len(s) for r in medium.reviews for s in r.sentences])
    assert 5.0 < sentences.mean() < 7.0 and sentences.max() >= 15 and np.mean(sentences == 1) > 0.01
    assert 10.0 < lengths.mean() < 14.0 and lengths.max() >= 25
    words = Counter(w for r in medium.reviews for s in r.sentences for w in s)
    frequencies = np.array(sorted(words.values(), reverse=True))
    assert frequencies[0] > 20 * frequencies[100] > 0  # Zipfian, not uniform
    assert len(words) > 0.8 * medium.spec.vocab_size


def test_activity_is_zipf_like_and_pairs_do_not_repeat(medium):
    users = np.array(list(Counter(r.user for r in medium.reviews).values()))
    products = np.array(list(Counter(r.product for r in medium.reviews).values()))
    assert users.max() > 5 * users.min() and products.max() > 5 * products.min()
    pairs = Counter((r.user, r.product) for r in medium.reviews)
    assert max(pairs.values()) == 1


def test_rating_follows_user_product_and_text(medium):
    label, signal = medium.label, medium.text_has_signal
    assert spearmanr(medium.user_leniency, label)[0] > 0.3
    assert spearmanr(medium.product_quality, label)[0] > 0.3
    assert spearmanr(medium.user_leniency + medium.product_quality, label)[0] > 0.6
    score = np.array([synthetic.lexicon_score(r.sentences) for r in medium.reviews])
    assert spearmanr(score[signal], label[signal])[0] > 0.75
    # Reviews without signal hold only neutral phrases: their text says nothing about the rating.
    assert np.all(score[~signal] == 0.0)
    assert spearmanr(score, label)[0] < spearmanr(score[signal], label[signal])[0] - 0.1
    assert 0.55 < signal.mean() < 0.75


def test_word_order_matters(medium):
    """A score that ignores negations ("not good" = "good") tracks the rating less well."""
    grade = {w: g for g, words in synthetic.GRADE_WORDS.items() for w in words}
    signal = medium.text_has_signal

    def bag_of_words_score(review):
        grades = [grade[w] for s in review.sentences for w in s if w in grade]
        return np.mean(grades) if grades else 0.0

    reviews = [r for r, s in zip(medium.reviews, signal) if s]
    order_aware = spearmanr([synthetic.lexicon_score(r.sentences) for r in reviews],
                            medium.label[signal])[0]
    order_blind = spearmanr([bag_of_words_score(r) for r in reviews], medium.label[signal])[0]
    assert order_aware > order_blind + 0.03


def test_negations_and_intensifiers_appear(medium):
    bigrams = Counter((a, b) for r in medium.reviews for s in r.sentences for a, b in zip(s, s[1:]))
    for phrase in (("not", "good"), ("not", "bad"), ("very", "good"), ("not", "terrible")):
        assert bigrams[phrase] > 10, phrase
    templates = Counter(t for r in medium.reviews for t in synthetic.read_phrases(r.sentences))
    negated = sum(n for t, n in templates.items() if synthetic.PHRASE_TEMPLATES[t][0])
    assert 0.1 < negated / sum(templates.values()) < 0.4
    # Negations also stand in filler, where they mean nothing.
    filler = set(synthetic.FILLER_WORDS) | {w for w in medium.vocabulary if w.startswith("w")}
    assert sum(n for (a, b), n in bigrams.items() if a == "not" and b in filler) > 100


def test_read_phrases_and_lexicon_score():
    sentences = (("w1", "not", "very", "good", "and", "really", "awful"),
                 ("not", "w2", "okay", "hardly", "bad"), ("the", "excellent"))
    found = [synthetic.PHRASE_TEMPLATES[t][:3] for t in synthetic.read_phrases(sentences)]
    assert found == [(True, True, 1), (False, True, -2), (False, False, 0), (True, False, -1),
                     (False, False, 2)]
    assert synthetic.lexicon_score(sentences) == pytest.approx((-0.5 - 2.5 + 0 + 0.5 + 2) / 5)
    assert synthetic.lexicon_score((("w1", "w2", "not"),)) == 0.0


def test_other_class_counts():
    corpus = synthetic.generate(synthetic.default_spec("tiny", num_classes=10, num_reviews=1000))
    assert set(corpus.label) == set(range(10))
    assert {r.rating for r in corpus.reviews} == {float(k) for k in range(1, 11)}
    binary = synthetic.default_spec("tiny", num_classes=2)
    assert 0.15 < binary.resolved_class_shares()[0] < 0.4
    corpus = synthetic.generate(dataclasses.replace(binary, class_shares=(0.5, 0.5)))
    assert np.bincount(corpus.label).tolist() == [300, 300]


@pytest.mark.parametrize("overrides, message", [
    (dict(num_reviews=100), "too few for num_users=40"),
    (dict(vocab_size=50), "vocab_size must be >="),
    (dict(num_classes=3, class_shares=(0.5, 0.5)), "class_shares has 2 entries"),
    (dict(class_shares=(0.5, 0.5, 0.5, 0.25, 0.25)), "sum to 1"),
    (dict(text_signal_share=1.5), "text_signal_share must be in"),
    (dict(min_sentence_length=2), "min_sentence_length must be >= 3"),
    (dict(mean_sentences=40.0), "mean_sentences must be in"),
    (dict(phrase_noise=-1.0), "phrase_noise must be >= 0"),
])
def test_bad_specs_raise_actionable_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        synthetic.default_spec("tiny", **overrides)


def test_default_spec_sizes():
    assert synthetic.default_spec() == synthetic.SyntheticSpec()
    tiny = synthetic.default_spec("tiny")
    assert (tiny.num_reviews, tiny.num_users, tiny.num_products, tiny.vocab_size) == (
        600, 40, 30, 400)
    with pytest.raises(ValueError, match="size must be"):
        synthetic.default_spec("huge")


def test_expected_table_has_the_promised_ordering():
    accuracy = {k: v["accuracy"] for k, v in synthetic.EXPECTED.items()}
    assert accuracy["text_user_product"] > accuracy["text_bigrams"] + 0.03
    assert accuracy["text_bigrams"] > accuracy["text_bow"] > accuracy["user_product"] + 0.03
    assert accuracy["user_product"] > accuracy["majority"] + 0.05
    assert accuracy["oracle_all"] > accuracy["oracle_text"] > accuracy["oracle_user_product"]
    assert accuracy["oracle_all"] > accuracy["text_user_product"]


@hypothesis.settings(max_examples=15, deadline=None)
@hypothesis.given(seed=st.integers(0, 2**31 - 1), num_classes=st.integers(2, 6),
                  num_users=st.integers(3, 30), num_products=st.integers(3, 30),
                  signal=st.floats(0.0, 1.0))
def test_invariants_hold_for_any_small_spec(seed, num_classes, num_users, num_products, signal):
    spec = synthetic.default_spec("tiny", seed=seed, num_classes=num_classes, num_users=num_users,
                                  num_products=num_products, num_reviews=300,
                                  text_signal_share=signal)
    corpus = synthetic.generate(spec)
    assert len(corpus.reviews) == 300
    assert set(corpus.label) == set(range(num_classes))
    assert len({r.user for r in corpus.reviews}) == num_users
    assert len({r.product for r in corpus.reviews}) == num_products
    assert all(spec.min_sentence_length <= len(s) <= spec.max_sentence_length
               for r in corpus.reviews for s in r.sentences)
    assert all(1 <= len(r.sentences) <= spec.max_sentences for r in corpus.reviews)


def test_baselines_tool_runs_on_the_tiny_corpus(monkeypatch):
    path = Path(__file__).resolve().parents[1] / "tools" / "synthetic_baselines.py"
    module_spec = importlib.util.spec_from_file_location("synthetic_baselines", path)
    baselines = importlib.util.module_from_spec(module_spec)
    monkeypatch.setitem(sys.modules, "synthetic_baselines", baselines)  # dataclasses need it
    module_spec.loader.exec_module(baselines)
    results = baselines.evaluate(synthetic.default_spec("tiny"), verbose=False)
    assert set(results) == set(synthetic.EXPECTED) == set(baselines.MODELS)
    for scores in results.values():
        assert 0.0 <= scores["accuracy"] <= 1.0 and 0.0 <= scores["rmse"] < 4.0
    assert results["oracle_all"]["accuracy"] > results["majority"]["accuracy"]
