"""Building blocks shared by the models: initialisers, activations, embeddings, normalisation and
additive attention.

Sequences inside the models are TIME-MAJOR: `[time, batch..., features]`. The scans of the
recurrent encoders walk the leading axis, and attention, pooling and convolutions all read the same
layout, so no large activation is ever transposed (only the int32 token ids are, which is free).
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
Dtype = Any

INITIALIZERS: dict[str, Callable[..., nn.initializers.Initializer]] = {
    "glorot_uniform": nn.initializers.glorot_uniform,
    "glorot_normal": nn.initializers.glorot_normal,
    "xavier_uniform": nn.initializers.glorot_uniform,
    "xavier_normal": nn.initializers.glorot_normal,
    "he_uniform": nn.initializers.he_uniform,
    "he_normal": nn.initializers.he_normal,
    "lecun_uniform": nn.initializers.lecun_uniform,
    "lecun_normal": nn.initializers.lecun_normal,
}

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "tanh": jnp.tanh,
    "relu": nn.relu,
    "gelu": nn.gelu,
    "silu": nn.silu,
    "elu": nn.elu,
    "leaky_relu": nn.leaky_relu,
    "sigmoid": nn.sigmoid,
    "identity": lambda x: x,
}

NORMS = ("layer", "batch", "none")


def initializer(name: str, *, batch_axis: tuple[int, ...] = ()) -> nn.initializers.Initializer:
    """A kernel initialiser by name (Xavier/Glorot, He, LeCun; uniform or normal).

    `batch_axis` names leading axes that stack independent kernels (e.g. the two directions of a
    bidirectional RNN), so fan-in and fan-out are those of one kernel.
    """
    if name not in INITIALIZERS:
        raise ValueError(f"unknown kernel_init {name!r}; choose one of {sorted(INITIALIZERS)}")
    return INITIALIZERS[name](batch_axis=batch_axis)


def activation(name: str) -> Callable[[Array], Array]:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def compute_dtype(name: str | Dtype) -> Dtype:
    """'float32' | 'bfloat16' | 'float16' -> the jnp dtype used for activations (params stay float32)."""
    try:
        return jnp.dtype(name)
    except TypeError as error:
        raise ValueError(f"unknown dtype {name!r}; use 'float32' or 'bfloat16'") from error


def upcast(x: Array) -> Array:
    """bfloat16/float16 -> float32 for softmaxes, gates and losses; float32/float64 unchanged."""
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def accumulate_dtype(dtype: Dtype) -> Dtype:
    """The dtype sums, counts and recurrent states are carried in: float32 for a bfloat16/float16
    compute dtype (bfloat16's 8-bit significand cannot even count past 256), else `dtype` itself."""
    return jnp.promote_types(dtype, jnp.float32)


# The mesh axis that splits the batch (jaxreviews.train.sharding's "data").
BATCH_MESH_AXIS = "data"


def batch_shards() -> int:
    """How many devices split the batch of the program being traced: the size of the mesh's data
    axis when the program is traced under `jax.set_mesh(mesh)` (the train layer does so), else 1.
    A kernel that walks its batch in chunks (cnn.py) makes each chunk take rows from every
    device's part, so its scan never runs across devices."""
    mesh = jax.sharding.get_abstract_mesh()
    return 1 if mesh.empty else int(dict(mesh.shape).get(BATCH_MESH_AXIS, 1))


# Logical axis names of the embedding tables, the parameters worth splitting over devices (millions
# of rows on real data): rows, features. jaxreviews.train.sharding maps them to mesh axes.
VOCAB_AXES = ("vocab", "embed")
ID_AXES = ("ids", "embed")


def logically_partitioned(init: nn.initializers.Initializer, names: tuple[str, ...]) -> nn.initializers.Initializer:
    """`init` whose parameter carries logical axis `names` (Flax's `nn.with_logical_partitioning`)
    when logical axis rules are in effect (`with nn.logical_axis_rules(...)`, as the train layer
    does to read them); otherwise a plain array, so `model.init` returns plain parameters."""
    partitioned = nn.with_logical_partitioning(init, names)

    def initializer(key, shape, dtype=jnp.float32):
        return partitioned(key, shape, dtype) if nn.get_logical_axis_rules() else init(key, shape, dtype)

    return initializer


LOOKUPS = "lookups"  # collection of the ids each table looked up (a row-sparse train step asks for it)
ROW_GRADS = "row_grads"  # collection of zeros added to the looked-up rows: their gradient is the rows'


def look_up(module: nn.Module, table: Array, ids: Array) -> Array:
    """table[ids], out-of-range ids clamped. When the caller makes LOOKUPS mutable (the train step of
    `optimizer.sparse_tables`), the ids are sown there and the rows perturbed by ROW_GRADS, so that
    the step gets the gradient of the looked-up rows without the table's [rows, dim] gradient."""
    # mode="clip": out-of-range ids are clamped on the int ids, instead of the default "fill",
    # which masks the whole [tokens, E] output with one more pass over it.
    rows = jnp.take(table, ids, axis=0, mode="clip")
    if module.is_mutable_collection(LOOKUPS) and not module.is_initializing():
        module.sow(LOOKUPS, "ids", jnp.clip(ids, 0, table.shape[0] - 1))
        rows = module.perturb("rows", rows, collection=ROW_GRADS)
    return rows


class WordEmbedding(nn.Module):
    """Token embedding table at params path `<name>/embedding`, optionally frozen.

    Pretrained vectors are not part of the module: `train.step.init_state(...,
    pretrained_embeddings=table)` writes them into this parameter, as data of the jitted init (a
    table captured here would be a constant baked into the program). A frozen table is wrapped in
    `stop_gradient`, so XLA drops its (large) gradient entirely; the optimiser should also leave it
    alone (freeze pattern `word_embedding`).
    """

    num_embeddings: int
    features: int
    freeze: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, ids: Array) -> Array:
        embedding = self.param("embedding", logically_partitioned(nn.initializers.normal(stddev=0.1), VOCAB_AXES),
                               (self.num_embeddings, self.features), jnp.float32)
        if self.freeze:
            embedding = jax.lax.stop_gradient(embedding)
        return look_up(self, embedding, ids).astype(self.dtype)


