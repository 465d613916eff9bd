"""Matrix factorisation with biases (collaborative filtering), alone or inside a hybrid.

rating = squash(global + b_user + b_item + <p_user, q_item>) into the rating range. With a
classification head the same factors give C logits: per-class biases + W (p_user * q_item).
Id 0 is the learned unknown user / product (trained by replacing a fraction `unknown_rate` of ids
with 0 during training).
"""
from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from jaxreviews.models import heads, layers

Array = jax.Array


def collaborative_offsets(num_users: int, num_products: int, *, factors: int, kind: str, num_classes: int,
                          unknown_rate: float, stddev: float, users: Array, products: Array, train: bool,
                          replace: Callable[[Array, float], Array], dtype=jnp.float32) -> Array:
    """Pre-activations [B, num_outputs] of MF, built from submodules of the CALLING module:
    `user_embedding`, `product_embedding` (factors), `user_bias`, `product_bias` (one per output)
    and, with a classification head, `interaction` (factors -> C logits)."""
    users, products = replace(users, unknown_rate), replace(products, unknown_rate)
    n = heads.num_outputs(kind, num_classes)
    p = layers.IdEmbedding(num_users, factors, stddev=stddev, dtype=dtype, name="user_embedding")(users, train=False)
    q = layers.IdEmbedding(num_products, factors, stddev=stddev, dtype=dtype,
                           name="product_embedding")(products, train=False)
    accumulate = jnp.promote_types(dtype, jnp.float32)  # biases are added to upcast pre-activations
    b_user = layers.IdEmbedding(num_users, n, stddev=0.0, dtype=accumulate, name="user_bias")(users, train=False)
    b_product = layers.IdEmbedding(num_products, n, stddev=0.0, dtype=accumulate,
                                   name="product_bias")(products, train=False)
    interaction = layers.upcast(p * q)  # [B, factors]
    columns = []
    if heads.has_classification(kind):
        columns.append(nn.Dense(num_classes, use_bias=False, kernel_init=layers.initializer("glorot_uniform"),
                                dtype=dtype, name="interaction")(interaction))
    if heads.has_regression(kind):
        columns.append(jnp.sum(interaction, axis=-1, keepdims=True))
    return jnp.concatenate(columns, axis=-1) + b_user + b_product


class Collaborative(nn.Module):
    """The MF part of a hybrid: additive pre-activations [B, num_outputs] for a text model's head."""

    config: ml_collections.FrozenConfigDict  # the `collaborative` sub-config
    num_users: int
    num_products: int
    kind: str
    num_classes: int
    dtype: layers.Dtype = jnp.float32

    @nn.compact
    def __call__(self, users: Array, products: Array, *, train: bool) -> Array:
        c = self.config
        return collaborative_offsets(self.num_users, self.num_products, factors=c.factors, kind=self.kind,
                                     num_classes=self.num_classes, unknown_rate=c.unknown_rate,
                                     stddev=c.init_stddev, users=users, products=products, train=train,
                                     replace=lambda ids, rate: layers.replace_with_unknown(self, ids, rate, train),
                                     dtype=self.dtype)


class MatrixFactorization(nn.Module):
    """Reads only batch["user"] and batch["product"]."""

    config: ml_collections.FrozenConfigDict
    num_users: int
    num_products: int
    num_classes: int
    rating_range: tuple[float, float]

    @nn.compact
    def __call__(self, batch: dict[str, Array], *, train: bool = False) -> dict[str, Array]:
        c = self.config
        kind = c.head.kind
        offsets = collaborative_offsets(
            self.num_users, self.num_products, factors=c.factors, kind=kind, num_classes=self.num_classes,
            unknown_rate=c.unknown_rate, stddev=c.init_stddev, users=batch["user"], products=batch["product"],
            train=train, replace=lambda ids, rate: layers.replace_with_unknown(self, ids, rate, train),
            dtype=layers.compute_dtype(c.dtype))
        n = heads.num_outputs(kind, self.num_classes)
        start = heads.rating_offset(self.rating_range, c.head.rating_activation)
        global_bias = self.param("global_bias", lambda key, shape: jnp.full(shape, start, jnp.float32).at[
            :n - heads.has_regression(kind)].set(0.0), (n,))
        return heads.split_outputs(offsets + global_bias, kind, self.num_classes, self.rating_range,
                                   c.head.rating_activation)
