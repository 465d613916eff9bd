"""Matrix factorisation with biases (collaborative filtering), alone or inside a hybrid; SVD++.

    rating = squash(global + b_user + b_product + <p_user + implicit(user), q_product>)

into the rating range (`heads.squash_rating`). With a classification head the same factors give
C logits: per-class biases + W (user vector * q_product). Id 0 is the learned unknown user /
product (trained by replacing a fraction `unknown_rate` of ids with 0 during training).

SVD++ (Koren 2008, `implicit_feedback=True`): implicit(u) = |N(u)|^-1/2 * sum_{j in N(u)} y_j, where
N(u) are the products u rated in the TRAINING split (`TrainingPairs`, given at build time) and y_j
a second product table (`implicit_embedding`). Plain MF has implicit(u) = 0.

Invariants (tests/test_cf.py checks them):
- The global bias starts at `heads.starting_biases` of the training statistics: with zero factors
  (`init_stddev=0`) an untrained model predicts the training mean rating and its softmax is the
  training label prior.
- implicit(u) is one `segment_sum` over the [nnz] training pairs per step (O(nnz * factors),
  whatever the batch), no Python loop over users; it equals the loop over each user's products.
- implicit(0) = 0 and implicit(u) = 0 for a user without training ratings, so such a user (and any
  id replaced by 0 in training) is predicted exactly as plain MF predicts it.
- `penalty` [B] (training outputs only, added to the loss by `heads.loss`) is, per example (u, i),
      (l2_factors + factor_shrinkage / n_u) |p_u|^2 + (l2_factors + factor_shrinkage / n_i) |q_i|^2
    + (l2_biases + bias_shrinkage / n_u) b_u^2 + (l2_biases + bias_shrinkage / n_i) b_i^2
    [SVD++: + l2_implicit * sum_{j in N(u)} |y_j|^2 + factor_shrinkage / n_i * |y_i|^2],
  n_u, n_i the training counts of u and i (`TrainingPairs`; 1 for rows never seen in training).
  Summed over the training split: the `l2_*` terms weigh a row by how often it is rated (one SGD
  step on one rating moves every looked-up parameter as scikit-surprise's SVD / SVD++ update with
  reg = l2, at half its learning rate: our loss is the squared error, theirs half of it); the
  `*_shrinkage` terms weigh every row once (y_i through the ratings of product i), so rare users
  and products shrink towards 0 (with biases alone, b_u = sum of u's residuals / (n_u +
  bias_shrinkage): Koren's damped baseline).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxreviews.models import heads, layers

Array = jax.Array


@dataclasses.dataclass(frozen=True, eq=False)
class TrainingPairs:
    """The distinct (user, product) pairs of the training split, sorted by user: SVD++'s N(u) (the
    products u rated) and the rating counts the shrinkage terms divide by. A user or product with
    no pair (the unknown id 0, ids seen only in validation / test) has N(u) empty and count 0.
    Build it with `from_ratings`."""

    users: np.ndarray  # int32 [nnz], sorted ascending
    products: np.ndarray  # int32 [nnz]
    num_users: int  # including the unknown id 0
    num_products: int

    @classmethod
    def from_ratings(cls, *, users: np.ndarray, products: np.ndarray, num_users: int,
                     num_products: int) -> TrainingPairs:
        """From the training split's (user, product) id columns; repeated pairs count once."""
        users, products = np.asarray(users, np.int64), np.asarray(products, np.int64)
        if users.shape != products.shape or users.ndim != 1:
            raise ValueError(f"users {users.shape} and products {products.shape} must be [N] columns of one table")
        for name, ids, limit in (("user", users, num_users), ("product", products, num_products)):
            if len(ids) and (ids.min() < 0 or ids.max() >= limit):
                raise ValueError(f"{name} ids must lie in [0, {limit}), got {ids.min()}..{ids.max()}")
        pairs = np.unique(np.stack([users, products], axis=1), axis=0).reshape(-1, 2)  # by user, then product
        return cls(pairs[:, 0].astype(np.int32), pairs[:, 1].astype(np.int32), int(num_users), int(num_products))

    @property
    def user_counts(self) -> np.ndarray:
        """int64 [num_users] |N(u)|: the products each user rated."""
        return np.bincount(self.users, minlength=self.num_users)

    @property
    def product_counts(self) -> np.ndarray:
        """int64 [num_products] the users who rated each product."""
        return np.bincount(self.products, minlength=self.num_products)

    @property
    def implicit_scale(self) -> np.ndarray:
        """float32 [num_users] |N(u)|^-1/2, and 0 where N(u) is empty."""
        counts = self.user_counts
        return np.where(counts > 0, 1.0 / np.sqrt(np.maximum(counts, 1)), 0.0).astype(np.float32)


