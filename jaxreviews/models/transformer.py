"""Transformer encoder (pre-norm blocks, masked self-attention), a sequence encoder beside the
LSTM/GRU and CNN ones: `encoder.kind=transformer` for the word and sentence levels of han /
han_upa and for the flat `rnn` / `bilstm` models.

Layout is time-major like every encoder here: x [T, N, D], mask [T, N] -> outputs [T, N, width].

    x -> Dense(width) + positions -> num_layers x [x + Dropout(Attention(LayerNorm(x)));
                                                   x + Dropout(MLP(LayerNorm(x)))] -> LayerNorm

Padding-exact: a position attends only to real positions (keys where mask is True), and its
position index counts the real positions before it, so a padded input gives exactly the outputs of
the unpadded one at the real positions (masks need not even be prefixes). The outputs at padded
positions are finite but meaningless; every pooling reads the mask.

Packed rows (`segments` [T, N], jaxreviews.data.packing): a position attends only to the real
positions of its own segment (block-diagonal attention) and positions restart at 0 at every
segment, so each segment gives exactly the outputs it gives alone, and no gradient crosses a
segment boundary. A row of length L costs L^2 scores whatever its segments: rows are short (a
sentence row of HAN's word level is max_words long), so the wasted scores are few.

Positions: "learned" (a [max_length, width] table; positions past max_length - 1 share its last
row) or "sinusoidal" (Vaswani et al. 2017, no parameters, any length).

Mixed precision: the matmuls run in `dtype`; scores, softmax and LayerNorm statistics in float32.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxreviews.models import layers

Array = jax.Array
POSITIONS = ("learned", "sinusoidal")
_MASKED = -1e30  # a masked score: exp underflows to exactly 0 next to any real score


def positions_of(mask: Array, segments: Array | None = None) -> Array:
    """int32 [T, N] position of each step: the number of real steps before it in its sequence
    (its segment, for packed rows). Padded steps get the position of the next real one (unused)."""
    real = mask.astype(jnp.int32)
    before = jnp.cumsum(real, axis=0) - real  # real steps before t in the row
    if segments is None:
        return before
    steps = jnp.arange(mask.shape[0], dtype=jnp.int32)[:, None]
    # The row index where each step's segment starts: the latest t' <= t with a new segment id.
    new = jnp.concatenate([jnp.ones_like(segments[:1], bool), segments[1:] != segments[:-1]], axis=0)
    start = jax.lax.cummax(jnp.where(new, steps, 0), axis=0)
    return before - jnp.take_along_axis(before, start, axis=0)


def sinusoidal_table(length: int, width: int) -> Array:
    """[length, width] sin/cos position codes (Vaswani et al. 2017); width may be odd."""
    position = jnp.arange(length, dtype=jnp.float32)[:, None]
    frequency = jnp.exp(-math.log(10000.0) * jnp.arange(0, width, 2, dtype=jnp.float32) / width)
    angles = position * frequency  # [length, ceil(width / 2)]
    table = jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1).reshape(length, -1)
    return table[:, :width]


def attention_mask(mask: Array, segments: Array | None = None) -> Array:
    """bool [N, 1, Tq, Tk]: query q may attend key k (k real, and in q's segment when packed)."""
    allowed = jnp.broadcast_to(mask.T[:, None, :], (mask.shape[1], mask.shape[0], mask.shape[0]))
    if segments is not None:
        rows = segments.T  # [N, T]
        allowed = allowed & (rows[:, :, None] == rows[:, None, :])
    return allowed[:, None]


class SelfAttention(nn.Module):
    """Multi-head dot-product self-attention over the time axis: x [T, N, width] -> [T, N, width]."""

    num_heads: int
    kernel_init: str = "glorot_uniform"
    dropout: float = 0.0
    dtype: layers.Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, allowed: Array, *, train: bool) -> Array:
        width = x.shape[-1]
        if width % self.num_heads:
            raise ValueError(f"transformer width {width} is not a multiple of num_heads={self.num_heads}")
        head_dim = width // self.num_heads
        init = layers.initializer(self.kernel_init)
        qkv = nn.DenseGeneral((3, self.num_heads, head_dim), kernel_init=init, dtype=self.dtype,
                              name="qkv")(x)  # [T, N, 3, H, dh]
        query, key, value = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        scores = jnp.einsum("qnhd,knhd->nhqk", query, key) / math.sqrt(head_dim)
        scores = jnp.where(allowed, layers.upcast(scores), _MASKED)  # [N, H, Tq, Tk] float32
        weights = jax.nn.softmax(scores, axis=-1)
        weights = nn.Dropout(self.dropout, deterministic=not train)(weights)
        mixed = jnp.einsum("nhqk,knhd->qnhd", weights.astype(self.dtype), value)
        return nn.DenseGeneral(width, axis=(-2, -1), kernel_init=init, dtype=self.dtype, name="output")(mixed)


