"""Text models: Kim CNN, RNN (LSTM/GRU), HAN and HAN with user/product attention (NSC+UPA, UPNN).

Every model is `model.apply(variables, batch, train=..., rngs={"dropout": key})` -> outputs dict
(see `heads`). Top-level parameter names are shared: `word_embedding`, `user_embedding`,
`product_embedding`, `user_bias`, `product_bias`, `document_norm`, `head`, `collaborative`, plus the
model's encoders (`encoder`, `word_encoder`, `word_attention`, `sentence_encoder`, ...).

The helpers below build those shared submodules on the calling model (they run inside its compact
`__call__`), so each name sits at the top of the parameter tree.
"""
from __future__ import annotations

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxreviews.data.packing import is_packed
from jaxreviews.data.types import OOV_ID, PAD_ID
from jaxreviews.models import cnn, heads, layers, recurrent, transformer
from jaxreviews.models.mf import Collaborative

Array = jax.Array


class TextModel(nn.Module):
    """Fields every text model has; subclasses implement `encode` -> (document [B, D], condition)."""

    config: ml_collections.FrozenConfigDict
    vocab_size: int
    num_users: int
    num_products: int
    num_classes: int
    rating_range: tuple[float, float]
    rating_mean: float | None = None  # training statistics: where the head's biases start
    label_prior: tuple[float, ...] | None = None

    @property
    def dtype(self):
        return layers.compute_dtype(self.config.dtype)

    def embed(self, ids: Array, *, train: bool) -> Array:
        c = self.config
        word_dropout = c.get("word_dropout", 0.0)
        if train and word_dropout > 0.0:  # whole words become OOV (padding stays padding)
            drop = jax.random.bernoulli(self.make_rng("dropout"), word_dropout, ids.shape) & (ids != PAD_ID)
            ids = jnp.where(drop, OOV_ID, ids)
        x = layers.WordEmbedding(self.vocab_size, c.embed_dim, freeze=c.freeze_embeddings, dtype=self.dtype,
                                 name="word_embedding")(ids)
        return layers.Dropout(c.embedding_dropout, c.get("dropout_rates_in_state", False),
                              name="embedding_dropout")(x, deterministic=not train)

    def user_product(self, batch: dict[str, Array], *, train: bool) -> tuple[Array, tuple[Array, Array]]:
        """([user embedding; product embedding] [B, 2U], (user ids, product ids)). While training a
        fraction `unknown_dropout` of the ids is replaced by the unknown id 0, the same ids then
        feed the rating biases, so the unknown rows of every table learn together."""
        c = self.config.user_product
        rate = unknown_dropout(c)
        users = layers.replace_with_unknown(self, batch["user"], rate, train)
        products = layers.replace_with_unknown(self, batch["product"], rate, train)
        u = layers.IdEmbedding(self.num_users, c.dim, dtype=self.dtype, name="user_embedding")(users, train=False)
        p = layers.IdEmbedding(self.num_products, c.dim, dtype=self.dtype,
                               name="product_embedding")(products, train=False)
        return jnp.concatenate([u, p], axis=-1), (users, products)

    def finish(self, document: Array, batch: dict[str, Array], *, train: bool,
               user_product: tuple[Array, tuple[Array, Array]] | None = None) -> dict[str, Array]:
        """document [B, D] -> [concat user/product] -> norm -> dropout -> head (+ biases, + MF)."""
        c = self.config
        kind = c.head.kind
        n = heads.num_outputs(kind, self.num_classes)
        offsets = None
        up = c.get("user_product")
        if up is not None and user_product is not None:
            vectors, (users, products) = user_product  # vectors None: the model concatenated them already
            if up.concat_to_document and vectors is not None:
                document = jnp.concatenate([document, vectors.astype(document.dtype)], axis=-1)
            if up.rating_biases:
                bias_dtype = jnp.promote_types(self.dtype, jnp.float32)
                offsets = (layers.IdEmbedding(self.num_users, n, stddev=0.0, dtype=bias_dtype,
                                              name="user_bias")(users, train=False)
                           + layers.IdEmbedding(self.num_products, n, stddev=0.0, dtype=bias_dtype,
                                                name="product_bias")(products, train=False))
        if c.collaborative.enabled:
            extra = Collaborative(c.collaborative, self.num_users, self.num_products, kind, self.num_classes,
                                  self.dtype, name="collaborative")(batch["user"], batch["product"], train=train)
            offsets = extra if offsets is None else offsets + extra
        # Batch statistics of the real reviews only: weight-0 padding slots would shift them.
        real = batch["weight"] > 0 if "weight" in batch else None
        document = layers.Norm(c.norm, self.dtype, name="document_norm")(document, train=train, mask=real)
        document = layers.Dropout(c.head_dropout, c.get("dropout_rates_in_state", False),
                                  name="head_dropout")(document, deterministic=not train)
        return heads.Head(kind, self.num_classes, tuple(self.rating_range), c.head.rating_activation,
                          c.kernel_init, self.dtype, rating_mean=self.rating_mean, label_prior=self.label_prior,
                          name="head")(document, offsets)


