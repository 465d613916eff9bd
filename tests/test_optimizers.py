"""Every optimiser, schedule and freezing option builds and takes real steps."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxreviews import options
from jaxreviews.train import optimizers


def params():
    return {"word_embedding": {"embedding": jnp.ones((6, 3))},
            "encoder": {"kernel": jnp.full((3, 2), 0.5), "bias": jnp.zeros(2)}}


def loss(p):
    return sum(jnp.sum((x - 0.1) ** 2) for x in jax.tree.leaves(p))


def run(config, steps=20, steps_per_epoch=5):
    tx, schedule = optimizers.make_optimizer(config, steps_per_epoch=steps_per_epoch, total_epochs=4, batch_size=32)
    p = params()
    state = tx.init(p)

    @jax.jit
    def step(p, state):
        grads = jax.grad(loss)(p)
        updates, state = tx.update(grads, state, p)
        return optax.apply_updates(p, updates), state

    history = [p]
    for _ in range(steps):
        p, state = step(p, state)
        history.append(p)
    return history, schedule


@pytest.mark.parametrize("name", optimizers.OPTIMIZERS)
def test_each_optimizer_reduces_the_loss(name):
    config = options.section("optimizer", "cnn")
    config.name = name
    config.learning_rate = 0.05
    history, _ = run(config)
    assert float(loss(history[-1])) < 0.5 * float(loss(history[0]))


@pytest.mark.parametrize("name", optimizers.SCHEDULES)
def test_each_schedule_starts_peaks_and_ends_sensibly(name):
    config = options.section("optimizer", "cnn")
    config.schedule.name = name
    config.schedule.warmup_epochs = 1.0 if name in ("warmup_cosine", "constant", "sgdr") else 0.0
    _, schedule = run(config, steps=1)
    values = np.array([float(schedule(s)) for s in range(20)])
    assert np.all(np.isfinite(values)) and values.max() <= 1e-3 + 1e-9 and values.max() > 0
    if name in ("exponential", "step"):
        assert values[-1] < values[0]
    if name == "step":
        assert len(np.unique(values)) == 4  # drops once an epoch of 5 steps
    if name in ("warmup_cosine", "one_cycle"):
        assert values[0] < values.max() and values[-1] < values.max()
    if name == "sgdr":
        assert np.any(np.diff(values) > 0)  # restarts


def test_linear_scaling_with_batch_size():
    config = options.section("optimizer", "cnn")
    config.scale_with_batch = True
    config.base_batch_size = 16
    assert optimizers.peak_learning_rate(config, 64) == pytest.approx(4e-3)


def test_freezing_and_unfreezing_by_name():
    config = options.section("optimizer", "cnn")
    config.learning_rate = 0.05
    config.freeze = "word_embedding"
    config.unfreeze_epoch = 2  # steps_per_epoch 5 -> opens at step 10
    history, _ = run(config, steps=20)
    embedding = [np.asarray(p["word_embedding"]["embedding"]) for p in history]
    kernel = [np.asarray(p["encoder"]["kernel"]) for p in history]
    np.testing.assert_array_equal(embedding[10], embedding[0])  # frozen for two epochs
    assert not np.array_equal(kernel[1], kernel[0])
    assert not np.array_equal(embedding[11], embedding[10])
    # Fresh Adam moments at unfreeze: the first step moves by about the learning rate, not more.
    assert np.abs(embedding[11] - embedding[10]).max() < 0.06
    config.unfreeze_epoch = -1
    history, _ = run(config, steps=6)
    np.testing.assert_array_equal(history[-1]["word_embedding"]["embedding"], params()["word_embedding"]["embedding"])


def test_clipping_weight_decay_and_accumulation():
    config = options.section("optimizer", "cnn")
    config.name = "sgd"
    config.momentum = 0.0
    config.learning_rate = 1.0
    config.clip_norm = 0.01
    history, _ = run(config, steps=1)
    moved = jax.tree.leaves(jax.tree.map(lambda a, b: a - b, history[1], history[0]))
    assert float(optax.tree.norm(moved)) == pytest.approx(0.01, rel=1e-4)

    config = options.section("optimizer", "cnn")
    config.accumulation_steps = 4
    history, _ = run(config, steps=8)
    same = [np.array_equal(history[i]["encoder"]["kernel"], history[i + 1]["encoder"]["kernel"]) for i in range(8)]
    assert same == [True, True, True, False] * 2  # one update every 4 micro-steps

    config = options.section("optimizer", "cnn")
    config.name = "adamw"
    config.weight_decay = 0.5
    decayed, _ = run(config, steps=10)
    config.weight_decay = 0.0
    plain, _ = run(config, steps=10)
    assert float(optax.tree.norm(decayed[-1])) < float(optax.tree.norm(plain[-1]))


def test_penalties():
    p = params()
    assert float(optimizers.penalty(p, l1=0.0, l2=0.0)) == 0.0
    assert float(optimizers.penalty(p, l1=1.0, l2=0.0)) == pytest.approx(18 + 3)  # kernels and tables only
    assert float(optimizers.penalty(p, l1=0.0, l2=2.0)) == pytest.approx(18 + 6 * 0.25)


def test_unknown_names_raise():
    config = options.section("optimizer", "cnn")
    config.name = "lion2"
    with pytest.raises(ValueError, match="optimizer.name"):
        run(config, steps=1)



def test_max_steps_ends_the_schedule_at_the_last_step():
    """train.max_steps before the epochs end: a cosine decay reaches its end value there; under
    gradient accumulation the optimiser steps are max_steps / accumulation."""
    config = options.section("optimizer", "cnn")
    config.schedule.name, config.schedule.end_factor = "warmup_cosine", 0.0
    _, schedule = optimizers.make_optimizer(config, steps_per_epoch=10, total_epochs=5, batch_size=32, max_steps=12)
    assert float(schedule(12)) == pytest.approx(0.0, abs=1e-9) and float(schedule(6)) > 0
    config.accumulation_steps = 2
    assert optimizers.optimizer_steps(config, steps_per_epoch=10, total_epochs=5, max_steps=12) == 6
    assert optimizers.optimizer_steps(config, steps_per_epoch=10, total_epochs=5) == 25
    assert optimizers.optimizer_steps(config, steps_per_epoch=10, total_epochs=5, max_steps=400) == 25
