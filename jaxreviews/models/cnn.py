"""Convolutions over time: Kim (2014) CNN and a convolutional sequence encoder for HAN.

A window of width k starting at step t covers t..t+k-1; the sequence is zero-padded at its end, so
every real step starts one window and a padded input gives exactly the features of the unpadded
one (padded positions are zeroed before the convolution and ignored by the pooling). Layout is
time-major, x [T, N, E], except for the Kim encoder's fused conv + max, which is batch-major.

All filter widths run as ONE matmul: x @ [E, sum_k k*F] gives every tap of every filter, and a
window is the sum of k time-shifted slices.

Max over time is the hot path of the Kim CNN (`conv_max_over_time`):
  * forward: a scan over chunks of whole rows (~2048 tokens on CPU; one chunk on accelerators,
    `backend.conv_chunk_tokens`), so each chunk's [tokens, 12 * F] tap matrix stays in cache
    instead of a 59 MB one going through memory; argmax as a min over the steps that reach the
    max (XLA:CPU's variadic argmax reduction was 20 ms of a 100 ms step).
  * backward (custom VJP): the gradient reaches only the argmax window of each (row, filter), so
    those windows are gathered for the kernels' gradient and kernel * g is scattered into them for
    the input's, O(N * F * k * E) instead of the dense transposed convolution's O(T * N * F * k * E).
  * with a monotone activation, act(max_t conv + b) = max_t act(conv + b): bias and activation are
    applied after the max, on [N, F] instead of [T, N, F].
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxreviews.models import backend, layers

Array = jax.Array
MONOTONE = ("relu", "tanh", "sigmoid", "leaky_relu", "elu", "identity")


def _stack_kernels(kernels: tuple[Array, ...]) -> Array:
    """(k, E, F) per width -> [E, sum_k k*F], column j*F + f of a width's block = tap j, filter f."""
    return jnp.concatenate([jnp.transpose(k, (1, 0, 2)).reshape(k.shape[1], -1) for k in kernels], axis=-1)


def _sum_taps(taps: Array, kernels: tuple[Array, ...], steps: int, axis: int,
              same: list[Array] | None = None) -> Array:
    """Window responses from per-tap products: `taps` [..., T + w - 1 (time at `axis`), ..., sum k*F]
    (column block of width k, tap j = x_t @ kernel[j]) -> [..., T, ..., sum F], where window t of
    width k sums tap j at t + j. `same[j]` (broadcastable) zeroes the taps that leave a segment."""

    def tap(j: int, column: int, filters: int) -> Array:
        index = [slice(None)] * taps.ndim
        index[axis], index[-1] = slice(j, j + steps), slice(column, column + filters)
        return taps[tuple(index)]

    responses, column = [], 0
    for kernel in kernels:
        width, filters = kernel.shape[0], kernel.shape[2]
        total = tap(0, column, filters)
        for j in range(1, width):
            shifted = tap(j, column + j * filters, filters)
            total = total + (shifted if same is None else shifted * same[j])
        responses.append(total)
        column += width * filters
    return jnp.concatenate(responses, axis=-1)


def conv_over_time(x: Array, kernels: tuple[Array, ...], segments: Array | None = None) -> Array:
    """x [T, N, E] -> every window's response [T, N, sum F] (window t = steps t..t+k-1, zero after T).

    `segments` [T, N] (packed rows): a window also stops at the end of its segment, as if each
    segment were zero-padded on its own."""
    steps = x.shape[0]
    taps = jnp.einsum("tne,eg->tng", x, _stack_kernels(kernels).astype(x.dtype))  # [T, N, sum k*F]
    widest = max(k.shape[0] for k in kernels)
    taps = jnp.pad(taps, ((0, widest - 1), (0, 0), (0, 0)))
    same = None
    if segments is not None:  # same[j][t]: step t + j belongs to the segment of step t
        padded = jnp.pad(segments, ((0, widest - 1), (0, 0)), constant_values=-1)
        same = [(padded[j:j + steps] == segments)[..., None].astype(x.dtype) for j in range(widest)]
    return _sum_taps(taps, kernels, steps, axis=0, same=same)


def _largest_divisor_at_most(n: int, limit: int) -> int:
    return max(d for d in range(1, max(1, min(n, limit)) + 1) if n % d == 0)