def unknown_dropout(config: ml_collections.FrozenConfigDict) -> float:
    """`user_product.unknown_dropout`, or its earlier name `unknown_rate` in a saved run's config."""
    if "unknown_rate" in config:
        return float(config.unknown_rate)
    return float(config.get("unknown_dropout", 0.0))


ENCODER_KINDS = (*recurrent.CELLS, "cnn", "transformer")


def transformer_width(config: ml_collections.FrozenConfigDict) -> int:
    """The transformer's width: `model_dim`, or (0) the output width a recurrent encoder of the same
    config would have, hidden_size x directions, so a kind swap keeps every later size."""
    if config.get("model_dim"):
        return int(config.model_dim)
    return config.hidden_size * (2 if config.bidirectional else 1)


def sequence_encoder(config: ml_collections.FrozenConfigDict, dtype, name: str):
    """An RNN (lstm / gru), CNN or transformer sequence encoder from an encoder sub-config."""
    if config.kind in recurrent.CELLS:
        return recurrent.RecurrentEncoder(config.kind, config.hidden_size, config.bidirectional, config.num_layers,
                                          config.dropout, config.unroll, config.kernel_init, dtype,
                                          config.input_projection, name=name)
    if config.kind == "cnn":
        return cnn.ConvSequenceEncoder(tuple(config.filter_widths), config.num_filters, config.activation,
                                       config.conv_kernel_init, dtype, name=name)
    if config.kind == "transformer":
        return transformer.TransformerEncoder(
            width=transformer_width(config), num_layers=config.num_layers, num_heads=config.num_heads,
            mlp_dim=config.mlp_dim, dropout=config.dropout, attention_dropout=config.attention_dropout,
            positions=config.positions, max_length=config.max_length, kernel_init=config.kernel_init,
            dtype=dtype, name=name)
    raise ValueError(f"unknown encoder kind {config.kind!r}; choose one of {ENCODER_KINDS}")


def run_encoder(encoder, x: Array, mask: Array, *, train: bool,
                segments: Array | None = None) -> tuple[Array, Array | None]:
    """(outputs [T, N, D], final states [N, D] or None). `segments` [T, N]: packed rows, each
    segment a sequence of its own (recurrences reset, convolution windows stop at its end,
    self-attention stays inside it)."""
    if isinstance(encoder, (recurrent.RecurrentEncoder, transformer.TransformerEncoder)):
        outputs = encoder(x, mask, train=train, segments=segments)
        return outputs if isinstance(encoder, recurrent.RecurrentEncoder) else (outputs, None)
    return encoder(x, mask, segments), None

