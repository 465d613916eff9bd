"""LSTM and GRU encoders: uni- or bidirectional, stacked, padding-exact, both directions in one scan.

Layout is time-major: x [T, N, D], mask [T, N]. Direction 1 reads the time-flipped sequence, and
both directions advance in the same scan, stacked on a leading axis K, so every step is one batched
[K, N, .] x [K, ., G] matmul (G = 4H for LSTM, 3H for GRU).

Padding never leaks: at a padded step the state is carried through unchanged (one select). So the
forward direction ends with the state of each sequence's last real token, and the backward
direction, which reads the flipped sequence, keeps its initial state through the trailing padding
and therefore starts at each sequence's real end. A padded input gives exactly the outputs of the
unpadded one at the real positions (masks need not even be prefixes).

Packed rows (`segments` [T, N], jaxreviews.data.packing): a row holds several sequences one after
another; the state entering a segment's first step is zero in each direction (the forward one
resets at segment starts, the backward one at segment ends), so each segment gives exactly the
outputs it gives alone, and no gradient crosses a segment boundary.

Mixed precision (`dtype` bfloat16): the matmuls run in bfloat16 and the outputs are returned in
it, but what accumulates from step to step stays float32: the LSTM cell c, the GRU state h, the
state gradients of the backward pass and the weight-gradient sums. A bfloat16 carry is rounded at
every step, and what a step adds to it (a slow GRU update, an output gradient) is lost below half
its last unit. (The LSTM's h, recomputed from c every step, is only ever used in bfloat16.)

Three implementations of a layer, all with the same parameters and numbers
(`RecurrentLayer.input_projection`):
  fused    `nn.scan` over `LSTMStep` / `GRUStep` (parameters broadcast, not carried); each step
           computes [x_t, h] @ [W; U] as one matmul. Autodiff.
  hoisted  `nn.scan` as above, with x W + b for every step computed before the scan (one
           [T*N, D] x [D, G] matmul per direction). Autodiff.
  chunked  LSTM only, the default: `lstm_chunked`, which does both. Time is cut into chunks of
           ~1024 rows; a chunk's input projection is one matmul that stays in cache, a scan runs
           its steps with one h @ U matmul each, and a hand-written VJP saves per-step gate
           gradients and turns dx, dW, db and dU into a few chunk-sized matmuls, instead of the
           per-step dU matmul that autodiff of a scan accumulates.
Measured on the project's 2-core CPU at the reference shapes (tools/bench.py, `--malloc keep`):
HAN's word encoder, 24 steps x 512 sentences, fwd+bwd: fused 116 ms vs hoisted 150 ms (its
[T*N, 4H] projections, 20 MB, go through memory); flat BiLSTM, 384 steps x 32: hoisted beats fused
by ~25% (tiny per-step matmuls). Whole train step, chunked vs the better of the other two: HAN
112 -> ~96 ms, BiLSTM 134 -> ~87 ms. `unroll` unrolls the scans over steps (no gain measured).
"""
from __future__ import annotations

import functools

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxreviews.models import backend, layers

Array = jax.Array
CELLS = ("lstm", "gru")
GATES = {"lstm": 4, "gru": 3}


class LSTMStep(nn.Module):
    """One time step of K independent LSTMs (K = directions), batched over K.

    inputs: ((x or input-projection per direction), (mask per direction)); with `fused_input` the
    step gets x_t and computes ONE [K, N, D+H] x [K, D+H, 4H] matmul, [x_t, h] @ [W; U], else it
    gets the precomputed x_t W + b and computes h @ U.

    The carry (h, c) is float32 (>= `dtype`); h enters the matmul and the output only in `dtype`, so
    the forward numbers are those of a `dtype` h (h is recomputed from c every step), but autodiff
    carries h's gradient through the steps in float32, as `lstm_chunked`'s backward does.
    """

    hidden_size: int
    num_directions: int
    fused_input: bool = True
    dtype: layers.Dtype = jnp.float32

    @nn.compact
    def __call__(self, carry: tuple[Array, Array], inputs, input_kernel: Array, bias: Array):
        step_inputs, mask, reset = _stack_directions(inputs)  # [K, N, D] or [K, N, 4H]; [K, N, 1] bool
        h, c = _reset(carry, reset)  # [K, N, H] each, float32
        kernel = self.param("kernel", nn.initializers.orthogonal(), (self.num_directions, self.hidden_size,
                                                                     4 * self.hidden_size), jnp.float32)
        if self.fused_input:
            weights = jnp.concatenate([input_kernel, kernel], axis=1).astype(self.dtype)  # [K, D+H, 4H]
            xh = jnp.concatenate([step_inputs, h.astype(self.dtype)], axis=-1)
            gates = jnp.einsum("knd,kdg->kng", xh, weights) + bias[:, None, :].astype(self.dtype)
        else:
            gates = step_inputs + jnp.einsum("knh,khg->kng", h.astype(self.dtype), kernel.astype(self.dtype))
        gates = layers.upcast(gates)
        i, f, g, o = jnp.split(gates, 4, axis=-1)
        new_c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        new_h = (jax.nn.sigmoid(o) * jnp.tanh(new_c)).astype(h.dtype)
        h, c = jnp.where(mask, new_h, h), jnp.where(mask, new_c, c)
        return (h, c), h.astype(self.dtype)


