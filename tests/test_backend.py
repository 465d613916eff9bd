"""What "auto" picks per backend (models/backend.py): the accelerator's picks, forced on this CPU,
give the same numbers as the CPU's (kernels) and a run keeps the layout it started with."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxreviews import models
from jaxreviews.models import backend, cnn
from tests.training import results, run_here, tiny, train


def test_the_picks_per_backend():
    bilstm, han, gru = tiny("bilstm").model, tiny("han").model, tiny("rnn", **{"model.encoder.kind": "gru"}).model
    assert models.batch_layout(bilstm, "auto", "cpu") == models.batch_layout(han, "auto", "gpu") == "packed"
    assert models.batch_layout(bilstm, "auto", "gpu") == models.batch_layout(gru, "auto", "tpu") == "padded"
    assert models.batch_layout(bilstm, "packed", "gpu") == "packed"  # only "auto" is the backend's
    assert backend.recurrent_projection("lstm", 32, "cpu") == "chunked"
    assert backend.recurrent_projection("gru", 32, "cpu") == "hoisted"
    assert backend.recurrent_projection("gru", 512, "cpu") == "fused"
    assert backend.recurrent_projection("lstm", 32, "gpu") == "hoisted"
    assert backend.recurrent_projection("gru", 512, "tpu") == "hoisted"
    assert backend.conv_chunk_tokens("cpu") == 2048 and backend.conv_chunk_tokens("gpu") is None
    assert backend.choices(bilstm, "padded", "gpu") == {
        "backend": "gpu", "data.layout": "padded", "model.encoder.input_projection": "hoisted"}
    assert backend.choices(tiny("cnn").model, "packed", "cpu") == {
        "backend": "cpu", "data.layout": "packed", "cnn max over time": "chunks of ~2048 tokens"}


@pytest.mark.parametrize("widths", [(3, 4, 5), (2,)])
def test_cnn_max_over_time_in_one_chunk_equals_the_cpu_chunks(widths, monkeypatch):
    """The accelerator's one chunk against the CPU's many (forced small: 5 chunks of 2 rows)."""
    rng = np.random.default_rng(0)
    n, steps, e, f = 10, 7, 6, 4
    x = jnp.asarray(rng.normal(size=(n, steps, e)), jnp.float32)
    mask = jnp.arange(steps)[None, :] < jnp.asarray(rng.integers(0, steps + 1, n))[:, None]
    x = jnp.where(mask[..., None], x, 0)
    kernels = tuple(jnp.asarray(rng.normal(size=(w, e, f)), jnp.float32) for w in widths)

    def value_and_grads():
        loss = lambda x, k: jnp.sum(jnp.sin(cnn.conv_max_over_time(x, mask, k)))  # noqa: E731
        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(x, kernels)

    monkeypatch.setattr(backend, "conv_chunk_tokens", lambda backend_name=None: 2 * steps)
    assert cnn._chunk_layout(n, steps) == (1, 5, 2)
    chunked = value_and_grads()
    monkeypatch.setattr(backend, "conv_chunk_tokens", lambda backend_name=None: None)
    assert cnn._chunk_layout(n, steps) == (1, 1, n)
    whole = value_and_grads()
    for a, b in zip(jax.tree.leaves(chunked), jax.tree.leaves(whole)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_a_bilstm_with_the_accelerator_picks_computes_what_the_cpu_picks_do(monkeypatch):
    """The whole model, logits and gradients: "hoisted" (one scan) against the CPU's chunked LSTM."""
    config = tiny("bilstm").model
    model = models.build_model(config, vocab_size=50, num_users=6, num_products=6, num_classes=5,
                               rating_range=(1.0, 5.0))
    rng = np.random.default_rng(1)
    lengths = rng.integers(1, 40, 8)
    batch = {"tokens": jnp.asarray(rng.integers(2, 50, (8, 40)), jnp.int32),
             "token_mask": jnp.arange(40)[None, :] < jnp.asarray(lengths)[:, None],
             "user": jnp.asarray(rng.integers(1, 6, 8), jnp.int32),
             "product": jnp.asarray(rng.integers(1, 6, 8), jnp.int32)}
    variables = model.init({"params": jax.random.key(0)}, batch, train=False)

    def logits_and_grads():
        def loss(params):
            return jnp.sum(jnp.sin(model.apply({**variables, "params": params}, batch, train=False)["logits"]))
        return jax.jit(jax.value_and_grad(loss))(variables["params"])

    cpu = logits_and_grads()
    monkeypatch.setattr(backend, "current", lambda: "gpu")
    assert backend.recurrent_projection("lstm", 8) == "hoisted"
    accelerator = logits_and_grads()
    # float32 sums in another order (the chunked LSTM's own VJP against autodiff of one scan): the
    # tolerances of tests/test_models_masking.py's projection test.
    np.testing.assert_allclose(cpu[0], accelerator[0], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(cpu[1]), jax.tree.leaves(accelerator[1])):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_a_run_keeps_the_layout_it_started_with(tmp_path, monkeypatch):
    """Started on an accelerator (padded buckets for a BiLSTM), resumed on this CPU: the batches
    stay padded, so the resumed run trains on the batches the first one would have."""
    monkeypatch.setattr(backend, "current", lambda: "gpu")
    config = tiny("bilstm", **{"train.epochs": 1})
    run_here(tmp_path, config)
    with open(tmp_path / "model.json") as f:
        started = json.load(f)
    assert started["batch_layout"] == "padded" and started["auto"]["data.layout"] == "padded"
    assert started["auto"]["model.encoder.input_projection"] == "hoisted"
    monkeypatch.setattr(backend, "current", lambda: "cpu")
    resumed = run_here(tmp_path, tiny("bilstm", **{"train.epochs": 2}))
    with open(tmp_path / "model.json") as f:
        info = json.load(f)
    assert info["batch_layout"] == "padded" and info["batch_shapes"] == started["batch_shapes"]
    assert info["auto"] == {"backend": "cpu", "data.layout": "padded", "model.encoder.input_projection": "chunked",
                            "train.steps_per_transfer": 1, "train.async_checkpoints": "blocking"}
    assert resumed.test["reviews"] > 0