class KimCNN(TextModel):
    """Kim (2014) over the flat layout: tokens [B, T] -> conv widths 3,4,5 x n -> max over time."""

    @nn.compact
    def __call__(self, batch: dict[str, Array], *, train: bool = False) -> dict[str, Array]:
        c = self.config
        # [B, T, E] (or packed [R, L, E], token_review naming each token's review): batch-major for
        # the fused conv + max.
        x = self.embed(batch["tokens"], train=train)
        segments = batch["token_review"] if is_packed(batch) else None
        document = cnn.KimEncoder(tuple(c.filter_widths), c.num_filters, c.activation, c.conv_kernel_init,
                                  self.dtype, name="encoder")(x, batch["token_mask"], segments=segments,
                                                              num_segments=batch["user"].shape[0])
        return self.finish(document, batch, train=train)


class RNNClassifier(TextModel):
    """LSTM/GRU over the flat layout: tokens [B, T] -> encoder -> pooling (last/mean/max/attention)."""

    @nn.compact
    def __call__(self, batch: dict[str, Array], *, train: bool = False) -> dict[str, Array]:
        c = self.config
        ids = einops.rearrange(batch["tokens"], "b t -> t b")
        mask = einops.rearrange(batch["token_mask"], "b t -> t b")
        # Packed: reviews lie in rows [R, L], token_review names each token's review slot.
        segments = einops.rearrange(batch["token_review"], "r t -> t r") if is_packed(batch) else None
        x = self.embed(ids, train=train)  # [T, B, E]
        outputs, final = run_encoder(sequence_encoder(c.encoder, self.dtype, "encoder"), x, mask, train=train,
                                     segments=segments)
        pooling = recurrent.SequencePooling(c.pooling, c.attention_dim, c.attention_activation, c.kernel_init,
                                            self.dtype, name="pooling")
        if segments is None:
            document = pooling(outputs, mask, final)
        else:
            bidirectional = c.encoder.kind in recurrent.CELLS and c.encoder.get("bidirectional", False)
            document = pooling(outputs, mask, segments=segments, num_segments=batch["user"].shape[0],
                               directions=2 if bidirectional else 1)
        return self.finish(document, batch, train=train)


