"""What a training step costs: memory, FLOPs, throughput and MFU (MaxText-style accounting).

Memory (`step_memory`): XLA's memory analysis of the compiled step, for one device: the
parameters and the optimiser state as they are sharded, the batch, and the temporaries (the
activations and gradients the step keeps alive at once). Peak = arguments + temporaries + outputs
not written in place of donated arguments. Past a device's memory, gradient accumulation
(`optimizer.accumulation_steps`) trains the same global batch in smaller pieces.

FLOPs (`count_flops`): counted from the step's jaxpr, not XLA's cost analysis: 2 per
multiply-add of every matrix product (`dot_general`) and convolution, the body of a loop times its
trip count (a scan over T time steps counts T times; XLA's cost analysis counts a loop's body
once, so it undercounts a recurrent model by its sequence length). Elementwise work (activations,
the optimiser's update) is left out: MFU measures the matrix units. The count is of the program
as written, so a custom backward pass that skips work (the Kim CNN's sparse input gradient) counts
what it does, not 2x its forward pass.

MFU = achieved FLOP/s / (devices x the chip's peak dense bf16 FLOP/s, `PEAK_FLOPS` by device kind).
CPUs have no entry: their figure is reported as None.
"""
from __future__ import annotations

import math

import jax
import jax.extend

# Peak dense bfloat16 matmul FLOP/s of one JAX device, by a substring of `device.device_kind`
# (first match wins). From the vendors' data sheets (dense, no sparsity).
PEAK_FLOPS = (
    ("TPU v6", 918e12),  # Trillium (v6e)
    ("TPU v5p", 459e12),
    ("TPU v5 lite", 197e12),  # v5e
    ("TPU v5e", 197e12),
    ("TPU v5", 459e12),
    ("TPU v4", 275e12),
    ("TPU v3", 61.5e12),  # one of a chip's two cores (a JAX device)
    ("TPU v2", 22.5e12),
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),  # SXM
    ("GH200", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
    ("A10G", 70e12),
    ("A10", 125e12),
    ("V100", 125e12),  # float16 tensor cores: V100 has no bfloat16
    ("T4", 65e12),  # float16
)


# float32 matmuls: JAX's default precision runs them as TF32 on GPUs that have it (half the dense
# bf16 rate) and as bf16 passes on TPUs (the bf16 rate); these GPUs have no TF32: their float32 peak.
FLOAT32_PEAK_FLOPS = (("V100", 15.7e12), ("T4", 8.1e12))


def peak_flops(device=None, dtype: str = "bfloat16") -> float | None:
    """The peak dense FLOP/s of `device` (default: the first) for matmuls in `dtype` (the compute
    dtype: bfloat16, or float32 at JAX's default precision), or None where unknown (CPU)."""
    device = jax.devices()[0] if device is None else device
    if device.platform == "cpu":
        return None
    kind = getattr(device, "device_kind", "").lower()
    if dtype == "float32" and device.platform != "tpu":
        for name, peak in FLOAT32_PEAK_FLOPS:
            if name.lower() in kind:
                return peak
    for name, peak in PEAK_FLOPS:
        if name.lower() in kind:
            return peak / 2 if dtype == "float32" and device.platform != "tpu" else peak
    return None


# -- FLOPs ------------------------------------------------------------------------------------------

def _dot_flops(eqn) -> int:
    (lhs_contracting, _), _ = eqn.params["dimension_numbers"]
    lhs = eqn.invars[0].aval.shape
    out = eqn.outvars[0].aval.shape
    return 2 * math.prod(out) * math.prod(lhs[d] for d in lhs_contracting)


def _conv_flops(eqn) -> int:
    rhs = eqn.invars[1].aval.shape
    out = eqn.outvars[0].aval.shape
    out_features = rhs[eqn.params["dimension_numbers"].rhs_spec[0]]
    return 2 * math.prod(out) * math.prod(rhs) // max(1, out_features)


