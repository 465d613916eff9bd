"""The device mesh, and where each array of the train state lives on it.

Mesh axes ("data", "model"): the batch is split over "data"; the embedding tables (vocabulary,
users, products: millions of rows on real data) are split by rows over "model"; every other array
is replicated. A table of V rows then costs V/M rows per device, parameters and Adam moments alike,
and its gradient is summed into the rows where they live. `model` = 1 (the default) is plain data
parallelism.

Sharding rules are declared once: the models name the axes of their tables
(`layers.WordEmbedding`: ("vocab", "embed"), `layers.IdEmbedding`: ("ids", "embed"), through
`layers.logically_partitioned`, Flax's `nn.with_logical_partitioning`), and `RULES` maps those
logical names to mesh axes. Nothing else names a device axis.

The state is born sharded: `jax.eval_shape` of the model's init gives every parameter's shape and
logical axes, the optimiser state's arrays take the sharding of the parameter they mirror (Adam's
moments of a table are split as the table), and the init is jitted with these `out_shardings`, so
no device ever holds a whole split table (`state_shardings`, `create_state`).

Tables must split evenly: `padded_rows(n, mesh)` rounds a table's row count up to a multiple of
the model axis. The extra rows are never indexed (ids are checked against the real sizes), get no
gradient and stay where they started; the real rows start exactly as without padding (JAX's
random bits depend on an element's index, not the array's size).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

# Logical axis -> mesh axis. "vocab" and "ids" are the row axes of the word and id tables.
RULES = (("vocab", "model"), ("ids", "model"), ("embed", None))


def make_mesh(model: int = 1, devices=None) -> Mesh:
    """A ("data", "model") mesh over `devices` (default: every device of the job), `model` devices
    on the model axis. Devices are in process order, so the model axis stays inside a process
    (each process then holds whole rows of the data axis, which its batch slice fills)."""
    devices = np.asarray(jax.devices() if devices is None else devices)
    if model < 1 or devices.size % model:
        raise ValueError(f"mesh.model={model} must divide the {devices.size} devices")
    if model > 1 and jax.process_count() > 1 and jax.local_device_count() % model:
        raise ValueError(f"mesh.model={model} must divide the {jax.local_device_count()} devices of each process: "
                         "the model axis must stay within a host")
    return Mesh(devices.reshape(devices.size // model, model), ("data", "model"))


def model_axis_size(mesh: Mesh) -> int:
    return int(dict(mesh.shape).get("model", 1))


def padded_rows(rows: int, mesh: Mesh) -> int:
    """`rows` rounded up to a multiple of the model axis (tables must split evenly)."""
    multiple = model_axis_size(mesh)
    return -(-rows // multiple) * multiple


def rules_for(mesh: Mesh) -> tuple:
    """`RULES` with the mesh axes this mesh lacks (an ensemble's mesh has no "model") unsplit."""
    names = set(mesh.axis_names)
    return tuple((logical, axis if axis in names else None) for logical, axis in RULES)


def param_logical_axes(model, batch) -> dict:
    """Every parameter's logical axis names (a PartitionSpec of names; P() for unnamed ones), from
    the shapes of the model's init: no parameter is computed."""
    with nn.logical_axis_rules(RULES):  # the tables box their values with their names only here
        abstract = jax.eval_shape(lambda b: model.init({"params": jax.random.key(0), "dropout": jax.random.key(0)},
                                                       b, train=False), batch)
    return nn.get_partition_spec(abstract["params"])


def param_shardings(logical_axes, mesh: Mesh):
    """Logical axes -> NamedShardings on `mesh` by `RULES`."""
    return nn.logical_to_mesh_sharding(logical_axes, mesh, rules_for(mesh))


def state_shardings(abstract_state, params_sharding, mesh: Mesh):
    """NamedShardings of a train state of ShapeDtypeStructs (a TrainState, or any pytree that holds
    the parameters and their optimiser state): a parameter's own sharding for every array whose
    path ends with that parameter's path and has its shape (the parameter itself, Adam's mu/nu,
    momentum, accumulators: however optax nests them), replicated for the rest (step counts,
    schedules' state, batch statistics)."""
    replicated = NamedSharding(mesh, P())
    params = [(_keys(path), sharding) for path, sharding in jax.tree_util.tree_flatten_with_path(
        params_sharding, is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))[0]]
    shapes = {}
    for (path, _), leaf in zip(params, jax.tree.leaves(_find_params(abstract_state))):
        shapes[path] = tuple(leaf.shape)
    by_path = {path: (sharding, shapes.get(path)) for path, sharding in params}

    def mirror(path, leaf):
        keys = _keys(path)
        for start in range(len(keys)):
            found = by_path.get(keys[start:])
            if found is not None and found[1] == tuple(leaf.shape):
                return found[0]
        return replicated

    return jax.tree_util.tree_map_with_path(mirror, abstract_state)


def _find_params(state):
    """The parameters of a train state: its `params` field or key."""
    return state["params"] if isinstance(state, dict) else state.params


def _keys(path) -> tuple:
    """A key path as plain names (dict keys, attribute names, sequence indices)."""
    out = []
    for entry in path:
        for attribute in ("key", "name", "idx"):
            if hasattr(entry, attribute):
                out.append(getattr(entry, attribute))
                break
        else:
            out.append(str(entry))
    return tuple(out)


def is_split(sharding) -> bool:
    """Whether a NamedSharding splits its array (rather than replicating it)."""
    return any(axis is not None for axis in getattr(sharding, "spec", ()))


def bytes_per_device(tree, shardings=None) -> int:
    """Bytes one device holds of the arrays of `tree` (arrays or ShapeDtypeStructs), each split as
    its sharding says (its own, or the matching one of `shardings`)."""
    leaves = jax.tree.leaves(tree)
    sharding_leaves = [None] * len(leaves) if shardings is None else jax.tree.leaves(
        shardings, is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))
    total = 0
    for leaf, sharding in zip(leaves, sharding_leaves):
        sharding = sharding if sharding is not None else getattr(leaf, "sharding", None)
        shape = tuple(leaf.shape)
        if sharding is not None and shape:
            shape = sharding.shard_shape(shape)
        total += int(np.prod(shape, dtype=np.int64)) * np.dtype(leaf.dtype).itemsize
    return total