class IdEmbedding(nn.Module):
    """Embedding of user or product ids. Row 0 is the learned UNKNOWN entity: during training a
    fraction `unknown_rate` of ids is replaced by 0 (with the "dropout" rng) so that row learns what
    an average unseen user / product looks like."""

    num_embeddings: int
    features: int
    unknown_rate: float = 0.0
    stddev: float = 0.1
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, ids: Array, *, train: bool) -> Array:
        embedding = self.param("embedding", logically_partitioned(nn.initializers.normal(self.stddev), ID_AXES),
                               (self.num_embeddings, self.features), jnp.float32)
        ids = replace_with_unknown(self, ids, self.unknown_rate, train)
        return look_up(self, embedding, ids).astype(self.dtype)


def replace_with_unknown(module: nn.Module, ids: Array, rate: float, train: bool) -> Array:
    if not train or rate <= 0.0:
        return ids
    keep = jax.random.bernoulli(module.make_rng("dropout"), 1.0 - rate, ids.shape)
    return jnp.where(keep, ids, 0)


class Dropout(nn.Module):
    """Inverted dropout, as `nn.Dropout` (same random mask for the same rng), whose rate may be a
    variable: with `rate_in_state` it is read from the "hyperparams" collection (created at init
    from `rate`), so the members of a vmapped population can each train with their own rate and a
    checkpoint keeps it."""

    rate: float
    rate_in_state: bool = False

    @nn.compact
    def __call__(self, x: Array, *, deterministic: bool) -> Array:
        if self.rate_in_state:
            rate = self.variable("hyperparams", "rate", lambda: jnp.asarray(self.rate, jnp.float32)).value
        elif self.rate == 0.0:
            return x
        else:
            rate = self.rate
        if deterministic:
            return x
        keep = 1.0 - rate
        mask = jax.random.bernoulli(self.make_rng("dropout"), p=keep, shape=x.shape)
        return jax.lax.select(mask, x / jnp.asarray(keep, x.dtype), jnp.zeros_like(x))


