"""Optax optimisers, schedules, clipping, accumulation and parameter freezing, from config.

Schedules are written in epochs in the config and turned into optimiser steps here, so a config
reads the same whatever the data size. Frozen groups (a regex over parameter paths such as
`word_embedding`) keep an optimiser state of their own that does not move until their unfreeze
epoch, so their Adam moments start fresh then instead of decaying towards zero meanwhile.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxreviews.options.reference import OPTIMIZERS, SCHEDULES


def peak_learning_rate(config: ml_collections.ConfigDict, batch_size: int) -> float:
    lr = config.learning_rate
    return lr * batch_size / config.base_batch_size if config.scale_with_batch else lr


def optimizer_steps(config: ml_collections.ConfigDict, *, steps_per_epoch: int, total_epochs: int,
                    max_steps: int = 0) -> int:
    """The optimiser steps of a run: `total_epochs` epochs, or fewer when `max_steps` (training
    micro-steps, `train.max_steps`) ends it first."""
    accumulation = max(1, config.accumulation_steps)
    total = max(1, steps_per_epoch // accumulation) * total_epochs
    return max(1, min(total, max_steps // accumulation) if max_steps > 0 else total)


def make_schedule(config: ml_collections.ConfigDict, *, steps_per_epoch: int, total_epochs: int,
                  batch_size: int, max_steps: int = 0) -> optax.Schedule:
    """The learning rate as a function of the optimiser step; decays span the run's steps."""
    s, lr = config.schedule, peak_learning_rate(config, batch_size)
    total = optimizer_steps(config, steps_per_epoch=steps_per_epoch, total_epochs=total_epochs, max_steps=max_steps)
    steps_per_epoch = max(1, steps_per_epoch // max(1, config.accumulation_steps))
    warmup = int(s.warmup_epochs * steps_per_epoch)
    if s.name == "constant":
        main = optax.constant_schedule(lr)
    elif s.name == "exponential":
        main = optax.exponential_decay(lr, max(1, int(s.decay_epochs * steps_per_epoch)), s.decay_rate)
    elif s.name == "step":
        main = optax.exponential_decay(lr, max(1, int(s.decay_epochs * steps_per_epoch)), s.decay_rate,
                                       staircase=True)
    elif s.name == "warmup_cosine":
        return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(warmup + 1, total), lr * s.end_factor)
    elif s.name == "one_cycle":
        return optax.cosine_onecycle_schedule(total, lr)
    elif s.name == "sgdr":
        cycles, length, start = [], max(1, int(s.cycle_epochs * steps_per_epoch)), 0
        while start < total:
            cycles.append(dict(init_value=lr if start == 0 or not warmup else 0.0, peak_value=lr,
                               warmup_steps=min(warmup, length - 1), decay_steps=length, end_value=0.0))
            start += length
            length *= max(1, int(s.cycle_mult))
        return optax.sgdr_schedule(cycles)
    else:
        raise ValueError(f"optimizer.schedule.name={s.name!r}: choose one of {SCHEDULES}")
    if warmup:
        return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])
    return main


def cycle_boundaries(total_steps: int, cycles: int) -> list[int]:
    """The optimiser steps at which `cycles` equal cycles over `total_steps` start (and the end)."""
    return [round(m * total_steps / cycles) for m in range(cycles + 1)]


def cyclic_cosine_schedule(peak: float, total_steps: int, cycles: int) -> optax.Schedule:
    """Snapshot ensembles' schedule (Huang et al. 2017): `cycles` equal cycles, each a cosine from
    `peak` to near 0, restarting at `peak`; a snapshot is taken at the end of each."""
    boundaries = jnp.asarray(cycle_boundaries(total_steps, cycles), jnp.int32)

    def schedule(count):
        count = jnp.asarray(count, jnp.int32)
        cycle = jnp.clip(jnp.searchsorted(boundaries, count, side="right") - 1, 0, cycles - 1)
        start, end = boundaries[cycle], boundaries[cycle + 1]
        position = (count - start).astype(jnp.float32) / jnp.maximum(end - start, 1).astype(jnp.float32)
        return peak * 0.5 * (1.0 + jnp.cos(jnp.pi * jnp.clip(position, 0.0, 1.0)))

    return schedule


class GatedState(NamedTuple):
    count: jax.Array
    inner: Any


def gated(inner: optax.GradientTransformation, open_at_step: int) -> optax.GradientTransformation:
    """`inner` that gives zero updates, and leaves its state untouched, before `open_at_step`."""

    def init(params):
        return GatedState(jnp.zeros([], jnp.int32), inner.init(params))

    def update(updates, state, params=None):
        def closed(_):
            return jax.tree.map(jnp.zeros_like, updates), state.inner

        def opened(_):
            return inner.update(updates, state.inner, params)

        if open_at_step < 0:
            new_updates, new_inner = closed(None)
        else:
            new_updates, new_inner = jax.lax.cond(state.count >= open_at_step, opened, closed, None)
        return new_updates, GatedState(state.count + 1, new_inner)

    return optax.GradientTransformation(init, update)


