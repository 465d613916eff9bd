"""Padding never leaks into a model's output; gradients are right (finite differences, custom VJP)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxreviews.models import cnn, heads, layers, recurrent
from tests.test_models import build, init, make_batch, tiny_config

D, H = 3, 4


def ragged_inputs(seed=0, steps=6, batch=3):
    rng = np.random.default_rng(seed)
    lengths = np.array([steps, 3, 1])[:batch]
    x = rng.normal(size=(steps, batch, D)).astype(np.float32)
    mask = np.arange(steps)[:, None] < lengths[None, :]
    return x, mask, lengths


@pytest.mark.parametrize("cell", recurrent.CELLS)
@pytest.mark.parametrize("bidirectional", [True, False])
def test_padded_sequence_gives_the_unpadded_outputs(cell, bidirectional):
    """Each sequence alone, unpadded, against the batch padded with garbage: same outputs at every
    real step and same final states; this also pins the backward direction to the real end."""
    x, mask, lengths = ragged_inputs()
    x_garbage = np.where(mask[..., None], x, 100.0).astype(np.float32)  # padding with large values
    encoder = recurrent.RecurrentEncoder(cell, H, bidirectional, num_layers=2)
    variables = encoder.init(jax.random.key(0), x, mask, train=False)
    run = jax.jit(lambda x, m: encoder.apply(variables, x, m, train=False))
    outputs, final = run(x_garbage, mask)
    for b, length in enumerate(lengths):
        alone_outputs, alone_final = run(x[:length, b:b + 1], np.ones((length, 1), bool))
        np.testing.assert_allclose(outputs[:length, b], alone_outputs[:, 0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(final[b], alone_final[0], rtol=1e-5, atol=1e-6)


def test_backward_direction_reads_the_reversed_sequence():
    """The backward half of a BiLSTM equals a forward LSTM (same weights) run on each sequence
    reversed within its real length."""
    x, mask, lengths = ragged_inputs(1)
    layer = recurrent.RecurrentLayer("lstm", H, bidirectional=True)
    variables = layer.init(jax.random.key(0), x, mask)
    outputs, _ = layer.apply(variables, x, mask)
    p = variables["params"]
    forward = recurrent.RecurrentLayer("lstm", H, bidirectional=False)
    backward_params = {"params": {"input_kernel": p["input_kernel"][1:], "bias": p["bias"][1:],
                                  "recurrent": {"kernel": p["recurrent"]["kernel"][1:]}}}
    for b, length in enumerate(lengths):
        reversed_x = x[:length, b:b + 1][::-1]
        out, _ = forward.apply(backward_params, reversed_x, np.ones((length, 1), bool))
        np.testing.assert_allclose(outputs[:length, b, H:], out[::-1, 0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name,overrides", [
    ("rnn", {}),
    ("rnn", {"encoder__kind": "gru", "pooling": "last", "encoder__bidirectional": False}),
    ("rnn", {"pooling": "attention"}),
    ("rnn", {"pooling": "max", "encoder__num_layers": 2}),
    ("cnn", {}),
    ("han_upa", {}),
    ("han", {"word_encoder__kind": "cnn", "sentence_encoder__kind": "gru"}),
])
def test_models_ignore_padding(name, overrides):
    """The same reviews in a batch with more padding (longer T, more sentences and words, garbage
    ids under the masks) give the same outputs."""
    config = tiny_config(name, **overrides)
    model = build(config)
    batch = make_batch(4)
    wide = dict(batch)
    pad = ((0, 0), (0, 2), (0, 3))
    wide["word_mask"] = np.pad(batch["word_mask"], pad)
    wide["words"] = np.where(wide["word_mask"], np.pad(batch["words"], pad), 7).astype(np.int32)
    wide["sentence_mask"] = wide["word_mask"].any(-1)
    wide["token_mask"] = np.pad(batch["token_mask"], ((0, 0), (0, 5)))
    wide["tokens"] = np.where(wide["token_mask"], np.pad(batch["tokens"], ((0, 0), (0, 5))), 9).astype(np.int32)
    variables = init(model, batch)
    run = jax.jit(lambda b: model.apply(variables, b, train=False)["logits"])
    np.testing.assert_allclose(run(batch), run(wide), rtol=1e-5, atol=1e-5)


def test_fused_conv_max_matches_autodiff_reference():
    rng = np.random.default_rng(0)
    n, steps, e, f = 3, 9, 4, 5
    x = jnp.asarray(rng.normal(size=(n, steps, e)), jnp.float32)
    mask = jnp.arange(steps)[None, :] < jnp.array([9, 4, 1])[:, None]
    kernels = tuple(jnp.asarray(rng.normal(size=(w, e, f)), jnp.float32) for w in (2, 3, 5))

    def reference(x, kernels):
        xm = jnp.where(mask[..., None], x, 0)
        return layers.masked_max(cnn.conv_over_time(jnp.swapaxes(xm, 0, 1), kernels), mask.T)

    def fused(x, kernels):
        return cnn.conv_max_over_time(jnp.where(mask[..., None], x, 0), mask, kernels)

    np.testing.assert_allclose(fused(x, kernels), reference(x, kernels), rtol=1e-5, atol=1e-5)
    loss = lambda fn: lambda x, k: jnp.sum(jnp.sin(fn(x, k)))  # noqa: E731
    got = jax.grad(loss(fused), (0, 1))(x, kernels)
    want = jax.grad(loss(reference), (0, 1))(x, kernels)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), got, want)


@pytest.mark.parametrize("name,overrides", [
    ("han_upa", {"head__kind": "both", "user_product__rating_biases": True}),
    ("rnn", {"encoder__kind": "gru", "pooling": "attention", "encoder__num_layers": 2}),
    ("cnn", {"head__kind": "regression", "collaborative__enabled": True}),
])
def test_finite_difference_gradients(name, overrides):
    """Reverse-mode gradients of the loss against central finite differences, in float64."""
    with jax.enable_x64(True):
        config = tiny_config(name, dtype="float64", norm="none", head_dropout=0.0, embedding_dropout=0.0,
                             dropout=0.0, **overrides)
        model = build(config)
        batch = make_batch(2)
        params = init(model, batch)["params"]
        params = jax.tree.map(lambda p: p.astype(jnp.float64), params)

        def loss(p):
            return heads.loss(model.apply({"params": p}, batch, train=False), batch, config.head)

        check_grads(jax.jit(loss), (params,), order=1, modes=("rev",), eps=1e-5, atol=1e-5, rtol=1e-4)


def test_masked_softmax_and_pooling_helpers():
    scores = jnp.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])  # [T=3, N=2]
    mask = jnp.array([[True, False], [True, False], [False, False]])
    weights = layers.masked_softmax(scores, mask, axis=0)
    np.testing.assert_allclose(weights[:, 0], jax.nn.softmax(jnp.array([1.0, 3.0])).tolist() + [0.0], rtol=1e-6)
    np.testing.assert_array_equal(weights[:, 1], 0.0)  # an empty row: zeros, not NaN
    x = jnp.arange(12.0).reshape(3, 2, 2)
    np.testing.assert_allclose(layers.masked_mean(x, mask)[0], (x[0, 0] + x[1, 0]) / 2)
    np.testing.assert_allclose(layers.masked_max(x, mask)[0], x[1, 0])
    np.testing.assert_allclose(layers.last_step(x, mask)[0], x[1, 0])
    np.testing.assert_array_equal(layers.masked_mean(x, mask)[1], 0.0)


@pytest.mark.parametrize("cell,mode,bidirectional", [
    ("lstm", "hoisted", True), ("lstm", "chunked", True), ("lstm", "chunked", False), ("gru", "hoisted", True)])
def test_input_projection_modes_agree_with_gradients(cell, mode, bidirectional, monkeypatch):
    """The fused nn.scan path against the hoisted nn.scan path and the custom-VJP chunked LSTM
    (chunks of 4 steps over 10, so the last chunk is padded): same outputs, same gradients, with
    ragged masks."""
    monkeypatch.setattr(recurrent, "CHUNK_ROWS", 4 * 3)  # 3 chunks: 4 + 4 + 2 steps
    x, mask, _ = ragged_inputs(2, steps=10)
    fused = recurrent.RecurrentLayer(cell, H, bidirectional, input_projection="fused")
    hoisted = recurrent.RecurrentLayer(cell, H, bidirectional, input_projection=mode)
    variables = fused.init(jax.random.key(0), x, mask)
    cotangent = np.random.default_rng(0).normal(size=(x.shape[0], x.shape[1], H * (1 + bidirectional)))

    def loss(layer):
        def f(v, x):
            outputs, final = layer.apply(v, x, mask)
            return jnp.sum(jnp.where(mask[..., None], outputs, 0) * cotangent) + jnp.sum(jnp.sin(final))
        return jax.jit(jax.value_and_grad(f, argnums=(0, 1)))

    (value_a, grads_a), (value_b, grads_b) = loss(fused)(variables, x), loss(hoisted)(variables, x)
    np.testing.assert_allclose(value_a, value_b, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), grads_a, grads_b)
    if mode == "chunked":  # the scans inside the chunks may be unrolled
        unrolled = recurrent.RecurrentLayer(cell, H, bidirectional, unroll=3, input_projection=mode)
        value_c, grads_c = loss(unrolled)(variables, x)
        np.testing.assert_allclose(value_a, value_c, rtol=1e-5)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), grads_a, grads_c)
