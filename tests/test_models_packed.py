"""Packed batches give the numbers of `[B, S, W]` / `[B, T]` batches: same reviews, same parameters,
same logits and gradients (float tolerance), for every model and encoder kind."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxreviews import models
from jaxreviews.data import batching, corpus, packing
from jaxreviews.models import cnn, recurrent
from tests.test_batching import random_reviews
from tests.test_models import tiny_config

MEMBERS = np.arange(12)


@pytest.fixture(scope="module")
def encoded():
    collected = corpus.collect(random_reviews(40, seed=3))
    vocab = collected.build_vocabulary()
    users, products = collected.build_id_maps()
    return collected.encode(None, vocab, users, products)


def both_batches(data, layout):
    """The reviews MEMBERS as one padded batch (no truncation) and as one packed batch."""
    arrays = data.arrays
    if layout == "hierarchical":
        shape = (int(arrays.num_sentences[MEMBERS].max()), int(arrays.longest_sentence[MEMBERS].max()))
    else:
        shape = (int(arrays.num_tokens[MEMBERS].max()),)
    padded = batching.make_batch(data, MEMBERS, layout, shape, rating_range=(1.0, 5.0))
    sized = packing.PackedBatcher(data, layout=layout, batch_size=len(MEMBERS))
    rows = packing.best_fit_rows(sized._units_of(MEMBERS)[0], sized.row_length)[2]
    sentence_rows = 0
    if layout == "hierarchical":
        sentence_rows = packing.best_fit_rows(sized._units_of(MEMBERS)[1], sized.sentence_row_length)[2] + 1
    shape = packing.PackedShape(rows + 1, sized.row_length, sentence_rows, sized.sentence_row_length, len(MEMBERS))
    return padded, packing.make_packed_batch(data, MEMBERS, layout, shape)


SLOW = pytest.mark.slow
CASES = [  # han and han_upa with each word encoder; the flat models with each pooling
    ("han", {}),
    ("han", {"word_encoder__kind": "gru", "sentence_encoder__kind": "gru"}),
    ("han", {"word_encoder__kind": "cnn", "sentence_encoder__kind": "cnn"}),
    ("han_upa", {}),
    ("han_upa", {"word_encoder__kind": "gru"}),
    ("han_upa", {"word_encoder__kind": "cnn"}),
    ("cnn", {}),
    ("bilstm", {}),
    ("rnn", {"encoder__kind": "gru", "pooling": "last"}),
    ("rnn", {"pooling": "attention"}),
    ("fasttext", {}),
    ("fasttext", {"hidden_dim": 8, "norm": "none"}),
    pytest.param("han_upa", {"user_product__concat_to_document": True, "user_product__rating_biases": True},
                 marks=SLOW),
    pytest.param("han", {"word_encoder__input_projection": "fused", "sentence_encoder__input_projection": "hoisted"},
                 marks=SLOW),
    pytest.param("han_upa", {"word_encoder__num_layers": 2, "word_encoder__bidirectional": False}, marks=SLOW),
    pytest.param("rnn", {"pooling": "last", "encoder__bidirectional": False}, marks=SLOW),
    pytest.param("rnn", {"pooling": "max", "encoder__num_layers": 2}, marks=SLOW),
    pytest.param("cnn", {"activation": "gelu"}, marks=SLOW),  # not monotone: the dense path
]


@pytest.mark.parametrize("name,overrides", CASES)
def test_packed_and_padded_give_the_same_logits_and_gradients(encoded, name, overrides):
    config = tiny_config(name, **overrides)
    layout = models.input_layout(name)
    padded, packed = both_batches(encoded, layout)
    model = models.build_model(config, vocab_size=encoded.vocab_size, num_users=encoded.num_users,
                               num_products=encoded.num_products, num_classes=5, rating_range=(1.0, 5.0))
    params = jax.jit(lambda b: model.init({"params": jax.random.key(0)}, b, train=False))(padded)["params"]

    @jax.jit
    def loss_and_grads(params, batch):
        def loss(p):
            logits = model.apply({"params": p}, batch, train=False)["logits"]
            return jnp.sum(logits * jnp.arange(1.0, 6.0)), logits
        return jax.value_and_grad(loss, has_aux=True)(params)

    (_, logits_padded), grads_padded = loss_and_grads(params, padded)
    (_, logits_packed), grads_packed = loss_and_grads(params, packed)
    np.testing.assert_allclose(logits_packed, logits_padded, rtol=1e-5, atol=2e-6)
    scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads_padded))
    for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(grads_padded)[0], jax.tree.leaves(grads_packed)):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5 * scale, err_msg=jax.tree_util.keystr(path))


def packed_row(sequences, steps):
    """Sequences [n_i, D] one after another in a row of `steps`: x [T, 1, D], mask, segments."""
    features = sequences[0].shape[-1]
    x = np.zeros((steps, 1, features), np.float64)
    segments = np.zeros((steps, 1), np.int32)
    at = 0
    for index, sequence in enumerate(sequences):
        x[at:at + len(sequence), 0] = sequence
        segments[at:at + len(sequence), 0] = index
        at += len(sequence)
    mask = np.arange(steps)[:, None] < at
    return x, mask, segments, [len(s) for s in sequences]


@pytest.mark.parametrize("cell,projection", [("lstm", "chunked"), ("lstm", "fused"), ("lstm", "hoisted"),
                                             ("gru", "fused"), ("gru", "hoisted")])
def test_a_packed_row_equals_each_sequence_alone(cell, projection):
    """Both directions reset at every segment: a row of three sequences gives each one's outputs."""
    rng = np.random.default_rng(0)
    sequences = [rng.normal(size=(n, 3)).astype(np.float32) for n in (4, 1, 3)]
    x, mask, segments, lengths = packed_row(sequences, 10)
    layer = recurrent.RecurrentLayer(cell, 5, bidirectional=True, input_projection=projection)
    variables = layer.init(jax.random.key(0), x.astype(np.float32), mask)
    packed, _ = layer.apply(variables, x.astype(np.float32), mask, segments)
    at = 0
    for sequence, length in zip(sequences, lengths):
        alone, _ = layer.apply(variables, sequence[:, None], np.ones((length, 1), bool))
        np.testing.assert_allclose(packed[at:at + length, 0], alone[:, 0], rtol=1e-5, atol=1e-6)
        at += length


