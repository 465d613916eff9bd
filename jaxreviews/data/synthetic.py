"""The built-in synthetic review corpus: the project's default data set, no download needed.

Generative story (one `SyntheticSpec` -> one deterministic `SyntheticCorpus`):

1. Every user has a *leniency* ~ N(0, user_leniency_scale) and every product a *quality*
   ~ N(0, product_quality_scale). How many reviews each writes / receives is Zipf-like (a few
   heavy users and best-sellers), on top of a floor of `min_reviews_per_user` /
   `min_reviews_per_product`, so that every id appears several times and an embedding can learn.
2. A review's latent score is ``z = quality[product] + leniency[user] + noise`` with
   noise ~ N(0, review_noise_scale). The rating is z discretised at the corpus quantiles given by
   `class_shares` (Yelp-like by default: 10/9/15/30/36 % for 1..5 stars), so every class is present
   and the skew is realistic but not Amazon-extreme.
3. The writer's *sentiment* is z mapped monotonically onto the grade scale [-2.5, 2.5]: class k of
   C covers ``[-2.5 + 5k/C, -2.5 + 5(k+1)/C)``, so with 5 classes a 1-star review has sentiment in
   [-2.5, -1.5), a 3-star one in [-0.5, 0.5), a 5-star one in [1.5, 2.5].
4. Text. A review has 1..max_sentences sentences (negative binomial, mean ~`mean_sentences`) of
   min..max_sentence_length words (mean ~`mean_sentence_length`). Words are Zipfian filler: a small
   English lexicon of function words padded with generated tokens "w0123" up to `vocab_size`.
   In a share `text_signal_share` of reviews, each sentence carries with probability
   `sentiment_phrase_rate` one sentiment phrase whose meaning is the writer's sentiment plus
   N(0, phrase_noise): a graded word ("terrible" < "bad" < "okay" < "good" < "excellent", six
   synonyms per grade, Zipfian among synonyms), optionally intensified ("very good" = 1.5) or
   negated ("not good" = -1, "not bad" = +0.5, "not excellent" = 0, "not very good" = -0.5); see
   `PHRASE_TEMPLATES`. The other reviews carry no signal: filler plus, in a share
   `neutral_phrase_rate` of sentences, a plain neutral word ("okay", "fine", ...). Negation words
   also appear in filler ("not w12"), never right before a sentiment phrase. So the text holds most
   but not all of the rating's information; user and product hold the rest, and a bag-of-words
   model that cannot tell "not good" from "good ... not" loses to one that reads word order.

Everything is drawn from one ``numpy.random.Generator(seed)``; no global state.
`generate(default_spec())` (20,000 reviews, ~1.4 M tokens) takes about 0.4 s on one core.

What a model should reach on the default corpus (`tools/synthetic_baselines.py`: numpy/scipy
models trained on a random 90 %, scored on the other 10 %; RMSE of the predicted star). Seed 0 is
`EXPECTED`; the last column is the mean ± std over the corpora of seeds 0, 1, 2.

    model                                         accuracy   RMSE   accuracy, seeds 0-2
    majority class                                  0.370   1.790     0.369 ± 0.007
    user + product (logistic regression on ids)     0.485   1.148     0.481 ± 0.004
    text, bag of words (logistic regression)        0.529   1.206     0.521 ± 0.008
    text, words + bigrams (logistic regression)     0.541   1.164     0.541 ± 0.011
    text + user + product (words, bigrams, ids)     0.588   0.920     0.590 ± 0.012
    oracle: true user + product, no text            0.530   1.063     0.521 ± 0.007
    oracle: perfect reader, no user / product       0.603   1.179     0.611 ± 0.006
    oracle: true user + product + perfect reader    0.676   0.742     0.685 ± 0.006

So text + user + product > text > user + product > majority by about 5, 5 and 11 points, and
word order is worth about 2 points even to a linear model. The oracles are Bayes-optimal given
the latent truth: the true leniency + quality and the noise scale, and for the "reader" lines the
exact likelihood of every sentiment phrase in the text (marginalised over whether the text carries
signal, which a reader cannot see). They are ceilings: no text-only model can beat ~0.60, no
user/product-only model ~0.53, no model ~0.68; a good neural model lands between the regressions
and the oracle of its inputs (not measured yet: no trainer existed when this was written).
Text-only models have a worse RMSE than user/product-only ones although they are more accurate:
on the 35 % of reviews without signal they guess a mid-to-high rating with no evidence. The test split holds 2,000
reviews, so one accuracy has a standard error of about 0.011.
"""
from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np

