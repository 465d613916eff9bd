"""Defects found by a review of the training code, each pinned by a test that failed before its fix."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jaxreviews import options
from jaxreviews.train import checkpoints, optimizers, step as step_lib
from tests.test_models import build, init, make_batch, tiny_config


def test_an_unfrozen_group_follows_the_runs_schedule_not_a_restarted_one():
    """`optimizer.unfreeze_epoch`: when the frozen group opens at step k, its learning rate is the
    schedule's value at step k, not at step 0 (its own step count starts there)."""
    config = options.section("optimizer", "cnn")
    config.name, config.momentum, config.learning_rate = "sgd", 0.0, 1.0
    config.schedule.name, config.schedule.decay_rate, config.schedule.decay_epochs = "exponential", 0.5, 1.0
    config.freeze, config.unfreeze_epoch = "frozen_part", 2
    tx, schedule = optimizers.make_optimizer(config, steps_per_epoch=1, total_epochs=6, batch_size=32)
    params = {"frozen_part": jnp.zeros(3), "trainable": jnp.zeros(3)}
    grads = jax.tree.map(jnp.ones_like, params)
    state = tx.init(params)
    for step in range(5):
        updates, state = tx.update(grads, state, params)
        frozen = float(-updates["frozen_part"][0])
        trainable = float(-updates["trainable"][0])
        np.testing.assert_allclose(trainable, schedule(step), rtol=1e-6)
        np.testing.assert_allclose(frozen, schedule(step) if step >= 2 else 0.0, rtol=1e-6)


def test_penalties_reach_weight_matrices_and_embeddings_never_biases_or_norm_scales():
    params = {
        "word_encoder": {"layer_0": {"input_kernel": jnp.ones((2, 3, 8)), "bias": jnp.ones((2, 8)),
                                     "recurrent": {"kernel": jnp.ones((2, 2, 8))}}},
        "user_bias": {"embedding": jnp.ones((5, 1))},
        "user_embedding": {"embedding": jnp.ones((5, 4))},
        "filters": {"kernel_3": jnp.ones((3, 4, 2)), "bias": jnp.ones(2)},
        "norm": {"scale": jnp.ones(4)},
    }
    expected = 0.5 * (2 * 3 * 8 + 2 * 2 * 8 + 5 * 4 + 3 * 4 * 2)
    assert float(optimizers.penalty(params, l1=0.0, l2=1.0)) == pytest.approx(expected)
    assert float(optimizers.penalty(params, l1=1.0, l2=0.0)) == pytest.approx(2 * expected)


def test_batch_norm_statistics_leave_out_the_weight_zero_padding_slots():
    """The same reviews with two extra padding rows (weight 0, other contents) give the same batch
    statistics and the same outputs for the real rows."""
    config = tiny_config("cnn", norm="batch")
    model = build(config)
    batch = make_batch(0, batch=4)
    padded = {key: np.concatenate([value, make_batch(1, batch=2)[key]]) for key, value in batch.items()}
    padded["weight"] = np.array([1, 1, 1, 1, 0, 0], np.float32)
    variables = init(model, batch)

    def train_apply(b):
        return model.apply(variables, b, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(0)})

    (_, stats), (_, stats_padded) = train_apply(batch), train_apply(padded)
    for a, b in zip(jax.tree.leaves(stats), jax.tree.leaves(stats_padded)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_the_best_checkpoint_is_read_by_the_recorded_step(tmp_path):
    """restore_best reads the step the bookkeeping recorded; a missing one is an error that says so,
    never the newest checkpoint in its place."""
    ckpt = checkpoints.RunCheckpoints(str(tmp_path), keep=2)
    state = {"w": jnp.zeros(3)}
    ckpt.save_best(10, {"w": jnp.full(3, 10.0)}, {"step": 10})
    ckpt.save_best(20, {"w": jnp.full(3, 20.0)}, {"step": 20})
    ckpt.save_best(30, {"w": jnp.full(3, 30.0)}, {"step": 30})  # the manager keeps two: 10 is gone
    restored, meta = ckpt.restore_best(state, 20)
    assert float(restored["w"][0]) == 20.0 and meta["step"] == 20
    with pytest.raises(FileNotFoundError, match="step 10"):
        ckpt.restore_best(state, 10)
    ckpt.close()


def test_learning_rate_at_a_micro_step_reads_the_optimiser_step():
    schedule = optax.exponential_decay(1.0, 1, 0.5)
    assert [optimizers.learning_rate_at(schedule, s, 2) for s in range(5)] == [1.0, 1.0, 0.5, 0.5, 0.25]


def test_pretrained_vectors_are_data_of_the_init_not_a_constant_of_it():
    """A pretrained table enters the jitted init as an argument: a 1M-row table would otherwise be
    baked into the program (and into every cached compilation)."""
    table = np.random.default_rng(0).normal(size=(40, 16)).astype(np.float32)
    config = tiny_config("cnn")
    model = build(config, pretrained=table)
    tx = optax.adam(1e-3)
    batch = make_batch()
    jaxpr = jax.make_jaxpr(lambda b, k, t: step_lib.init_state(model, tx, b, k, pretrained_embeddings=t))(
        batch, jax.random.key(0), table)
    constants = [c for c in jaxpr.consts if np.size(c) >= table.size]
    assert not constants
    state = jax.jit(lambda b, k, t: step_lib.init_state(model, tx, b, k, pretrained_embeddings=t))(
        batch, jax.random.key(0), table)
    np.testing.assert_array_equal(state.params["word_embedding"]["embedding"], table)


def test_hypothesis_runs_without_deadlines():
    from hypothesis import settings
    assert settings().deadline is None