def test_chunked_lstm_gradients_with_resets_match_finite_differences():
    jax.config.update("jax_enable_x64", True)
    try:
        rng = np.random.default_rng(1)
        steps, batch, features, hidden = 7, 2, 3, 4
        x = rng.normal(size=(steps, batch, features))
        mask = np.ones((steps, batch), bool)
        mask[6:, 1] = False
        starts = np.zeros((steps, batch), bool)
        starts[[0, 3, 5], 0] = True
        starts[[0, 2], 1] = True
        resets = np.stack([starts, starts[::-1]], axis=1)  # any flags will do for the gradient check
        w = rng.normal(size=(2, features, 4 * hidden)) * 0.5
        b = rng.normal(size=(2, 4 * hidden)) * 0.1
        u = rng.normal(size=(2, hidden, 4 * hidden)) * 0.5

        def f(x, w, b, u):
            outputs, final = recurrent.lstm_chunked(x, mask, w, b, u, 3, 1, resets)
            return jnp.sum(jnp.sin(outputs)) + jnp.sum(final ** 2)

        check_grads(f, (x, w, b, u), order=1, modes=("rev",))
    finally:
        jax.config.update("jax_enable_x64", False)


def test_segment_conv_max_gradients_match_finite_differences():
    jax.config.update("jax_enable_x64", True)
    try:
        rng = np.random.default_rng(0)
        x = rng.normal(size=(3, 12, 4))
        segments = np.array([[0] * 5 + [1] * 4 + [2] * 3, [3] * 7 + [4] * 3 + [0] * 2, [5] * 12])
        mask = np.array([[1] * 12, [1] * 10 + [0] * 2, [1] * 12], bool)
        kernels = tuple(rng.normal(size=(width, 4, 3)) for width in (2, 3))
        check_grads(lambda x, k: cnn.segment_conv_max(x, mask, segments, 7, k), (x, kernels), order=1,
                    modes=("rev",))
        pooled = cnn.segment_conv_max(x, mask, segments, 7, kernels)
        assert np.all(pooled[6] == 0)  # a slot without tokens pools to zero
    finally:
        jax.config.update("jax_enable_x64", False)
