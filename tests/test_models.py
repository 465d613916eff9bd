"""Model registry, shapes of every model and option, outputs, parameters and intermediates.

Shape tests use `jax.eval_shape` (tracing only, no compilation), so covering every option is cheap.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jaxreviews import options
from tests.training import set_keys
from jaxreviews import models
from jaxreviews.models import heads
from jaxreviews.train import step as step_lib

B, S, W, T = 3, 4, 5, 12
VOCAB, USERS, PRODUCTS, CLASSES = 40, 6, 7, 5
RANGE = (1.0, 5.0)


def make_batch(seed: int = 0, batch: int = B, sentences: int = S, words: int = W, tokens: int = T,
               pad: bool = True) -> dict[str, np.ndarray]:
    """A batch in the format of jaxreviews.data.types, with ragged (padded) sentences and tokens."""
    rng = np.random.default_rng(seed)
    word_mask = np.ones((batch, sentences, words), bool)
    token_mask = np.ones((batch, tokens), bool)
    if pad:
        for b in range(batch):
            n_sentences = rng.integers(1, sentences + 1)
            word_mask[b, n_sentences:] = False
            for s in range(n_sentences):
                word_mask[b, s, rng.integers(1, words + 1):] = False
            token_mask[b, rng.integers(1, tokens + 1):] = False
    words_ids = np.where(word_mask, rng.integers(2, VOCAB, word_mask.shape), 0).astype(np.int32)
    token_ids = np.where(token_mask, rng.integers(2, VOCAB, token_mask.shape), 0).astype(np.int32)
    label = rng.integers(0, CLASSES, batch).astype(np.int32)
    return {
        "words": words_ids, "word_mask": word_mask, "sentence_mask": word_mask.any(-1),
        "tokens": token_ids, "token_mask": token_mask,
        "user": rng.integers(0, USERS, batch).astype(np.int32),
        "product": rng.integers(0, PRODUCTS, batch).astype(np.int32),
        "label": label, "rating": (label + 1).astype(np.float32), "weight": np.ones(batch, np.float32),
    }


def tiny_config(name: str, **overrides) -> ml_collections.ConfigDict:
    """`name`'s tiny model config; MF without its data-dependent parts (shrinkage needs the
    training pairs) and with the plain sigmoid rating, so a model built on its own runs."""
    config = options.default_config(name, "tiny").model
    if name == "mf":
        config.factor_shrinkage = config.bias_shrinkage = 0.0
        config.head.rating_activation = "sigmoid"
    return set_keys(config, overrides, separator="__")


def build(config, pretrained=None):
    return models.build_model(config, vocab_size=VOCAB, num_users=USERS, num_products=PRODUCTS,
                              num_classes=CLASSES, rating_range=RANGE, pretrained_embeddings=pretrained)


def init(model, batch, seed: int = 0):
    """Jitted init: one compilation instead of op-by-op dispatch (much faster on CPU)."""
    return jax.jit(lambda b: model.init({"params": jax.random.key(seed)}, b, train=False))(batch)


def apply(model, variables, batch, *, train: bool = False, seed: int = 1, mutable=False):
    """Jitted apply (the dropout key is made from `seed`)."""
    def run(v, b):
        return model.apply(v, b, train=train, rngs={"dropout": jax.random.key(seed)}, mutable=mutable)
    return jax.jit(run)(variables, batch)


def shapes(config, batch=None):
    """(variable shapes, output shapes) by tracing init and a training apply."""
    model = build(config)
    batch = make_batch() if batch is None else batch
    variables = jax.eval_shape(lambda: model.init({"params": jax.random.key(0)}, batch, train=False))
    mutable = [k for k in variables if k != "params"]
    outputs = jax.eval_shape(lambda v: model.apply(v, batch, train=True, rngs={"dropout": jax.random.key(1)},
                                                   mutable=mutable + ["intermediates"])[0], variables)
    return variables, outputs


def check_outputs(outputs, kind: str) -> None:
    if kind in ("classification", "both"):
        assert outputs["logits"].shape == (B, CLASSES) and outputs["logits"].dtype == jnp.float32
    else:
        assert "logits" not in outputs
    if kind in ("regression", "both"):
        assert outputs["rating"].shape == (B,) and outputs["rating"].dtype == jnp.float32
    else:
        assert "rating" not in outputs
    assert outputs["predicted_rating"].shape == (B,) and outputs["predicted_class"].shape == (B,)


def test_registry():
    assert set(models.MODEL_NAMES) == {"cnn", "rnn", "bilstm", "han", "han_upa", "fasttext", "mf"}
    assert models.input_layout("han_upa") == "hierarchical"
    assert models.input_layout("cnn") == models.input_layout("rnn") == models.input_layout("fasttext") == "flat"
    assert models.input_layout("mf") == "ids"
    for name in models.MODEL_NAMES:
        config = models.default_model_config(name)
        assert config.name == name and config.head.kind in heads.KINDS and "regression_weight" in config.head
    with pytest.raises(ValueError, match="unknown model"):
        models.default_model_config("transformer")
    with pytest.raises(ValueError, match="unknown model"):
        models.input_layout("transformer")


@pytest.mark.parametrize("kind", heads.KINDS)
@pytest.mark.parametrize("name", models.MODEL_NAMES)
def test_output_shapes_every_model_and_head(name, kind):
    variables, outputs = shapes(tiny_config(name, head__kind=kind))
    check_outputs(outputs, kind)
    params = variables["params"]
    if name == "mf":
        assert params["user_embedding"]["embedding"].shape == (USERS, 8)
        assert params["product_embedding"]["embedding"].shape == (PRODUCTS, 8)
    else:
        assert params["word_embedding"]["embedding"].shape == (VOCAB, 16)
    if name == "han_upa":
        assert params["user_embedding"]["embedding"].shape[0] == USERS
        assert params["product_embedding"]["embedding"].shape[0] == PRODUCTS
    assert set(variables) == {"params"}  # LayerNorm by default: no batch_stats


OPTIONS = [
    ("rnn", {"encoder__kind": "gru"}),
    ("rnn", {"encoder__bidirectional": False}),
    ("rnn", {"encoder__kind": "gru", "encoder__bidirectional": False, "encoder__num_layers": 3,
             "encoder__dropout": 0.2}),
    ("rnn", {"encoder__num_layers": 2, "encoder__unroll": 2}),
    ("rnn", {"encoder__input_projection": "hoisted", "encoder__kind": "gru"}),
    ("han", {"word_encoder__input_projection": "fused", "sentence_encoder__input_projection": "hoisted"}),
    ("rnn", {"pooling": "last"}),
    ("rnn", {"pooling": "max"}),
    ("rnn", {"pooling": "attention", "attention_activation": "relu"}),
    ("rnn", {"encoder__kind": "cnn"}),
    ("rnn", {"norm": "none", "kernel_init": "he_uniform"}),
    ("cnn", {"filter_widths": (2, 3), "num_filters": 4, "activation": "tanh"}),
    ("cnn", {"activation": "gelu", "conv_kernel_init": "lecun_normal"}),
    ("cnn", {"embedding_dropout": 0.3, "kernel_init": "xavier_normal"}),
    ("han", {"word_encoder__kind": "gru", "sentence_encoder__kind": "gru"}),
    ("han", {"word_encoder__kind": "cnn", "sentence_encoder__kind": "lstm"}),
    ("han", {"word_encoder__kind": "cnn", "word_encoder__filter_widths": (2, 3), "sentence_encoder__kind": "cnn"}),
    ("han", {"word_encoder__bidirectional": False, "sentence_encoder__num_layers": 2}),
    ("han", {"sentence_norm": "layer", "norm": "none"}),
    ("han_upa", {"user_product__concat_to_document": True, "user_product__rating_biases": True}),
    ("han_upa", {"user_product__word_attention": False}),
    ("han_upa", {"user_product__sentence_attention": False, "head__kind": "both"}),
    ("han_upa", {"collaborative__enabled": True, "head__kind": "both"}),
    ("cnn", {"collaborative__enabled": True}),
    ("mf", {"factors": 3, "head__rating_activation": "clip", "head__kind": "both"}),
    ("fasttext", {"hidden_dim": 8, "hidden_activation": "gelu"}),
    ("fasttext", {"ngram_buckets": 0, "user_product__concat_to_document": False,
                  "user_product__rating_biases": False}),
    ("fasttext", {"hidden_dim": 8, "user_product__rating_biases": False, "collaborative__enabled": True}),
]


@pytest.mark.parametrize("name,overrides", OPTIONS, ids=lambda o: str(o))
def test_option_shapes(name, overrides):
    config = tiny_config(name, **overrides)
    variables, outputs = shapes(config)
    check_outputs(outputs, config.head.kind)


def test_batch_norm_keeps_running_stats_in_batch_stats():
    config = tiny_config("han", norm="batch", sentence_norm="batch", word_encoder__kind="cnn",
                         sentence_encoder__kind="cnn")
    model, batch = build(config), make_batch()
    variables = init(model, batch)
    assert "batch_stats" in variables
    outputs, state = apply(model, variables, batch, train=True, mutable=["batch_stats"])
    before = jax.tree.leaves(variables["batch_stats"])
    after = jax.tree.leaves(state["batch_stats"])
    assert any(not np.allclose(a, b) for a, b in zip(before, after))
    assert np.all(np.isfinite(outputs["logits"]))
    # Evaluation uses the running averages and needs nothing mutable.
    assert np.all(np.isfinite(apply(model, {**variables, **state}, batch)["logits"]))


def test_dropout_uses_only_the_dropout_rng_and_eval_is_deterministic():
    config = tiny_config("han_upa", embedding_dropout=0.5, head_dropout=0.5)
    model, batch = build(config), make_batch()
    variables = init(model, batch)
    run = jax.jit(lambda v, key, train: model.apply(v, batch, train=train, rngs={"dropout": key})["logits"],
                  static_argnums=2)
    a, b = run(variables, jax.random.key(1), False), run(variables, jax.random.key(2), False)
    np.testing.assert_array_equal(a, b)
    c, d, e = (run(variables, jax.random.key(k), True) for k in (1, 1, 2))
    np.testing.assert_array_equal(c, d)
    assert not np.allclose(c, e)


def test_rating_stays_in_range_and_extra_keys_are_ignored():
    for activation in heads.RATING_ACTIVATIONS:
        config = tiny_config("rnn", head__kind="both", head__rating_activation=activation, norm="none")
        model = build(config)
        batch = dict(make_batch(), something_else=np.zeros(7))
        variables = init(model, batch)
        variables = jax.tree.map(lambda p: p * 50.0, variables)  # push pre-activations far out
        rating = apply(model, variables, batch)["rating"]
        assert np.all(rating >= RANGE[0]) and np.all(rating <= RANGE[1])


def test_attention_weights_are_sown_and_ignore_padding():
    config = tiny_config("han_upa")
    model, batch = build(config), make_batch(3)
    variables = init(model, batch)
    _, state = apply(model, variables, batch, mutable=["intermediates"])
    words = np.asarray(state["intermediates"]["word_attention"]["weights"][0])
    sentences = np.asarray(state["intermediates"]["sentence_attention"]["weights"][0])
    assert words.shape == (B, S, W) and sentences.shape == (B, S)
    assert np.all(words[~batch["word_mask"]] == 0) and np.all(sentences[~batch["sentence_mask"]] == 0)
    np.testing.assert_allclose(words.sum(-1)[batch["sentence_mask"]], 1.0, rtol=1e-5)
    np.testing.assert_allclose(sentences.sum(-1), 1.0, rtol=1e-5)

    rnn = build(tiny_config("rnn", pooling="attention"))
    variables = init(rnn, batch)
    _, state = apply(rnn, variables, batch, mutable=["intermediates"])
    tokens = np.asarray(state["intermediates"]["pooling"]["attention"]["weights"][0])
    assert tokens.shape == (B, T) and np.all(tokens[~batch["token_mask"]] == 0)


def test_count_parameters_per_top_level_module():
    model, batch = build(tiny_config("han_upa")), make_batch()
    params = jax.eval_shape(lambda: model.init({"params": jax.random.key(0)}, batch, train=False))["params"]
    counts = models.count_parameters(params)
    assert counts["word_embedding"] == VOCAB * 16
    assert counts["user_embedding"] == USERS * 8 and counts["product_embedding"] == PRODUCTS * 8
    assert {"word_encoder", "word_attention", "sentence_encoder", "sentence_attention", "head"} <= set(counts)
    assert counts["total"] == sum(v for k, v in counts.items() if k != "total")
    assert counts["total"] == sum(x.size for x in jax.tree.leaves(params))


def test_pretrained_embeddings_frozen_and_trainable():
    table = np.random.default_rng(0).normal(size=(VOCAB, 6)).astype(np.float32)
    batch = make_batch()
    for freeze in (True, False):
        config = tiny_config("cnn", freeze_embeddings=freeze)
        model = build(config, pretrained=table)
        state = jax.jit(lambda b, t: step_lib.init_state(model, optax.sgd(0.1), b, jax.random.key(0),
                                                         pretrained_embeddings=t))(batch, table)
        params = state.params
        np.testing.assert_array_equal(params["word_embedding"]["embedding"], table)  # width taken from table

        def loss(p):
            return heads.loss(model.apply({"params": p}, batch, train=False), batch, config.head)

        grad = jax.jit(jax.grad(loss))(params)["word_embedding"]["embedding"]
        assert (np.abs(grad).sum() == 0) == freeze
    with pytest.raises(ValueError, match="vocab_size"):
        build(tiny_config("cnn"), pretrained=table[:5])


def test_bfloat16_compute_keeps_float32_params_and_outputs():
    config = tiny_config("han_upa", dtype="bfloat16", head__kind="both")
    model, batch = build(config), make_batch()
    variables = init(model, batch)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables))
    outputs = apply(model, variables, batch, train=True)
    assert outputs["logits"].dtype == jnp.float32 and outputs["rating"].dtype == jnp.float32
    assert np.all(np.isfinite(outputs["logits"])) and np.all(np.isfinite(outputs["rating"]))


def test_unknown_users_and_products_use_row_zero():
    config = tiny_config("han_upa", user_product__unknown_dropout=1.0, embedding_dropout=0.0, dropout=0.0,
                         head_dropout=0.0, user_product__rating_biases=True, user_product__concat_to_document=True)
    model, batch = build(config), make_batch()
    variables = init(model, batch)
    unknown = dict(batch, user=np.zeros(B, np.int32), product=np.zeros(B, np.int32))
    run = jax.jit(lambda b, train: model.apply(variables, b, train=train, rngs={"dropout": jax.random.key(1)}),
                  static_argnums=1)
    replaced = run(batch, True)["logits"]
    np.testing.assert_allclose(replaced, run(unknown, False)["logits"], rtol=1e-5)
    assert not np.allclose(replaced, run(batch, False)["logits"])


def test_mf_reads_only_users_and_products():
    config = tiny_config("mf")
    model = build(config)
    batch = {k: v for k, v in make_batch().items() if k in ("user", "product")}
    variables = init(model, batch)
    rating = apply(model, variables, batch)["rating"]
    assert rating.shape == (B,) and np.all((rating >= 1) & (rating <= 5))


def test_models_jit_and_vmap_over_parameters():
    model, batch = build(tiny_config("rnn")), make_batch()
    keys = jax.random.split(jax.random.key(0), 2)
    variables = jax.jit(jax.vmap(lambda k: model.init({"params": k}, batch, train=False)))(keys)
    logits = jax.jit(jax.vmap(lambda v: model.apply(v, batch, train=False)["logits"]))(variables)
    assert logits.shape == (2, B, CLASSES)
    assert not np.allclose(logits[0], logits[1])
    # Gradients vmap too (the custom-VJP LSTM included), e.g. for K seeds in one program.
    loss = lambda v: heads.loss(model.apply(v, batch, train=False), batch)  # noqa: E731
    grads = jax.jit(jax.vmap(jax.grad(loss)))(variables)
    single = jax.jit(jax.grad(loss))(jax.tree.map(lambda v: v[1], variables))
    jax.tree.map(lambda g, s: np.testing.assert_allclose(g[1], s, rtol=1e-4, atol=1e-6), grads, single)


def test_bad_options_raise_actionable_errors():
    with pytest.raises(ValueError, match="cell|encoder kind"):
        shapes(tiny_config("rnn", encoder__kind="mamba"))
    with pytest.raises(ValueError, match="pooling"):
        shapes(tiny_config("rnn", pooling="median"))
    with pytest.raises(ValueError, match="head kind"):
        shapes(tiny_config("cnn", head__kind="ordinal"))
    with pytest.raises(ValueError, match="kernel_init"):
        shapes(tiny_config("cnn", kernel_init="zeros"))
    with pytest.raises(ValueError, match="rating_range"):
        models.build_model(tiny_config("mf"), vocab_size=1, num_users=2, num_products=2, num_classes=5,
                           rating_range=(5.0, 1.0))


@pytest.mark.parametrize("name", ["han_upa", "cnn"])
def test_text_model_heads_start_at_the_training_prior(name):
    """build_model's training statistics reach a text model's head: its class biases start at
    log(prior), so an untrained model's softmax leans to the frequent ratings."""
    prior = np.array([0.05, 0.05, 0.1, 0.2, 0.6])
    model = models.build_model(tiny_config(name), vocab_size=VOCAB, num_users=USERS, num_products=PRODUCTS,
                               num_classes=CLASSES, rating_range=RANGE, rating_mean=4.2, label_prior=prior)
    variables = init(model, make_batch())
    bias = np.asarray(variables["params"]["head"]["output"]["bias"])
    np.testing.assert_allclose(bias - bias.mean(), np.log(prior) - np.log(prior).mean(), rtol=1e-5, atol=1e-5)