class GRUStep(nn.Module):
    """One time step of K independent GRUs (Cho et al. 2014, cuDNN variant: r gates U_n h + b_hn).

    The state h is carried in float32 (>= `dtype`) and only its matmul input is cast to `dtype`:
    h_t = (1 - z) n + z h_{t-1} is a running average, and in bfloat16 an update smaller than half a
    unit in the last place of h (z near 1) is lost, so the state stalls over a long sequence.
    The step's output is h in `dtype`.
    """

    hidden_size: int
    num_directions: int
    fused_input: bool = True
    dtype: layers.Dtype = jnp.float32

    @nn.compact
    def __call__(self, carry: Array, inputs, input_kernel: Array, bias: Array):
        step_inputs, mask, reset = _stack_directions(inputs)
        h = _reset(carry, reset)  # [K, N, H] float32
        k, hs = self.num_directions, self.hidden_size
        kernel = self.param("kernel", nn.initializers.orthogonal(), (k, hs, 3 * hs), jnp.float32)
        recurrent_bias = self.param("bias", nn.initializers.zeros, (k, 1, 3 * hs), jnp.float32)
        if self.fused_input:  # the n gate needs x W_n and h U_n apart: two matmuls
            projected = (jnp.einsum("knd,kdg->kng", step_inputs, input_kernel.astype(self.dtype))
                         + bias[:, None, :].astype(self.dtype))
        else:
            projected = step_inputs
        recurrent = (jnp.einsum("knh,khg->kng", h.astype(self.dtype), kernel.astype(self.dtype))
                     + recurrent_bias.astype(self.dtype))
        recurrent, projected = layers.upcast(recurrent), layers.upcast(projected)
        p_r, p_z, p_n = jnp.split(projected, 3, axis=-1)
        h_r, h_z, h_n = jnp.split(recurrent, 3, axis=-1)
        r = jax.nn.sigmoid(p_r + h_r)
        z = jax.nn.sigmoid(p_z + h_z)
        n = jnp.tanh(p_n + r * h_n)
        new_h = ((1.0 - z) * n + z * layers.upcast(h)).astype(h.dtype)
        h = jnp.where(mask, new_h, h)
        return h, h.astype(self.dtype)


def _stack_directions(inputs):
    """Per-direction step inputs ((in_0, in_1, ...), (mask_0, ...)[, (reset_0, ...)]) -> stacked
    [K, ...]; the reset flags are None for unpacked sequences."""
    step_inputs, masks, *resets = inputs
    reset = jnp.stack(resets[0])[..., None] if resets else None
    return jnp.stack(step_inputs), jnp.stack(masks)[..., None], reset


def _reset(carry, reset):
    """Zeroes the state entering a step where a packed segment starts (reset [K, N, 1])."""
    if reset is None:
        return carry
    return jax.tree.map(lambda state: jnp.where(reset, 0, state), carry)


def segment_boundaries(segments: Array, mask: Array) -> tuple[Array, Array]:
    """Packed rows, time-major segments / mask [T, N] -> (starts, ends) [T, N] bool: the first and
    the last real step of each segment (a segment is a run of equal ids between padding)."""
    same_as_previous = (segments[1:] == segments[:-1]) & mask[:-1]
    starts = mask & ~jnp.concatenate([jnp.zeros_like(mask[:1]), same_as_previous], axis=0)
    same_as_next = (segments[:-1] == segments[1:]) & mask[1:]
    ends = mask & ~jnp.concatenate([same_as_next, jnp.zeros_like(mask[:1])], axis=0)
    return starts, ends


