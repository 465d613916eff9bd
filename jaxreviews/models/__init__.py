"""Models by name, their default configs, and small helpers.

    config = default_model_config("han_upa")          # every option at its default (jaxreviews.options)
    model = build_model(config, vocab_size=..., num_users=..., num_products=..., num_classes=5,
                        rating_range=(1.0, 5.0),
                        **training_statistics(config, users=..., products=..., ratings=..., ...))
    variables = model.init({"params": key}, batch, train=False)
    outputs = model.apply(variables, batch, train=True, rngs={"dropout": key})
    # outputs["logits"] [B, C] and/or outputs["rating"] [B], plus predicted_rating / predicted_class

| name    | layout        | model                                                              |
|---------|---------------|--------------------------------------------------------------------|
| cnn     | flat          | Kim (2014): widths 3,4,5 x 100 maps, ReLU, max over time, dropout  |
| rnn     | flat          | LSTM/GRU (nn.scan) or transformer, uni/bi, stacked, pooling          |
|         |               | last/mean/max/attention                                            |
| bilstm  | flat          | `rnn` preset: one BiLSTM layer, mean pooling (the torch reference) |
| han     | hierarchical  | Yang et al. (2016), word/sentence encoders LSTM, GRU, CNN or       |
|         |               | transformer                                                        |
| han_upa | hierarchical  | HAN + user/product attention (NSC+UPA), optional concat and biases |
| fasttext| flat          | Joulin et al. (2017): average of word and hashed bigram embeddings, |
|         |               | optional user/product embeddings and biases, linear or MLP head    |
| mf      | ids           | matrix factorisation with biases (collaborative filtering); with   |
|         |               | `implicit_feedback=True` SVD++ (Koren 2008)                        |

Any text model becomes a hybrid with MF by `config.collaborative.enabled = True`.

Training statistics (`training_statistics`): the mean rating and the class frequencies of the
training split set where MF's biases start (an untrained model predicts the mean / the prior, see
`heads.starting_biases`); MF also gets the training (user, product) pairs: SVD++'s N(u) and the
counts its shrinkage terms divide by.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from jaxreviews.models import backend, heads, layers
from jaxreviews.options import schema
from jaxreviews.models.fasttext import FastText
from jaxreviews.models.mf import MatrixFactorization, TrainingPairs
from jaxreviews.models.text import HierarchicalAttention, KimCNN, RNNClassifier

__all__ = ["MODEL_NAMES", "TrainingPairs", "backend", "batch_layout", "build_model", "count_parameters",
           "default_model_config", "heads", "input_layout", "training_statistics"]

MODEL_NAMES = schema.MODEL_NAMES
_LAYOUTS = {"cnn": "flat", "rnn": "flat", "bilstm": "flat", "han": "hierarchical", "han_upa": "hierarchical",
            "fasttext": "flat", "mf": "ids"}
_CLASSES = {"cnn": KimCNN, "rnn": RNNClassifier, "bilstm": RNNClassifier, "han": HierarchicalAttention,
            "han_upa": HierarchicalAttention, "fasttext": FastText, "mf": MatrixFactorization}


def _check_name(name: str) -> None:
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; choose one of {MODEL_NAMES}")


def input_layout(name: str) -> str:
    """Which batch keys the model reads: "hierarchical" (words, word_mask, sentence_mask), "flat"
    (tokens, token_mask) or "ids" (user and product only). All models may read user/product."""
    _check_name(name)
    return _LAYOUTS[name]


BATCH_LAYOUTS = ("auto", "packed", "padded")


def batch_layout(model: ml_collections.ConfigDict, option: str = "auto", backend_name: str | None = None) -> str:
    """"packed" or "padded" batches for `model` (its config; `data.layout`). "auto": the backend's
    pick (`backend.batch_layout`): on CPU every text model packs (on real files, tools/bench.py
    --data, packed batches were as fast or faster for each of them and compile one program instead
    of one per bucket); on accelerators the flat recurrent models read length buckets. "mf" reads
    ids only ("padded": no text)."""
    _check_name(model.name)
    if option not in BATCH_LAYOUTS:
        raise ValueError(f"unknown data.layout {option!r}; choose one of {BATCH_LAYOUTS}")
    if _LAYOUTS[model.name] == "ids":
        return "padded"
    return backend.batch_layout(model, backend_name) if option == "auto" else option


def default_model_config(name: str) -> ml_collections.ConfigDict:
    """Every option of model `name` at the default `make run` trains it with (the option
    reference, jaxreviews/options: docs/options.md lists them)."""
    _check_name(name)
    from jaxreviews import options

    return options.default_config(name).model


def training_statistics(config: ml_collections.ConfigDict, *, users: np.ndarray, products: np.ndarray,
                        ratings: np.ndarray, num_users: int, num_products: int, num_classes: int,
                        rating_range: tuple[float, float]) -> dict:
    """build_model's keyword arguments that come from the TRAINING split (its id and rating columns):
    `rating_mean`, `label_prior` [C] (class frequencies, class = nearest step of the range) and,
    for `mf`, `training_pairs` (SVD++'s N(u), the counts of the shrinkage terms)."""
    ratings = np.asarray(ratings, np.float64)
    if len(ratings) == 0:
        return {}
    step = heads.rating_step(tuple(rating_range), num_classes)  # numpy: no device round trip
    classes = np.clip(np.rint((ratings - rating_range[0]) / step), 0, num_classes - 1).astype(np.int64)
    statistics = {"rating_mean": float(ratings.mean()),  # every model's head starts here
                  "label_prior": np.bincount(classes, minlength=num_classes) / len(classes)}
    if config.name == "mf":
        statistics["training_pairs"] = TrainingPairs.from_ratings(users=users, products=products,
                                                                  num_users=num_users, num_products=num_products)
    return statistics


def build_model(config: ml_collections.ConfigDict, *, vocab_size: int, num_users: int, num_products: int,
                num_classes: int, rating_range: tuple[float, float],
                pretrained_embeddings: np.ndarray | None = None, rating_mean: float | None = None,
                label_prior: np.ndarray | None = None, training_pairs: TrainingPairs | None = None) -> nn.Module:
    """The Flax module of `config.name`. num_users / num_products include the unknown id 0.

    `rating_mean`, `label_prior` and `training_pairs` are training statistics
    (`training_statistics`): where the head's biases start (every model: an untrained model predicts
    the training mean / prior), and for MF SVD++'s N(u) and the shrinkage counts.
    """
    _check_name(config.name)
    if heads.has_classification(config.head.kind) and num_classes < 2:
        raise ValueError(f"a classification head needs num_classes >= 2, got {num_classes}")
    rating_range = (float(rating_range[0]), float(rating_range[1]))
    if not rating_range[0] < rating_range[1]:
        raise ValueError(f"rating_range must be (low, high) with low < high, got {rating_range}")
    config = ml_collections.ConfigDict(config.to_dict())
    layers.compute_dtype(config.dtype)
    if config.name == "mf":
        if training_pairs is not None and (training_pairs.num_users, training_pairs.num_products) != (
                num_users, num_products):
            raise ValueError(f"training_pairs covers {training_pairs.num_users} users and {training_pairs.num_products} "
                             f"products, the model {num_users} and {num_products}")
        return MatrixFactorization(
            ml_collections.FrozenConfigDict(config), num_users=num_users, num_products=num_products,
            num_classes=num_classes, rating_range=rating_range,
            rating_mean=None if rating_mean is None else float(rating_mean),
            label_prior=None if label_prior is None else tuple(float(x) for x in np.asarray(label_prior)),
            pairs=training_pairs)
    if pretrained_embeddings is not None:
        pretrained_embeddings = np.asarray(pretrained_embeddings, np.float32)
        if pretrained_embeddings.ndim != 2 or pretrained_embeddings.shape[0] != vocab_size:
            raise ValueError(f"pretrained embeddings must be [vocab_size={vocab_size}, dim], "
                             f"got {pretrained_embeddings.shape}")
        config.embed_dim = int(pretrained_embeddings.shape[1])
    return _CLASSES[config.name](
        ml_collections.FrozenConfigDict(config), vocab_size=vocab_size, num_users=num_users,
        num_products=num_products, num_classes=num_classes, rating_range=rating_range,
        rating_mean=None if rating_mean is None else float(rating_mean),
        label_prior=None if label_prior is None else tuple(float(x) for x in np.asarray(label_prior)))


def count_parameters(params) -> dict[str, int]:
    """Parameter count per top-level module (e.g. word_embedding, word_encoder, head) plus "total"."""
    params = params.get("params", params) if hasattr(params, "get") else params
    counts = {name: int(sum(np.prod(np.shape(leaf)) for leaf in jax.tree_util.tree_leaves(tree)))
              for name, tree in params.items()}
    counts["total"] = sum(counts.values())
    return counts