class TransformerBlock(nn.Module):
    """Pre-norm block: x + Dropout(Attention(LN(x))), then x + Dropout(MLP(LN(x)))."""

    num_heads: int
    mlp_dim: int
    dropout: float = 0.0
    attention_dropout: float = 0.0
    activation: str = "gelu"
    kernel_init: str = "glorot_uniform"
    dtype: layers.Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, allowed: Array, *, train: bool) -> Array:
        width = x.shape[-1]
        init = layers.initializer(self.kernel_init)
        h = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name="attention_norm")(x)
        h = SelfAttention(self.num_heads, self.kernel_init, self.attention_dropout, self.dtype,
                          name="attention")(h, allowed, train=train)
        x = x + nn.Dropout(self.dropout, deterministic=not train)(h)
        h = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name="mlp_norm")(x)
        h = nn.Dense(self.mlp_dim, kernel_init=init, dtype=self.dtype, name="mlp_in")(h)
        h = nn.Dense(width, kernel_init=init, dtype=self.dtype, name="mlp_out")(layers.activation(self.activation)(h))
        return x + nn.Dropout(self.dropout, deterministic=not train)(h)


class TransformerEncoder(nn.Module):
    """x [T, N, D], mask [T, N] (+ packed `segments` [T, N]) -> outputs [T, N, width]; see the
    module docstring. `mlp_dim` 0 = 4 x width."""

    width: int = 100
    num_layers: int = 1
    num_heads: int = 4
    mlp_dim: int = 0
    dropout: float = 0.0
    attention_dropout: float = 0.0
    positions: str = "learned"
    max_length: int = 512
    activation: str = "gelu"
    kernel_init: str = "glorot_uniform"
    dtype: layers.Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, mask: Array, *, train: bool, segments: Array | None = None) -> Array:
        if self.positions not in POSITIONS:
            raise ValueError(f"unknown transformer positions {self.positions!r}; choose one of {POSITIONS}")
        if self.num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {self.num_layers}")
        position = positions_of(mask, segments)  # [T, N]
        x = nn.Dense(self.width, kernel_init=layers.initializer(self.kernel_init), dtype=self.dtype,
                     name="input_projection")(x.astype(self.dtype))
        if self.positions == "learned":
            table = self.param("position_embedding", nn.initializers.normal(stddev=0.02),
                               (self.max_length, self.width), jnp.float32)
            codes = jnp.take(table, position, axis=0, mode="clip")
        else:  # a position is < T: a table of T rows needs no clipping
            codes = jnp.take(sinusoidal_table(x.shape[0], self.width), position, axis=0)
        x = x + codes.astype(self.dtype)
        allowed = attention_mask(mask, segments)
        for index in range(self.num_layers):
            x = TransformerBlock(self.num_heads, self.mlp_dim or 4 * self.width, self.dropout, self.attention_dropout,
                                 self.activation, self.kernel_init, self.dtype, name=f"layer_{index}")(
                x, allowed, train=train)
        return nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name="output_norm")(x)

    @property
    def features(self) -> int:
        return self.width
