"""Collaborative filtering: biases that start at the training statistics, SVD++'s implicit sum,
MF's regulariser, learning a rating table, and tools/bench_cf.py's synthetic table."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxreviews import models
from jaxreviews.models import heads, mf
from tests.test_models import CLASSES, PRODUCTS, RANGE, USERS, apply, init, tiny_config

TOOL = Path(__file__).resolve().parents[1] / "tools" / "bench_cf.py"

# A tiny training table: user 3 rated nothing, user 0 is the unknown id.
TRAIN_USERS = np.array([1, 1, 1, 2, 2, 4, 5, 5, 1])
TRAIN_PRODUCTS = np.array([1, 2, 6, 2, 3, 1, 4, 6, 2])  # (1, 2) twice: counts once in N(u)
TRAIN_RATINGS = np.array([5, 4, 2, 3, 3, 1, 5, 4, 4], np.float32)


def load_tool():
    spec = importlib.util.spec_from_file_location("bench_cf", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def statistics(config, ratings=TRAIN_RATINGS):
    return models.training_statistics(config, users=TRAIN_USERS, products=TRAIN_PRODUCTS, ratings=ratings,
                                      num_users=USERS, num_products=PRODUCTS, num_classes=CLASSES,
                                      rating_range=RANGE)


def build_mf(config, **stats):
    return models.build_model(config, vocab_size=1, num_users=USERS, num_products=PRODUCTS, num_classes=CLASSES,
                              rating_range=RANGE, **stats)


def id_batch(users, products):
    users, products = np.asarray(users, np.int32), np.asarray(products, np.int32)
    return {"user": users, "product": products, "rating": np.full(len(users), 3.0, np.float32),
            "label": np.full(len(users), 2, np.int32), "weight": np.ones(len(users), np.float32)}


EVERY_PAIR = id_batch(np.repeat(np.arange(USERS), PRODUCTS), np.tile(np.arange(PRODUCTS), USERS))


# ---- biases start at the training statistics ---------------------------------------------------

@pytest.mark.parametrize("activation", heads.RATING_ACTIVATIONS)
def test_mf_global_bias_starts_at_the_training_mean(activation):
    config = tiny_config("mf", init_stddev=0.0, head__rating_activation=activation)
    stats = statistics(config)
    assert stats["rating_mean"] == pytest.approx(float(TRAIN_RATINGS.mean()))
    model = build_mf(config, **stats)
    variables = init(model, EVERY_PAIR)
    ratings = apply(model, variables, EVERY_PAIR)["rating"]
    np.testing.assert_allclose(ratings, TRAIN_RATINGS.mean(), rtol=1e-6)
    # With random factors too, the bias alone squashes to the mean.
    random_factors = build_mf(tiny_config("mf", head__rating_activation=activation), **stats)
    bias = init(random_factors, EVERY_PAIR)["params"]["global_bias"]
    np.testing.assert_allclose(heads.squash_rating(bias[-1], RANGE, activation), TRAIN_RATINGS.mean(), rtol=1e-6)


def test_mf_class_biases_start_at_the_training_label_prior():
    config = tiny_config("mf", init_stddev=0.0, head__kind="both")
    stats = statistics(config)
    prior = np.bincount(TRAIN_RATINGS.astype(int) - 1, minlength=CLASSES) / len(TRAIN_RATINGS)
    np.testing.assert_allclose(stats["label_prior"], prior)
    model = build_mf(config, **stats)
    outputs = apply(model, init(model, EVERY_PAIR), EVERY_PAIR)
    np.testing.assert_allclose(jax.nn.softmax(outputs["logits"]), np.broadcast_to(prior, (len(EVERY_PAIR["user"]), CLASSES)),
                               rtol=1e-5)
    np.testing.assert_allclose(outputs["rating"], TRAIN_RATINGS.mean(), rtol=1e-6)


def test_without_statistics_the_biases_start_as_before():
    model = build_mf(tiny_config("mf", init_stddev=0.0, head__kind="both"))
    outputs = apply(model, init(model, EVERY_PAIR), EVERY_PAIR)
    np.testing.assert_allclose(jax.nn.softmax(outputs["logits"]), 1.0 / CLASSES, rtol=1e-6)
    np.testing.assert_allclose(outputs["rating"], 3.0, rtol=1e-6)  # the middle of 1..5


@pytest.mark.parametrize("kind", heads.KINDS)
def test_head_bias_starts_at_the_training_statistics(kind):
    prior = (0.05, 0.05, 0.1, 0.3, 0.5)
    head = heads.Head(kind, CLASSES, RANGE, rating_activation="sigmoid", rating_mean=4.2, label_prior=prior)
    features = jnp.zeros((3, 6))  # a zero document vector: the outputs are the bias
    outputs = head.apply(head.init(jax.random.key(0), features), features)
    if heads.has_classification(kind):
        np.testing.assert_allclose(jax.nn.softmax(outputs["logits"]), np.broadcast_to(prior, (3, CLASSES)), rtol=1e-5)
    if heads.has_regression(kind):
        np.testing.assert_allclose(outputs["rating"], 4.2, rtol=1e-6)


def test_starting_biases_edge_cases():
    # An absent class starts tiny, not at log(0); a mean at the edge of the range stays finite.
    biases = heads.starting_biases("both", 3, (1.0, 3.0), "sigmoid", rating_mean=3.0, label_prior=[0.0, 0.2, 0.8])
    assert np.all(np.isfinite(biases))
    np.testing.assert_allclose(jax.nn.softmax(biases[:3]), [0.0, 0.2, 0.8], atol=1e-5)
    assert float(heads.squash_rating(biases[-1], (1.0, 3.0))) == pytest.approx(3.0, abs=0.01)
    for activation in heads.RATING_ACTIVATIONS:
        z = heads.rating_preactivation(2.25, RANGE, activation)
        assert float(heads.squash_rating(jnp.float32(z), RANGE, activation)) == pytest.approx(2.25, rel=1e-6)
    with pytest.raises(ValueError, match="label_prior must be 3"):
        heads.starting_biases("classification", 3, RANGE, "sigmoid", label_prior=[0.5, 0.5])


# ---- SVD++ ---------------------------------------------------------------------------------------

def test_training_pairs_are_distinct_sorted_and_counted():
    pairs = mf.TrainingPairs.from_ratings(users=TRAIN_USERS, products=TRAIN_PRODUCTS, num_users=USERS,
                                          num_products=PRODUCTS)
    assert list(pairs.users) == sorted(pairs.users) and len(pairs.users) == 8  # (1, 2) once
    np.testing.assert_array_equal(pairs.user_counts, [0, 3, 2, 0, 1, 2])
    np.testing.assert_array_equal(pairs.product_counts, [0, 2, 2, 1, 1, 0, 2])
    np.testing.assert_allclose(pairs.implicit_scale, [0, 3 ** -0.5, 2 ** -0.5, 0, 1, 2 ** -0.5], rtol=1e-6)
    with pytest.raises(ValueError, match="product ids must lie in"):
        mf.TrainingPairs.from_ratings(users=[1], products=[PRODUCTS], num_users=USERS, num_products=PRODUCTS)


def test_svdpp_implicit_sum_equals_the_loop_over_each_users_products():
    pairs = mf.TrainingPairs.from_ratings(users=TRAIN_USERS, products=TRAIN_PRODUCTS, num_users=USERS,
                                          num_products=PRODUCTS)
    y = np.random.default_rng(0).normal(size=(PRODUCTS, 4)).astype(np.float32)
    sums, squares = jax.jit(lambda table: mf.implicit_sums(table, pairs))(y)
    for user in range(USERS):
        rated = sorted({int(p) for u, p in zip(TRAIN_USERS, TRAIN_PRODUCTS) if u == user})
        want = sum((y[j] for j in rated), np.zeros(4, np.float32)) / (np.sqrt(len(rated)) if rated else 1.0)
        np.testing.assert_allclose(sums[user], want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(squares[user], sum(float(y[j] @ y[j]) for j in rated), rtol=1e-5)


def test_svdpp_of_a_user_without_training_products_is_plain_mf():
    svdpp_config = tiny_config("mf", implicit_feedback=True)
    stats = statistics(svdpp_config)
    svdpp = build_mf(svdpp_config, **stats)
    plain = build_mf(tiny_config("mf"), **stats)
    variables = init(svdpp, EVERY_PAIR)
    params = variables["params"]
    assert params["implicit_embedding"]["embedding"].shape == (PRODUCTS, 8)
    plain_params = {name: value for name, value in params.items() if name != "implicit_embedding"}
    with_implicit = apply(svdpp, variables, EVERY_PAIR)["rating"].reshape(USERS, PRODUCTS)
    without = apply(plain, {"params": plain_params}, EVERY_PAIR)["rating"].reshape(USERS, PRODUCTS)
    for user in (0, 3):  # the unknown id and a user who rated nothing in training
        np.testing.assert_array_equal(with_implicit[user], without[user])
    for user in (1, 2, 4, 5):
        assert not np.allclose(with_implicit[user], without[user])


def test_svdpp_needs_the_training_pairs():
    model = build_mf(tiny_config("mf", implicit_feedback=True))
    with pytest.raises(ValueError, match="training split's \\(user, product\\) pairs"):
        init(model, EVERY_PAIR)


# ---- the regulariser -----------------------------------------------------------------------------

def test_penalty_is_the_documented_sum_and_only_in_training():
    config = tiny_config("mf", implicit_feedback=True, l2_factors=0.1, l2_biases=0.2, l2_implicit=0.3,
                         factor_shrinkage=3.0, bias_shrinkage=10.0, unknown_rate=0.0)
    stats = statistics(config)
    model = build_mf(config, **stats)
    batch = id_batch([1, 2, 3, 5], [2, 3, 6, 5])
    variables = init(model, batch)
    outputs = apply(model, variables, batch, train=True)
    assert "penalty" not in apply(model, variables, batch, train=False)
    params = jax.tree.map(np.asarray, variables["params"])
    p, q = params["user_embedding"]["embedding"], params["product_embedding"]["embedding"]
    b_user, b_product = params["user_bias"]["embedding"][:, 0], params["product_bias"]["embedding"][:, 0]
    y = params["implicit_embedding"]["embedding"]
    pairs = stats["training_pairs"]
    user_counts, product_counts = np.maximum(pairs.user_counts, 1), np.maximum(pairs.product_counts, 1)
    for row, (u, i) in enumerate(zip(batch["user"], batch["product"])):
        rated = pairs.products[pairs.users == u]
        want = ((0.1 + 3.0 / user_counts[u]) * p[u] @ p[u] + (0.1 + 3.0 / product_counts[i]) * q[i] @ q[i]
                + (0.2 + 10.0 / user_counts[u]) * b_user[u] ** 2 + (0.2 + 10.0 / product_counts[i]) * b_product[i] ** 2
                + 0.3 * sum(y[j] @ y[j] for j in rated) + 3.0 / product_counts[i] * y[i] @ y[i])
        assert float(outputs["penalty"][row]) == pytest.approx(float(want), rel=1e-5)
    # heads.loss adds it; the metric sums do not.
    data_loss = heads.loss({k: v for k, v in outputs.items() if k != "penalty"}, batch)
    np.testing.assert_allclose(heads.loss(outputs, batch), data_loss + np.mean(outputs["penalty"]), rtol=1e-6)
    sums = heads.metric_sums(outputs, batch)
    np.testing.assert_allclose(sums["loss"] / sums["weight"], data_loss, rtol=1e-6)


# ---- learning, through the bench's driver and the experiment configs -----------------------------

@pytest.fixture(scope="module")
def small_table_run(tmp_path_factory):
    """mf and svdpp (experiments/configs) trained on a small synthetic table by bench_cf's driver."""
    from jaxreviews.data import readers

    tool = load_tool()
    folder = tmp_path_factory.mktemp("cf")
    train, test = tool.split_table(tool.synthetic_ratings(6000, seed=1), seed=1)
    readers.write_ratings(folder / "train.data", train.reviews())
    readers.write_ratings(folder / "test.data", test.reviews())
    paths = dict(train_path=str(folder / "train.data"), test_path=str(folder / "test.data"), rating_range=(1.0, 5.0),
                 rating_step=1.0, seed=0, overrides={"train.epochs": 25}, verbose=False)
    mean_rmse = float(np.sqrt(np.mean((test.ratings - train.ratings.mean()) ** 2)))
    return {name: tool.run_ours(name, **paths) for name in ("mf", "svdpp")}, mean_rmse


