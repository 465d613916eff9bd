"""optimizer.sparse_tables: embedding tables updated in the rows a step looks up. Where every row is
looked up, it is dense Adam(W) exactly; a row not looked up keeps its value and its moments."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxreviews import options
from jaxreviews.models import heads, layers
from jaxreviews.train import optimizers, step as step_lib
from tests.training import run_here, tiny

NUM_WORDS, NUM_USERS, NUM_CLASSES = 6, 5, 3


class TwoTables(nn.Module):
    """Words [B, T] and users [B] through their tables, a dense layer, three rating classes."""

    @nn.compact
    def __call__(self, batch, train: bool = False):
        words = layers.WordEmbedding(NUM_WORDS, 4, name="word_embedding")(batch["words"])
        user = layers.IdEmbedding(NUM_USERS, 4, name="user_embedding")(batch["user"], train=train)
        logits = nn.Dense(NUM_CLASSES, name="head")(jnp.tanh(words.mean(1) + user))
        return heads.with_predictions({"logits": logits}, (1.0, 3.0), NUM_CLASSES)


def optimizer_config(**overrides):
    config = options.default_config("han_upa", "tiny").optimizer
    config.update(name="adamw", learning_rate=0.05, weight_decay=0.01, embedding_weight_decay=0.5, clip_norm=0.3,
                  **overrides)
    config.schedule.name = "warmup_cosine"
    config.schedule.warmup_epochs = 1.0
    return config


def batch_of(rng, words, users):
    size = len(users)
    labels = rng.integers(0, NUM_CLASSES, size)
    return {"words": np.asarray(words, np.int32), "user": np.asarray(users, np.int32), "label": labels,
            "rating": (labels + 1).astype(np.float32), "weight": np.ones(size, np.float32)}


def steps_of(config):
    head = options.default_config("han_upa", "tiny").model.head
    tx, schedule = optimizers.make_optimizer(config, steps_per_epoch=2, total_epochs=3, batch_size=6)
    sparse = optimizers.SparseTables.of(config, schedule)
    model = TwoTables()
    step = jax.jit(step_lib.make_train_step(model, tx, head, sparse=sparse))
    example = batch_of(np.random.default_rng(0), np.zeros((6, 2)), np.zeros(6))
    return model, tx, step, step_lib.init_state(model, tx, example, jax.random.key(3))


def test_every_row_looked_up_is_dense_adamw_with_decay_clipping_and_schedule():
    rng = np.random.default_rng(1)
    _, _, dense_step, dense = steps_of(optimizer_config())
    _, _, sparse_step, sparse = steps_of(optimizer_config(sparse_tables=True))
    for a, b in zip(jax.tree.leaves(dense.params), jax.tree.leaves(sparse.params)):
        np.testing.assert_array_equal(a, b)
    for i in range(6):  # every word twice and every user at least once a step, in a new order
        batch = batch_of(rng, rng.permutation(np.repeat(np.arange(NUM_WORDS), 2)).reshape(6, 2),
                         rng.permutation(np.r_[np.arange(NUM_USERS), rng.integers(0, NUM_USERS)]))
        dense, dense_metrics = dense_step(dense, batch, jax.random.key(i))
        sparse, sparse_metrics = sparse_step(sparse, batch, jax.random.key(i))
        for name in ("loss", "grad_norm", "param_norm", "update_norm"):
            assert float(sparse_metrics[name]) == pytest.approx(float(dense_metrics[name]), rel=1e-5), (i, name)
    assert float(dense_metrics["grad_norm"]) > 0.3  # clipping was in play
    for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(dense.params)[0], jax.tree.leaves(sparse.params)):
        np.testing.assert_allclose(b, a, rtol=2e-5, atol=1e-6, err_msg=jax.tree_util.keystr(path))


def test_a_row_not_looked_up_keeps_its_value_and_moments():
    rng = np.random.default_rng(2)
    _, _, step, state = steps_of(optimizer_config(sparse_tables=True))
    before = state
    for i in range(3):  # words 1 and 2 only, user 4 only
        state, _ = step(state, batch_of(rng, rng.choice([1, 2], (6, 2)), np.full(6, 4)), jax.random.key(i))
    words, users, old_words, old_users = (np.asarray(tree["params"][name]["embedding"])
                                          for tree in ({"params": state.params}, {"params": before.params})
                                          for name in ("word_embedding", "user_embedding"))
    untouched_words, untouched_users = [0, 3, 4, 5], [0, 1, 2, 3]
    np.testing.assert_array_equal(words[untouched_words], old_words[untouched_words])
    np.testing.assert_array_equal(users[untouched_users], old_users[untouched_users])
    assert not np.allclose(words[[1, 2]], old_words[[1, 2]]) and not np.allclose(users[4], old_users[4])
    moments = optimizers.find_table_moments(state.opt_state)
    assert np.all(np.asarray(moments.mu["word_embedding/embedding"])[untouched_words] == 0)
    assert np.all(np.asarray(moments.nu["user_embedding/embedding"])[untouched_users] == 0)
    assert np.all(np.asarray(moments.nu["user_embedding/embedding"])[4] > 0)


@pytest.mark.parametrize("override, named", [
    ({"optimizer.name": "sgd"}, "is not adam or adamw"),
    ({"optimizer.accumulation_steps": 2}, "accumulation_steps"),
    ({"optimizer.l2": 1e-4}, "l1 / l2"),
    ({"optimizer.embedding_decay_to": "start", "optimizer.embedding_weight_decay": 1.0}, "embedding_decay_to"),
    ({"optimizer.freeze": "word_embedding"}, "freeze"),
    ({"num_seeds": 2, "population.learning_rate_range": (1e-3, 1e-2)}, "population of learning_rate"),
])
def test_what_sparse_tables_cannot_be_combined_with_is_named(override, named):
    config = tiny(**{"optimizer.sparse_tables": True, **override})
    with pytest.raises(options.ConfigError, match=named):
        options.validate(config)


@pytest.mark.parametrize("model", ["han_upa", "mf", "fasttext"])
def test_a_run_with_sparse_tables_trains_its_members(tmp_path, model):
    """Members (one after another on CPU) each with their own table moments; the tables' rows move."""
    results = run_here(tmp_path, tiny(model, **{"optimizer.sparse_tables": True, "num_seeds": 2, "train.epochs": 2}))
    assert results.num_members == 2
    assert results.validation["rmse"] < results.baselines["majority"]["rmse"]