from jaxreviews.data.types import Review

# Measured by `tools/synthetic_baselines.py --check` on `generate(default_spec())` (seed 0).
EXPECTED: dict[str, dict[str, float]] = {
    "majority": dict(accuracy=0.370, rmse=1.790),
    "user_product": dict(accuracy=0.485, rmse=1.148),
    "text_bow": dict(accuracy=0.529, rmse=1.206),
    "text_bigrams": dict(accuracy=0.541, rmse=1.164),
    "text_user_product": dict(accuracy=0.588, rmse=0.920),
    "oracle_user_product": dict(accuracy=0.530, rmse=1.063),
    "oracle_text": dict(accuracy=0.603, rmse=1.179),
    "oracle_all": dict(accuracy=0.676, rmse=0.742),
}

# ----------------------------------------------------------------------------------------------
# Lexicon. Synonyms are listed most frequent first; they are drawn Zipf-like (weight 1 / rank).

GRADE_WORDS: dict[int, tuple[str, ...]] = {
    -2: ("terrible", "awful", "horrible", "dreadful", "atrocious", "abysmal"),
    -1: ("bad", "poor", "disappointing", "mediocre", "subpar", "lousy"),
    0: ("okay", "average", "decent", "fine", "acceptable", "ordinary"),
    1: ("good", "nice", "solid", "pleasant", "enjoyable", "satisfying"),
    2: ("excellent", "amazing", "outstanding", "superb", "fantastic", "wonderful"),
}
INTENSIFIERS: tuple[str, ...] = ("very", "really", "extremely", "truly", "incredibly", "absolutely")
NEGATIONS: tuple[str, ...] = ("not", "never", "hardly")
_NEGATION_WEIGHTS = np.array([0.75, 0.15, 0.10])

FILLER_WORDS: tuple[str, ...] = (
    "the", "i", "it", "and", "a", "to", "was", "of", "this", "is", "for", "in", "my", "that",
    "with", "but", "on", "you", "they", "we", "have", "had", "are", "be", "as", "at", "one",
    "there", "were", "just", "would", "all", "if", "out", "when", "up", "get", "from", "like",
    "about", "an", "or", "time", "what", "me", "can", "after", "will", "which", "some", "did",
    "our", "also", "only", "more", "back", "first", "go", "other", "because", "then", "them",
    "again", "their", "been", "she", "he", "her", "his", "its", "any", "could", "even", "since",
    "bought", "product", "order", "price", "used", "use", "day", "days", "week", "month", "year",
    "came", "got", "made", "make", "took", "went", "said", "thing", "things", "box", "item",
    "store", "place", "service", "staff", "food", "size", "color", "quality", "delivery",
    "review", "people", "friend", "family", "home", "work", "night", "morning", "two", "three",
)

# A sentiment phrase template: (negated, intensified, grade) and what it means on the grade scale.
# "not terrible" and "not excellent" mean "so-so", "not bad" is mildly positive, "not good" and
# "not okay" are as bad as "bad"; intensifiers push a grade half a step outwards.
PHRASE_TEMPLATES: tuple[tuple[bool, bool, int, float], ...] = (
    (False, False, -2, -2.0),
    (False, False, -1, -1.0),
    (False, False, 0, 0.0),
    (False, False, 1, 1.0),
    (False, False, 2, 2.0),
    (False, True, -2, -2.5),
    (False, True, -1, -1.5),
    (False, True, 1, 1.5),
    (False, True, 2, 2.5),
    (True, False, -2, 0.0),
    (True, False, -1, 0.5),
    (True, False, 0, -1.0),
    (True, False, 1, -1.0),
    (True, False, 2, 0.0),
    (True, True, 1, -0.5),
)
PHRASE_VALUES = np.array([t[3] for t in PHRASE_TEMPLATES])
# How often a writer reaches for each kind of phrase, all else equal.
_PLAIN_PRIOR, _INTENSIFIED_PRIOR, _NEGATED_PRIOR = 1.0, 0.5, 0.6
PHRASE_LOG_PRIOR = np.log(np.array([
    _NEGATED_PRIOR * (_INTENSIFIED_PRIOR if i else 1.0) if n else (
        _INTENSIFIED_PRIOR if i else _PLAIN_PRIOR)
    for n, i, _, _ in PHRASE_TEMPLATES
]))
# Temperature of the writer's phrase choice on the grade scale: the phrase whose meaning is
# nearest the intended sentiment wins, mostly.
PHRASE_CHOICE_TEMPERATURE = 0.3
_NEUTRAL_TEMPLATE = 2

