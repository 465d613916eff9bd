"""The train step: pure, jittable, vmappable over seeds; metric sums; baselines."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxreviews import options
from jaxreviews import models
from jaxreviews.data import batching, corpus, synthetic
from jaxreviews.train import evaluation, optimizers, step


@pytest.fixture(scope="module")
def tiny():
    collected = corpus.collect(synthetic.generate(synthetic.default_spec("tiny")).reviews)
    vocab = collected.build_vocabulary()
    users, products = collected.build_id_maps()
    data = collected.encode(None, vocab, users, products)
    batcher = batching.Batcher(data, layout="flat", batch_size=16, buckets=[(64,)])
    config = options.default_config("cnn", "tiny").model
    model = models.build_model(config, vocab_size=len(vocab), num_users=len(users), num_products=len(products),
                               num_classes=5, rating_range=(1.0, 5.0))
    tx, _ = optimizers.make_optimizer(options.section("optimizer", "cnn"), steps_per_epoch=10,
                                      total_epochs=1, batch_size=16)
    return model, config, tx, batcher


def test_macro_f1_and_baselines():
    from jaxreviews.train import step
    confusion = np.array([[3, 1], [0, 0]])  # class 1 never true, predicted once
    assert step.macro_f1(confusion) == pytest.approx(np.mean([2 * 3 / (4 + 3), 0.0]))
    result = evaluation.baselines(np.array([5.0, 5, 5, 1]), np.array([5.0, 1, 3]), (1.0, 5.0), 1.0)
    assert result["majority"]["prediction"] == 5.0
    assert result["majority"]["accuracy"] == pytest.approx(1 / 3)
    assert result["mean_rating"]["prediction"] == 4.0
    assert result["mean_rating"]["rmse"] == pytest.approx(np.sqrt((1 + 9 + 1) / 3))



def test_train_step_vmaps_over_seeds_and_matches_single_runs(tiny):
    model, config, tx, batcher = tiny
    batch = next(batcher.evaluation())
    train_step = step.make_train_step(model, tx, config.head)
    keys = jax.random.split(jax.random.key(0), 3)
    states = jax.vmap(lambda k: step.init_state(model, tx, batch, k))(keys)
    vmapped, metrics = jax.jit(jax.vmap(train_step, in_axes=(0, None, 0)))(states, batch, keys)
    assert metrics["loss"].shape == (3,)
    for i in range(3):
        single_state = step.init_state(model, tx, batch, keys[i])
        single, single_metrics = jax.jit(train_step)(single_state, batch, keys[i])
        np.testing.assert_allclose(metrics["loss"][i], single_metrics["loss"], rtol=1e-5)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a[i], b, rtol=1e-4, atol=1e-6), vmapped.params,
                     single.params)


def test_padding_rows_change_nothing(tiny):
    model, config, tx, batcher = tiny
    batch = next(batcher.evaluation())
    padded = {k: np.concatenate([v, np.zeros_like(v[:4])]) for k, v in batch.items()}
    eval_step = jax.jit(step.make_eval_step(model, config.head, 5))
    state = step.init_state(model, tx, batch, jax.random.key(1))
    a = step.finalize_metrics(jax.device_get(eval_step(state.params, state.model_state, batch)))
    b = step.finalize_metrics(jax.device_get(eval_step(state.params, state.model_state, padded)))
    assert a == pytest.approx(b)
    assert a["reviews"] == 16
