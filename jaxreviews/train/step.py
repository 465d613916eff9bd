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

from jaxreviews.models import heads, layers
from jaxreviews.train import optimizers
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
                    *, l1: float = 0.0, l2: float = 0.0, norms: bool = True,
                    sparse: optimizers.SparseTables | None = None) -> Callable:
    """step(state, batch, key) -> (state, metrics); `key` is the run's key, the step is folded in.

    `norms`: the metrics include the global norms of the gradients, parameters and updates
    (`NORMS`). They cost more than their reductions (the updates are then materialised, where
    otherwise XLA fuses them into the parameter update): 2-4% of a CPU step on the Musical
    Instruments file (cnn, han_upa, 2026-12-04), less than a second program's compilation, so
    the loop computes them on every step.
    """

    if sparse is not None:
        return _row_sparse_train_step(model, tx, head_config, sparse, norms=norms)

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


def _row_sparse_train_step(model, tx, head_config, sparse: optimizers.SparseTables, *, norms: bool) -> Callable:
    """`make_train_step` with the embedding tables updated in the rows the step looked up
    (`optimizers.SparseTables`; tx from `make_optimizer` with `sparse_tables`). The model sows the
    ids each table looked up and adds zeros to the looked-up rows (`layers.look_up`); the gradient
    of those zeros is each lookup's gradient, summed per distinct row here. The tables' dense
    gradients are never used, so XLA does not compute them."""

    def train_step(state: TrainState, batch, key):
        dropout_key = jax.random.fold_in(key, state.step)
        mutable = list(state.model_state)
        variables = {"params": state.params, **state.model_state}

        def apply(variables, collections):
            return model.apply(variables, batch, train=True, rngs={"dropout": dropout_key},
                               mutable=[*mutable, *collections])

        _, shapes = jax.eval_shape(lambda v: apply(v, (layers.LOOKUPS, layers.ROW_GRADS)), variables)
        zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes[layers.ROW_GRADS])

        def loss_fn(params, perturbations):
            outputs, collections = apply({"params": params, **state.model_state, layers.ROW_GRADS: perturbations},
                                         (layers.LOOKUPS,))
            lookups = collections.pop(layers.LOOKUPS)
            model_state = {name: collections[name] for name in mutable}
            data_loss = heads.loss(outputs, batch, head_config)
            return data_loss, (outputs, model_state, lookups)

        (data_loss, (outputs, model_state, lookups)), (grads, row_grads) = jax.value_and_grad(
            loss_fn, argnums=(0, 1), has_aux=True)(state.params, zeros)
        named = {optimizers.path_name(path): leaf
                 for path, leaf in jax.tree_util.tree_flatten_with_path(state.params)[0]}
        rows, row_gradients = _distinct_rows(lookups, row_grads, named)
        tables = set(rows)
        flat = {optimizers.path_name(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(grads)[0]}
        missing = sorted(name for name in flat if optimizers.is_table(name) and name not in tables)
        if missing:
            raise ValueError(f"optimizer.sparse_tables: the model looked up no rows of {missing} in its train step")
        dense_squared = sum(jnp.sum(jnp.square(g.astype(jnp.float32))) for name, g in flat.items()
                            if name not in tables)
        rows_squared = sum(jnp.sum(jnp.square(g)) for g in row_gradients.values())
        grad_norm = jnp.sqrt(dense_squared + rows_squared)
        scale = jnp.ones([], jnp.float32)
        if sparse.clip_norm:  # as optax.clip_by_global_norm, over the dense gradients and the rows'
            scale = jnp.where(grad_norm < sparse.clip_norm, 1.0, sparse.clip_norm / grad_norm)
            grads = jax.tree.map(lambda g: (g * scale).astype(g.dtype), grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)

        def dense_update(path, param, update):
            return param if optimizers.is_table(optimizers.path_name(path)) else optax.apply_updates(param, update)

        params = jax.tree_util.tree_map_with_path(dense_update, state.params, updates)  # tables as they were
        new_tables, moments, rows_update_squared = sparse.update(
            {name: named[name] for name in tables}, optimizers.find_table_moments(opt_state), rows,
            row_gradients, state.step, scale)
        params = jax.tree_util.tree_map_with_path(
            lambda path, leaf: new_tables.get(optimizers.path_name(path), leaf), params)
        opt_state = optimizers.replace_table_moments(opt_state, moments)
        metrics = {**heads.metric_sums(outputs, batch, head_config), "loss": data_loss, "total_loss": data_loss}
        if norms:
            dense_updates = [u for path, u in jax.tree_util.tree_flatten_with_path(updates)[0]
                             if not optimizers.is_table(optimizers.path_name(path))]
            metrics.update(grad_norm=grad_norm, param_norm=optax.tree.norm(params),
                           update_norm=jnp.sqrt(optax.tree.norm(dense_updates, squared=True) + rows_update_squared))
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, model_state=model_state)
        return new_state, metrics

    return train_step


def _distinct_rows(lookups: dict, row_grads: dict, params: dict) -> tuple[dict, dict]:
    """For each table looked up: its distinct row ids [R] (R = its lookups; the unused end padded
    with the table's row count, out of range) and each row's gradient [R, dim], the sum of its
    lookups' gradients. Keyed by the table's parameter path ('user_embedding/embedding'), as
    `params` (parameters by path) is."""
    ids_of, grads_of = {}, {}
    for path, ids in jax.tree_util.tree_flatten_with_path(lookups)[0]:  # <module>/ids/<i>
        module = optimizers.path_name(path[:-2])
        ids_of.setdefault(module, []).append(ids.reshape(-1))
    for path, grad in jax.tree_util.tree_flatten_with_path(row_grads)[0]:  # <module>/rows
        module = optimizers.path_name(path[:-1])
        grads_of.setdefault(module, []).append(grad.reshape(-1, grad.shape[-1]).astype(jnp.float32))
    rows, gradients = {}, {}
    for module, parts in ids_of.items():
        name = f"{module}/embedding"
        ids, grad = jnp.concatenate(parts), jnp.concatenate(grads_of[module])
        table_rows = params[name].shape[0]
        distinct = jnp.unique(ids, size=ids.shape[0], fill_value=table_rows)
        slot = jnp.searchsorted(distinct, ids)
        rows[name] = distinct
        gradients[name] = jax.ops.segment_sum(grad, slot, num_segments=ids.shape[0])
    return rows, gradients


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