# Yelp-like star distribution for 5 classes, as a CDF over [0, 1]; other class counts
# interpolate it.
_DEFAULT_CDF_X = np.linspace(0.0, 1.0, 6)
_DEFAULT_CDF = np.array([0.0, 0.10, 0.19, 0.34, 0.64, 1.0])


@dataclasses.dataclass(frozen=True)
class SyntheticSpec:
    """Everything that decides a synthetic corpus. Equal specs give identical corpora."""

    num_users: int = 500
    num_products: int = 300
    num_reviews: int = 20_000
    num_classes: int = 5
    vocab_size: int = 5_000
    # Text shape.
    mean_sentences: float = 6.0
    max_sentences: int = 20
    mean_sentence_length: float = 12.0
    min_sentence_length: int = 3
    max_sentence_length: int = 30
    filler_zipf_exponent: float = 1.1
    # Who reviews what.
    min_reviews_per_user: int = 5
    min_reviews_per_product: int = 5
    activity_zipf_exponent: float = 1.0
    # The rating: z = quality + leniency + noise, discretised at the `class_shares` quantiles.
    user_leniency_scale: float = 0.65
    product_quality_scale: float = 0.65
    review_noise_scale: float = 0.8
    class_shares: tuple[float, ...] | None = None  # None: Yelp-like skew towards high stars
    # How the text carries the sentiment.
    text_signal_share: float = 0.65
    sentiment_phrase_rate: float = 0.65
    neutral_phrase_rate: float = 0.1
    phrase_noise: float = 0.6
    filler_negation_rate: float = 0.01
    seed: int = 0

    def __post_init__(self):
        for name in ("num_users", "num_products", "num_reviews", "vocab_size", "max_sentences",
                     "min_sentence_length", "min_reviews_per_user", "min_reviews_per_product"):
            if getattr(self, name) < 1:
                raise ValueError(f"SyntheticSpec.{name} must be >= 1, got {getattr(self, name)}")
        if self.num_classes < 2:
            raise ValueError(f"SyntheticSpec.num_classes must be >= 2, got {self.num_classes}")
        if self.min_sentence_length < 3:
            raise ValueError("SyntheticSpec.min_sentence_length must be >= 3 (the longest "
                             f"sentiment phrase, 'not very good'), got {self.min_sentence_length}")
        if self.max_sentence_length < self.min_sentence_length:
            raise ValueError(f"SyntheticSpec.max_sentence_length ({self.max_sentence_length}) < "
                             f"min_sentence_length ({self.min_sentence_length})")
        if not 1.0 <= self.mean_sentences <= self.max_sentences:
            raise ValueError(f"SyntheticSpec.mean_sentences must be in [1, max_sentences="
                             f"{self.max_sentences}], got {self.mean_sentences}")
        if not self.min_sentence_length <= self.mean_sentence_length <= self.max_sentence_length:
            raise ValueError("SyntheticSpec.mean_sentence_length must lie between "
                             "min_sentence_length and max_sentence_length, got "
                             f"{self.mean_sentence_length}")
        for who, n, floor in (("user", self.num_users, self.min_reviews_per_user),
                              ("product", self.num_products, self.min_reviews_per_product)):
            if self.num_reviews < n * floor:
                raise ValueError(
                    f"SyntheticSpec: num_reviews={self.num_reviews} is too few for "
                    f"num_{who}s={n} with min_reviews_per_{who}={floor} (needs >= {n * floor})")
        fixed = _num_fixed_words()
        if self.vocab_size < fixed + 10:
            raise ValueError(f"SyntheticSpec.vocab_size must be >= {fixed + 10} (the {fixed} "
                             f"lexicon words plus some filler), got {self.vocab_size}")
        for name in ("user_leniency_scale", "product_quality_scale", "review_noise_scale",
                     "phrase_noise", "filler_zipf_exponent", "activity_zipf_exponent"):
            if getattr(self, name) < 0:
                raise ValueError(f"SyntheticSpec.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("text_signal_share", "sentiment_phrase_rate", "neutral_phrase_rate",
                     "filler_negation_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"SyntheticSpec.{name} must be in [0, 1], got "
                                 f"{getattr(self, name)}")
        shares = self.resolved_class_shares()
        if len(shares) != self.num_classes:
            raise ValueError(f"SyntheticSpec.class_shares has {len(shares)} entries, expected "
                             f"num_classes={self.num_classes}")
        if np.any(shares <= 0) or abs(shares.sum() - 1.0) > 1e-6:
            raise ValueError(f"SyntheticSpec.class_shares must be positive and sum to 1, got "
                             f"{self.class_shares}")
        if shares.min() * self.num_reviews < 1.0:
            raise ValueError(f"SyntheticSpec: num_reviews={self.num_reviews} is too few for every "
                             f"class to appear (smallest class share {shares.min():.3f})")

    def resolved_class_shares(self) -> np.ndarray:
        """The share of each rating class, low to high stars (sums to 1)."""
        if self.class_shares is not None:
            return np.asarray(self.class_shares, dtype=np.float64)
        cdf = np.interp(np.linspace(0.0, 1.0, self.num_classes + 1), _DEFAULT_CDF_X, _DEFAULT_CDF)
        return np.diff(cdf)