class Norm(nn.Module):
    """LayerNorm (default), BatchNorm (running statistics in `batch_stats`) or nothing."""

    kind: str = "layer"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, *, train: bool, mask: Array | None = None) -> Array:
        if self.kind == "layer":
            return nn.LayerNorm(epsilon=1e-5, dtype=self.dtype)(x)
        if self.kind == "batch":
            # Statistics over every axis but the feature axis, counting only real positions.
            return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                                dtype=self.dtype)(x, mask=None if mask is None else mask[..., None])
        if self.kind == "none":
            return x
        raise ValueError(f"unknown norm {self.kind!r}; choose one of {NORMS}")


def masked_softmax(scores: Array, mask: Array, axis: int = 0) -> Array:
    """Softmax over `axis` counting only positions where mask is True; all-masked rows give zeros."""
    scores = jnp.where(mask, upcast(scores), -1e30)
    scores = scores - jax.lax.stop_gradient(jnp.max(scores, axis=axis, keepdims=True))
    weights = jnp.exp(scores) * mask
    return weights / jnp.maximum(jnp.sum(weights, axis=axis, keepdims=True), 1e-30)


def segment_softmax(scores: Array, segments: Array, mask: Array, num_segments: int) -> Array:
    """Softmax over the positions of each segment (packed rows): scores, segments, mask of any one
    shape -> weights of that shape; each segment's real positions sum to 1, padding gets 0."""
    flat_scores = jnp.where(mask, upcast(scores), -jnp.inf).reshape(-1)
    flat_segments = segments.reshape(-1)
    peak = jax.ops.segment_max(flat_scores, flat_segments, num_segments)
    peak = jax.lax.stop_gradient(jnp.where(jnp.isfinite(peak), peak, 0.0))
    weights = jnp.exp(flat_scores - peak[flat_segments]) * mask.reshape(-1)
    total = jax.ops.segment_sum(weights, flat_segments, num_segments)
    return (weights / jnp.maximum(total[flat_segments], 1e-30)).reshape(scores.shape)


def segment_pool(weights: Array, x: Array, segments: Array, num_segments: int) -> Array:
    """sum over the positions of each segment of weights * x: x [..., D] -> [num_segments, D] in x's
    dtype. Summed in float32 (`accumulate_dtype`): a bfloat16 scatter-add rounds after every
    position, so a long segment's sum drifts (a count of ones stops at 256)."""
    features = x.shape[-1]
    accumulate = accumulate_dtype(x.dtype)
    weighted = (weights.astype(accumulate)[..., None] * x.astype(accumulate)).reshape(-1, features)
    return jax.ops.segment_sum(weighted, segments.reshape(-1), num_segments).astype(x.dtype)


def segment_masked_max(x: Array, mask: Array, segments: Array, num_segments: int) -> Array:
    """Max over the real positions of each segment: x [..., D] -> [num_segments, D] (0 if none)."""
    features = x.shape[-1]
    flat = jnp.where(mask[..., None], x, -jnp.inf).reshape(-1, features)
    pooled = jax.ops.segment_max(flat, segments.reshape(-1), num_segments)
    return jnp.where(jnp.isfinite(pooled), pooled, 0.0).astype(x.dtype)


