"""Skip-gram word vectors two ways on one file's text: gensim's word2vec (what
tools/pretrain_vectors.py and data.pretrain_vectors use) against a skip-gram with negative
sampling written in JAX (below), same options, same tokens, one run.

    python tools/bench_vectors.py ../shared/data/amazon-musical-instruments/reviews_Musical_Instruments_5.json.gz

Prints a table: seconds (wall and process CPU), and how well each set of vectors predicts the
rating: ridge regression on each review's mean word vector, fitted on 80% of the reviews and
scored (RMSE) on the rest, beside the mean-rating RMSE; then a few nearest neighbours.

The JAX version: pairs (center, context) with word2vec's dynamic window and frequent-word
down-sampling are drawn per epoch in numpy; a jitted step takes 4,096 pairs and 5 negatives each
(unigram^0.75), computes the SGNS loss gradient on the gathered rows and scatter-adds
lr * gradient into the input and output tables (donated), lr decaying linearly as word2vec's.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runs from a checkout without install

from jaxreviews import options as options_lib
from jaxreviews.data import readers, word_vectors  # noqa: E402

BATCH = 4096


def read(path: str, format: str | None):
    sentences, ratings, review_of_sentence = [], [], []
    for index, review in enumerate(readers.read_reviews(path, format, lenient=True, report=readers.ReadReport())):
        ratings.append(review.rating)
        for sentence in review.sentences:
            sentences.append(list(sentence))
            review_of_sentence.append(index)
    return sentences, np.asarray(ratings, np.float64), np.asarray(review_of_sentence)


def jax_skipgram(sentences, *, dim, window, epochs, negative, min_count, sample, seed):
    import jax
    import jax.numpy as jnp

    counts: dict[str, int] = {}
    for sentence in sentences:
        for token in sentence:
            counts[token] = counts.get(token, 0) + 1
    words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: -counts[w])
    index = {w: i for i, w in enumerate(words)}
    frequency = np.asarray([counts[w] for w in words], np.float64)
    ids, sentence_ids = [], []
    for s, sentence in enumerate(sentences):
        kept = [index[t] for t in sentence if t in index]
        ids.extend(kept)
        sentence_ids.extend([s] * len(kept))
    ids, sentence_ids = np.asarray(ids, np.int32), np.asarray(sentence_ids, np.int64)
    total = frequency.sum()
    keep_probability = np.minimum(1.0, (np.sqrt(frequency / (sample * total)) + 1) * (sample * total) / frequency)
    noise = frequency ** 0.75
    noise_cdf = np.cumsum(noise / noise.sum())
    vocab = len(words)
    rng = np.random.default_rng(seed)
    w_in = jnp.asarray((rng.random((vocab, dim), np.float32) - 0.5) / dim)
    w_out = jnp.zeros((vocab, dim), jnp.float32)

    @jax.jit
    def pair_grads(v_center, u_context, u_negative):
        def loss(vc, uo, un):
            positive = jax.nn.log_sigmoid(jnp.sum(vc * uo, -1))
            negatives = jax.nn.log_sigmoid(-jnp.einsum("bd,bkd->bk", vc, un)).sum(-1)
            return -jnp.sum(positive + negatives)
        return jax.grad(loss, argnums=(0, 1, 2))(v_center, u_context, u_negative)

    def step(w_in, w_out, centers, contexts, negatives, lr):
        g_c, g_o, g_n = pair_grads(w_in[centers], w_out[contexts], w_out[negatives])
        w_in = w_in.at[centers].add(-lr * g_c)
        w_out = w_out.at[contexts].add(-lr * g_o).at[negatives.reshape(-1)].add(-lr * g_n.reshape(-1, dim))
        return w_in, w_out

    step = jax.jit(step, donate_argnums=(0, 1))
    starting_lr, pairs_seen, expected_pairs = 0.025, 0, None
    for epoch in range(epochs):
        kept = rng.random(len(ids)) < keep_probability[ids]
        e_ids, e_sentences = ids[kept], sentence_ids[kept]
        reduced = rng.integers(1, window + 1, len(e_ids))  # word2vec's dynamic window, per center
        centers, contexts = [], []
        for d in range(1, window + 1):
            same = (e_sentences[d:] == e_sentences[:-d])
            forward = same & (reduced[:-d] >= d)  # center i, context i + d
            backward = same & (reduced[d:] >= d)  # center i + d, context i
            centers += [e_ids[:-d][forward], e_ids[d:][backward]]
            contexts += [e_ids[d:][forward], e_ids[:-d][backward]]
        centers, contexts = np.concatenate(centers), np.concatenate(contexts)
        order = rng.permutation(len(centers))
        centers, contexts = centers[order], contexts[order]
        expected_pairs = expected_pairs or len(centers) * epochs
        for start in range(0, len(centers) - BATCH + 1, BATCH):
            negatives = np.searchsorted(noise_cdf, rng.random((BATCH, negative))).astype(np.int32)
            lr = max(starting_lr * (1 - pairs_seen / expected_pairs), starting_lr * 1e-4)
            w_in, w_out = step(w_in, w_out, centers[start:start + BATCH], contexts[start:start + BATCH],
                               np.minimum(negatives, vocab - 1), np.float32(lr))
            pairs_seen += BATCH
    return words, np.asarray(jax.device_get(w_in))


def rating_rmse(words, vectors, sentences, ratings, review_of_sentence, seed=0):
    """Ridge regression of the rating on each review's mean word vector: held-out RMSE."""
    index = {w: i for i, w in enumerate(words)}
    features = np.zeros((len(ratings), vectors.shape[1]))
    counts = np.zeros(len(ratings))
    for sentence, review in zip(sentences, review_of_sentence):
        rows = [index[t] for t in sentence if t in index]
        if rows:
            features[review] += vectors[rows].sum(0)
            counts[review] += len(rows)
    features /= np.maximum(counts, 1)[:, None]
    features = np.hstack([features, np.ones((len(ratings), 1))])
    order = np.random.default_rng(seed).permutation(len(ratings))
    train, test = order[: int(0.8 * len(order))], order[int(0.8 * len(order)):]
    best = None
    for alpha in (1e-3, 1e-2, 1e-1, 1.0):  # picked on the training part's own 20% tail
        fit, held = train[: int(0.8 * len(train))], train[int(0.8 * len(train)):]
        a = features[fit]
        w = np.linalg.solve(a.T @ a + alpha * len(fit) * np.eye(a.shape[1]), a.T @ ratings[fit])
        error = np.sqrt(np.mean((features[held] @ w - ratings[held]) ** 2))
        best = min(best or (error, alpha), (error, alpha))
    a = features[train]
    w = np.linalg.solve(a.T @ a + best[1] * len(train) * np.eye(a.shape[1]), a.T @ ratings[train])
    return float(np.sqrt(np.mean((features[test] @ w - ratings[test]) ** 2))), \
        float(np.sqrt(np.mean((ratings[train].mean() - ratings[test]) ** 2)))


