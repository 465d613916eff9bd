"""K members in one compiled program: seeds, keys, the members mesh, vmapped steps, the ensemble.

Member i is the run of seed `config.seed + i`: its parameters start from that seed's first key
and its dropout draws from the second, exactly as a single run of that seed does
(`loop.restore_or_create`, `loop.run_key`). Members share the training order of `config.seed`
(one batch, broadcast to all), unless `member_data_order` gives each its own (the batch axis is
vmapped too): so member i equals the single run `--config.seed=seed+i
--config.data.shuffle_seed=seed` (or `--config.seed=seed+i` with their own order).

Every array of an ensemble's state has a leading member axis [K, ...]. On a mesh with axes
("members", "data") the member axis is split over "members" and the batch over "data": K members
on D devices hold K/D members per device with the data replicated, or members x data when both
are > 1. XLA inserts no collective between members: they never exchange anything but the batch.

The ensemble predicts the mean of its members' class probabilities (classification) and the mean
of their ratings (regression): `combine_outputs`.
"""
from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxreviews.models import heads
from jaxreviews.train import step as step_lib


def member_seeds(config: ml_collections.ConfigDict) -> list[int]:
    return [int(config.seed) + i for i in range(int(config.get("num_seeds", 1)))]


def member_keys(seeds: list[int]) -> tuple[jax.Array, jax.Array]:
    """(init keys [K], run keys [K]): per member, the two halves of `jax.random.key(seed)` a single
    run of that seed uses."""
    pairs = [jax.random.split(jax.random.key(seed)) for seed in seeds]
    return jnp.stack([p[0] for p in pairs]), jnp.stack([p[1] for p in pairs])