class HierarchicalAttention(TextModel):
    """HAN (Yang et al. 2016), and with `user_product` NSC+UPA (Chen et al. 2016) / UPNN biases.

    words [B, S, W] -> word encoder over each sentence -> word attention -> sentence vectors
    -> sentence encoder -> sentence attention -> document vector -> head. With user/product
    attention the [user; product] embedding shifts the pre-activation of both attention scores.
    Attention weights are sown into `intermediates` as `word_attention/weights` [B, S, W] and
    `sentence_attention/weights` [B, S] (apply with mutable=["intermediates"]); for a packed batch
    (`packed`) in the packed shapes, [R, L] and [Rs, Ls].
    """

    @nn.compact
    def __call__(self, batch: dict[str, Array], *, train: bool = False) -> dict[str, Array]:
        if is_packed(batch):
            return self.packed(batch, train=train)
        c = self.config
        batch_size, sentences, _ = batch["words"].shape
        up = c.get("user_product")
        user_product = self.user_product(batch, train=train) if up is not None else None
        condition = None if user_product is None else user_product[0]
        word_condition = sentence_condition = None
        if condition is not None and up.word_attention:
            word_condition = einops.repeat(condition, "b c -> (b s) c", s=sentences)
        if condition is not None and up.sentence_attention:
            sentence_condition = condition

        # Word level: every sentence of every review is one sequence, time-major [W, B*S, ...].
        ids = einops.rearrange(batch["words"], "b s w -> w (b s)")
        word_mask = einops.rearrange(batch["word_mask"], "b s w -> w (b s)")
        x = self.embed(ids, train=train)
        words, _ = run_encoder(sequence_encoder(c.word_encoder, self.dtype, "word_encoder"), x, word_mask,
                               train=train)
        sentence_vectors, _ = layers.AdditiveAttention(
            c.attention_dim, c.attention_activation, c.kernel_init, self.dtype, name="word_attention")(
            words, word_mask, word_condition, sow_shape=batch["words"].shape)

        # Sentence level: [S, B, D].
        sentence_mask = einops.rearrange(batch["sentence_mask"], "b s -> s b")
        sentence_vectors = einops.rearrange(sentence_vectors, "(b s) d -> s b d", b=batch_size)
        sentence_vectors = layers.Norm(c.sentence_norm, self.dtype, name="sentence_norm")(
            sentence_vectors, train=train, mask=sentence_mask)
        sentence_vectors = nn.Dropout(c.dropout, deterministic=not train, name="sentence_dropout")(sentence_vectors)
        states, _ = run_encoder(sequence_encoder(c.sentence_encoder, self.dtype, "sentence_encoder"),
                                sentence_vectors, sentence_mask, train=train)
        document, _ = layers.AdditiveAttention(
            c.attention_dim, c.attention_activation, c.kernel_init, self.dtype, name="sentence_attention")(
            states, sentence_mask, sentence_condition)
        return self.finish(document, batch, train=train, user_product=user_product)

    def packed(self, batch: dict[str, Array], *, train: bool) -> dict[str, Array]:
        """The same model over a packed batch (jaxreviews.data.packing): sentences whole in word
        rows [R, L], reviews' sentences whole in sentence rows [Rs, Ls]. The encoders reset at each
        segment, attention pools per segment; same submodules and numbers as `__call__`."""
        c = self.config
        sentence_rows, sentence_length = batch["sentence_review"].shape
        num_reviews = batch["user"].shape[0]
        up = c.get("user_product")
        user_product = self.user_product(batch, train=train) if up is not None else None
        condition = None if user_product is None else user_product[0]  # [B, 2U]

        # Word level, time-major [L, R]; a segment is a sentence slot of the sentence rows.
        ids = einops.rearrange(batch["words"], "r l -> l r")
        word_mask = einops.rearrange(batch["word_mask"], "r l -> l r")
        word_sentence = einops.rearrange(batch["word_sentence"], "r l -> l r")
        x = self.embed(ids, train=train)
        words, _ = run_encoder(sequence_encoder(c.word_encoder, self.dtype, "word_encoder"), x, word_mask,
                               train=train, segments=word_sentence)
        word_condition = condition if condition is not None and up.word_attention else None
        review_of_word = batch["sentence_review"].reshape(-1)[word_sentence] if word_condition is not None else None
        sentence_vectors, _ = layers.AdditiveAttention(
            c.attention_dim, c.attention_activation, c.kernel_init, self.dtype, name="word_attention")(
            words, word_mask, word_condition, segments=word_sentence,
            num_segments=sentence_rows * sentence_length, condition_index=review_of_word)

        # Sentence level, time-major [Ls, Rs]; a segment is a review slot.
        sentence_vectors = einops.rearrange(sentence_vectors, "(r s) d -> s r d", r=sentence_rows)
        sentence_mask = einops.rearrange(batch["sentence_mask"], "r s -> s r")
        sentence_review = einops.rearrange(batch["sentence_review"], "r s -> s r")
        sentence_vectors = layers.Norm(c.sentence_norm, self.dtype, name="sentence_norm")(
            sentence_vectors, train=train, mask=sentence_mask)
        sentence_vectors = nn.Dropout(c.dropout, deterministic=not train, name="sentence_dropout")(sentence_vectors)
        states, _ = run_encoder(sequence_encoder(c.sentence_encoder, self.dtype, "sentence_encoder"),
                                sentence_vectors, sentence_mask, train=train, segments=sentence_review)
        sentence_condition = condition if condition is not None and up.sentence_attention else None
        document, _ = layers.AdditiveAttention(
            c.attention_dim, c.attention_activation, c.kernel_init, self.dtype, name="sentence_attention")(
            states, sentence_mask, sentence_condition, segments=sentence_review, num_segments=num_reviews,
            condition_index=sentence_review if sentence_condition is not None else None)
        return self.finish(document, batch, train=train, user_product=user_product)