def _chunk_layout(batch: int, steps: int) -> tuple[int, int, int]:
    """(shards, chunks, rows): a batch of `batch` rows walked in `chunks` scan steps, each taking
    `rows` rows (~`backend.conv_chunk_tokens()` tokens; all of them in one chunk on accelerators)
    from each of the `shards` equal parts the devices hold (`layers.batch_shards`): the scan then
    runs on every device at once, never across them."""
    shards = layers.batch_shards()
    shards = shards if batch % shards == 0 else 1
    tokens = backend.conv_chunk_tokens()
    per_shard = batch // shards
    rows = per_shard if tokens is None else _largest_divisor_at_most(per_shard, max(1, tokens // steps))
    return shards, batch // (shards * rows), rows


def _to_chunks(a: Array, layout: tuple[int, int, int]) -> Array:
    """[B, ...] -> [chunks, shards * rows, ...] (`_chunk_layout`); one shard: consecutive rows."""
    shards, chunks, rows = layout
    a = a.reshape(shards, chunks, rows, *a.shape[1:]).swapaxes(0, 1)
    return a.reshape(chunks, shards * rows, *a.shape[3:])


def _from_chunks(a: Array, layout: tuple[int, int, int]) -> Array:
    """The inverse of `_to_chunks`: [chunks, shards * rows, ...] -> [B, ...]."""
    shards, chunks, rows = layout
    a = a.reshape(chunks, shards, rows, *a.shape[2:]).swapaxes(0, 1)
    return a.reshape(shards * chunks * rows, *a.shape[3:])


@jax.custom_vjp
def conv_max_over_time(x: Array, mask: Array, kernels: tuple[Array, ...]) -> Array:
    """Batch-major x [N, T, E], mask [N, T] -> max over real window starts of the convolution,
    [N, sum F] (0 for a row without a real step)."""
    return _conv_max_forward(x, mask, kernels)[0]


def _conv_max_forward(x, mask, kernels):
    """Runs over chunks of whole rows (a scan), so the [T, sum k*F] tap matrix of a chunk stays in
    cache instead of a [N*T, sum k*F] one going through memory. Returns (max, argmax, present)."""
    batch, steps, features = x.shape
    widest = max(k.shape[0] for k in kernels)
    stacked = _stack_kernels(kernels).astype(x.dtype)
    layout = _chunk_layout(batch, steps)
    x_chunks = _to_chunks(jnp.pad(x, ((0, 0), (0, widest - 1), (0, 0))), layout)
    mask_chunks = _to_chunks(mask, layout)

    def chunk(_, inputs):
        xc, mc = inputs  # [n, T + w - 1, E], [n, T]
        taps = jnp.einsum("nte,eg->ntg", xc, stacked)
        responses = jnp.where(mc[..., None], _sum_taps(taps, kernels, steps, axis=1), -jnp.inf)  # [n, T, F]
        best = jnp.max(responses, axis=1)
        # argmax as a min over matching steps: a plain reduction, far faster than XLA's argmax.
        steps_iota = jnp.arange(steps, dtype=jnp.int32)[None, :, None]
        position = jnp.min(jnp.where(responses == best[:, None], steps_iota, steps), axis=1)
        return None, (best, jnp.minimum(position, steps - 1))

    _, (best, position) = jax.lax.scan(chunk, None, (x_chunks, mask_chunks))
    best, position = _from_chunks(best, layout), _from_chunks(position, layout)
    present = mask.any(1)[:, None]  # [N, 1]
    return jnp.where(present, best, 0.0), position, present


def _conv_max_fwd(x, mask, kernels):
    pooled, position, present = _conv_max_forward(x, mask, kernels)
    return pooled, (x, mask, kernels, position, present)


def _conv_max_bwd(residuals, g):
    """Only the argmax window of each (row, filter) receives gradient: gather those windows for the
    kernels' gradient, scatter kernel * g into them for the input's gradient."""
    x, mask, kernels, position, present = residuals
    batch, steps, _ = x.shape
    g = jnp.where(present, g, 0.0).astype(x.dtype)  # [N, sum F]
    widest = max(k.shape[0] for k in kernels)
    padded = jnp.pad(x, ((0, 0), (0, widest - 1), (0, 0)))  # [N, T + w - 1, E]
    # Many filters' windows cover the same step: scatter-add in float32, round once at the end.
    accumulate = layers.accumulate_dtype(x.dtype)
    dx = jnp.zeros(padded.shape, accumulate)
    # Gathers and scatters within each row, vmapped: the row is a batch dimension of the gather, so
    # a batch split over devices stays split (no device gathers the others' rows).
    gather = jax.vmap(lambda row, steps_: row[steps_])
    scatter_add = jax.vmap(lambda row, steps_, values: row.at[steps_].add(values))
    dkernels, column = [], 0
    for kernel in kernels:
        width, _, filters = kernel.shape
        g_k = g[:, column:column + filters]  # [N, F]
        rows_t = position[:, None, column:column + filters] + jnp.arange(width)[None, :, None]  # [N, k, F]
        windows = gather(padded, rows_t)  # [N, k, F, E]: the argmax window of every filter
        dkernels.append(jnp.einsum("njfe,nf->jef", windows, g_k).astype(kernel.dtype))
        dx = scatter_add(dx, rows_t, jnp.einsum("nf,jef->njfe", g_k, kernel.astype(x.dtype),
                                                preferred_element_type=accumulate))
        column += filters
    return dx[:, :steps].astype(x.dtype), None, tuple(dkernels)


conv_max_over_time.defvjp(_conv_max_fwd, _conv_max_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def segment_conv_max(x: Array, mask: Array, segments: Array, num_segments: int,
                     kernels: tuple[Array, ...]) -> Array:
    """Packed rows: batch-major x [R, L, E], mask / segments [R, L] (a segment = one review lying
    whole in a row) -> for each segment the max over its window starts of the convolution,
    [num_segments, sum F] (0 for a segment without a real step). A window stops at its segment's
    end, as if each review were zero-padded on its own; the backward pass is sparse, as in
    `conv_max_over_time`."""
    return _segment_conv_max_forward(x, mask, segments, num_segments, kernels)[0]


def _segment_same(segments: Array, widest: int) -> list[Array]:
    """same[j] [R, L]: step t + j lies in the row and in the segment of step t."""
    steps = segments.shape[1]
    padded = jnp.pad(segments, ((0, 0), (0, widest - 1)), constant_values=-1)
    return [padded[:, j:j + steps] == segments for j in range(widest)]


def _segment_conv_max_forward(x, mask, segments, num_segments, kernels):
    rows, steps, features = x.shape
    widest = max(k.shape[0] for k in kernels)
    stacked = _stack_kernels(kernels).astype(x.dtype)
    same = _segment_same(segments, widest)
    layout = _chunk_layout(rows, steps)
    chunked = lambda a: _to_chunks(a, layout)  # noqa: E731
    x_padded = jnp.pad(x, ((0, 0), (0, widest - 1), (0, 0)))

    def chunk(_, inputs):  # the [n, L, sum k*F] tap matrix of a few rows stays in cache
        xc, mc, *same_c = inputs
        taps = jnp.einsum("nte,eg->ntg", xc, stacked)
        same_taps = [same[..., None].astype(taps.dtype) for same in same_c]
        return None, jnp.where(mc[..., None], _sum_taps(taps, kernels, steps, axis=1, same=same_taps), -jnp.inf)

    _, responses = jax.lax.scan(chunk, None, (chunked(x_padded), chunked(mask), *map(chunked, same)))
    responses = _from_chunks(responses, layout).reshape(rows * steps, -1)  # [R*L, sum F]
    flat_segments = segments.reshape(-1)
    best = jax.ops.segment_max(responses, flat_segments, num_segments)  # [B, sum F]
    position = jnp.arange(rows * steps, dtype=jnp.int32)[:, None]
    hit = jnp.where(responses == best[flat_segments], position, rows * steps)
    argmax = jnp.minimum(jax.ops.segment_min(hit, flat_segments, num_segments), rows * steps - 1)
    present = (jax.ops.segment_max(mask.reshape(-1).astype(jnp.int32), flat_segments, num_segments) > 0)[:, None]
    return jnp.where(present, best, 0.0), argmax, present


def _segment_conv_max_fwd(x, mask, segments, num_segments, kernels):
    pooled, argmax, present = _segment_conv_max_forward(x, mask, segments, num_segments, kernels)
    return pooled, (x, mask, segments, kernels, argmax, present)


def _segment_conv_max_bwd(num_segments, residuals, g):
    """As `_conv_max_bwd`: only each (segment, filter)'s argmax window gets gradient, and only its
    taps inside the segment."""
    x, mask, segments, kernels, argmax, present = residuals
    rows, steps, features = x.shape
    g = jnp.where(present, g, 0.0).astype(x.dtype)  # [B, sum F]
    widest = max(k.shape[0] for k in kernels)
    flat_x = jnp.pad(x.reshape(rows * steps, features), ((0, widest - 1), (0, 0)))
    flat_segments = jnp.pad(segments.reshape(-1), (0, widest - 1), constant_values=-1)
    step_in_row = jnp.pad(jnp.tile(jnp.arange(steps), rows), (0, widest - 1), constant_values=steps)
    accumulate = layers.accumulate_dtype(x.dtype)  # scatter-add in float32, as in `_conv_max_bwd`
    dx = jnp.zeros(flat_x.shape, accumulate)
    dkernels, column = [], 0
    for kernel in kernels:
        width, _, filters = kernel.shape
        g_k = g[:, column:column + filters]  # [B, F]
        start = argmax[:, None, column:column + filters]  # [B, 1, F]
        taps = start + jnp.arange(width)[None, :, None]  # [B, k, F] flat positions of the window
        inside = ((flat_segments[taps] == flat_segments[start])
                  & (step_in_row[taps] - step_in_row[start] == jnp.arange(width)[None, :, None]))
        weight = inside.astype(x.dtype)
        windows = flat_x[taps] * weight[..., None]  # [B, k, F, E]
        dkernels.append(jnp.einsum("njfe,nf->jef", windows, g_k).astype(kernel.dtype))
        dx = dx.at[taps].add(jnp.einsum("nf,jef->njfe", g_k, kernel.astype(x.dtype), preferred_element_type=accumulate)
                             * weight[..., None])
        column += filters
    return dx[:rows * steps].reshape(x.shape).astype(x.dtype), None, None, tuple(dkernels)


segment_conv_max.defvjp(_segment_conv_max_fwd, _segment_conv_max_bwd)


class ConvFilters(nn.Module):
    """Filter banks: for each width k, a kernel [k, E, F] and bias [F]."""

    widths: tuple[int, ...] = (3, 4, 5)
    num_filters: int = 100
    kernel_init: str = "he_normal"

    @nn.compact
    def __call__(self, features: int) -> tuple[tuple[Array, ...], Array]:
        kernels = []
        for width in self.widths:
            # fan-in of one window = width * features, as in a Conv layer.
            init = layers.initializer(self.kernel_init)
            kernel = self.param(f"kernel_{width}", lambda key, shape, dtype=jnp.float32, _init=init:
                                _init(key, (shape[0] * shape[1], shape[2]), dtype).reshape(shape),
                                (width, features, self.num_filters), jnp.float32)
            kernels.append(kernel)
        bias = self.param("bias", nn.initializers.zeros, (len(self.widths) * self.num_filters,), jnp.float32)
        return tuple(kernels), bias


class KimEncoder(nn.Module):
    """Kim (2014): filters of widths 3,4,5 x n maps, activation, max over time. x [T, N, E] -> [N, 3n]."""

    widths: tuple[int, ...] = (3, 4, 5)
    num_filters: int = 100
    activation: str = "relu"
    kernel_init: str = "he_normal"
    dtype: layers.Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, mask: Array, segments: Array | None = None,
                 num_segments: int | None = None) -> Array:
        """x [N, T, E] BATCH-major (no time shifts of a whole batch are needed), mask [N, T].

        Packed rows: `segments` [N, T] names each token's review -> [num_segments, 3n], windows
        and the max stay inside each review."""
        kernels, bias = ConvFilters(self.widths, self.num_filters, self.kernel_init, name="filters")(x.shape[-1])
        act = layers.activation(self.activation)
        x = jnp.where(mask[..., None], x, 0).astype(self.dtype)
        kernels = tuple(k.astype(self.dtype) for k in kernels)
        if segments is not None:
            if self.activation in MONOTONE:
                pooled = segment_conv_max(x, mask, segments, num_segments, kernels)
                return act(pooled + bias.astype(self.dtype))
            time_mask, time_segments = jnp.swapaxes(mask, 0, 1), jnp.swapaxes(segments, 0, 1)
            responses = conv_over_time(jnp.swapaxes(x, 0, 1), kernels, time_segments)
            responses = act(responses + bias.astype(self.dtype))
            return layers.segment_masked_max(responses, time_mask, time_segments, num_segments)
        if self.activation in MONOTONE:
            pooled = conv_max_over_time(x, mask, kernels)
            return act(pooled + bias.astype(self.dtype))
        responses = act(conv_over_time(jnp.swapaxes(x, 0, 1), kernels) + bias.astype(self.dtype))
        return layers.masked_max(responses, mask.T)


class ConvSequenceEncoder(nn.Module):
    """Per-step convolutional features for attention pooling (the CNN option of HAN's encoders):
    x [T, N, E] -> act(conv + b) [T, N, len(widths) * n]."""

    widths: tuple[int, ...] = (3,)
    num_filters: int = 100
    activation: str = "relu"
    kernel_init: str = "he_normal"
    dtype: layers.Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, mask: Array, segments: Array | None = None) -> Array:
        kernels, bias = ConvFilters(self.widths, self.num_filters, self.kernel_init, name="filters")(x.shape[-1])
        x = jnp.where(mask[..., None], x, 0).astype(self.dtype)
        responses = conv_over_time(x, tuple(k.astype(self.dtype) for k in kernels), segments)
        return layers.activation(self.activation)(responses + bias.astype(self.dtype))

    @property
    def features(self) -> int:
        return len(self.widths) * self.num_filters
