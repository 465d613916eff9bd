"""Regularisers of the text models: word dropout, label smoothing, weight decay on chosen
parameters, and the unknown-id dropout of user/product embeddings (its old name still read)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jaxreviews import options
from jaxreviews.data.types import OOV_ID
from jaxreviews.models import heads
from jaxreviews.train import optimizers
from tests.test_models import apply, build, init, make_batch, tiny_config

QUIET = dict(embedding_dropout=0.0, dropout=0.0, head_dropout=0.0)


@pytest.mark.parametrize("name", ["han", "cnn"])
def test_word_dropout_replaces_whole_words_by_oov_while_training_only(name):
    config = tiny_config(name, word_dropout=1.0, **QUIET)
    model = build(config)
    batch = make_batch(0)
    variables = init(model, batch)
    all_oov = dict(batch, words=np.where(batch["word_mask"], OOV_ID, 0).astype(np.int32),
                   tokens=np.where(batch["token_mask"], OOV_ID, 0).astype(np.int32))
    dropped = apply(model, variables, batch, train=True)["logits"]
    np.testing.assert_allclose(dropped, apply(model, variables, all_oov, train=False)["logits"], rtol=1e-5, atol=1e-6)
    evaluated = apply(model, variables, batch, train=False)["logits"]
    plain = apply(build(tiny_config(name, **QUIET)), variables, batch, train=False)["logits"]
    np.testing.assert_array_equal(evaluated, plain)  # evaluation never drops


def test_label_smoothing_is_cross_entropy_against_smoothed_targets():
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(6, 5)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 5, 6), jnp.int32)
    targets = optax.smooth_labels(jax.nn.one_hot(labels, 5), 0.1)
    np.testing.assert_allclose(heads.cross_entropy(logits, labels, 0.1),
                               optax.softmax_cross_entropy(logits, targets), rtol=1e-6)
    np.testing.assert_array_equal(heads.cross_entropy(logits, labels, 0.0), heads.cross_entropy(logits, labels))
    head = options.section("model", "cnn").head
    head.label_smoothing = 0.1
    outputs = heads.with_predictions({"logits": logits}, (1.0, 5.0), 5)
    batch = {"label": labels, "rating": labels + 1.0, "weight": jnp.ones(6)}
    sums = heads.metric_sums(outputs, batch, head)
    np.testing.assert_allclose(sums["loss"], jnp.sum(optax.softmax_cross_entropy(logits, targets)), rtol=1e-6)
    np.testing.assert_allclose(sums["nll"], jnp.sum(heads.cross_entropy(logits, labels)), rtol=1e-6)


def test_weight_decay_on_a_pattern_decays_only_those_parameters():
    params = {"word_embedding": {"embedding": jnp.ones((4, 3))}, "head": {"output": {"kernel": jnp.ones((3, 2))}}}
    config = options.section("optimizer", "cnn")
    config.weight_decay, config.weight_decay_on = 0.5, "word_embedding"
    tx, _ = optimizers.make_optimizer(config, steps_per_epoch=1, total_epochs=1, batch_size=32)
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zeros, tx.init(params), params)
    np.testing.assert_allclose(updates["word_embedding"]["embedding"], -config.learning_rate * 0.5)
    np.testing.assert_array_equal(updates["head"]["output"]["kernel"], 0.0)
    config.weight_decay_on = ""
    tx, _ = optimizers.make_optimizer(config, steps_per_epoch=1, total_epochs=1, batch_size=32)
    updates, _ = tx.update(zeros, tx.init(params), params)
    np.testing.assert_allclose(updates["head"]["output"]["kernel"], -config.learning_rate * 0.5)


def test_unknown_dropout_replaces_ids_and_reads_the_old_name():
    """unknown_dropout=1: every review trains as an unseen user and product; a saved config that
    says `unknown_rate` (the option's earlier name) means the same."""
    batch = make_batch(0)
    unknown = dict(batch, user=np.zeros_like(batch["user"]), product=np.zeros_like(batch["product"]))
    config = tiny_config("han_upa", **QUIET)
    config.user_product.unknown_dropout = 1.0
    model = build(config)
    variables = init(model, batch)
    want = apply(model, variables, unknown, train=False)["logits"]
    np.testing.assert_allclose(apply(model, variables, batch, train=True)["logits"], want, rtol=1e-5, atol=1e-6)
    old = ml_collections.ConfigDict(config.to_dict())
    del old.user_product["unknown_dropout"]
    old.user_product.unknown_rate = 1.0
    np.testing.assert_allclose(apply(build(old), variables, batch, train=True)["logits"], want, rtol=1e-5, atol=1e-6)


def test_embedding_weight_decay_decays_the_word_table_on_top_of_weight_decay():
    params = {"word_embedding": {"embedding": jnp.ones((4, 3))}, "user_embedding": {"embedding": jnp.ones((2, 3))}}
    config = options.section("optimizer", "cnn")
    config.weight_decay, config.embedding_weight_decay = 0.1, 1.0
    tx, _ = optimizers.make_optimizer(config, steps_per_epoch=1, total_epochs=1, batch_size=32)
    updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    np.testing.assert_allclose(updates["word_embedding"]["embedding"], -config.learning_rate * 1.1, rtol=1e-6)
    np.testing.assert_allclose(updates["user_embedding"]["embedding"], -config.learning_rate * 0.1, rtol=1e-6)


def test_embedding_decay_to_start_pulls_the_word_table_towards_its_initial_values():
    start = {"word_embedding": {"embedding": jnp.arange(12.0).reshape(4, 3)}, "head": {"kernel": jnp.ones((3, 2))}}
    config = options.section("optimizer", "cnn")
    config.name, config.momentum, config.learning_rate = "sgd", 0.0, 0.5
    config.embedding_weight_decay, config.embedding_decay_to = 0.2, "start"
    tx, _ = optimizers.make_optimizer(config, steps_per_epoch=1, total_epochs=1, batch_size=32)
    state = tx.init(start)
    # At the start the decay adds nothing: the table is its own anchor, however far from zero.
    zeros = jax.tree.map(jnp.zeros_like, start)
    updates, state = tx.update(zeros, state, start)
    np.testing.assert_array_equal(updates["word_embedding"]["embedding"], 0.0)
    # Moved away by 1, a row is pulled back by lr * rate * 1; other parameters are not decayed.
    moved = jax.tree.map(lambda x: x + 1.0, start)
    updates, state = tx.update(zeros, state, moved)
    np.testing.assert_allclose(updates["word_embedding"]["embedding"], -0.5 * 0.2, rtol=1e-6)
    np.testing.assert_array_equal(updates["head"]["kernel"], 0.0)
    # The anchor is the start, not the latest values.
    updates, _ = tx.update(zeros, state, moved)
    np.testing.assert_allclose(updates["word_embedding"]["embedding"], -0.5 * 0.2, rtol=1e-6)
    config.embedding_decay_to = "one"
    with pytest.raises(ValueError, match="embedding_decay_to"):
        optimizers.make_optimizer(config, steps_per_epoch=1, total_epochs=1, batch_size=32)


def test_embedding_decay_to_start_anchors_pretrained_vectors_given_to_init_state():
    from jaxreviews.train import step as step_lib
    config = tiny_config("han", **QUIET)
    model = build(config)
    batch = make_batch(0)
    table = np.asarray(init(model, batch)["params"]["word_embedding"]["embedding"])
    vectors = np.random.default_rng(0).normal(0.0, 1.0, table.shape).astype(np.float32)
    optimizer = options.section("optimizer", "cnn")
    optimizer.embedding_weight_decay, optimizer.embedding_decay_to = 1.0, "start"
    tx, _ = optimizers.make_optimizer(optimizer, steps_per_epoch=1, total_epochs=1, batch_size=32)
    state = step_lib.init_state(model, tx, batch, jax.random.key(0), pretrained_embeddings=vectors)
    anchors = [leaf for path, leaf in jax.tree_util.tree_flatten_with_path(state.opt_state)[0]
               if leaf.shape == table.shape and "start" in jax.tree_util.keystr(path)]
    assert len(anchors) == 1
    np.testing.assert_array_equal(anchors[0], vectors)