def default_spec(size: Literal["default", "tiny"] = "default", **overrides) -> SyntheticSpec:
    """The project's default corpus, or a tiny one for smoke tests (600 reviews, < 0.1 s)."""
    if size == "default":
        return SyntheticSpec(**overrides)
    if size == "tiny":
        tiny = dict(num_users=40, num_products=30, num_reviews=600, vocab_size=400,
                    mean_sentences=3.0, max_sentences=6, mean_sentence_length=8.0,
                    max_sentence_length=15)
        return SyntheticSpec(**{**tiny, **overrides})
    raise ValueError(f"default_spec: size must be 'default' or 'tiny', got {size!r}")


@dataclasses.dataclass(frozen=True)
class SyntheticCorpus:
    """The reviews and the latent truth behind each of them (arrays are indexed like `reviews`)."""

    spec: SyntheticSpec
    reviews: list[Review]
    user_leniency: np.ndarray    # float [R]  leniency of the review's user
    product_quality: np.ndarray  # float [R]  quality of the review's product
    latent_score: np.ndarray     # float [R]  z = quality + leniency + noise
    sentiment: np.ndarray        # float [R]  z on the grade scale [-2.5, 2.5]; decides the rating
    text_has_signal: np.ndarray  # bool  [R]  whether the text expresses the sentiment
    text_sentiment: np.ndarray   # float [R]  what the text expresses: sentiment, or 0 if no signal
    label: np.ndarray            # int   [R]  rating class 0..C-1 (rating = label + 1)
    class_thresholds: np.ndarray  # float [C-1]  z cut points between consecutive classes
    vocabulary: tuple[str, ...]   # every word the generator may use, lexicon first

    @property
    def num_reviews(self) -> int:
        return len(self.reviews)


def user_name(index: int, num_users: int) -> str:
    return f"u{index:0{_id_width(num_users)}d}"


def product_name(index: int, num_products: int) -> str:
    return f"p{index:0{_id_width(num_products)}d}"


