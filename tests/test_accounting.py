"""Step accounting (jaxreviews/train/accounting.py): counted FLOPs against hand counts, the memory
report against the arrays it describes, MFU against the chip table."""
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxreviews.train import accounting
from tests.test_models import B, CLASSES, build, make_batch, tiny_config

BATCH, INPUTS, HIDDEN, OUTPUTS = 16, 24, 40, 5


class TwoLayers(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(OUTPUTS)(jnp.tanh(nn.Dense(HIDDEN)(x)))


def mlp_program():
    model, tx = TwoLayers(), optax.adam(1e-3)
    x = jnp.ones((BATCH, INPUTS))
    labels = jnp.zeros(BATCH, jnp.int32)
    params = model.init(jax.random.key(0), x)["params"]
    state = {"params": params, "opt_state": tx.init(params)}

    def step(state, x, labels):
        def loss(p):
            return optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": p}, x), labels).mean()

        grads = jax.grad(loss)(state["params"])
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        return {"params": optax.apply_updates(state["params"], updates), "opt_state": opt_state}, None

    return jax.jit(step, donate_argnums=0), state, x, labels


def test_flops_of_a_two_layer_train_step_are_the_hand_count():
    """Forward 2BIH + 2BHO; backward: both kernels' gradients (2BIH + 2BHO) and the hidden layer's
    input gradient (2BHO; the input's is not needed). Adam's update is elementwise: not counted."""
    step, state, x, labels = mlp_program()
    counted = accounting.count_flops(step.trace(state, x, labels).jaxpr)
    assert counted == 4 * BATCH * INPUTS * HIDDEN + 6 * BATCH * HIDDEN * OUTPUTS


def test_a_scan_counts_its_body_times_its_length_where_xla_counts_it_once():
    steps, width = 50, 32

    def recurrence(h, w):
        return jax.lax.scan(lambda c, _: (jnp.tanh(c @ w), None), h, None, length=steps)[0]

    h, w = jnp.ones((4, width)), jnp.ones((width, width))
    one_step = 2 * 4 * width * width
    assert accounting.count_flops(jax.make_jaxpr(recurrence)(h, w)) == steps * one_step
    # ... and the backward pass: per step dh and dw, 2 more products of the same size.
    grad = jax.make_jaxpr(jax.grad(lambda w: recurrence(h, w).sum()))(w)
    assert accounting.count_flops(grad) == 3 * steps * one_step
    xla = jax.jit(recurrence).lower(h, w).compile().cost_analysis()["flops"]
    assert xla < 2 * one_step  # why the library counts itself


def test_flops_of_the_kim_cnn_forward_are_the_hand_count():
    """tiny cnn: embed E=16, widths 3/4/5 x F=8 filters, B=3 reviews of T=12 tokens. One matmul gives
    every tap of every filter, x [B, T + 4 (the widest window's tail), E] @ [E, (3+4+5) F]; the
    head [B, 3F] @ [3F, C]; the expected rating [B, C] @ [C]."""
    config = tiny_config("cnn")
    model, batch = build(config), make_batch()
    variables = jax.jit(lambda b: model.init({"params": jax.random.key(0)}, b, train=False))(batch)
    embed, filters, tokens = config.embed_dim, config.num_filters, batch["tokens"].shape[1]
    hand = (2 * B * (tokens + 4) * embed * sum(config.filter_widths) * filters
            + 2 * B * len(config.filter_widths) * filters * CLASSES + 2 * B * CLASSES)
    jaxpr = jax.make_jaxpr(lambda v, b: model.apply(v, b, train=False))(variables, batch)
    assert accounting.count_flops(jaxpr) == hand


def test_memory_report_describes_the_step_arrays():
    step, state, x, labels = mlp_program()
    compiled = step.lower(state, x, labels).compile()
    memory = accounting.step_memory(compiled, state)
    parameters = 4 * (INPUTS * HIDDEN + HIDDEN + HIDDEN * OUTPUTS + OUTPUTS)
    assert memory["parameter_bytes"] == parameters
    assert memory["optimizer_state_bytes"] == 2 * parameters + 4  # mu, nu and the step count
    assert memory["argument_bytes"] >= parameters * 3 + x.nbytes
    assert memory["peak_bytes"] >= memory["argument_bytes"] + memory["temporary_bytes"]
    assert accounting.describe_memory(memory).startswith("parameters 4.7 KB, optimiser state 9.4 KB, batch 1.6 KB")


def test_mfu_uses_the_chip_peak_and_none_on_cpu():
    assert accounting.peak_flops(types.SimpleNamespace(platform="cpu", device_kind="cpu")) is None
    h100 = types.SimpleNamespace(platform="gpu", device_kind="NVIDIA H100 80GB HBM3")
    assert accounting.peak_flops(h100) == 989e12
    assert accounting.peak_flops(types.SimpleNamespace(platform="gpu", device_kind="NVIDIA H100 PCIe")) == 756e12
    assert accounting.peak_flops(types.SimpleNamespace(platform="tpu", device_kind="TPU v5 lite")) == 197e12
    figures = accounting.throughput(flops_per_step=10 ** 12, steps=100, seconds=2.0, reviews=6400, tokens=640000,
                                    devices=8, device=h100, dtype="bfloat16")
    assert figures["achieved_flops_per_s"] == 5e13
    np.testing.assert_allclose(figures["mfu"], 5e13 / (8 * 989e12), rtol=1e-3)
    assert figures["docs_per_s_per_device"] == 400 and figures["tokens_per_s_per_device"] == 40000


def test_float32_is_measured_against_the_peak_it_runs_at():
    """float32 matmuls run as TF32 on GPUs (half the bf16 rate; V100 and T4 have no TF32: their
    float32 rate) and as bf16 passes on TPUs: MFU against that peak, not bfloat16's."""
    gpu = lambda kind: types.SimpleNamespace(platform="gpu", device_kind=kind)  # noqa: E731
    assert accounting.peak_flops(gpu("NVIDIA H200"), "float32") == 989e12 / 2
    assert accounting.peak_flops(gpu("NVIDIA H200"), "bfloat16") == 989e12
    assert accounting.peak_flops(gpu("Tesla V100-SXM2-16GB"), "float32") == 15.7e12
    assert accounting.peak_flops(types.SimpleNamespace(platform="tpu", device_kind="TPU v4"), "float32") == 275e12
    figures = accounting.throughput(flops_per_step=10 ** 12, steps=100, seconds=2.0, reviews=6400, tokens=640000,
                                    devices=1, device=gpu("NVIDIA H200"))  # float32, the default
    np.testing.assert_allclose(figures["mfu"], 5e13 / (989e12 / 2), rtol=1e-3)
    cpu = accounting.throughput(flops_per_step=1, steps=1, seconds=1.0, reviews=1, tokens=1, devices=1,
                                device=types.SimpleNamespace(platform="cpu", device_kind="cpu"))
    assert cpu["mfu"] is None