def _forget_bias_init(cell: str, hidden_size: int):
    """LSTM forget-gate bias 1 (Jozefowicz et al. 2015), everything else 0."""

    def init(key, shape, dtype=jnp.float32):
        del key
        bias = jnp.zeros(shape, dtype)
        if cell == "lstm":
            bias = bias.at[..., hidden_size:2 * hidden_size].set(1.0)
        return bias

    return init


CHUNK_ROWS = 1024  # rows (steps x sequences) per chunk of the chunked LSTM: its matmuls stay in cache
MAX_CHUNKS = 16  # chunks are a Python loop (one program region each): bound the program size


def chunk_length(steps: int, rows: int) -> int:
    """Steps per chunk: about CHUNK_ROWS rows, at most MAX_CHUNKS chunks, within [1, steps]."""
    return max(1, min(steps, max(CHUNK_ROWS // max(rows, 1), -(-steps // MAX_CHUNKS))))


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def lstm_chunked(x: Array, mask: Array, input_kernel: Array, bias: Array, kernel: Array, chunk: int,
                 unroll: int = 1, resets: Array | None = None):
    """K LSTMs (K = 1 or 2 directions) over time, in chunks of `chunk` steps, with a hand-written VJP.

    x [T, N, D]; mask [T, N] bool (a padded step carries the state through); input_kernel
    [K, D, 4H]; bias [K, 4H]; kernel [K, H, 4H]. Direction 1 reads time backwards. Returns
    (outputs [T, K, N, H] in each direction's own time order, final h [K, N, H]). Same numbers as
    the `nn.scan` LSTMStep on (x, x[::-1]).

    `resets` [T, K, N] bool (packed sequences; None: one sequence a row): where True the state
    entering that step of that direction (in the direction's own time order) is zero, so a new
    segment starts fresh and no gradient flows back across its start.

    Why: autodiff of a scan accumulates the recurrent kernel's gradient with a small matmul at every
    step, and hoisting x W out of the scan sends [T*N, 4H] projections (20 MB at HAN's word level)
    and their gradients through memory. Here time is cut into chunks of ~CHUNK_ROWS rows: a chunk
    is projected with one [chunk*N, D] x [D, 4H] matmul per direction (which stays in cache), then
    a scan runs its steps with one [K, N, H] x [K, H, 4H] matmul each. The backward pass mirrors
    it: a reverse scan only propagates the state gradients and saves each step's gate gradients;
    the chunk's dx, dW, db and dU are then a few chunk-sized matmuls. The loop over chunks is a
    Python loop, so the saved activations stay per chunk (no stacked [T, ...] buffers to fill).
    """
    return _lstm_chunked_forward(x, mask, input_kernel, bias, kernel, chunk, unroll, resets)[0]


def _gate_constants(hidden: int, dtype):
    """Gates [i, f, g, o] activated by ONE tanh: act = a * tanh(s * z) + b, with
    sigmoid(z) = 0.5 tanh(z / 2) + 0.5 for i, f, o and tanh(z) for g; d act / d z = a s (1 - t^2)."""
    half, one = jnp.full((hidden,), 0.5, dtype), jnp.ones((hidden,), dtype)
    scale = jnp.concatenate([half, half, one, half])
    offset = jnp.concatenate([half, half, 0 * one, half])
    return scale, offset  # a == s for every gate


def _spans(steps: int, chunk: int) -> list[tuple[int, int]]:
    return [(start, min(start + chunk, steps)) for start in range(0, steps, chunk)]


def _direction_rows(x: Array, direction: int, start: int, stop: int) -> Array:
    """Steps start..stop of `direction`'s time order: x[start:stop], or x[T-stop:T-start] reversed."""
    steps = x.shape[0]
    return x[start:stop] if direction == 0 else x[steps - stop:steps - start][::-1]


def _lstm_chunked_forward(x, mask, input_kernel, bias, kernel, chunk, unroll, resets):
    k, hidden = kernel.shape[0], kernel.shape[1]
    steps, batch, _ = x.shape
    dtype = x.dtype
    cell_dtype = jnp.promote_types(dtype, jnp.float32)
    w, b, u = input_kernel.astype(dtype), bias.astype(dtype), kernel.astype(dtype)
    scale, offset = _gate_constants(hidden, cell_dtype)
    stacked_masks = jnp.stack((mask, mask[::-1])[:k], axis=1)[..., None]  # [T, K, N, 1]
    step_resets = None if resets is None else resets[..., None]  # [T, K, N, 1]

    def step(carry, step_inputs):
        h, c = carry
        if step_resets is None:
            p, m = step_inputs  # [K, N, 4H], [K, N, 1]
        else:
            p, m, r = step_inputs
            h, c = jnp.where(r, 0, h), jnp.where(r, 0, c)
        gates = layers.upcast(p + jnp.einsum("knh,khg->kng", h, u))
        act = scale * jnp.tanh(scale * gates) + offset  # sigmoid(i), sigmoid(f), tanh(g), sigmoid(o)
        i, f, g, o = jnp.split(act, 4, axis=-1)
        new_c = f * c + i * g
        tanh_c = jnp.tanh(new_c)
        new_h = (o * tanh_c).astype(dtype)
        h_out, c_out = jnp.where(m, new_h, h), jnp.where(m, new_c, c)
        # Saved for the backward pass: the activated gates and the states (tanh(c) is recomputed).
        return (h_out, c_out), (h_out, c_out, act)

    carry = (jnp.zeros((k, batch, hidden), dtype), jnp.zeros((k, batch, hidden), cell_dtype))
    saved = []
    for start, stop in _spans(steps, chunk):
        rows = tuple(_direction_rows(x, d, start, stop) for d in range(k))  # [chunk, N, D] each
        projected = jnp.stack([jnp.einsum("tnd,dg->tng", rows[d], w[d]) + b[d] for d in range(k)],
                              axis=1)  # [chunk, K, N, 4H]
        inputs = (projected, stacked_masks[start:stop])
        if step_resets is not None:
            inputs += (step_resets[start:stop],)
        carry, (hs, cs, acts) = jax.lax.scan(step, carry, inputs, unroll=unroll)
        saved.append((rows, hs, cs, acts))  # the chunk's inputs and [chunk, K, N, ...] activations
    hs = jnp.concatenate([hs for _, hs, _, _ in saved], axis=0) if len(saved) > 1 else saved[0][1]
    return (hs, carry[0]), saved


def _lstm_chunked_fwd(x, mask, input_kernel, bias, kernel, chunk, unroll, resets):
    outputs, saved = _lstm_chunked_forward(x, mask, input_kernel, bias, kernel, chunk, unroll, resets)
    return outputs, (x, mask, input_kernel, bias, kernel, saved, resets)


def _lstm_chunked_bwd(chunk, unroll, residuals, cotangents):
    x, mask, input_kernel, bias, kernel, saved, resets = residuals
    d_outputs, d_final = cotangents  # [T, K, N, H], [K, N, H]
    k, hidden = kernel.shape[0], kernel.shape[1]
    steps, batch, _ = x.shape
    dtype = saved[0][1].dtype
    cell_dtype = saved[0][2].dtype
    w, u = input_kernel.astype(dtype), kernel.astype(dtype)
    scale, offset = _gate_constants(hidden, cell_dtype)
    stacked_masks = jnp.stack((mask, mask[::-1])[:k], axis=1)  # [T, K, N]

    def step(carry, step_inputs):
        dh, dc = carry  # gradients reaching the state that leaves this step, both float32 (cell_dtype)
        if resets is None:
            dy, act, c_after, c_before, m = step_inputs
        else:
            dy, act, c_after, c_before, m, r = step_inputs
        tanh_c = jnp.tanh(c_after)  # c_after == c_new wherever the step is real (m), the rest is masked
        dh = layers.upcast(dh + dy)
        m = m[..., None]
        dh_new, dc_new = jnp.where(m, dh, 0.0), jnp.where(m, dc, 0.0)
        i, f, g, o = jnp.split(act, 4, axis=-1)
        dc_new = dc_new + dh_new * o * (1.0 - tanh_c * tanh_c)
        d_act = jnp.concatenate([dc_new * g, dc_new * c_before, dc_new * i, dh_new * tanh_c], axis=-1)
        t = (act - offset) / scale  # the tanh of each gate's pre-activation
        d_gates = (d_act * scale * scale * (1.0 - t * t)).astype(dtype)
        dh_prev = jnp.einsum("kng,khg->knh", d_gates, u, preferred_element_type=cell_dtype) + jnp.where(m, 0.0, dh)
        dc_prev = dc_new * f + jnp.where(m, 0.0, dc)
        if resets is not None:  # the state entering a segment's first step was a constant zero
            r = r[..., None]
            dh_prev, dc_prev = jnp.where(r, 0.0, dh_prev), jnp.where(r, 0.0, dc_prev)
        # One output per direction: the chunk's matmuls then read contiguous [chunk, N, 4H] blocks.
        return (dh_prev, dc_prev), tuple(d_gates[d] for d in range(k))

    accumulate = jnp.promote_types(dtype, jnp.float32)
    d_w = [jnp.zeros(input_kernel.shape[1:], accumulate) for _ in range(k)]
    d_b = [jnp.zeros(bias.shape[1:], accumulate) for _ in range(k)]
    d_u = [jnp.zeros(kernel.shape[1:], accumulate) for _ in range(k)]
    # dh is carried in float32 like dc: in bfloat16 it was rounded at every step (dh + dy included).
    carry = (d_final.astype(cell_dtype), jnp.zeros((k, batch, hidden), cell_dtype))
    spans = _spans(steps, chunk)
    d_inputs = [[None] * len(spans) for _ in range(k)]
    zeros_h, zeros_c = jnp.zeros((1, k, batch, hidden), dtype), jnp.zeros((1, k, batch, hidden), cell_dtype)
    for index in reversed(range(len(spans))):
        start, stop = spans[index]
        rows, hs, cs, acts = saved[index]
        h_last, c_last = (saved[index - 1][1][-1:], saved[index - 1][2][-1:]) if index else (zeros_h, zeros_c)
        h_before = jnp.concatenate([h_last, hs[:-1]], axis=0)  # the state entering each step
        c_before = jnp.concatenate([c_last, cs[:-1]], axis=0)
        chunk_resets = ()
        if resets is not None:  # a segment's first step started from zero, not from the step before
            r = resets[start:stop, ..., None]
            h_before, c_before = jnp.where(r, 0, h_before), jnp.where(r, 0, c_before)
            chunk_resets = (resets[start:stop],)
        inputs = (d_outputs[start:stop].astype(dtype), acts, cs, c_before, stacked_masks[start:stop], *chunk_resets)
        carry, d_gates = jax.lax.scan(step, carry, inputs, reverse=True, unroll=unroll)
        for d in range(k):
            g_d = d_gates[d]  # [chunk, N, 4H]
            d_inputs[d][index] = jnp.einsum("tng,dg->tnd", g_d, w[d])
            # Each chunk's sums come out in float32 (not rounded to bfloat16 before they are added).
            d_w[d] = d_w[d] + jnp.einsum("tnd,tng->dg", rows[d], g_d, preferred_element_type=accumulate)
            d_b[d] = d_b[d] + jnp.sum(g_d, axis=(0, 1), dtype=accumulate)
            d_u[d] = d_u[d] + jnp.einsum("tnh,tng->hg", h_before[:, d], g_d, preferred_element_type=accumulate)
    d_x = jnp.concatenate(d_inputs[0], axis=0)
    if k == 2:  # direction 1's chunks run backwards in time: reverse them back and add
        d_x = d_x + jnp.concatenate(d_inputs[1], axis=0)[::-1]
    return (d_x.astype(x.dtype), None, jnp.stack(d_w).astype(input_kernel.dtype),
            jnp.stack(d_b).astype(bias.dtype), jnp.stack(d_u).astype(kernel.dtype), None)


lstm_chunked.defvjp(_lstm_chunked_fwd, _lstm_chunked_bwd)


class RecurrentKernel(nn.Module):
    """Declares `kernel` [K, H, 4H] exactly as LSTMStep does, so both paths share one param tree."""

    hidden_size: int
    num_directions: int

    @nn.compact
    def __call__(self) -> Array:
        return self.param("kernel", nn.initializers.orthogonal(), (self.num_directions, self.hidden_size,
                                                                   4 * self.hidden_size), jnp.float32)


PROJECTIONS = ("auto", "chunked", "fused", "hoisted")


class RecurrentLayer(nn.Module):
    """One LSTM/GRU layer, both directions in one scan. x [T, N, D], mask [T, N] ->
    (outputs [T, N, K*H] with forward then backward features, final states [N, K*H]).

    `input_projection`: "fused", "hoisted" or "chunked" (see the module docstring; all give the
    same numbers), or "auto": the backend's pick (`backend.recurrent_projection`: on CPU "chunked"
    for an LSTM, for a GRU "hoisted" below 128 rows a step, else "fused"; "hoisted" on
    accelerators). Parameters: `input_kernel` [K, D, G], `bias` [K, G], `recurrent/kernel`
    [K, H, G] (+ `recurrent/bias` for a GRU) whichever path runs.
    """

    cell: str = "lstm"
    hidden_size: int = 100
    bidirectional: bool = True
    unroll: int = 1
    kernel_init: str = "glorot_uniform"
    dtype: layers.Dtype = jnp.float32
    input_projection: str = "auto"

    @nn.compact
    def __call__(self, x: Array, mask: Array, segments: Array | None = None) -> tuple[Array, Array | None]:
        """`segments` [T, N] (packed rows): the state resets at each segment's first step, in
        both directions; the final states are then None (a row holds many sequences)."""
        if self.cell not in CELLS:
            raise ValueError(f"unknown cell {self.cell!r}; choose one of {CELLS}")
        if self.input_projection not in PROJECTIONS:
            raise ValueError(f"unknown input_projection {self.input_projection!r}; choose one of {PROJECTIONS}")
        k = 2 if self.bidirectional else 1
        gates = GATES[self.cell] * self.hidden_size
        steps, batch, features = x.shape
        input_kernel = self.param("input_kernel", layers.initializer(self.kernel_init, batch_axis=(0,)),
                                  (k, features, gates), jnp.float32)
        bias = self.param("bias", _forget_bias_init(self.cell, self.hidden_size), (k, gates), jnp.float32)
        mode = self.input_projection
        if mode == "auto":
            mode = backend.recurrent_projection(self.cell, batch)
        if mode == "chunked" and self.cell != "lstm":
            mode = "fused"

        # Direction 1 reads the time-flipped sequence; the state carry-through at padded steps makes
        # it start at each sequence's real end. Packed: direction 1 resets at each segment's end.
        x = x.astype(self.dtype)
        resets = None
        if segments is not None:
            starts, ends = segment_boundaries(segments, mask)
            resets = (starts, ends[::-1])[:k]
        if mode == "chunked":
            kernel = RecurrentKernel(self.hidden_size, k, name="recurrent")()
            outputs, final = lstm_chunked(x, mask, input_kernel, bias, kernel, chunk_length(steps, batch),
                                          self.unroll, None if resets is None else jnp.stack(resets, axis=1))
            outputs = jnp.moveaxis(outputs, 1, 0)  # [K, T, N, H]; final [K, N, H]
        else:
            inputs = (x, x[::-1])[:k]
            masks = (mask, mask[::-1])[:k]
            if mode == "hoisted":
                inputs = tuple(jnp.einsum("tnd,dg->tng", inputs[d], input_kernel[d].astype(self.dtype))
                               + bias[d].astype(self.dtype) for d in range(k))
            step = LSTMStep if self.cell == "lstm" else GRUStep
            scan = nn.scan(step, variable_broadcast="params", split_rngs={"params": False},
                           in_axes=(0, nn.broadcast, nn.broadcast), out_axes=1, unroll=self.unroll)
            # The states (and so their gradients) are carried in float32 (>= the compute dtype).
            state = jnp.zeros((k, batch, self.hidden_size), layers.accumulate_dtype(self.dtype))
            carry = (state, state) if self.cell == "lstm" else state
            step_inputs = (inputs, masks) if resets is None else (inputs, masks, resets)
            carry, outputs = scan(self.hidden_size, k, mode == "fused", self.dtype, name="recurrent")(
                carry, step_inputs, input_kernel, bias)  # outputs [K, T, N, H]
            final = (carry[0] if self.cell == "lstm" else carry).astype(self.dtype)  # [K, N, H]
        if k == 2:
            outputs = jnp.concatenate([outputs[0], outputs[1, ::-1]], axis=-1)  # [T, N, 2H]
        else:
            outputs = outputs[0]
        if segments is not None:
            return outputs, None
        return outputs, einops.rearrange(final, "k n h -> n (k h)")


class RecurrentEncoder(nn.Module):
    """Stacked (1..N layers) uni- or bidirectional LSTM/GRU with dropout between layers.

    x [T, N, D], mask [T, N] -> (outputs [T, N, K*H], final [N, K*H] = last layer's final states).
    """

    cell: str = "lstm"
    hidden_size: int = 100
    bidirectional: bool = True
    num_layers: int = 1
    dropout: float = 0.0
    unroll: int = 1
    kernel_init: str = "glorot_uniform"
    dtype: layers.Dtype = jnp.float32
    input_projection: str = "auto"

    @nn.compact
    def __call__(self, x: Array, mask: Array, *, train: bool,
                 segments: Array | None = None) -> tuple[Array, Array | None]:
        """`segments` [T, N]: packed rows, one sequence per segment (final states then None)."""
        if self.num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {self.num_layers}")
        final = None
        for index in range(self.num_layers):
            if index > 0:
                x = nn.Dropout(self.dropout, deterministic=not train)(x)
            x, final = RecurrentLayer(self.cell, self.hidden_size, self.bidirectional, self.unroll,
                                      self.kernel_init, self.dtype, self.input_projection,
                                      name=f"layer_{index}")(x, mask, segments)
        return x, final

    @property
    def features(self) -> int:
        return self.hidden_size * (2 if self.bidirectional else 1)


POOLINGS = ("last", "mean", "max", "attention")


class SequencePooling(nn.Module):
    """Pools encoder outputs [T, N, D] to [N, D]: last (final states), mean, max or attention."""

    kind: str = "mean"
    attention_dim: int = 100
    activation: str = "tanh"
    kernel_init: str = "glorot_uniform"
    dtype: layers.Dtype = jnp.float32

    @nn.compact
    def __call__(self, outputs: Array, mask: Array, final: Array | None = None,
                 condition: Array | None = None, *, segments: Array | None = None,
                 num_segments: int | None = None, directions: int = 1) -> Array:
        """Packed rows: `segments` [T, N] -> one vector per segment [num_segments, D]; "last" then
        reads the forward half at each segment's end and the backward half at its start."""
        if segments is not None:
            return self._pool_segments(outputs, mask, segments, num_segments, directions)
        if self.kind == "last":
            return final if final is not None else layers.last_step(outputs, mask)
        if self.kind == "mean":
            return layers.masked_mean(outputs, mask)
        if self.kind == "max":
            return layers.masked_max(outputs, mask)
        if self.kind == "attention":  # weights sown as intermediates pooling/attention/weights [N, T]
            pooled, _ = layers.AdditiveAttention(self.attention_dim, self.activation, self.kernel_init,
                                                       self.dtype, name="attention")(outputs, mask, condition)
            return pooled
        raise ValueError(f"unknown pooling {self.kind!r}; choose one of {POOLINGS}")

    def _pool_segments(self, outputs, mask, segments, num_segments, directions):
        flat_segments = segments.reshape(-1)
        features = outputs.shape[-1]
        if self.kind == "last":
            starts, ends = segment_boundaries(segments, mask)
            half = features // directions
            forward = jnp.where(ends[..., None], outputs[..., :half], 0).reshape(-1, half)
            pooled = [jax.ops.segment_sum(forward, flat_segments, num_segments)]
            if directions == 2:
                backward = jnp.where(starts[..., None], outputs[..., half:], 0).reshape(-1, features - half)
                pooled.append(jax.ops.segment_sum(backward, flat_segments, num_segments))
            return jnp.concatenate(pooled, axis=-1)
        if self.kind == "mean":  # sum and count in float32: a bfloat16 scatter-add count stops at 256
            accumulate = layers.accumulate_dtype(outputs.dtype)
            m = mask.astype(accumulate)
            total = layers.segment_pool(m, outputs.astype(accumulate), segments, num_segments)
            count = jax.ops.segment_sum(m.reshape(-1), flat_segments, num_segments)
            return (total / jnp.maximum(count, 1.0)[:, None]).astype(outputs.dtype)
        if self.kind == "max":
            return layers.segment_masked_max(outputs, mask, segments, num_segments)
        if self.kind == "attention":
            pooled, _ = layers.AdditiveAttention(self.attention_dim, self.activation, self.kernel_init,
                                                 self.dtype, name="attention")(
                outputs, mask, segments=segments, num_segments=num_segments)
            return pooled
        raise ValueError(f"unknown pooling {self.kind!r}; choose one of {POOLINGS}")