def generate(spec: SyntheticSpec | None = None) -> SyntheticCorpus:
    """Draws the corpus described by `spec` (the default corpus if None)."""
    spec = spec if spec is not None else default_spec()
    rng = np.random.default_rng(spec.seed)
    num_reviews, num_classes = spec.num_reviews, spec.num_classes

    # Users, products, who reviews what.
    leniency_by_user = rng.normal(0.0, spec.user_leniency_scale, spec.num_users)
    quality_by_product = rng.normal(0.0, spec.product_quality_scale, spec.num_products)
    user = _zipf_assignment(rng, spec.num_users, num_reviews, spec.min_reviews_per_user,
                            spec.activity_zipf_exponent, cap=spec.num_products)
    product = _zipf_assignment(rng, spec.num_products, num_reviews, spec.min_reviews_per_product,
                               spec.activity_zipf_exponent, cap=spec.num_users)
    product = _spread_repeated_pairs(rng, user, product, spec.num_products)
    user_leniency = leniency_by_user[user]
    product_quality = quality_by_product[product]
    latent_score = product_quality + user_leniency + rng.normal(
        0.0, spec.review_noise_scale, num_reviews)

    # Discretise at the quantiles; sentiment = position on the grade scale.
    cdf = np.concatenate([[0.0], np.cumsum(spec.resolved_class_shares())])
    cdf[-1] = 1.0
    order = np.argsort(latent_score, kind="stable")
    quantile = np.empty(num_reviews)
    quantile[order] = (np.arange(num_reviews) + 0.5) / num_reviews
    label = np.clip(np.searchsorted(cdf, quantile, side="right") - 1, 0, num_classes - 1)
    within = (quantile - cdf[label]) / (cdf[label + 1] - cdf[label])
    sentiment = -2.5 + 5.0 * (label + within) / num_classes
    sorted_score = latent_score[order]
    first_of_class = np.searchsorted(np.sort(label), np.arange(1, num_classes))
    class_thresholds = 0.5 * (sorted_score[first_of_class - 1] + sorted_score[first_of_class])

    text_has_signal = rng.random(num_reviews) < spec.text_signal_share
    text_sentiment = np.where(text_has_signal, sentiment, 0.0)

    vocabulary, sentences_per_review, flat_words, sentence_offsets = _generate_text(
        rng, spec, sentiment, text_has_signal)

    # Strings. One vectorised lookup, then slicing into tuples.
    words = np.asarray(vocabulary, dtype=object)[flat_words].tolist()
    bounds = sentence_offsets.tolist()
    sentences = [tuple(words[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    review_bounds = np.concatenate([[0], np.cumsum(sentences_per_review)]).tolist()
    user_names = [user_name(i, spec.num_users) for i in range(spec.num_users)]
    product_names = [product_name(i, spec.num_products) for i in range(spec.num_products)]
    ratings = (label + 1).astype(np.float64).tolist()
    user_list, product_list = user.tolist(), product.tolist()
    reviews = [
        Review(user=user_names[user_list[r]], product=product_names[product_list[r]],
               rating=ratings[r], sentences=tuple(sentences[review_bounds[r]:review_bounds[r + 1]]))
        for r in range(num_reviews)
    ]
    return SyntheticCorpus(
        spec=spec, reviews=reviews, user_leniency=user_leniency, product_quality=product_quality,
        latent_score=latent_score, sentiment=sentiment, text_has_signal=text_has_signal,
        text_sentiment=text_sentiment, label=label.astype(np.int64),
        class_thresholds=class_thresholds, vocabulary=vocabulary)


def read_phrases(sentences) -> list[int]:
    """The sentiment phrases a perfect reader finds in a review, as `PHRASE_TEMPLATES` indices.

    A graded word is read together with the intensifier and negation just before it
    ("not very good"); negations elsewhere ("not w12") mean nothing.
    """
    found = []
    for sentence in sentences:
        for position, word in enumerate(sentence):
            grade = _GRADE_OF_WORD.get(word)
            if grade is None:
                continue
            intensified = position >= 1 and sentence[position - 1] in _INTENSIFIER_SET
            negation_at = position - 1 - intensified
            negated = negation_at >= 0 and sentence[negation_at] in _NEGATION_SET
            template = _TEMPLATE_INDEX.get((negated, intensified, grade))
            if template is not None:
                found.append(template)
    return found


def lexicon_score(sentences) -> float:
    """Mean meaning of the review's sentiment phrases on the grade scale (0 when it has none)."""
    phrases = read_phrases(sentences)
    return float(PHRASE_VALUES[phrases].mean()) if phrases else 0.0


# ----------------------------------------------------------------------------------------------
# Internals.

_GRADE_OF_WORD = {word: grade for grade, words in GRADE_WORDS.items() for word in words}
_INTENSIFIER_SET = frozenset(INTENSIFIERS)
_NEGATION_SET = frozenset(NEGATIONS)
_TEMPLATE_INDEX = {(n, i, g): k for k, (n, i, g, _) in enumerate(PHRASE_TEMPLATES)}


def _num_fixed_words() -> int:
    return (sum(len(w) for w in GRADE_WORDS.values()) + len(INTENSIFIERS) + len(NEGATIONS)
            + len(FILLER_WORDS))


def _id_width(count: int) -> int:
    return max(4, len(str(count - 1)))


def _zipf_assignment(rng, num_entities, num_reviews, floor, exponent, cap) -> np.ndarray:
    """Entity index per review: `floor` each, the rest Zipf-like over a random ranking; shuffled.

    The weight of popularity rank r (1-based) is (r + num_entities / 10) ** -exponent: with the
    offset the most active of 500 users writes about 15x as many reviews as the least active
    (160 vs 11 in the default corpus), not hundreds of times as many, which would force one user
    to review the same product again and again.
    """
    weights = 1.0 / (np.arange(1, num_entities + 1) + num_entities / 10.0) ** exponent
    counts = floor + rng.multinomial(num_reviews - floor * num_entities, weights / weights.sum())
    # Nobody can review more distinct products (or be reviewed by more distinct users) than there
    # are; move the excess to the entities below the cap.
    while np.any(counts > cap) and np.any(counts < cap):
        excess = int(np.sum(np.maximum(counts - cap, 0)))
        counts = np.minimum(counts, cap)
        room = np.where(counts < cap, weights, 0.0)
        counts += rng.multinomial(excess, room / room.sum())
    ranking = rng.permutation(num_entities)  # which entity gets which popularity rank
    assignment = np.repeat(ranking, counts)
    rng.shuffle(assignment)
    return assignment


def _spread_repeated_pairs(rng, user, product, num_products, max_rounds=200) -> np.ndarray:
    """Swaps products between reviews until (almost) no user reviews a product twice.

    Swapping keeps every user's and product's review count. Dense specs (few users and products,
    many reviews) may keep a few repeats.
    """
    product = product.copy()
    for _ in range(max_rounds):
        pair = user.astype(np.int64) * num_products + product
        order = np.argsort(pair, kind="stable")
        repeated = order[1:][pair[order[1:]] == pair[order[:-1]]]
        if len(repeated) == 0:
            break
        # Reshuffle the products of the repeats together with as many other random reviews.
        others = np.setdiff1d(np.arange(len(product)), repeated)
        partners = rng.choice(others, min(len(repeated), len(others)), replace=False)
        group = np.concatenate([repeated, partners])
        product[group] = product[rng.permutation(group)]
    return product


def _negative_binomial_with_mean(rng, mean, dispersion, size) -> np.ndarray:
    if mean <= 0:
        return np.zeros(size, dtype=np.int64)
    return rng.negative_binomial(dispersion, dispersion / (dispersion + mean), size)


def _choose(rng, weights, size) -> np.ndarray:
    cumulative = np.cumsum(weights / np.sum(weights))
    return np.minimum(np.searchsorted(cumulative, rng.random(size), side="right"),
                      len(weights) - 1)


def _generate_text(rng, spec, sentiment, text_has_signal):
    """Returns (vocabulary, sentences per review [R], word ids [N], sentence offsets [S+1])."""
    num_reviews = len(sentiment)
    vocabulary = _vocabulary(spec.vocab_size)
    grade_ids = {}
    position = 0
    for grade, words in GRADE_WORDS.items():
        grade_ids[grade] = np.arange(position, position + len(words))
        position += len(words)
    intensifier_ids = np.arange(position, position + len(INTENSIFIERS))
    position += len(INTENSIFIERS)
    negation_ids = np.arange(position, position + len(NEGATIONS))
    position += len(NEGATIONS)
    first_filler = position
    num_filler = spec.vocab_size - first_filler

    # Shape: sentences per review, words per sentence.
    sentences_per_review = np.clip(
        1 + _negative_binomial_with_mean(rng, spec.mean_sentences - 1.0, 2.0, num_reviews),
        1, spec.max_sentences)
    num_sentences = int(sentences_per_review.sum())
    review_of_sentence = np.repeat(np.arange(num_reviews), sentences_per_review)
    sentence_length = np.clip(
        spec.min_sentence_length + _negative_binomial_with_mean(
            rng, spec.mean_sentence_length - spec.min_sentence_length, 3.0, num_sentences),
        spec.min_sentence_length, spec.max_sentence_length)
    sentence_offsets = np.concatenate([[0], np.cumsum(sentence_length)])
    num_words = int(sentence_offsets[-1])

    # Filler everywhere first (Zipf over the filler vocabulary).
    filler_weights = 1.0 / np.arange(1, num_filler + 1) ** spec.filler_zipf_exponent
    flat_words = first_filler + _choose(rng, filler_weights, num_words)

    # Which sentences carry a phrase, and which phrase.
    signal = text_has_signal[review_of_sentence]
    rate = np.where(signal, spec.sentiment_phrase_rate, spec.neutral_phrase_rate)
    has_phrase = rng.random(num_sentences) < rate
    phrase_sentence = np.flatnonzero(has_phrase)
    num_phrases = len(phrase_sentence)
    target = (sentiment[review_of_sentence[phrase_sentence]]
              + rng.normal(0.0, spec.phrase_noise, num_phrases))
    logits = (PHRASE_LOG_PRIOR[None, :] - (PHRASE_VALUES[None, :] - target[:, None]) ** 2
              / (2.0 * PHRASE_CHOICE_TEMPERATURE ** 2))
    template = np.argmax(logits + rng.gumbel(size=logits.shape), axis=1)
    template = np.where(signal[phrase_sentence], template, _NEUTRAL_TEMPLATE)

    negated = np.array([t[0] for t in PHRASE_TEMPLATES])[template]
    intensified = np.array([t[1] for t in PHRASE_TEMPLATES])[template]
    grade = np.array([t[2] for t in PHRASE_TEMPLATES])[template]
    phrase_length = 1 + negated + intensified
    start = sentence_offsets[phrase_sentence] + np.floor(
        rng.random(num_phrases) * (sentence_length[phrase_sentence] - phrase_length + 1)
    ).astype(np.int64)

    synonym_weights = 1.0 / np.arange(1, len(GRADE_WORDS[0]) + 1)
    synonym = _choose(rng, synonym_weights, num_phrases)
    grade_table = np.stack([grade_ids[g] for g in sorted(GRADE_WORDS)])  # [5, synonyms]
    grade_word = grade_table[grade + 2, synonym]
    intensifier_word = intensifier_ids[_choose(rng, 1.0 / np.arange(1, len(INTENSIFIERS) + 1),
                                               num_phrases)]
    negation_word = negation_ids[_choose(rng, _NEGATION_WEIGHTS, num_phrases)]

    # Neutral negations in filler, never right before a phrase (they would change its meaning).
    is_phrase_start = np.zeros(num_words + 1, dtype=bool)
    is_phrase_start[start] = True
    in_phrase = np.zeros(num_words, dtype=bool)
    for offset in range(3):
        at = start + offset
        in_phrase[at[offset < phrase_length]] = True
    filler_negation = ((rng.random(num_words) < spec.filler_negation_rate)
                       & ~in_phrase & ~is_phrase_start[1:])
    flat_words[filler_negation] = negation_ids[
        _choose(rng, _NEGATION_WEIGHTS, int(filler_negation.sum()))]

    flat_words[start[negated]] = negation_word[negated]
    flat_words[(start + negated)[intensified]] = intensifier_word[intensified]
    flat_words[start + negated + intensified] = grade_word
    return vocabulary, sentences_per_review, flat_words, sentence_offsets


def _vocabulary(vocab_size: int) -> tuple[str, ...]:
    lexicon = [w for g in sorted(GRADE_WORDS) for w in GRADE_WORDS[g]]
    lexicon += list(INTENSIFIERS) + list(NEGATIONS) + list(FILLER_WORDS)
    width = len(str(vocab_size))
    generated = [f"w{i:0{width}d}" for i in range(vocab_size - len(lexicon))]
    return tuple(lexicon + generated)