def test_the_gpu_autotune_level_reaches_xla_flags():
    """compilation.autotune_level (the accelerators' compile-time lever) becomes an XLA flag the
    commands set before the first device use; a flag the user set in XLA_FLAGS wins."""
    from jaxreviews import options, runtime

    compilation = options.default_config("han_upa").compilation
    environ = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    runtime.set_xla_flags(compilation, environ)  # -1: XLA's default, nothing set
    assert environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=2"
    compilation.autotune_level = 0
    runtime.set_xla_flags(compilation, environ)
    assert environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=2 --xla_gpu_autotune_level=0"
    compilation.autotune_level = 4
    runtime.set_xla_flags(compilation, environ)
    assert environ["XLA_FLAGS"].count("--xla_gpu_autotune_level") == 1
    config = options.default_config("han_upa")
    config.compilation.autotune_level = 5
    assert options.problems(config) == ["compilation.autotune_level=5: must lie in [-1, 4]"]


def test_command_buffers_reach_xla_flags_and_a_cpu_run_takes_them(tmp_path):
    """compilation.command_buffers: "loops" adds while loops and conditionals to XLA's default
    CUDA-graph commands, "off" records none; XLA (the CPU jaxlib too) accepts the flag."""
    from jaxreviews import options, runtime

    compilation = options.default_config("han_upa").compilation
    environ = {}
    runtime.set_xla_flags(compilation, environ)
    assert environ == {}
    compilation.command_buffers = "loops"
    runtime.set_xla_flags(compilation, environ)
    assert environ["XLA_FLAGS"] == "--xla_gpu_enable_command_buffer=+WHILE,+CONDITIONAL"
    compilation.command_buffers = "off"
    runtime.set_xla_flags(compilation, environ)  # the flag already there wins
    assert environ["XLA_FLAGS"] == "--xla_gpu_enable_command_buffer=+WHILE,+CONDITIONAL"
    environ = {}
    runtime.set_xla_flags(compilation, environ)
    assert environ["XLA_FLAGS"] == "--xla_gpu_enable_command_buffer="
    done = train(tmp_path / "run", "--config.train.epochs=1", "--config.compilation.command_buffers=loops",
                 "--config.compilation.cache_dir=")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "test" in results(tmp_path / "run")
