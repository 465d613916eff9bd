"""The records and the batch format every layer agrees on.

A `Review` is what a reader yields: one line of a file, already tokenised. Rating tables yield
reviews with no sentences. A batch is a dict of fixed-shape numpy arrays (below) that `jax.jit`,
`jax.vmap` and `jax.device_put(..., NamedSharding)` accept as a pytree.

Batch keys (B = batch, S = sentences, W = words per sentence, T = tokens):

  hierarchical layout
    words          int32   [B, S, W]   token ids, PAD = 0
    word_mask      bool    [B, S, W]   True where a real token stands
    sentence_mask  bool    [B, S]      True where a sentence has at least one real token
  flat layout
    tokens         int32   [B, T]      token ids of the whole review, sentences concatenated
    token_mask     bool    [B, T]
  always
    user           int32   [B]         user id (0 = unknown user, see `IdMap`)
    product        int32   [B]         product id (0 = unknown product)
    label          int32   [B]         rating class index 0..C-1
    rating         float32 [B]         rating as a number (e.g. 1.0..5.0)
    weight         float32 [B]         1 for a real example, 0 for padding rows of a last batch
"""
from __future__ import annotations

import dataclasses

PAD_ID = 0
OOV_ID = 1
UNKNOWN_ID = 0  # the id of a user / product not seen in the training split

HIERARCHICAL_KEYS = ("words", "word_mask", "sentence_mask")
FLAT_KEYS = ("tokens", "token_mask")
COMMON_KEYS = ("user", "product", "label", "rating", "weight")


@dataclasses.dataclass(frozen=True, slots=True)
class Review:
    """One review: who wrote it, about what, the rating, and its tokenised sentences."""

    user: str
    product: str
    rating: float
    sentences: tuple[tuple[str, ...], ...] = ()