def implicit_sums(item_vectors: Array, pairs: TrainingPairs) -> tuple[Array, Array]:
    """SVD++'s implicit user vectors for EVERY user and their penalty terms:
    (|N(u)|^-1/2 sum_{j in N(u)} y_j [num_users, F], sum_{j in N(u)} |y_j|^2 [num_users]).

    `item_vectors` is y [num_products, F]. Two segment sums over the nnz pairs: the cost of a step
    does not depend on which users the batch holds, and the gradient reaches every y_j of N(u)."""
    rows = jnp.take(item_vectors, jnp.asarray(pairs.products), axis=0)  # [nnz, F]
    segments = jnp.asarray(pairs.users)
    # Summed in float32 (a user may have rated thousands of products), rounded once.
    sums = jax.ops.segment_sum(layers.upcast(rows), segments, num_segments=pairs.num_users,
                               indices_are_sorted=True).astype(rows.dtype)
    squares = jax.ops.segment_sum(jnp.sum(jnp.square(layers.upcast(rows)), axis=-1), segments,
                                  num_segments=pairs.num_users, indices_are_sorted=True)
    return sums * jnp.asarray(pairs.implicit_scale, sums.dtype)[:, None], squares


@dataclasses.dataclass(frozen=True)
class Regularization:
    """How strongly each looked-up row is pulled towards 0, per example (see the module docstring):
    `l2_*` per rating (surprise's reg), `*_shrinkage` per row (divided by the row's training count)."""

    l2_factors: float = 0.0
    l2_biases: float = 0.0
    l2_implicit: float = 0.0
    factor_shrinkage: float = 0.0
    bias_shrinkage: float = 0.0

    @property
    def shrinks(self) -> bool:
        return bool(self.factor_shrinkage or self.bias_shrinkage)

    @property
    def active(self) -> bool:
        return bool(self.l2_factors or self.l2_biases or self.l2_implicit or self.shrinks)


def _per_row(counts: np.ndarray) -> np.ndarray:
    """float32 1 / count, with rows never seen in training (count 0) counted once."""
    return (1.0 / np.maximum(counts, 1)).astype(np.float32)