def _sub_jaxprs(value):
    if isinstance(value, jax.extend.core.ClosedJaxpr):
        yield value.jaxpr
    elif isinstance(value, jax.extend.core.Jaxpr):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _sub_jaxprs(item)


def count_flops(jaxpr) -> int:
    """Matmul and convolution FLOPs of a (Closed)Jaxpr, loop bodies times their trip count; the
    branches of a `cond` count as the most expensive one; a `while` of unknown trip count counts
    its body once (none in the library's steps: their loops are scans)."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    total = 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            total += _dot_flops(eqn)
        elif name == "conv_general_dilated":
            total += _conv_flops(eqn)
        elif name == "scan":
            total += eqn.params["length"] * count_flops(eqn.params["jaxpr"])
        elif name == "cond":
            total += max(count_flops(branch) for branch in eqn.params["branches"])
        else:
            for value in eqn.params.values():
                for sub in _sub_jaxprs(value):
                    total += count_flops(sub)
    return total


# -- memory -----------------------------------------------------------------------------------------

def step_memory(compiled, state) -> dict:
    """Bytes per device of a compiled train step (`jit(...).lower(...).compile()`) taking `state`
    (a TrainState, or a dict with "params" and "opt_state")."""
    from jaxreviews.train import sharding

    analysis = compiled.memory_analysis()
    parts = state if isinstance(state, dict) else {"params": state.params, "opt_state": state.opt_state}
    parameters = sharding.bytes_per_device(parts["params"])
    optimizer = sharding.bytes_per_device(parts["opt_state"])
    arguments = int(analysis.argument_size_in_bytes)
    temporaries = int(analysis.temp_size_in_bytes)
    unaliased_outputs = int(analysis.output_size_in_bytes) - int(analysis.alias_size_in_bytes)
    return {"parameter_bytes": int(parameters), "optimizer_state_bytes": int(optimizer),
            "argument_bytes": arguments, "batch_bytes": max(0, arguments - int(parameters) - int(optimizer)),
            "temporary_bytes": temporaries, "peak_bytes": arguments + temporaries + max(0, unaliased_outputs)}


def format_bytes(count: float) -> str:
    for unit, size in (("GB", 2 ** 30), ("MB", 2 ** 20), ("KB", 2 ** 10)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{int(count)} B"


def step_costs(traced, compiled, state) -> dict:
    """Memory (per device) and counted FLOPs (the whole step, all devices) of a train step taking
    `state`, from its trace and its program (`compilation.compile_ahead`)."""
    return {**step_memory(compiled, state), "flops_per_step": count_flops(traced.jaxpr)}


def describe_memory(costs: dict) -> str:
    return (f"parameters {format_bytes(costs['parameter_bytes'])}, optimiser state "
            f"{format_bytes(costs['optimizer_state_bytes'])}, batch {format_bytes(costs['batch_bytes'])}, "
            f"temporaries {format_bytes(costs['temporary_bytes'])}, peak {format_bytes(costs['peak_bytes'])}")


def throughput(*, flops_per_step: int, steps: int, seconds: float, reviews: int, tokens: float,
               devices: int, device=None, dtype: str = "float32") -> dict:
    """Per-device docs/s and tokens/s, achieved FLOP/s (all devices) and MFU (None on CPU) against
    the peak of the compute `dtype` (float32: TF32 on GPUs)."""
    seconds = max(seconds, 1e-9)
    achieved = flops_per_step * steps / seconds
    peak = peak_flops(device, dtype)
    return {"docs_per_s_per_device": round(reviews / seconds / devices, 1),
            "tokens_per_s_per_device": round(tokens / seconds / devices, 1),
            "flops_per_step": int(flops_per_step), "achieved_flops_per_s": float(f"{achieved:.4g}"),
            "peak_flops_per_device": peak,
            "mfu": None if peak is None else float(f"{achieved / (peak * devices):.4g}")}
