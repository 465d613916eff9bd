"""Every model learns a tiny separable task; heads' losses and metric sums are exact."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxreviews import options
from jaxreviews import models
from jaxreviews.models import heads
from tests.test_models import CLASSES, PRODUCTS, USERS, VOCAB, build, init, make_batch, tiny_config

STEPS = 150


def separable_batch(seed: int = 0, size: int = 20) -> dict[str, np.ndarray]:
    """Each review's class is told by one signal token (id 2 + class) somewhere in its text, and
    also by its product (product = class + 1), so text-only and id-only models can both fit it."""
    batch = make_batch(seed, batch=size)
    rng = np.random.default_rng(seed + 1)
    label = np.arange(size) % CLASSES
    batch["words"] = np.where(batch["words"] > 0, batch["words"] % (VOCAB - 10) + 10, 0).astype(np.int32)
    batch["tokens"] = np.where(batch["tokens"] > 0, batch["tokens"] % (VOCAB - 10) + 10, 0).astype(np.int32)
    for b in range(size):
        sentence = rng.integers(batch["sentence_mask"][b].sum())
        word = rng.integers(batch["word_mask"][b, sentence].sum())
        batch["words"][b, sentence, word] = 2 + label[b]
        batch["tokens"][b, rng.integers(batch["token_mask"][b].sum())] = 2 + label[b]
    batch["label"] = label.astype(np.int32)
    batch["rating"] = (label + 1.0).astype(np.float32)
    batch["product"] = (label + 1).astype(np.int32)
    batch["user"] = rng.integers(1, USERS, size).astype(np.int32)
    batch["weight"] = np.ones(size, np.float32)
    return batch


def train(config, batch, steps: int = STEPS, learning_rate: float = 1e-2):
    """`steps` Adam steps in one compiled scan; returns (params, model_state, final outputs)."""
    model = build(config)
    variables = init(model, batch)
    params = variables.pop("params")
    tx = optax.adam(learning_rate)

    def step(carry, index):
        params, model_state, opt_state = carry

        def loss_fn(p):
            outputs, new_state = model.apply({"params": p, **model_state}, batch, train=True,
                                             rngs={"dropout": jax.random.fold_in(jax.random.key(3), index)},
                                             mutable=list(model_state))
            return heads.loss(outputs, batch, config.head), new_state

        (loss, model_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), model_state, opt_state), loss

    @jax.jit
    def run(params, model_state):
        (params, model_state, _), losses = jax.lax.scan(step, (params, model_state, tx.init(params)),
                                                        jnp.arange(steps))
        return params, model_state, losses, model.apply({"params": params, **model_state}, batch, train=False)

    params, model_state, losses, outputs = run(params, dict(variables))
    return params, losses, outputs


@pytest.mark.parametrize("name,overrides", [
    ("cnn", {}),
    ("rnn", {"encoder__kind": "gru", "pooling": "attention"}),
    ("bilstm", {}),
    ("han", {}),
    ("han_upa", {"user_product__concat_to_document": True, "user_product__rating_biases": True}),
    ("mf", {"head__kind": "classification"}),
])
def test_every_model_overfits_a_separable_task(name, overrides):
    config = tiny_config(name, **overrides)
    batch = separable_batch()
    _, losses, outputs = train(config, batch)
    sums = heads.metric_sums(outputs, batch, config.head)
    assert float(losses[-1]) < 0.25 * float(losses[0]), (name, losses[0], losses[-1])
    assert float(sums["correct"]) == float(sums["weight"]) == len(batch["label"]), (name, sums)


@pytest.mark.parametrize("name,kind", [("mf", "regression"), ("cnn", "both")])
def test_regression_heads_fit_ratings(name, kind):
    config = tiny_config(name, head__kind=kind)
    batch = separable_batch(1)
    _, _, outputs = train(config, batch, steps=200)
    sums = heads.metric_sums(outputs, batch, config.head)
    rmse = float(np.sqrt(sums["squared_error"] / sums["weight"]))
    assert rmse < 0.3, (name, kind, rmse)
    assert np.all((outputs["rating"] >= 1.0) & (outputs["rating"] <= 5.0))


def test_hybrid_text_plus_mf_learns():
    config = tiny_config("rnn", head__kind="regression", collaborative__enabled=True)
    batch = separable_batch(2)
    params, losses, _ = train(config, batch)
    assert "collaborative" in params and float(losses[-1]) < 0.25 * float(losses[0])
    assert models.count_parameters(params)["collaborative"] > 0


# ---- heads: pure functions -------------------------------------------------------------------

def test_class_rating_round_trip():
    classes = jnp.arange(5)
    ratings = heads.class_to_rating(classes, (1.0, 5.0), 5)
    np.testing.assert_array_equal(ratings, [1, 2, 3, 4, 5])
    np.testing.assert_array_equal(heads.rating_to_class(ratings, (1.0, 5.0), 5), classes)
    np.testing.assert_array_equal(heads.rating_to_class(jnp.array([0.2, 2.6, 9.0]), (1.0, 5.0), 5), [0, 2, 4])
    np.testing.assert_allclose(heads.class_to_rating(jnp.arange(3), (0.0, 1.0), 3), [0.0, 0.5, 1.0])


def test_loss_is_weighted_and_padding_rows_contribute_nothing():
    batch = {"label": jnp.array([0, 1, 2]), "rating": jnp.array([1.0, 2.0, 3.0]), "weight": jnp.array([1.0, 1.0, 0.0])}
    outputs = {"logits": jnp.array([[5.0, 0, 0, 0, 0], [0, 5.0, 0, 0, 0], [0, 0, 0, 0, 1e4]]),
               "rating": jnp.array([1.5, 2.0, 1e4])}
    config = options.section("model", "cnn").head
    config.kind, config.regression_weight = "both", 2.0
    ce = heads.cross_entropy(outputs["logits"][:2], batch["label"][:2])
    want = jnp.mean(ce + 2.0 * jnp.array([0.25, 0.0]))
    np.testing.assert_allclose(heads.loss(outputs, batch, config), want, rtol=1e-6)
    empty = dict(batch, weight=jnp.zeros(3))
    assert float(heads.loss(outputs, empty, config)) == 0.0


def test_metric_sums_add_up_over_batches():
    model = build(tiny_config("han_upa", head__kind="both"))
    batch = make_batch(5, batch=4)
    batch["weight"] = np.array([1.0, 1.0, 1.0, 0.0], np.float32)
    variables = init(model, batch)
    run = jax.jit(lambda b: heads.metric_sums(model.apply(variables, b, train=False), b))
    whole = run(batch)
    halves = [run({k: v[:2] for k, v in batch.items()}), run({k: v[2:] for k, v in batch.items()})]
    for key, value in whole.items():
        np.testing.assert_allclose(value, halves[0][key] + halves[1][key], rtol=1e-5, atol=1e-5)
    assert float(whole["weight"]) == 3.0


def test_predicted_rating_of_a_classifier_is_the_expected_rating():
    logits = jnp.log(jnp.array([[0.5, 0.5, 0.0 + 1e-12, 1e-12, 1e-12]]))
    outputs = heads.with_predictions({"logits": logits}, (1.0, 5.0), 5)
    np.testing.assert_allclose(outputs["predicted_rating"], [1.5], rtol=1e-5)
    regression = heads.with_predictions({"rating": jnp.array([3.4, 4.6])}, (1.0, 5.0), 5)
    np.testing.assert_array_equal(regression["predicted_class"], [2, 4])
    sums = heads.metric_sums(regression, {"label": jnp.array([2, 3]), "rating": jnp.array([3.0, 4.0]),
                                          "weight": jnp.ones(2)})
    assert float(sums["correct"]) == 1.0
    np.testing.assert_allclose(sums["absolute_error"], 1.0, rtol=1e-5)
    assert PRODUCTS > CLASSES  # products 1..C are used as class-revealing ids above