def collaborative_offsets(num_users: int, num_products: int, *, factors: int, kind: str, num_classes: int,
                          unknown_rate: float, stddev: float, users: Array, products: Array, train: bool,
                          replace: Callable[[Array, float], Array], dtype=jnp.float32, implicit_feedback: bool = False,
                          pairs: TrainingPairs | None = None,
                          regularization: Regularization = Regularization()) -> tuple[Array, Array]:
    """(pre-activations [B, num_outputs], penalty [B]) of MF, built from submodules of the CALLING
    module: `user_embedding`, `product_embedding` (factors), `user_bias`, `product_bias` (one per
    output), with `implicit_feedback` (SVD++, needs `pairs`) `implicit_embedding`, and with a
    classification head `interaction` (factors -> C logits). The penalty is the module docstring's."""
    users, products = replace(users, unknown_rate), replace(products, unknown_rate)
    n = heads.num_outputs(kind, num_classes)
    p = layers.IdEmbedding(num_users, factors, stddev=stddev, dtype=dtype, name="user_embedding")(users, train=False)
    q = layers.IdEmbedding(num_products, factors, stddev=stddev, dtype=dtype,
                           name="product_embedding")(products, train=False)
    accumulate = jnp.promote_types(dtype, jnp.float32)  # biases are added to upcast pre-activations
    b_user = layers.IdEmbedding(num_users, n, stddev=0.0, dtype=accumulate, name="user_bias")(users, train=False)
    b_product = layers.IdEmbedding(num_products, n, stddev=0.0, dtype=accumulate,
                                   name="product_bias")(products, train=False)

    def squared(x):
        return jnp.sum(jnp.square(layers.upcast(x)), axis=-1)  # [B]

    r = regularization
    user_weight = product_weight = 0.0  # 1 / training count of the example's user and product
    if r.shrinks:
        user_weight = jnp.take(jnp.asarray(_per_row(pairs.user_counts)), users, axis=0)
        product_weight = jnp.take(jnp.asarray(_per_row(pairs.product_counts)), products, axis=0)
    penalty = ((r.l2_factors + r.factor_shrinkage * user_weight) * squared(p)
               + (r.l2_factors + r.factor_shrinkage * product_weight) * squared(q)
               + (r.l2_biases + r.bias_shrinkage * user_weight) * squared(b_user)
               + (r.l2_biases + r.bias_shrinkage * product_weight) * squared(b_product))
    user_vector = p
    if implicit_feedback:
        table = layers.IdEmbedding(num_products, factors, stddev=stddev, dtype=dtype, name="implicit_embedding")
        y = table(jnp.arange(num_products), train=False)  # the whole y table [num_products, F]
        implicit, squares = implicit_sums(y, pairs)
        user_vector = p + jnp.take(implicit, users, axis=0).astype(dtype)  # [B, F]
        penalty = (penalty + r.l2_implicit * jnp.take(squares, users, axis=0)
                   + r.factor_shrinkage * product_weight * squared(jnp.take(y, products, axis=0)))
    interaction = layers.upcast(user_vector * q)  # [B, factors]
    columns = []
    if heads.has_classification(kind):
        columns.append(nn.Dense(num_classes, use_bias=False, kernel_init=layers.initializer("glorot_uniform"),
                                dtype=dtype, name="interaction")(interaction))
    if heads.has_regression(kind):
        columns.append(jnp.sum(interaction, axis=-1, keepdims=True))
    return jnp.concatenate(columns, axis=-1) + b_user + b_product, penalty


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
        offsets, _ = collaborative_offsets(
            self.num_users, self.num_products, factors=c.factors, kind=self.kind, num_classes=self.num_classes,
            unknown_rate=c.unknown_rate, stddev=c.init_stddev, users=users, products=products, train=train,
            replace=lambda ids, rate: layers.replace_with_unknown(self, ids, rate, train), dtype=self.dtype)
        return offsets


class MatrixFactorization(nn.Module):
    """Reads only batch["user"] and batch["product"]. `rating_mean` / `label_prior` (training
    statistics) set where the global bias starts; `pairs` (the training split's TrainingPairs) is
    required by `config.implicit_feedback` (SVD++) and by the shrinkage terms, ignored otherwise."""

    config: ml_collections.FrozenConfigDict
    num_users: int
    num_products: int
    num_classes: int
    rating_range: tuple[float, float]
    rating_mean: float | None = None
    label_prior: tuple[float, ...] | None = None
    pairs: TrainingPairs | None = None

    @nn.compact
    def __call__(self, batch: dict[str, Array], *, train: bool = False) -> dict[str, Array]:
        c = self.config
        kind = c.head.kind
        regularization = Regularization(l2_factors=c.l2_factors, l2_biases=c.l2_biases, l2_implicit=c.l2_implicit,
                                        factor_shrinkage=c.factor_shrinkage, bias_shrinkage=c.bias_shrinkage)
        if (c.implicit_feedback or regularization.shrinks) and self.pairs is None:
            raise ValueError("model.implicit_feedback (SVD++) and model.factor_shrinkage / bias_shrinkage need "
                             "the training split's (user, product) pairs: build_model(..., "
                             "**models.training_statistics(...)) passes them")
        offsets, penalty = collaborative_offsets(
            self.num_users, self.num_products, factors=c.factors, kind=kind, num_classes=self.num_classes,
            unknown_rate=c.unknown_rate, stddev=c.init_stddev, users=batch["user"], products=batch["product"],
            train=train, replace=lambda ids, rate: layers.replace_with_unknown(self, ids, rate, train),
            dtype=layers.compute_dtype(c.dtype), implicit_feedback=c.implicit_feedback, pairs=self.pairs,
            regularization=regularization)
        start = heads.starting_biases(kind, self.num_classes, self.rating_range, c.head.rating_activation,
                                      rating_mean=self.rating_mean, label_prior=self.label_prior)
        global_bias = self.param("global_bias", lambda key, shape: jnp.asarray(start).reshape(shape), start.shape)
        outputs = heads.split_outputs(offsets + global_bias, kind, self.num_classes, self.rating_range,
                                      c.head.rating_activation)
        if train and regularization.active:
            outputs["penalty"] = penalty
        return outputs