def path_name(path) -> str:
    """'word_encoder/forward/kernel' for a jax key path."""
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


EMBEDDING_TABLE = r"^word_embedding/"  # the path of the text models' word table (embedding_weight_decay)


def decay_mask(pattern: str):
    """None (decay every parameter) for "", else params -> a tree of bools: paths `pattern` finds."""
    if not pattern:
        return None
    regex = re.compile(pattern)
    return lambda params: jax.tree_util.tree_map_with_path(lambda path, _: bool(regex.search(path_name(path))),
                                                           params)


def freeze_labels(params, pattern: str):
    regex = re.compile(pattern)
    return jax.tree_util.tree_map_with_path(
        lambda path, _: "frozen" if regex.search(path_name(path)) else "trainable", params)


INJECTABLE = ("learning_rate", "weight_decay")


def make_optimizer(config: ml_collections.ConfigDict, *, steps_per_epoch: int, total_epochs: int,
                   batch_size: int, cycles: int = 0, max_steps: int = 0,
                   injected: tuple[str, ...] = ()) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """(tx, schedule) of `config`. `cycles` > 1 replaces the config's schedule (which must be the
    default "constant") by `cyclic_cosine_schedule` over the run's steps: snapshot ensembles.

    `injected` names hyperparameters (of `INJECTABLE`) that `optax.inject_hyperparams` keeps as
    arrays in the optimiser state, where `optax.tree.set` can give each member of a vmapped
    population its own value: "learning_rate" is the peak the schedule is scaled to, and
    "weight_decay" the decoupled decay.
    """
    for name in injected:
        if name not in INJECTABLE:
            raise ValueError(f"{name!r} cannot vary per member; choose from {INJECTABLE}")
    if cycles > 1:
        if config.schedule.name != "constant":
            raise ValueError(f"train.snapshots={cycles} sets its own cyclic cosine schedule; "
                             f"optimizer.schedule.name={config.schedule.name!r} would be ignored: leave it 'constant'")
        total = optimizer_steps(config, steps_per_epoch=steps_per_epoch, total_epochs=total_epochs,
                                max_steps=max_steps)
        schedule = cyclic_cosine_schedule(peak_learning_rate(config, batch_size), total, cycles)
    else:
        schedule = make_schedule(config, steps_per_epoch=steps_per_epoch, total_epochs=total_epochs,
                                 batch_size=batch_size, max_steps=max_steps)
    base_learning_rate = config.learning_rate

    def build(learning_rate=base_learning_rate, weight_decay=config.weight_decay):
        scaled = schedule
        if "learning_rate" in injected:  # the schedule's shape, its peak at this member's rate
            def scaled(count):
                return schedule(count) * (learning_rate / base_learning_rate)
        return _transform(config, scaled, weight_decay, decay_always="weight_decay" in injected,
                          steps_per_epoch=steps_per_epoch)

    if config.get("sparse_tables", False):  # the tables' rows: `SparseTables`, in the train step
        clip = config.clip_norm
        config = ml_collections.ConfigDict(config.to_dict())
        config.clip_norm = 0.0  # one global norm over the dense gradients and the tables' rows: the step's
        dense = _transform(config, schedule, config.weight_decay, decay_always=False, steps_per_epoch=steps_per_epoch)
        tx = optax.multi_transform({"dense": dense, "table": table_moments()}, table_labels)
        return tx, schedule
    if injected:  # the others stay Python numbers (static)
        static = tuple(name for name in INJECTABLE if name not in injected)
        tx = optax.inject_hyperparams(build, static_args=static)(
            **{name: getattr(config, name) for name in injected})
    else:
        tx = build()
    if config.accumulation_steps > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=config.accumulation_steps)
    return tx, schedule


