"""What a model should reach on the synthetic corpus: simple numpy/scipy baselines and oracles.

    python tools/synthetic_baselines.py                  # default corpus, 1-2 min
    python tools/synthetic_baselines.py --check          # ... and compare with synthetic.EXPECTED
    python tools/synthetic_baselines.py --seeds 0 1 2    # mean ± std over three corpora
    python tools/synthetic_baselines.py --size=tiny
    python tools/synthetic_baselines.py --set text_signal_share=0.5 --num_reviews=40000

Splits the corpus at random into train (90 %) and test (10 %), fits each baseline on train and
prints accuracy and RMSE (of the predicted star) on test:

  majority            the most frequent training class
  user+product        multinomial logistic regression on one-hot user and product ids
  text bow            multinomial logistic regression on log(1 + count) of words
  text bow+bigrams    the same plus within-sentence bigrams seen >= 3 times in train
  text+user+product   words + bigrams + ids
  oracle ...          Bayes-optimal predictions from the latent truth: true leniency + quality,
                      the rating noise scale, and for the "reader" oracles the exact likelihood of
                      the sentiment phrases in the text (`synthetic.read_phrases`), marginalised
                      over whether the text carries signal (a reader cannot see that flag).

The L2 strengths are fixed (`TEXT_L2`, `ID_L2`); `--tune_l2` re-picks them on a validation tenth
of train. The numbers go into the docstring and `EXPECTED` of `jaxreviews/data/synthetic.py`.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import scipy.optimize
import scipy.sparse
import scipy.special

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jaxreviews.data import synthetic  # noqa: E402

# L2 strengths of the regressions; `--tune_l2` re-picks them (these won on the default corpus).
TEXT_L2 = 1e-3
ID_L2 = 1e-4
xlogy = scipy.special.xlogy


# ----------------------------------------------------------------------------------------------
# Features.

def text_features(corpus, bigram_min_count, train_index):
    """Sparse [R, V] log(1 + word count) and [R, B] log(1 + bigram count) matrices."""
    word_id = {w: i for i, w in enumerate(corpus.vocabulary)}
    vocab_size = len(corpus.vocabulary)
    ids, sentence_of_token, review_of_token = [], [], []
    sentence = 0
    for r, review in enumerate(corpus.reviews):
        for words in review.sentences:
            ids.extend(word_id[w] for w in words)
            sentence_of_token.extend([sentence] * len(words))
            review_of_token.extend([r] * len(words))
            sentence += 1
    ids = np.asarray(ids, dtype=np.int64)
    sentence_of_token = np.asarray(sentence_of_token)
    review_of_token = np.asarray(review_of_token)
    num_reviews = len(corpus.reviews)

    words = _log_counts(review_of_token, ids, num_reviews, vocab_size)

    same_sentence = sentence_of_token[1:] == sentence_of_token[:-1]
    pair = (ids[:-1] * vocab_size + ids[1:])[same_sentence]
    pair_review = review_of_token[:-1][same_sentence]
    in_train = np.zeros(num_reviews, dtype=bool)
    in_train[train_index] = True
    kept, counts = np.unique(pair[in_train[pair_review]], return_counts=True)
    kept = kept[counts >= bigram_min_count]
    column = np.searchsorted(kept, pair)
    known = (column < len(kept)) & (kept[np.minimum(column, len(kept) - 1)] == pair)
    bigrams = _log_counts(pair_review[known], column[known], num_reviews, len(kept))
    return words, bigrams


def id_features(corpus):
    users = {u: i for i, u in enumerate(sorted({r.user for r in corpus.reviews}))}
    products = {p: i for i, p in enumerate(sorted({r.product for r in corpus.reviews}))}
    rows = np.arange(len(corpus.reviews))
    ones = np.ones(len(rows))
    user = scipy.sparse.csr_matrix(
        (ones, (rows, [users[r.user] for r in corpus.reviews])), shape=(len(rows), len(users)))
    product = scipy.sparse.csr_matrix(
        (ones, (rows, [products[r.product] for r in corpus.reviews])),
        shape=(len(rows), len(products)))
    return scipy.sparse.hstack([user, product], format="csr")


def _log_counts(rows, columns, num_rows, num_columns):
    matrix = scipy.sparse.csr_matrix((np.ones(len(rows)), (rows, columns)),
                                     shape=(num_rows, num_columns))
    matrix.sum_duplicates()
    matrix.data = np.log1p(matrix.data)
    return matrix


# ----------------------------------------------------------------------------------------------
# Multinomial logistic regression with L2, by L-BFGS.

@dataclasses.dataclass
class LogisticRegression:
    """Softmax regression; `l2` is one strength, or one per feature block (`block_sizes`)."""

    l2: float | tuple[float, ...]
    num_classes: int
    block_sizes: tuple[int, ...] | None = None
    max_iterations: int = 200
    weights: np.ndarray | None = None
    bias: np.ndarray | None = None

    def fit(self, features, labels):
        num_examples, num_features = features.shape
        onehot = np.eye(self.num_classes)[labels]
        features_t = features.T.tocsr()
        if self.block_sizes is None:
            l2 = np.full((num_features, 1), float(self.l2))
        else:
            l2 = np.repeat(np.asarray(self.l2, dtype=np.float64), self.block_sizes)[:, None]

        def loss_and_grad(flat):
            weights = flat[:-self.num_classes].reshape(num_features, self.num_classes)
            bias = flat[-self.num_classes:]
            logits = features @ weights + bias
            log_probs = logits - scipy.special.logsumexp(logits, axis=1, keepdims=True)
            loss = -np.sum(onehot * log_probs) / num_examples + 0.5 * np.sum(l2 * weights**2)
            delta = (np.exp(log_probs) - onehot) / num_examples
            grad_w = features_t @ delta + l2 * weights
            return loss, np.concatenate([grad_w.ravel(), delta.sum(0)])

        start = np.zeros(num_features * self.num_classes + self.num_classes)
        result = scipy.optimize.minimize(loss_and_grad, start, jac=True, method="L-BFGS-B",
                                         options=dict(maxiter=self.max_iterations))
        self.weights = result.x[:-self.num_classes].reshape(num_features, self.num_classes)
        self.bias = result.x[-self.num_classes:]
        return self

    def predict(self, features):
        return np.argmax(features @ self.weights + self.bias, axis=1)


def fit_with_validation(features, labels, train_index, num_classes, l2_grid, block_sizes=None):
    """Picks the L2 strength(s) on a tenth of train, refits on all of train."""
    shuffled = np.random.default_rng(7).permutation(train_index)
    held = shuffled[: len(shuffled) // 10]
    fit = shuffled[len(shuffled) // 10:]
    best_l2, best_accuracy = None, -1.0
    for l2 in l2_grid:
        model = LogisticRegression(l2, num_classes, block_sizes).fit(features[fit], labels[fit])
        accuracy = np.mean(model.predict(features[held]) == labels[held])
        if accuracy > best_accuracy:
            best_l2, best_accuracy = l2, accuracy
    return LogisticRegression(best_l2, num_classes, block_sizes).fit(
        features[train_index], labels[train_index])


# ----------------------------------------------------------------------------------------------
# Oracles.

def template_likelihood(spec, sentiment_grid):
    """P(phrase template | sentiment) for a signal review, [grid, T], integrating the noise."""
    noise = np.linspace(-5.0, 5.0, 201)
    noise_weight = np.exp(-0.5 * noise**2)
    noise_weight /= noise_weight.sum()
    target = sentiment_grid[:, None] + spec.phrase_noise * noise[None, :]  # [grid, Q]
    logits = (synthetic.PHRASE_LOG_PRIOR[None, None, :]
              - (synthetic.PHRASE_VALUES[None, None, :] - target[..., None]) ** 2
              / (2.0 * synthetic.PHRASE_CHOICE_TEMPERATURE**2))
    probs = scipy.special.softmax(logits, axis=-1)
    return np.einsum("gqt,q->gt", probs, noise_weight)


def oracle_predict(corpus, index, use_ids, use_text):
    """Bayes-optimal class for each review in `index` given the latent truth it may use."""
    spec = corpus.spec
    order = np.argsort(corpus.latent_score)
    sorted_score, sorted_sentiment = corpus.latent_score[order], corpus.sentiment[order]
    if use_ids:
        mean = corpus.user_leniency[index] + corpus.product_quality[index]
        scale = np.full(len(index), spec.review_noise_scale)
    else:
        mean = np.zeros(len(index))
        scale = np.full(len(index), np.sqrt(spec.user_leniency_scale**2
                                             + spec.product_quality_scale**2
                                             + spec.review_noise_scale**2))
    standard = np.linspace(-6.0, 6.0, 601)
    score = mean[:, None] + scale[:, None] * standard[None, :]  # [N, G]
    log_post = np.broadcast_to(-0.5 * standard**2, score.shape).copy()
    if use_text:
        sentiment = np.interp(score, sorted_score, sorted_sentiment)
        sentiment_grid = np.linspace(-2.5, 2.5, 501)
        log_like = np.log(np.maximum(template_likelihood(spec, sentiment_grid), 1e-300))  # [G', T]
        num_templates = len(synthetic.PHRASE_TEMPLATES)
        counts = np.zeros((len(index), num_templates))
        num_sentences = np.zeros(len(index))
        for row, r in enumerate(index):
            sentences = corpus.reviews[r].sentences
            num_sentences[row] = len(sentences)
            for template in synthetic.read_phrases(sentences):
                counts[row, template] += 1
        num_phrases = counts.sum(1)
        cell = np.clip(np.round((sentiment + 2.5) / 5.0 * 500).astype(int), 0, 500)
        signal = (np.log(spec.text_signal_share)
                  + xlogy(num_phrases, spec.sentiment_phrase_rate)
                  + xlogy(num_sentences - num_phrases, 1.0 - spec.sentiment_phrase_rate))
        signal = signal[:, None] + np.einsum("ngt,nt->ng", log_like[cell], counts)
        only_neutral = num_phrases == counts[:, synthetic._NEUTRAL_TEMPLATE]
        no_signal = np.where(
            only_neutral,
            np.log1p(-spec.text_signal_share)
            + xlogy(num_phrases, spec.neutral_phrase_rate)
            + xlogy(num_sentences - num_phrases, 1.0 - spec.neutral_phrase_rate),
            -np.inf)
        log_post += np.logaddexp(signal, no_signal[:, None])
    posterior = np.exp(log_post - log_post.max(1, keepdims=True))
    label_of_score = np.searchsorted(corpus.class_thresholds, score)
    class_mass = np.stack([np.sum(posterior * (label_of_score == k), 1)
                           for k in range(spec.num_classes)], 1)
    return np.argmax(class_mass, 1)


# ----------------------------------------------------------------------------------------------

MODELS = {  # key in `synthetic.EXPECTED` -> what it is
    "majority": "majority class",
    "user_product": "user + product (ids)",
    "text_bow": "text, bag of words",
    "text_bigrams": "text, words + bigrams",
    "text_user_product": "text + user + product (words+bigrams+ids)",
    "oracle_user_product": "oracle: true user + product",
    "oracle_text": "oracle: perfect reader, text only",
    "oracle_all": "oracle: true user + product + perfect reader",
}


def evaluate(spec, test_share=0.1, tune_l2=False, verbose=True):
    """{model key: {"accuracy", "rmse", "accuracy_signal", "accuracy_no_signal"}} on test."""
    start = time.perf_counter()
    corpus = synthetic.generate(spec)
    if verbose:
        print(f"seed {spec.seed}: generated {corpus.num_reviews} reviews in "
              f"{time.perf_counter() - start:.2f} s", flush=True)
    permutation = np.random.default_rng(1234).permutation(corpus.num_reviews)
    num_test = int(round(test_share * corpus.num_reviews))
    test, train = np.sort(permutation[:num_test]), np.sort(permutation[num_test:])
    labels = corpus.label

    words, bigrams = text_features(corpus, 3, train)
    ids = id_features(corpus)
    text_l2_grid = (3e-4, 1e-3, 3e-3) if tune_l2 else (TEXT_L2,)
    id_l2_grid = (3e-5, 1e-4, 3e-4, 1e-3) if tune_l2 else (ID_L2,)
    predictions = {}
    majority = np.bincount(labels[train], minlength=spec.num_classes).argmax()
    predictions["majority"] = np.full(len(test), majority)

    def fit(key, blocks, l2_grid):
        t = time.perf_counter()
        features = scipy.sparse.hstack(blocks, format="csr")
        sizes = tuple(b.shape[1] for b in blocks) if len(blocks) > 1 else None
        model = fit_with_validation(features, labels, train, spec.num_classes, l2_grid, sizes)
        predictions[key] = model.predict(features[test])
        if verbose:
            print(f"  {MODELS[key]}: l2={model.l2}, {features.shape[1]} features, "
                  f"{time.perf_counter() - t:.1f} s", flush=True)
        return model

    id_l2 = fit("user_product", [ids], id_l2_grid).l2
    fit("text_bow", [words], text_l2_grid)
    fit("text_bigrams", [words, bigrams], [(l2, l2) for l2 in text_l2_grid])
    fit("text_user_product", [words, bigrams, ids], [(l2, l2, id_l2) for l2 in text_l2_grid])
    predictions["oracle_user_product"] = oracle_predict(corpus, test, True, False)
    predictions["oracle_text"] = oracle_predict(corpus, test, False, True)
    predictions["oracle_all"] = oracle_predict(corpus, test, True, True)

    signal = corpus.text_has_signal[test]
    results = {}
    for key, predicted in predictions.items():
        correct = predicted == labels[test]
        results[key] = dict(
            accuracy=float(correct.mean()),
            rmse=float(np.sqrt(np.mean((predicted - labels[test]) ** 2.0))),
            accuracy_signal=float(correct[signal].mean()),
            accuracy_no_signal=float(correct[~signal].mean()))
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="default", choices=["default", "tiny"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="corpus seeds; with several, prints mean and spread")
    parser.add_argument("--num_reviews", type=int, default=None)
    parser.add_argument("--test_share", type=float, default=0.1)
    parser.add_argument("--tune_l2", action="store_true",
                        help="pick the L2 strengths on validation data (slower, and noisy at "
                             "this size) instead of using TEXT_L2 / ID_L2")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a SyntheticSpec field, e.g. --set text_signal_share=0.6")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 unless seed 0 of the default corpus matches "
                             "synthetic.EXPECTED within 0.03 accuracy")
    args = parser.parse_args(argv)
    overrides = {}
    if args.num_reviews:
        overrides["num_reviews"] = args.num_reviews
    field_types = {f.name: f.type for f in dataclasses.fields(synthetic.SyntheticSpec)}
    for assignment in args.set:
        name, _, value = assignment.partition("=")
        if name not in field_types:
            parser.error(f"--set {assignment}: SyntheticSpec has no field {name!r}")
        overrides[name] = (int if field_types[name] == "int" else float)(value)

    runs = [evaluate(synthetic.default_spec(args.size, seed=seed, **overrides), args.test_share,
                     args.tune_l2) for seed in args.seeds]
    columns = ("accuracy", "rmse", "accuracy_signal", "accuracy_no_signal")
    print(f"\n{args.size} corpus, seeds {args.seeds}, test share {args.test_share}"
          + (", mean ± std over seeds" if len(runs) > 1 else ""))
    print(f"{'model':45s} {'accuracy':>12s} {'RMSE':>12s} {'acc|signal':>12s} {'acc|none':>12s}")
    for key, title in MODELS.items():
        cells = []
        for column in columns:
            values = np.array([run[key][column] for run in runs])
            cells.append(f"{values.mean():.3f}" + (f" ± {values.std():.3f}" if len(runs) > 1
                                                    else ""))
        print(f"{title:45s} " + " ".join(f"{c:>12s}" for c in cells))

    if args.check:
        if args.size != "default" or overrides or 0 not in args.seeds:
            parser.error("--check needs the default corpus with seed 0 among --seeds")
        run = runs[args.seeds.index(0)]
        wrong = {key: (run[key]["accuracy"], expected["accuracy"])
                 for key, expected in synthetic.EXPECTED.items()
                 if abs(run[key]["accuracy"] - expected["accuracy"]) > 0.03}
        if wrong:
            print(f"FAILED: accuracy (measured, expected) off by > 0.03: {wrong}")
            sys.exit(1)
        print("OK: matches synthetic.EXPECTED")


if __name__ == "__main__":
    main()