def neighbours(words, vectors, probes, k=5):
    index = {w: i for i, w in enumerate(words)}
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    out = {}
    for probe in probes:
        if probe in index:
            similarity = unit @ unit[index[probe]]
            out[probe] = [words[i] for i in np.argsort(-similarity)[1:k + 1]]
    return out


def main(argv=None) -> int:
    defaults = options_lib.section("data").pretrain
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file")
    parser.add_argument("--format", default=None)
    parser.add_argument("--dim", type=int, default=defaults.dim)
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--workers", type=int, default=defaults.workers)
    parser.add_argument("--probes", default="great,broke,guitar,cheap,strings")
    args = parser.parse_args(argv)
    sentences, ratings, review_of_sentence = read(args.file, args.format)
    options = dict(dim=args.dim, window=defaults.window, epochs=args.epochs, negative=defaults.negative,
                   min_count=defaults.min_count, sample=defaults.sample, seed=defaults.seed)
    print(f"{args.file}: {len(ratings):,} reviews, {sum(map(len, sentences)):,} tokens; {options}")
    rows = []
    for name, train in (("gensim word2vec (sg=1)", lambda: word_vectors.train_skipgram(
                             sentences, workers=args.workers, **options)),
                        ("JAX skip-gram (jit, sparse updates)", lambda: jax_skipgram(sentences, **options))):
        wall, cpu = time.perf_counter(), time.process_time()
        words, vectors = train()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        rmse, constant = rating_rmse(words, vectors, sentences, ratings, review_of_sentence)
        rows.append((name, wall, cpu, len(words), rmse, constant, neighbours(words, vectors, args.probes.split(","))))
    print(f"\n| method | wall s | CPU s | words | rating RMSE, ridge on mean vectors | mean-rating RMSE |")
    print("|---|---|---|---|---|---|")
    for name, wall, cpu, count, rmse, constant, _ in rows:
        print(f"| {name} | {wall:.1f} | {cpu:.1f} | {count:,} | {rmse:.4f} | {constant:.4f} |")
    for name, *_, near in rows:
        print(f"\n{name}: " + "; ".join(f"{w}: {', '.join(n)}" for w, n in near.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