def _transform(config: ml_collections.ConfigDict, schedule: optax.Schedule, weight_decay, *,
               decay_always: bool, steps_per_epoch: int) -> optax.GradientTransformation:
    """The update rule: the optimiser's core, decoupled decay, the learning rate, clipping and
    frozen groups."""
    if config.name in ("adam", "adamw"):
        core = optax.scale_by_adam(config.b1, config.b2, config.eps)
    elif config.name == "sgd":
        core = (optax.trace(config.momentum, nesterov=config.nesterov) if config.momentum
                else optax.identity())
    elif config.name == "adagrad":
        core = optax.scale_by_rss(initial_accumulator_value=0.1, eps=1e-7)
    elif config.name == "rmsprop":
        core = optax.chain(optax.scale_by_rms(decay=0.9, eps=config.eps),
                           optax.trace(config.momentum) if config.momentum else optax.identity())
    else:
        raise ValueError(f"optimizer.name={config.name!r}: choose one of {OPTIMIZERS}")

    def chain(learning_rate: optax.Schedule) -> optax.GradientTransformation:
        parts = [core]
        if decay_always or weight_decay:
            parts.append(optax.add_decayed_weights(weight_decay, mask=decay_mask(config.get("weight_decay_on", ""))))
        if config.get("embedding_weight_decay", 0.0):
            decays = {"zero": optax.add_decayed_weights, "start": add_decay_towards_start}
            target = config.get("embedding_decay_to", "zero")
            if target not in decays:
                raise ValueError(f"optimizer.embedding_decay_to={target!r}: choose one of {tuple(decays)}")
            parts.append(decays[target](config.embedding_weight_decay, mask=decay_mask(EMBEDDING_TABLE)))
        return optax.chain(*parts, optax.scale_by_learning_rate(learning_rate))

    tx = chain(schedule)
    if config.clip_norm:
        tx = optax.chain(optax.clip_by_global_norm(config.clip_norm), tx)
    if config.freeze:
        opens_at = (-1 if config.unfreeze_epoch < 0
                    else config.unfreeze_epoch * steps_per_epoch // max(1, config.accumulation_steps))
        # The frozen group's state starts fresh when it opens, its step count at 0: its schedule is
        # shifted so that it still reads the run's own step (the user's schedule, not a restart).
        def opened_schedule(count):
            return schedule(count + max(opens_at, 0))

        # Clipping inside each group would clip the groups separately: clip the whole first.
        tx = optax.multi_transform({"trainable": chain(schedule), "frozen": gated(chain(opened_schedule), opens_at)},
                                   lambda params: freeze_labels(params, config.freeze))
        if config.clip_norm:
            tx = optax.chain(optax.clip_by_global_norm(config.clip_norm), tx)
    return tx


class StartState(NamedTuple):
    start: Any  # the parameters as `init` saw them


def add_decay_towards_start(rate: float, mask=None) -> optax.GradientTransformation:
    """Decoupled decay towards the parameters' initial values (L2-SP, Li et al. 2018): adds
    `rate * (params - start)` to the updates. For a word table initialised with pretrained vectors
    the vectors stay the anchor; decay towards zero would erase them as fast as a random start.
    `mask` as optax.masked's: the copy is kept of the chosen leaves only."""

    def init(params):
        return StartState(start=jax.tree.map(jnp.copy, params))

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("add_decay_towards_start needs the parameters: call update(updates, state, params)")
        updates = jax.tree.map(lambda g, p, s: g + rate * (p - s), updates, params, state.start)
        return updates, state

    transform = optax.GradientTransformation(init, update)
    return transform if mask is None else optax.masked(transform, mask)


_PENALISED = re.compile(r"(kernel|embedding)(_\d+)?$")


def is_penalised(path: str) -> bool:
    """Weight matrices and embedding tables by name ('.../kernel', 'input_kernel', 'kernel_3',
    '.../embedding'), never biases (incl. the bias tables 'user_bias/embedding') or norm scales.
    By name, not by rank: an RNN's bias is [directions, gates], a matrix by shape."""
    parts = path.split("/")
    return bool(_PENALISED.search(parts[-1])) and not any(part.endswith("bias") for part in parts)


def penalty(params, *, l1: float, l2: float) -> jax.Array:
    """l1 * sum|w| + l2/2 * sum w^2 over the leaves `is_penalised` selects."""
    total = jnp.zeros([], jnp.float32)
    if not (l1 or l2):
        return total
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        if is_penalised(path_name(path)):
            if l1:
                total += l1 * jnp.abs(leaf).sum()
            if l2:
                total += 0.5 * l2 * jnp.square(leaf).sum()
    return total


def learning_rate_at(schedule: optax.Schedule, micro_step: int, accumulation_steps: int = 1) -> float:
    """The learning rate an update applies at `micro_step`: the schedule counts optimiser steps,
    one per `accumulation_steps` micro-steps."""
    return float(schedule(micro_step // max(1, accumulation_steps)))


# -- embedding tables updated in the rows a step looks up ---------------------------------------------

def is_table(path: str) -> bool:
    """An embedding table's parameter (`models.layers.WordEmbedding` / `IdEmbedding`): '.../embedding'."""
    return path.split("/")[-1] == "embedding"


def table_labels(params):
    return jax.tree_util.tree_map_with_path(lambda path, _: "table" if is_table(path_name(path)) else "dense", params)


class TableMoments(NamedTuple):
    """Adam's moments of the embedding tables, by parameter path (`SparseTables`)."""

    mu: dict
    nu: dict


def table_moments() -> optax.GradientTransformation:
    """Holds the tables' moments in the optimiser state; the train step updates them, and the
    tables, in the rows it looked up (`SparseTables.update`). Its own updates are zeros."""

    def init(params):
        tables = {path_name(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}
        zeros = {name: jnp.zeros(leaf.shape, jnp.float32) for name, leaf in tables.items()}
        return TableMoments(mu=zeros, nu=dict(zeros))

    def update(updates, state, params=None):
        return jax.tree.map(jnp.zeros_like, updates), state

    return optax.GradientTransformation(init, update)


def find_table_moments(opt_state) -> TableMoments:
    found = [x for x in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, TableMoments))
             if isinstance(x, TableMoments)]
    if len(found) != 1:
        raise ValueError("optimizer.sparse_tables: the optimiser state holds no table moments (was the optimiser "
                         "made by make_optimizer with sparse_tables?)")
    return found[0]


def replace_table_moments(opt_state, moments: TableMoments):
    return jax.tree.map(lambda x: moments if isinstance(x, TableMoments) else x, opt_state,
                        is_leaf=lambda x: isinstance(x, TableMoments))


@dataclasses.dataclass(frozen=True)
class SparseTables:
    """Lazy Adam(W) on the embedding tables (`optimizer.sparse_tables`): a step updates a table, and
    its moments, only in the rows it looked up, with the gradient of those rows (their lookups'
    gradients summed per row). A step then costs O(rows looked up), where dense Adam reads and
    writes every row of every table, about ten passes over tables that grow with the vocabulary,
    the users and the products. A looked-up row gets exactly dense Adam's update; a row not looked
    up keeps its value and its moments (dense Adam would still move it by its decaying moment, and
    decay it). The same global norm clips the dense gradients and the rows' (`clip_norm`), and
    decoupled decay applies to the looked-up rows (`weight_decay`, `weight_decay_on`, and
    `embedding_weight_decay` towards zero on the word table)."""

    schedule: Any
    b1: float
    b2: float
    eps: float
    clip_norm: float
    weight_decay: float
    weight_decay_on: str
    embedding_weight_decay: float

    @classmethod
    def of(cls, config: ml_collections.ConfigDict, schedule) -> SparseTables | None:
        if not config.get("sparse_tables", False):
            return None
        return cls(schedule=schedule, b1=config.b1, b2=config.b2, eps=config.eps, clip_norm=config.clip_norm,
                   weight_decay=config.weight_decay, weight_decay_on=config.weight_decay_on,
                   embedding_weight_decay=config.embedding_weight_decay)

    def decay(self, table: str) -> float:
        """The decoupled decay of `table`'s rows, as the dense chain would add it."""
        rate = self.weight_decay if not self.weight_decay_on or re.search(self.weight_decay_on, table) else 0.0
        return rate + (self.embedding_weight_decay if re.search(EMBEDDING_TABLE, table) else 0.0)

    def update(self, tables: dict, moments: TableMoments, rows: dict, gradients: dict, step, scale):
        """(tables, moments, squared norm of the updates) after one step: for each table, `rows`
        [R] (distinct row ids, padded with the table's row count, which no row has) and their
        `gradients` [R, dim], scaled by `scale` (clipping); `step` is the optimiser steps taken."""
        count = (step + 1).astype(jnp.float32)
        learning_rate = self.schedule(step)
        new_tables, mu, nu, squared = dict(tables), dict(moments.mu), dict(moments.nu), jnp.zeros([], jnp.float32)
        for name, ids in rows.items():
            table = tables[name]
            gradient = gradients[name].astype(jnp.float32) * scale
            m = self.b1 * moments.mu[name].at[ids].get(mode="fill", fill_value=0) + (1 - self.b1) * gradient
            v = self.b2 * moments.nu[name].at[ids].get(mode="fill", fill_value=0) + (1 - self.b2) * gradient ** 2
            u = (m / (1 - self.b1 ** count)) / (jnp.sqrt(v / (1 - self.b2 ** count)) + self.eps)
            decay = self.decay(name)
            if decay:
                u = u + decay * table.at[ids].get(mode="fill", fill_value=0).astype(jnp.float32)
            u = -learning_rate * u
            squared = squared + jnp.sum(u * u)
            new_tables[name] = table.at[ids].add(u.astype(table.dtype), mode="drop")
            mu[name] = moments.mu[name].at[ids].set(m, mode="drop")
            nu[name] = moments.nu[name].at[ids].set(v, mode="drop")
        return new_tables, TableMoments(mu=mu, nu=nu), squared