class AdditiveAttention(nn.Module):
    """Additive attention pooling over the leading (time) axis (Bahdanau; Yang et al. 2016).

    score_t = v . act(W x_t + b [+ U condition]);  a = masked softmax_t(score);  out = sum_t a_t x_t.
    x: [T, N, D], mask: [T, N] -> ([N, D], weights [T, N]). The optional `condition` [N, C] (e.g. the
    user and product embeddings of NSC+UPA) shifts the pre-activation of every position. The weights
    are sown into `intermediates` as `<module name>/weights`, batch-major [N, T] or reshaped to
    `sow_shape` (e.g. [B, S, W] for word attention).

    Packed rows: with `segments` [T, N] (ids < `num_segments`) the softmax and the sum run over
    each segment's positions instead -> ([num_segments, D], weights [T, N]); `condition` is then
    [G, C] per owner and `condition_index` [T, N] names each position's owner (its review).
    """

    features: int
    activation: str = "tanh"
    kernel_init: str = "glorot_uniform"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, mask: Array, condition: Array | None = None,
                 sow_shape: tuple[int, ...] | None = None, *, segments: Array | None = None,
                 num_segments: int | None = None, condition_index: Array | None = None) -> tuple[Array, Array]:
        init = initializer(self.kernel_init)
        hidden = nn.Dense(self.features, kernel_init=init, dtype=self.dtype, name="projection")(x)
        if condition is not None:
            shift = nn.Dense(self.features, use_bias=False, kernel_init=init, dtype=self.dtype,
                             name="condition")(condition)
            hidden = hidden + (shift[None] if condition_index is None else shift[condition_index])
        scores = nn.Dense(1, use_bias=False, kernel_init=init, dtype=self.dtype,
                          name="score")(activation(self.activation)(hidden))[..., 0]
        if segments is not None:
            weights = segment_softmax(scores, segments, mask, num_segments)
            self.sow("intermediates", "weights", weights.T)
            return segment_pool(weights, x, segments, num_segments), weights
        weights = masked_softmax(scores, mask, axis=0)
        sown = weights.T
        self.sow("intermediates", "weights", sown if sow_shape is None else sown.reshape(sow_shape))
        # An einsum, not multiply + sum over time: XLA's CPU reduction over the leading axis measured
        # 3x slower than the batched matmul (with its transposes) here. Summed in float32, rounded once.
        pooled = jnp.einsum("tn,tnd->nd", weights.astype(x.dtype), x,
                            preferred_element_type=accumulate_dtype(x.dtype))
        return pooled.astype(x.dtype), weights


def masked_mean(x: Array, mask: Array) -> Array:
    """x [T, N, D], mask [T, N] -> mean over real steps [N, D] in x's dtype (zeros where a row has
    none). Sum, count and division run in float32, one rounding at the end: a bfloat16 count is
    inexact above 256 tokens."""
    accumulate = accumulate_dtype(x.dtype)
    total = jnp.einsum("tn,tnd->nd", mask.astype(x.dtype), x, preferred_element_type=accumulate)
    count = jnp.sum(mask, axis=0, dtype=accumulate)
    return (total / jnp.maximum(count, 1.0)[:, None]).astype(x.dtype)


def masked_max(x: Array, mask: Array) -> Array:
    """x [T, N, D], mask [T, N] -> max over real steps [N, D] (zeros where a row has none)."""
    pooled = jnp.max(jnp.where(mask[..., None], x, -jnp.inf), axis=0)
    return jnp.where(mask.any(0)[:, None], pooled, 0.0).astype(x.dtype)


def last_step(x: Array, mask: Array) -> Array:
    """x [T, N, D] -> the output at each row's last real step [N, D] (zeros for an empty row, as
    the packed pooling and a recurrence's untouched final state give)."""
    steps = jnp.arange(mask.shape[0])[:, None]
    last = jnp.max(jnp.where(mask, steps, 0), axis=0)  # [N]
    picked = jnp.take_along_axis(x, last[None, :, None], axis=0)[0]
    return jnp.where(mask.any(0)[:, None], picked, 0).astype(x.dtype)