@pytest.mark.parametrize("name", ["mf", "svdpp"])
def test_mf_and_svdpp_learn_a_rating_table_better_than_the_mean(small_table_run, name):
    results, mean_rmse = small_table_run
    assert results[name]["rmse"] < mean_rmse - 0.03, (results[name], mean_rmse)
    assert results[name]["best_epoch"] > 1


def test_synthetic_table_is_deterministic_and_skewed():
    tool = load_tool()
    table = tool.synthetic_ratings(30_000, seed=3)
    again = tool.synthetic_ratings(30_000, seed=3)
    for field in ("users", "products", "ratings"):
        np.testing.assert_array_equal(getattr(table, field), getattr(again, field))
    assert not np.array_equal(table.ratings, tool.synthetic_ratings(30_000, seed=4).ratings)
    assert len(table) == 30_000
    assert set(np.unique(table.ratings)) <= {1.0, 2.0, 3.0, 4.0, 5.0} and len(np.unique(table.ratings)) == 5
    assert len(set(zip(table.users, table.products))) == len(table)  # one rating per pair
    for ids in (table.users, table.products):
        counts = np.sort(np.unique(ids, return_counts=True)[1])[::-1]
        top_tenth = counts[:max(1, len(counts) // 10)].sum() / counts.sum()
        assert top_tenth > 0.3, top_tenth  # uniform activity would give 0.1
        assert counts[0] > 5 * np.median(counts)
    train, test = tool.split_table(table, seed=3)
    assert len(test) == round(0.2 * len(table)) and len(train) + len(test) == len(table)
