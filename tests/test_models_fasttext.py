"""The fastText-style model: which bigrams it hashes, the average it takes, and what it learns."""
import jax
import jax.numpy as jnp
import numpy as np

from jaxreviews import models
from jaxreviews.models import fasttext
from tests.test_models import CLASSES, PRODUCTS, RANGE, USERS, VOCAB, make_batch, tiny_config


def test_bigrams_join_consecutive_real_tokens_of_one_review_only():
    mask = np.array([[True, True, True, True, True, False]])
    segments = np.array([[0, 0, 1, 1, 1, 0]])  # review 0: positions 0-1, review 1: 2-4, then padding
    valid = np.asarray(fasttext.bigram_mask(jnp.asarray(mask), jnp.asarray(segments)))
    # position t ends the bigram (t-1, t): not at 0, not across the review boundary at 2, not into padding
    np.testing.assert_array_equal(valid, [[False, True, False, True, True, False]])
    np.testing.assert_array_equal(np.asarray(fasttext.bigram_mask(jnp.asarray(mask))),
                                  [[False, True, True, True, True, False]])


def test_bigram_buckets_are_in_range_order_sensitive_and_spread():
    ids = jnp.asarray(np.array([[3, 7, 3, 7, 3]], np.int32))
    buckets = np.asarray(fasttext.bigram_buckets(ids, 1000))[0]
    assert buckets[1] == buckets[3] and buckets[2] == buckets[4]  # (3, 7) twice, (7, 3) twice
    assert buckets[1] != buckets[2]  # (3, 7) and (7, 3) differ
    rng = np.random.default_rng(0)
    many = np.asarray(fasttext.bigram_buckets(jnp.asarray(rng.integers(0, 5000, (1, 20000), np.int32)), 512))
    assert many.min() >= 0 and many.max() < 512
    counts = np.bincount(many[0, 1:], minlength=512)
    assert counts.max() < 3 * counts.mean()  # no bucket hoards the bigrams


def test_the_document_is_the_average_of_word_and_bigram_vectors():
    config = tiny_config("fasttext", norm="none", head_dropout=0.0, embedding_dropout=0.0,
                         user_product__concat_to_document=False, user_product__rating_biases=False)
    model = models.build_model(config, vocab_size=VOCAB, num_users=USERS, num_products=PRODUCTS,
                               num_classes=CLASSES, rating_range=RANGE)
    batch = make_batch(seed=4)
    params = model.init({"params": jax.random.key(0)}, batch)["params"]
    words = np.asarray(params["word_embedding"]["embedding"])
    bigrams = np.asarray(params["ngram_embedding"]["embedding"])
    kernel, bias = (np.asarray(params["head"]["output"][k]) for k in ("kernel", "bias"))
    logits = np.asarray(model.apply({"params": params}, batch)["logits"])
    buckets = np.asarray(fasttext.bigram_buckets(jnp.asarray(batch["tokens"]), config.ngram_buckets))
    for b in range(len(batch["tokens"])):
        n = int(batch["token_mask"][b].sum())
        vectors = [words[t] for t in batch["tokens"][b, :n]] + [bigrams[k] for k in buckets[b, 1:n]]
        np.testing.assert_allclose(logits[b], np.mean(vectors, axis=0) @ kernel + bias, rtol=1e-4, atol=1e-5)


def test_it_learns_a_word_that_decides_the_rating():
    """Reviews whose rating is 5 when word 7 occurs, else 1: a few hundred Adam steps learn it."""
    import optax

    rng = np.random.default_rng(0)
    config = tiny_config("fasttext")
    model = models.build_model(config, vocab_size=VOCAB, num_users=USERS, num_products=PRODUCTS,
                               num_classes=CLASSES, rating_range=RANGE)

    def batch_of(seed):
        batch = make_batch(seed=seed, batch=32)
        tokens = np.where(batch["tokens"] == 7, 8, batch["tokens"])
        positive = rng.random(32) < 0.5
        tokens[positive, 0] = 7
        label = np.where(positive, 4, 0).astype(np.int32)
        return {**batch, "tokens": tokens, "label": label, "rating": (label + 1).astype(np.float32)}

    params = model.init({"params": jax.random.key(0)}, batch_of(0))["params"]
    optimizer = optax.adam(1e-2)
    state = optimizer.init(params)

    @jax.jit
    def step(params, state, batch, key):
        def loss(p):
            logits = model.apply({"params": p}, batch, train=True, rngs={"dropout": key})["logits"]
            return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
        grads = jax.grad(loss)(params)
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    for i in range(150):
        params, state = step(params, state, batch_of(i + 1), jax.random.key(i))
    test = batch_of(999)
    predicted = np.asarray(model.apply({"params": params}, test)["predicted_class"])
    assert np.mean(predicted == test["label"]) > 0.95
