"""fastText-style classifier (Joulin et al. 2017, "Bag of Tricks for Efficient Text Classification").

A review is the average of its words' embeddings and of its word bigrams' embeddings, the bigrams
hashed into `ngram_buckets` rows (the paper's hashing trick: no bigram vocabulary to build or
store). Optional: [user; product] embeddings concatenated to the average and per-user /
per-product rating biases (`user_product`), a small hidden layer before the head (`hidden_dim`).

Reads the flat layout, padded `tokens` [B, T] or packed `tokens` [R, L] with `token_review`. A
bigram joins two consecutive real tokens of one review: never across a packed segment boundary
or into padding, so packed and padded batches give the same numbers (tests check it). The cost
is one gather per token and one segment sum: an epoch of a 10k-review file takes seconds on a CPU.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxreviews.data.packing import is_packed
from jaxreviews.models import layers
from jaxreviews.models.text import TextModel

Array = jax.Array

# Odd 32-bit multipliers (the golden ratio's and MurmurHash3's): the two ids of a bigram mix
# before the modulo, so (a, b) and (b, a) land apart.
_FIRST = np.uint32(0x9E3779B1)
_SECOND = np.uint32(0x85EBCA77)


def bigram_buckets(ids: Array, num_buckets: int) -> Array:
    """[..., T] word ids -> [..., T] the bucket of the bigram (ids[t-1], ids[t]) ending at t
    (position 0 pairs with nothing: its value is meaningless, `bigram_mask` drops it)."""
    previous = jnp.roll(ids, 1, axis=-1).astype(jnp.uint32)
    mixed = previous * _FIRST + ids.astype(jnp.uint32) * _SECOND  # wraps modulo 2**32
    mixed = mixed ^ (mixed >> 15)
    return (mixed % np.uint32(num_buckets)).astype(jnp.int32)


def bigram_mask(mask: Array, segments: Array | None = None) -> Array:
    """[..., T] bool: a bigram ends at t when tokens t-1 and t are real and of the same review."""
    previous = jnp.roll(mask, 1, axis=-1)
    first = jnp.arange(mask.shape[-1]) == 0
    valid = mask & previous & ~first
    if segments is not None:
        valid = valid & (jnp.roll(segments, 1, axis=-1) == segments)
    return valid


def average_per_review(vectors: Array, weights: Array, segments: Array | None, num_reviews: int) -> Array:
    """Average over each review's real positions: vectors [..., T, E], weights [..., T] (bool)
    -> [B, E]; padded rows are reviews, packed positions go to `segments`' review slot. A review
    without a real token averages to 0. Summed in float32 (`layers`' pooling helpers)."""
    if segments is None:
        return layers.masked_mean(jnp.swapaxes(vectors, 0, 1), jnp.swapaxes(weights, 0, 1))
    total = layers.segment_pool(weights, vectors, segments, num_reviews)
    count = jax.ops.segment_sum(weights.reshape(-1).astype(jnp.float32), segments.reshape(-1), num_reviews)
    return (total.astype(jnp.float32) / jnp.maximum(count, 1.0)[:, None]).astype(vectors.dtype)


class FastText(TextModel):
    """Average of word and hashed-bigram embeddings -> [user; product] -> (hidden layer) -> head."""

    @nn.compact
    def __call__(self, batch: dict[str, Array], *, train: bool = False) -> dict[str, Array]:
        c = self.config
        ids, mask = batch["tokens"], batch["token_mask"]
        segments = batch["token_review"] if is_packed(batch) else None
        num_reviews = batch["user"].shape[0]
        # [R, L, E] (or [B, T, E]): word dropout and embedding dropout as every text model.
        words = self.embed(ids, train=train)
        vectors, weights = words, mask
        if c.ngram_buckets > 0:
            buckets = bigram_buckets(ids, c.ngram_buckets)
            bigrams = layers.WordEmbedding(c.ngram_buckets, c.embed_dim, dtype=self.dtype,
                                           name="ngram_embedding")(buckets)
            # one average over the words and the bigrams together, as fastText's
            vectors = jnp.concatenate([words, bigrams], axis=-2)
            weights = jnp.concatenate([mask, bigram_mask(mask, segments)], axis=-1)
            if segments is not None:
                segments = jnp.concatenate([segments, segments], axis=-1)
        document = average_per_review(vectors, weights, segments, num_reviews)  # [B, E]
        up = c.user_product
        user_product = (self.user_product(batch, train=train)
                        if up.concat_to_document or up.rating_biases else None)
        if c.hidden_dim > 0:
            if user_product is not None and up.concat_to_document:  # the hidden layer sees them too
                document = jnp.concatenate([document, user_product[0].astype(document.dtype)], axis=-1)
                user_product = (None, user_product[1])
            document = nn.Dense(c.hidden_dim, kernel_init=layers.initializer(c.kernel_init), dtype=self.dtype,
                                name="hidden")(document)
            document = layers.activation(c.hidden_activation)(document)
        return self.finish(document, batch, train=train, user_product=user_product)