def members_axis_size(num_members: int, num_devices: int, batch_size: int, requested: int = 0) -> int:
    """How many devices the members axis spans. `requested` > 0 is checked and used; 0 (auto)
    takes the most devices that split the members evenly, as long as the rest split the batch."""
    if requested:
        if num_devices % requested or num_members % requested:
            raise ValueError(f"mesh.members={requested} must divide both the {num_devices} devices and the "
                             f"{num_members} members")
        if batch_size % (num_devices // requested):
            raise ValueError(f"mesh.members={requested} leaves {num_devices // requested} devices on the data axis, "
                             f"which do not divide train.batch_size={batch_size}")
        return requested
    if jax.process_count() > 1:
        return 1  # each process builds its slice of the batch: keep every process on the data axis
    best = 1
    for size in range(1, num_devices + 1):
        if num_devices % size == 0 and num_members % size == 0 and batch_size % (num_devices // size) == 0:
            best = size
    return best


def make_mesh(num_members: int, batch_size: int, requested: int = 0, devices=None) -> Mesh:
    """A ("members", "data") mesh over `devices` (default: all)."""
    devices = np.asarray(jax.devices() if devices is None else devices)
    members = members_axis_size(num_members, devices.size, batch_size, requested)
    return Mesh(devices.reshape(members, devices.size // members), ("members", "data"))


def member_sharding(mesh: Mesh) -> NamedSharding:
    """Leading member axis over "members", the rest replicated."""
    return NamedSharding(mesh, P("members"))


def combine_outputs(outputs: dict, rating_range: tuple[float, float], num_classes: int) -> dict:
    """Members' outputs [K, B, ...] -> the ensemble's [B, ...]: logits = log of the mean class
    probabilities (the softmax of which is that mean), rating = the mean rating."""
    combined = {}
    if "logits" in outputs:
        probabilities = jax.nn.softmax(outputs["logits"].astype(jnp.float32), axis=-1).mean(0)
        combined["logits"] = jnp.log(jnp.maximum(probabilities, jnp.finfo(jnp.float32).tiny))
    if "rating" in outputs:
        combined["rating"] = outputs["rating"].astype(jnp.float32).mean(0)
    return heads.with_predictions(combined, rating_range, num_classes)


EXECUTIONS = ("auto", "vmap", "map")


def member_execution(option: str, num_members: int, mesh: Mesh | None = None) -> str:
    """How one program runs its members: "vmap" (batched together: what fills a GPU or TPU) or
    "map" (`lax.map`, one after another in the same program). "auto": "map" on CPU when a device
    holds several members, else "vmap": on CPU both cost about the same per member
    (tools/bench.py --num_seeds), and a member's step then is exactly the single model's."""
    if option not in EXECUTIONS:
        raise ValueError(f"member_execution={option!r}: choose one of {EXECUTIONS}")
    if option != "auto":
        return option
    per_device = num_members // (1 if mesh is None else mesh.shape.get("members", 1))
    platform = (jax.devices() if mesh is None else mesh.devices.flat)[0].platform
    return "map" if platform == "cpu" and per_device > 1 else "vmap"


def over_members(fn: Callable, execution: str, in_axes: tuple) -> Callable:
    """`fn` applied to every member: vmapped, or one member after another (`lax.map`) over the
    arguments whose axis is 0."""
    if execution == "vmap":
        return jax.vmap(fn, in_axes=in_axes)

    def mapped(*args):
        stacked = tuple(a for a, axis in zip(args, in_axes) if axis == 0)

        def one(xs):
            it = iter(xs)
            return fn(*(next(it) if axis == 0 else a for a, axis in zip(args, in_axes)))

        return jax.lax.map(one, stacked)

    return mapped


def init_members(init_fn: Callable, mesh: Mesh, in_axes: tuple) -> Callable:
    """`init_fn(key, ...)` for every member, jitted with the states on the members axis: members
    one after another on CPU, vmapped elsewhere.

    Never vmapped on CPU: the recurrent kernels' orthogonal initialisation is a QR factorisation,
    and jaxlib's batched CPU QR (a vmapped init) splits its batch over XLA's intra-op thread pool and
    blocks a pool thread until the parts finish. When as many such QRs run at once as the pool has
    threads (2 here: the LSTM's directions and levels run concurrently), every thread waits on
    work that none is free to run, and the program never finishes (gdb: both pool threads in
    jax::ParallelBatchMap's BlockingCounter::Wait under lapack_sgeqrf_ffi). han_upa with 4 members
    hung in 2 of 3 starts on this 2-core machine, 0 of 5 with lax.map. Initialisation runs once,
    so the sequential members cost nothing that matters."""
    platform = mesh.devices.flat[0].platform
    return jax.jit(over_members(init_fn, "map" if platform == "cpu" else "vmap", in_axes),
                   out_shardings=member_sharding(mesh))


def make_train_steps(model, tx, config: ml_collections.ConfigDict, num_classes: int, *, mesh: Mesh,
                     own_batches: bool, execution: str = "vmap") -> tuple[Callable, Callable]:
    """(step, logged step): step(states [K], batch, keys [K]) -> (states, metrics [K]), jitted with
    the states donated and kept on the members axis. `own_batches`: the batch has a member axis.
    `execution`: "vmap" or "map" (`member_execution`)."""
    options = dict(l1=config.optimizer.l1, l2=config.optimizer.l2)
    members = member_sharding(mesh)

    def compiled(norms: bool):
        single = step_lib.make_train_step(model, tx, config.model.head, norms=norms, **options)
        step = over_members(single, execution, (0, 0 if own_batches else None, 0))
        return jax.jit(step, donate_argnums=0, out_shardings=(members, members))

    return compiled(False), compiled(True)


def make_eval_step(model, head_config: ml_collections.ConfigDict, num_classes: int,
                   rating_range: tuple[float, float], execution: str = "vmap") -> Callable:
    """eval_step(params [K], model_state [K], batch) -> {"members": metric sums [K],
    "ensemble": the ensemble's metric sums}, with confusion matrices (`step.make_eval_step`)."""

    def sums_of(outputs, batch):
        sums = heads.metric_sums(outputs, batch, head_config)
        truth = jax.nn.one_hot(batch["label"], num_classes) * batch["weight"][:, None]
        sums["confusion"] = truth.T @ jax.nn.one_hot(outputs["predicted_class"], num_classes)
        return sums

    def eval_step(params, model_state, batch):
        def apply(p, s):
            return model.apply({"params": p, **s}, batch, train=False)

        outputs = over_members(apply, execution, (0, 0))(params, model_state)
        member_sums = jax.vmap(lambda o: sums_of(o, batch))(outputs)
        ensemble = combine_outputs(outputs, rating_range, num_classes)
        return {"members": member_sums, "ensemble": sums_of(ensemble, batch)}

    return jax.jit(eval_step)


def finalize(sums: dict) -> dict:
    """Summed {"members", "ensemble"} -> {"members": [metrics of each], "ensemble": metrics}."""
    count = len(np.asarray(sums["members"]["weight"]))
    members = [step_lib.finalize_metrics(jax.tree.map(lambda x, i=i: x[i], sums["members"])) for i in range(count)]
    return {"members": members, "ensemble": step_lib.finalize_metrics(sums["ensemble"])}


def mean_and_std(members: list[dict]) -> tuple[dict, dict]:
    """Per metric, the members' mean and sample standard deviation (ddof=1; 0 for one member)."""
    keys = [k for k, v in members[0].items() if isinstance(v, (int, float)) and k != "reviews"]
    mean = {k: float(np.mean([m[k] for m in members])) for k in keys}
    std = {k: float(np.std([m[k] for m in members], ddof=1)) if len(members) > 1 else 0.0 for k in keys}
    return mean, std


def select_members(improved: np.ndarray, new, old):
    """Per member, `new` where `improved[i]` else `old` (pytrees with a member axis)."""
    mask = jnp.asarray(improved)

    def pick(n, o):
        return jnp.where(mask.reshape((-1,) + (1,) * (n.ndim - 1)), n, o)

    return jax.tree.map(pick, new, old)


def stack(trees: list):
    """Trees with member axes [K_i, ...] -> one with [sum K_i, ...]."""
    return jax.tree.map(lambda *xs: jnp.concatenate(xs, axis=0), *trees)


def memory_bytes(compiled) -> dict:
    """Arguments, outputs and temporaries of a compiled step (XLA's memory analysis; {} where the
    backend gives none). Bytes per member: the difference between two member counts."""
    try:
        analysis = compiled.memory_analysis()
    except Exception:  # not every backend implements it
        analysis = None
    if analysis is None:
        return {}
    fields = {"argument_bytes": "argument_size_in_bytes", "output_bytes": "output_size_in_bytes",
              "temporary_bytes": "temp_size_in_bytes", "alias_bytes": "alias_size_in_bytes"}
    out = {name: int(getattr(analysis, attr, 0) or 0) for name, attr in fields.items()}
    # Donated state is aliased to the outputs: live at once are the arguments and the temporaries,
    # plus the outputs that are not aliased.
    out["peak_bytes"] = out["argument_bytes"] + out["temporary_bytes"] + max(0, out["output_bytes"] - out["alias_bytes"])
    return out
