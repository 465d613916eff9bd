"""bfloat16 compute (config `dtype="bfloat16"`) keeps its sums, counts and recurrent states in float32,
and a bfloat16 run trains like the float32 one.

bfloat16 has an 8-bit significand: every result is rounded by up to 2^-8 of its size, and integers
past 256 are not all representable (a running count of ones stops at 256). Rounding once is fine;
rounding at every step of something that accumulates over time or positions is not. So token
counts, sums over positions, the GRU state and the LSTM's backward state gradients are carried in
float32 and rounded once at the end, while the matmuls still run in bfloat16. Each test here failed
before that was so; its docstring gives the numbers measured before and after.

Inputs are rounded to bfloat16 first, so the float32 reference sees exactly the same numbers.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxreviews.models import cnn, layers, recurrent
from tests.test_models import CLASSES, VOCAB, tiny_config
from tests.test_models_training import train

BF16 = jnp.bfloat16
SLOW = pytest.mark.slow


def bf16_values(a) -> np.ndarray:
    """float32 array holding `a` rounded to bfloat16: the same numbers in either dtype."""
    return np.asarray(jnp.asarray(a, BF16), np.float32)


def bf16_ulp(a) -> np.ndarray:
    """One unit in the last place of bfloat16 at |a|: 2^(exponent - 7) (float32's spacing x 2^16)."""
    return np.spacing(np.abs(np.asarray(a, np.float32))).astype(np.float64) * 2.0 ** 16


def relative_error(value, reference) -> float:
    value, reference = np.asarray(value, np.float64), np.asarray(reference, np.float64)
    return float(np.linalg.norm(value - reference) / np.linalg.norm(reference))


# ---- counts and sums -------------------------------------------------------------------------

def test_masked_mean_counts_tokens_exactly():
    """A mean over 259..1100 real tokens is the exact mean rounded once: within half a bfloat16 ulp
    (0.51 allows for float32 summation order). With the count in bfloat16 (259 -> 260, 1027 ->
    1024) and the sum rounded before the division it was off by up to 2.25 ulps."""
    rng = np.random.default_rng(0)
    counts = np.array([259, 300, 301, 515, 1027, 1100])
    steps = counts.max()
    mask = np.arange(steps)[:, None] < counts[None, :]  # [T, N]
    x = bf16_values(rng.normal(1.0, 0.5, (steps, len(counts), 64)))
    exact = np.einsum("tn,tnd->nd", mask, x.astype(np.float64)) / counts[:, None]
    pooled = jax.jit(layers.masked_mean)(jnp.asarray(x, BF16), mask)
    assert pooled.dtype == BF16
    error_in_ulps = np.abs(np.asarray(pooled, np.float64) - exact) / bf16_ulp(exact)
    assert error_in_ulps.max() <= 0.51, error_in_ulps.max(axis=1)


def test_segment_sums_of_long_packed_segments_accumulate_in_float32():
    """Packed rows: mean pooling and attention pooling (`segment_pool`) over segments of 60..330
    tokens are the exact values rounded once (within half a bfloat16 ulp). A bfloat16 scatter-add
    rounded after every token: a 330-token segment's count stopped at 256 and its mean was 31%
    (83 ulps) off; the attention sums were 1.3-7.5% (2-11 ulps) off."""
    rng = np.random.default_rng(1)
    steps, features = 400, 8
    segments = np.stack([np.where(np.arange(steps) < 330, 0, 1), np.where(np.arange(steps) < 60, 2, 3)], axis=1)
    mask = np.ones((steps, 2), bool)
    mask[390:, 1] = False  # segments of 330, 70, 60 and 330 real tokens (+ 10 padding)
    x = bf16_values(rng.normal(1.0, 0.5, (steps, 2, features)))
    weights = rng.random((steps, 2)).astype(np.float32) * mask  # float32, as softmax weights are

    def exact_sums(weights):  # [4, D] in float64
        weighted = weights[..., None] * x.astype(np.float64)
        return np.stack([weighted[segments == segment].sum(0) for segment in range(4)])

    means = recurrent.SequencePooling("mean").apply({}, jnp.asarray(x, BF16), mask, segments=segments,
                                                    num_segments=4)
    sums = jax.jit(layers.segment_pool, static_argnums=3)(weights, jnp.asarray(x, BF16), segments, 4)
    assert means.dtype == sums.dtype == BF16
    for pooled, exact in ((means, exact_sums(mask) / np.array([330, 70, 60, 330])[:, None]),
                          (sums, exact_sums(weights))):
        error_in_ulps = np.abs(np.asarray(pooled, np.float64) - exact) / bf16_ulp(exact)
        assert error_in_ulps.max() <= 0.51, error_in_ulps.max(axis=1)


@pytest.mark.parametrize("packed", [False, True])
def test_conv_max_input_gradient_sums_in_float32(packed):
    """The gradient of max-over-time pooling reaches each token through every filter whose best
    window covers it (here up to 3 x 128 filters): those contributions are summed in float32 and
    rounded once, 0.17% from float32's dx. Summed by a bfloat16 scatter-add it was 1.2% off.
    Inputs and kernels are small integers, exact in bfloat16, so both dtypes pick the same windows."""
    rng = np.random.default_rng(2)
    reviews, steps, features, filters = 8, 10, 16, 128
    x = rng.integers(-1, 2, (reviews, steps, features)).astype(np.float32)
    mask = np.ones((reviews, steps), bool)
    kernels = tuple(rng.integers(-1, 2, (width, features, filters)).astype(np.float32) for width in (3, 4, 5))
    cotangent = bf16_values(rng.normal(size=(reviews, 3 * filters)))

    def input_gradient(dtype):
        cast = (jnp.asarray(x, dtype), tuple(jnp.asarray(k, dtype) for k in kernels))
        if packed:  # two reviews a row, one segment each
            rows = lambda a: a.reshape(reviews // 2, 2 * steps, *a.shape[2:])  # noqa: E731
            segments = rows(np.repeat(np.arange(reviews)[:, None], steps, axis=1))
            pool = lambda x, k: cnn.segment_conv_max(rows(x), rows(mask), segments, reviews, k)  # noqa: E731
        else:
            pool = lambda x, k: cnn.conv_max_over_time(x, mask, k)  # noqa: E731
        pooled, vjp = jax.vjp(pool, *cast)
        return vjp(jnp.asarray(cotangent, pooled.dtype))[0]

    gradient = jax.jit(input_gradient, static_argnums=0)
    dx16, dx32 = gradient(BF16), gradient(jnp.float32)
    assert dx16.dtype == BF16
    assert relative_error(dx16, dx32) < 0.004


# ---- recurrent states ------------------------------------------------------------------------

@pytest.mark.parametrize("projection", ["fused", "hoisted"])
def test_gru_state_does_not_stall_in_bfloat16(projection):
    """A GRU with a slow update gate (z bias 3, z ~ 0.95) over 400 steps of constant input: bfloat16
    outputs stay within 0.02 of float32's (measured 0.009-0.012, a few bfloat16 ulps of |h| < 1). With
    the state carried in bfloat16, an update (1 - z)(n - h) below half an ulp of h was rounded
    away, so h stopped short of its fixed point: 0.27 off."""
    rng = np.random.default_rng(3)
    steps, batch, features, hidden = 400, 8, 8, 16
    x = bf16_values(np.repeat(2.0 * rng.normal(size=(1, batch, features)), steps, axis=0))
    mask = np.ones((steps, batch), bool)
    outputs = {}
    for dtype in (jnp.float32, BF16):
        layer = recurrent.RecurrentLayer("gru", hidden, bidirectional=True, dtype=dtype, input_projection=projection)
        params = layer.init(jax.random.key(0), x, mask)["params"]
        params["bias"] = params["bias"].at[:, hidden:2 * hidden].set(3.0)  # gates [r, z, n]
        outputs[dtype] = jax.jit(lambda p, layer=layer: layer.apply({"params": p}, x, mask))(params)
    (out32, final32), (out16, final16) = outputs[jnp.float32], outputs[BF16]
    assert out16.dtype == final16.dtype == BF16
    assert np.abs(np.asarray(out16, np.float32) - out32).max() < 0.02
    assert np.abs(np.asarray(final16, np.float32) - final32).max() < 0.02


@pytest.mark.parametrize("projection", ["chunked", "fused"])
def test_lstm_gradients_in_bfloat16_follow_float32(projection):
    """A BiLSTM over 512 steps (ragged), an output gradient at every step: every bfloat16 gradient
    (input kernel, bias, recurrent kernel, inputs) is within 0.45% of float32's (measured <= 0.34%).
    With the backward state gradient dh carried in bfloat16 (rounded at every step, dh + dy
    included) they were 0.53-0.75% off, for the chunked VJP and for autodiff of the scan alike."""
    rng = np.random.default_rng(0)
    steps, batch, features, hidden = 512, 8, 8, 16
    x = bf16_values(rng.normal(size=(steps, batch, features)))
    mask = np.arange(steps)[:, None] < rng.integers(steps // 2, steps + 1, batch)[None, :]
    output_gradient = bf16_values(rng.normal(size=(steps, batch, 2 * hidden)))
    gradients = {}
    for dtype in (jnp.float32, BF16):
        layer = recurrent.RecurrentLayer("lstm", hidden, bidirectional=True, dtype=dtype, input_projection=projection)
        params = layer.init(jax.random.key(0), x, mask)["params"]

        def loss(params, x, layer=layer, dtype=dtype):
            outputs, final = layer.apply({"params": params}, x.astype(dtype), mask)
            return jnp.sum(layers.upcast(outputs) * output_gradient) + jnp.sum(layers.upcast(final))

        gradients[dtype] = jax.tree.leaves(jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x))
    errors = [relative_error(g16, g32) for g16, g32 in zip(gradients[BF16], gradients[jnp.float32])]
    assert max(errors) < 0.0045, errors


# ---- training --------------------------------------------------------------------------------

def packed_evidence_batch(seed: int = 0, reviews: int = 16, shortest: int = 260, longest: int = 420,
                          density: float = 0.1) -> dict[str, np.ndarray]:
    """Long reviews (260..420 tokens), packed two to a row ([8, 840]): a review's class is told by
    how often its class's word (id 2 + class) occurs, a tenth of its tokens."""
    rng = np.random.default_rng(seed)
    label = np.arange(reviews) % CLASSES
    lengths = rng.integers(shortest, longest + 1, reviews)
    tokens = np.zeros((reviews // 2, 2 * longest), np.int32)
    owner = np.zeros_like(tokens)
    for review, length in enumerate(lengths):
        row, start = review // 2, lengths[review - 1] if review % 2 else 0
        signal = rng.random(length) < density
        other_words = rng.integers(2 + CLASSES, VOCAB, length)
        tokens[row, start:start + length] = np.where(signal, 2 + label[review], other_words)
        owner[row, start:start + length] = review
    return {"tokens": tokens, "token_mask": tokens != 0, "token_review": owner,
            "user": np.zeros(reviews, np.int32), "product": np.zeros(reviews, np.int32),
            "label": label.astype(np.int32), "rating": (label + 1.0).astype(np.float32),
            "weight": np.ones(reviews, np.float32)}


@pytest.mark.parametrize("name,overrides", [
    ("bilstm", {}),
    pytest.param("rnn", {"encoder__kind": "gru"}, marks=SLOW),  # ~20 s: bfloat16 GRU steps are slow on CPU
])
def test_bfloat16_training_follows_float32(name, overrides):
    """150 Adam steps on the same packed long reviews from the same initial parameters, float32 vs
    bfloat16 (mean pooling; no document norm, which would divide out a per-review scale error of the
    mean; no dropout, so only precision separates the runs). Tolerances:
      * steps 0-19, while both runs still follow one trajectory: each bfloat16 loss within 1% of
        float32's (measured: at most 0.23% bilstm, 0.06% gru). With the bfloat16 counts (a packed
        review's count stopped at 256) and GRU state, the curve had left float32's by 3-7% at
        step 10 and by 18% (bilstm) / 13% (gru) within those 20 steps;
      * the last 50 steps: mean absolute loss difference < 0.01 (measured 0.0013 bilstm, 0.0010
        gru; after the steep drop the two runs part chaotically, so only the level is compared).
    """
    config = {dtype: tiny_config(name, dtype=dtype, pooling="mean", norm="none", head_dropout=0.0, **overrides)
              for dtype in ("float32", "bfloat16")}
    batch = packed_evidence_batch()
    curves = {dtype: np.asarray(train(config[dtype], batch, steps=150)[1], np.float64) for dtype in config}
    float32, bfloat16 = curves["float32"], curves["bfloat16"]
    assert np.all(np.isfinite(bfloat16)) and float32[-1] < 0.05 * float32[0]
    early = np.abs(bfloat16[:20] / float32[:20] - 1)
    assert early.max() < 0.01, early
    assert np.abs(bfloat16[-50:] - float32[-50:]).mean() < 0.01
