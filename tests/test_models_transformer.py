"""The transformer encoder (`encoder.kind=transformer`): padding-exact, packed rows equal each
sequence alone (block-diagonal attention, positions restart per segment), packed batches give the
padded batches' logits and gradients, reverse-mode gradients match finite differences, and the
models built on it learn."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxreviews.models import heads, transformer
from tests import test_models_masking, test_models_packed
from tests.test_models_masking import ragged_inputs
from tests.test_models_packed import encoded, packed_row  # noqa: F401  (encoded: a fixture)
from tests.test_models_training import separable_batch, train
from tests.test_models import tiny_config

HAN = {"word_encoder__kind": "transformer", "sentence_encoder__kind": "transformer"}
FLAT = {"encoder__kind": "transformer"}
WIDTH = 8


def encoder(positions="learned", **kw):
    return transformer.TransformerEncoder(width=WIDTH, num_layers=2, num_heads=2, positions=positions, **kw)


@pytest.mark.parametrize("positions", transformer.POSITIONS)
def test_padded_sequence_gives_the_unpadded_outputs(positions):
    """Each sequence alone against the batch padded with garbage, one mask not even a prefix."""
    x, mask, lengths = ragged_inputs(steps=7)
    mask[2, 0] = False  # a hole inside the first sequence: it is that sequence without step 2
    x_garbage = np.where(mask[..., None], x, 100.0).astype(np.float32)
    model = encoder(positions)
    variables = model.init(jax.random.key(0), x, mask, train=False)
    run = jax.jit(lambda x, m: model.apply(variables, x, m, train=False))
    outputs = run(x_garbage, mask)
    assert np.all(np.isfinite(outputs))
    for b, length in enumerate(lengths):
        real = np.flatnonzero(mask[:, b])
        alone = run(x[real, b:b + 1], np.ones((len(real), 1), bool))
        np.testing.assert_allclose(outputs[real, b], alone[:, 0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("positions", transformer.POSITIONS)
def test_a_packed_row_equals_each_sequence_alone(positions):
    rng = np.random.default_rng(0)
    sequences = [rng.normal(size=(n, 3)).astype(np.float32) for n in (4, 1, 3)]
    x, mask, segments, lengths = packed_row(sequences, 10)
    x = x.astype(np.float32)
    x[~mask] = 50.0  # garbage in the row's padding
    model = encoder(positions)
    variables = model.init(jax.random.key(0), x, mask, train=False)
    packed = model.apply(variables, x, mask, train=False, segments=segments)
    at = 0
    for sequence, length in zip(sequences, lengths):
        alone = model.apply(variables, sequence[:, None], np.ones((length, 1), bool), train=False)
        np.testing.assert_allclose(packed[at:at + length, 0], alone[:, 0], rtol=1e-5, atol=1e-5)
        at += length


def test_positions_restart_at_every_segment_and_skip_padding():
    segments = np.array([[0, 0, 0, 1, 1, 2, 2, 2, 0, 0]]).T
    mask = np.array([[1, 1, 1, 1, 1, 1, 1, 1, 0, 0]], bool).T
    np.testing.assert_array_equal(transformer.positions_of(mask, segments)[:8, 0], [0, 1, 2, 0, 1, 0, 1, 2])
    hole = np.array([[1, 0, 1, 1]], bool).T
    np.testing.assert_array_equal(transformer.positions_of(hole)[[0, 2, 3], 0], [0, 1, 2])
    allowed = transformer.attention_mask(mask, segments)[0, 0]
    assert allowed[4, 3] and not allowed[4, 2] and not allowed[4, 8] and not allowed[0, 5]


@pytest.mark.parametrize("name,overrides", [
    ("han_upa", HAN),
    ("han", {"word_encoder__kind": "transformer", "word_encoder__positions": "sinusoidal"}),
    ("rnn", {**FLAT, "pooling": "attention"}),
])
def test_models_ignore_padding(name, overrides):
    test_models_masking.test_models_ignore_padding(name, overrides)


@pytest.mark.parametrize("name,overrides", [
    ("han_upa", HAN),
    ("han", {**HAN, "sentence_encoder__positions": "sinusoidal", "word_encoder__num_layers": 2}),
    ("rnn", {**FLAT, "pooling": "mean"}),
    ("rnn", {**FLAT, "pooling": "last", "encoder__positions": "sinusoidal"}),
])
def test_packed_and_padded_give_the_same_logits_and_gradients(encoded, name, overrides):  # noqa: F811
    test_models_packed.test_packed_and_padded_give_the_same_logits_and_gradients(encoded, name, overrides)


@pytest.mark.parametrize("name,overrides", [
    ("han_upa", {**HAN, "head__kind": "both", "word_encoder__num_layers": 2}),
    ("rnn", {**FLAT, "pooling": "attention", "encoder__positions": "sinusoidal"}),
])
def test_finite_difference_gradients(name, overrides):
    test_models_masking.test_finite_difference_gradients(name, overrides)


@pytest.mark.parametrize("name,overrides", [("han", HAN), ("rnn", {**FLAT, "pooling": "attention"})])
def test_transformer_models_overfit_a_separable_task(name, overrides):
    config = tiny_config(name, **overrides)
    batch = separable_batch()
    _, losses, outputs = train(config, batch, learning_rate=3e-3)  # 1e-2 is too high for attention
    sums = heads.metric_sums(outputs, batch, config.head)
    assert float(losses[-1]) < 0.25 * float(losses[0]), (name, losses[0], losses[-1])
    assert float(sums["correct"]) == len(batch["label"]), (name, sums)


def test_bad_transformer_options_raise():
    x, mask, _ = ragged_inputs()
    with pytest.raises(ValueError, match="num_heads"):
        transformer.TransformerEncoder(width=6, num_heads=4).init(jax.random.key(0), x, mask, train=False)
    with pytest.raises(ValueError, match="positions"):
        transformer.TransformerEncoder(width=8, positions="rotary").init(jax.random.key(0), x, mask, train=False)


def test_sinusoidal_table():
    table = transformer.sinusoidal_table(5, 7)
    assert table.shape == (5, 7)
    np.testing.assert_allclose(table[0], [0, 1, 0, 1, 0, 1, 0], atol=1e-7)
    np.testing.assert_allclose(table[3, 0], np.sin(3.0), rtol=1e-6)
    assert jnp.all(jnp.abs(table) <= 1.0)
