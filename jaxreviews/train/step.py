"""The train state and the pure step functions: `train_step(state, batch, key)` and `eval_step`.

Nothing here holds Python state, so a step can be `jit`ted with the state donated, `vmap`ped over a
leading axis of seeds, and sharded over a device mesh by the caller.
"""
from __future__ import annotations

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxreviews.models import heads
from jaxreviews.train.optimizers import penalty


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 optimiser steps taken (micro-steps under gradient accumulation)
    params: Any
    opt_state: Any
    model_state: Any  # non-parameter collections such as {"batch_stats": ...}; {} for most models


def init_state(model, tx: optax.GradientTransformation, batch, key: jax.Array, *,
               pretrained_embeddings=None) -> TrainState:
    """A fresh state; `pretrained_embeddings` [vocab, dim] (GloVe / word2vec) become the word
    table. Passed as an argument, it is data of the jitted init, not a constant baked into it."""
    variables = model.init({"params": key, "dropout": key}, batch, train=False)
    params = variables.pop("params")
    if pretrained_embeddings is not None:
        table = params["word_embedding"]["embedding"]
        if tuple(table.shape) != tuple(pretrained_embeddings.shape):
            raise ValueError(f"pretrained embeddings {tuple(pretrained_embeddings.shape)} do not match the model's "
                             f"word table {tuple(table.shape)}")
        params = {**params, "word_embedding": {**params["word_embedding"],
                                               "embedding": jnp.asarray(pretrained_embeddings, table.dtype)}}
    model_state = {k: v for k, v in variables.items() if k != "intermediates"}
    return TrainState(step=jnp.zeros([], jnp.int32), params=params, opt_state=tx.init(params),
                      model_state=model_state)


NORMS = ("grad_norm", "param_norm", "update_norm")


def train_metric_names(head_kind: str, *, norms: bool = True) -> tuple[str, ...]:
    """The keys of a train step's metrics (`make_train_step`)."""
    return heads.metric_sum_names(head_kind) + ("total_loss",) + (NORMS if norms else ())


def global_norms(grads, params, updates) -> dict[str, jax.Array]:
    return {"grad_norm": optax.tree.norm(grads), "param_norm": optax.tree.norm(params),
            "update_norm": optax.tree.norm(updates)}


def make_train_step(model, tx: optax.GradientTransformation, head_config: ml_collections.ConfigDict,
                    *, l1: float = 0.0, l2: float = 0.0, norms: bool = True) -> Callable:
    """step(state, batch, key) -> (state, metrics); `key` is the run's key, the step is folded in.

    `norms`: the metrics include the global norms of the gradients, parameters and updates
    (`NORMS`). They cost more than their reductions (the updates are then materialised, where
    otherwise XLA fuses them into the parameter update): 2-4% of a CPU step on the Musical
    Instruments file (cnn, han_upa, 2026-12-04), less than a second program's compilation, so
    the loop computes them on every step.
    """

    def train_step(state: TrainState, batch, key):
        dropout_key = jax.random.fold_in(key, state.step)
        mutable = list(state.model_state)

        def loss_fn(params):
            variables = {"params": params, **state.model_state}
            if mutable:
                outputs, new_model_state = model.apply(variables, batch, train=True,
                                                       rngs={"dropout": dropout_key}, mutable=mutable)
            else:
                outputs = model.apply(variables, batch, train=True, rngs={"dropout": dropout_key})
                new_model_state = state.model_state
            data_loss = heads.loss(outputs, batch, head_config)
            return data_loss + penalty(params, l1=l1, l2=l2), (data_loss, outputs, new_model_state)

        (total, (data_loss, outputs, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {**heads.metric_sums(outputs, batch, head_config),  # sums, for accuracy
                   "loss": data_loss, "total_loss": total}
        if norms:
            metrics.update(global_norms(grads, params, updates))
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                                  model_state=model_state)
        return new_state, metrics

    return train_step


def on_stacked(step: Callable) -> Callable:
    """step(state, batch, key) -> step(state, batches, index, key) on `batches[index]`: several
    batches moved to the device at once (`train.steps_per_transfer`), each step picking its own
    inside the program, so the index changes nothing that compiles."""

    def picking_step(state, batches, index, key):
        return step(state, jax.tree.map(lambda x: jax.lax.dynamic_index_in_dim(x, index, 0, keepdims=False),
                                        batches), key)

    return picking_step


def make_eval_step(model, head_config: ml_collections.ConfigDict, num_classes: int) -> Callable:
    """step(params, model_state, batch) -> weighted metric sums of the batch, and its confusion
    matrix [true class, predicted class] (for macro-F1: on skewed ratings accuracy says little)."""

    def eval_step(params, model_state, batch):
        outputs = model.apply({"params": params, **model_state}, batch, train=False)
        sums = heads.metric_sums(outputs, batch, head_config)
        truth = jax.nn.one_hot(batch["label"], num_classes) * batch["weight"][:, None]
        sums["confusion"] = truth.T @ jax.nn.one_hot(outputs["predicted_class"], num_classes)
        return sums

    return eval_step


def macro_f1(confusion) -> float:
    """Mean over classes present in the data or the predictions of 2PR / (P + R)."""
    confusion = np.asarray(confusion, np.float64)
    true_positive = np.diag(confusion)
    support, predicted = confusion.sum(1), confusion.sum(0)
    present = (support + predicted) > 0
    f1 = 2 * true_positive / np.maximum(support + predicted, 1e-12)
    return float(f1[present].mean()) if present.any() else 0.0


def finalize_metrics(sums: dict) -> dict:
    """Summed metrics of many batches -> means: accuracy, rmse, mae, nll (loss per review)."""
    weight = max(float(sums["weight"]), 1e-12)
    out = {"reviews": int(round(float(sums["weight"])))}
    if "correct" in sums:
        out["accuracy"] = float(sums["correct"]) / weight
    if "squared_error" in sums:
        out["rmse"] = float(sums["squared_error"] / weight) ** 0.5
        out["mae"] = float(sums["absolute_error"]) / weight
    if "loss" in sums:
        out["loss"] = float(sums["loss"]) / weight
    if "nll" in sums:
        out["nll"] = float(sums["nll"]) / weight
    if "confusion" in sums:
        out["macro_f1"] = macro_f1(sums["confusion"])
    return out
