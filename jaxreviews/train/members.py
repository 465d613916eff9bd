"""K >= 1 members in one compiled program: seeds, the mesh, the steps, the ensemble.

A run trains `num_seeds` members; one model is a population of one. Member i is the run of seed
`member_seeds[i]` (default `seed + i`): its parameters start from that seed's first key and its
dropout draws from the second (the init program makes both), so member i of an ensemble equals the one-member run of that seed
with the same training order. Members share the training order of the run's seed (one batch
broadcast to all) unless `member_data_order` gives each its own (the batch gets a member axis).

Every array of the train state has a leading member axis [K, ...]. The mesh has three axes:
"members" splits that axis over devices, "data" splits the batch, and "model" splits the rows of
the embedding tables (`sharding`). K members on D devices hold K/D members per device, or members x
data when both are > 1. XLA inserts no collective between members: they share only the batch.

A member's step is the single model's step: one member runs it unbatched (the member axis is
squeezed away and put back, so a one-member run is exactly the single-model program), several
run it vmapped (what fills a GPU or TPU) or one after another with `lax.map`
(`member_execution`). The ensemble predicts the mean of its members' class probabilities and the
mean of their ratings (`heads.combine_outputs`).
"""
from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxreviews.models import heads
from jaxreviews.train import optimizers, step as step_lib

EXECUTIONS = ("auto", "vmap", "map")


def member_seeds(config: ml_collections.ConfigDict) -> list[int]:
    """`member_seeds` when given, else seed, seed + 1, ..., seed + num_seeds - 1."""
    explicit = list(config.get("member_seeds", ()) or ())
    if explicit:
        return [int(s) for s in explicit]
    return [int(config.seed) + i for i in range(int(config.get("num_seeds", 1)))]


def seeds_array(seeds: list[int], mesh: Mesh) -> jax.Array:
    """The members' seeds, int32 [K] on `mesh`'s members axis: the init program's input (it makes
    the keys itself, so no key arithmetic runs, and compiles, outside the run's programs)."""
    info = np.iinfo(np.int32)
    for seed in seeds:
        if not info.min <= seed <= info.max:
            raise ValueError(f"seed {seed} is not a 32-bit signed integer (jax.random.key's range)")
    return global_array(np.asarray(seeds, np.int32), member_sharding(mesh))


def global_array(value: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A value every process holds whole -> a global array laid out by `sharding` (each process
    places its devices' parts: `device_put` cannot reach another process's devices)."""
    value = np.asarray(value)
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


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


def make_mesh(num_members: int, batch_size: int, *, members: int = 0, model: int = 1, devices=None) -> Mesh:
    """A ("members", "data", "model") mesh over `devices` (default: every device of the job).
    `model` devices split the tables; of the rest, the members axis takes what `members_axis_size`
    gives. Devices are in process order, so a model axis stays inside a process."""
    devices = np.asarray(jax.devices() if devices is None else devices)
    if model < 1 or devices.size % model:
        raise ValueError(f"mesh.model={model} must divide the {devices.size} devices")
    if model > 1 and jax.process_count() > 1 and jax.local_device_count() % model:
        raise ValueError(f"mesh.model={model} must divide the {jax.local_device_count()} devices of each process: "
                         "the model axis must stay within a host")
    rest = devices.size // model
    size = members_axis_size(num_members, rest, batch_size, members)
    if batch_size % (rest // size):
        raise ValueError(f"train.batch_size={batch_size} must be a multiple of the {rest // size} devices of the "
                         "mesh's data axis")
    return Mesh(devices.reshape(size, rest // size, model), ("members", "data", "model"))


def member_sharding(mesh: Mesh) -> NamedSharding:
    """Leading member axis over "members", the rest replicated."""
    return NamedSharding(mesh, P("members"))


def with_member_axis(shardings):
    """Shardings of one member's arrays -> those of the stacked arrays (member axis first)."""
    return jax.tree.map(lambda s: NamedSharding(s.mesh, P("members", *s.spec)), shardings,
                        is_leaf=lambda x: isinstance(x, NamedSharding))


def member_execution(option: str, num_members: int, mesh: Mesh | None = None) -> str:
    """"single" for one member; else "vmap" (batched together: what fills a GPU or TPU) or "map"
    (`lax.map`, one after another in one program). "auto": "map" on CPU when a device holds several
    members, else "vmap": on CPU both cost about the same per member (tools/bench.py --num_seeds),
    and a member's step then is exactly the single model's."""
    if option not in EXECUTIONS:
        raise ValueError(f"member_execution={option!r}: choose one of {EXECUTIONS}")
    if num_members == 1:
        return "single"
    if option != "auto":
        return option
    per_device = num_members // (1 if mesh is None else mesh.shape.get("members", 1))
    platform = (jax.devices() if mesh is None else mesh.devices.flat)[0].platform
    return "map" if platform == "cpu" and per_device > 1 else "vmap"


def over_members(fn: Callable, execution: str, in_axes: tuple) -> Callable:
    """`fn` applied to every member of the arguments whose axis is 0: unbatched for one member
    ("single": the member axis squeezed and put back), vmapped, or one after another (`lax.map`)."""
    if execution == "vmap":
        return jax.vmap(fn, in_axes=in_axes)
    if execution == "single":
        def single(*args):
            out = fn(*(jax.tree.map(lambda x: x[0], a) if axis == 0 else a for a, axis in zip(args, in_axes)))
            return jax.tree.map(lambda x: jnp.expand_dims(x, 0), out)

        return single

    def mapped(*args):
        stacked = tuple(a for a, axis in zip(args, in_axes) if axis == 0)

        def one(xs):
            it = iter(xs)
            return fn(*(next(it) if axis == 0 else a for a, axis in zip(args, in_axes)))

        return jax.lax.map(one, stacked)

    return mapped


def named(fn: Callable, name: str) -> Callable:
    """`fn` under `name`: the name JAX gives its program (compile logs, `CompileClock.compilations`)."""
    fn.__name__ = fn.__qualname__ = name
    return fn


def init_program(model, tx, mesh: Mesh, state_sharding, num_members: int) -> Callable:
    """jit(seeds [K], example batch, pretrained table) -> (every member's fresh state, born sharded;
    the members' run keys [K]). Member i's init and run keys are the two halves of
    `jax.random.split(jax.random.key(seeds[i]))`.

    Never vmapped on CPU: the recurrent kernels' orthogonal initialisation is a QR factorisation,
    and jaxlib's batched CPU QR (a vmapped init) splits its batch over XLA's intra-op thread pool and
    blocks a pool thread until the parts finish. When as many such QRs run at once as the pool has
    threads (2 here: the LSTM's directions and levels run concurrently), every thread waits on
    work that none is free to run, and the program never finishes (gdb: both pool threads in
    jax::ParallelBatchMap's BlockingCounter::Wait under lapack_sgeqrf_ffi). han_upa with 4 members
    hung in 2 of 3 starts on this 2-core machine, 0 of 5 with lax.map. Initialisation runs once,
    so the sequential members cost nothing that matters."""
    platform = mesh.devices.flat[0].platform
    execution = "single" if num_members == 1 else "map" if platform == "cpu" else "vmap"

    def init(seed, batch, table):
        init_key, run_key = jax.random.split(jax.random.key(seed))
        return step_lib.init_state(model, tx, batch, init_key, pretrained_embeddings=table), run_key

    return jax.jit(named(over_members(init, execution, (0, None, None)), "init_state"),
                   out_shardings=(state_sharding, member_sharding(mesh)))


def make_train_step(model, tx, config: ml_collections.ConfigDict, *, state_sharding, own_batches: bool,
                    execution: str, indexed: bool = False, schedule=None) -> Callable:
    """step(states [K], batch, keys [K], window) -> (states, window + this step's metrics [K], with
    the global norms), jitted with the states donated and kept where `state_sharding` puts them.
    The window (`zero_window`) sums the metrics of the steps between two records on the device, in
    this program: nothing is read back, and no second program adds them. `own_batches`: the batch
    has a member axis. `schedule`: the learning rate the rows of `optimizer.sparse_tables` take. `indexed`: step(states, batches, index, keys, window) trains on
    `batches[index]`, one of several batches moved to the device at once (`train.steps_per_transfer`)."""
    single = step_lib.make_train_step(model, tx, config.model.head, l1=config.optimizer.l1, l2=config.optimizer.l2,
                                      sparse=optimizers.SparseTables.of(config.optimizer, schedule))
    step = over_members(single, execution, (0, 0 if own_batches else None, 0))
    step = step_lib.on_stacked(step) if indexed else step

    def train_step(*args):
        *inputs, window = args
        state, metrics = step(*inputs)
        return state, add_sums(window, metrics, "train step")

    mesh = jax.tree.leaves(state_sharding, is_leaf=lambda x: isinstance(x, NamedSharding))[0].mesh
    return jax.jit(named(train_step, "train_step"), donate_argnums=0,
                   out_shardings=(state_sharding, member_sharding(mesh)))


def add_sums(total: dict, sums: dict, what: str) -> dict:
    """total + sums (float32), for pytrees of one structure; a different structure is a bug in the
    names the totals were made from (`zero_window`, `zero_eval_sums`), named at trace time."""
    if jax.tree.structure(total) != jax.tree.structure(sums):
        raise ValueError(f"the {what}'s sums {jax.tree.structure(sums)} differ from the running totals "
                         f"{jax.tree.structure(total)}")
    return jax.tree.map(lambda t, x: t + x.astype(t.dtype), total, sums)


def zero_window(head_kind: str, num_members: int, mesh: Mesh) -> dict:
    """The train step's metric sums before a window's first step: float32 zeros [K] per metric."""
    zeros = np.zeros(num_members, np.float32)
    return {name: global_array(zeros, member_sharding(mesh)) for name in step_lib.train_metric_names(head_kind)}


def make_eval_step(model, head_config: ml_collections.ConfigDict, num_classes: int,
                   rating_range: tuple[float, float], execution: str, mesh: Mesh | None = None) -> Callable:
    """eval_step(params [K], model_state [K], batch, sums) -> sums + this batch's {"members": metric
    sums [K], "ensemble": the ensemble's metric sums}, each with its confusion matrix
    (`step.make_eval_step`), from `zero_eval_sums` before the first batch: the running sums stay on
    the device in this one program. One member's ensemble is that member. `mesh`: the sums live on
    it (members on its members axis), as `zero_eval_sums(..., mesh)` places them."""

    def sums_of(outputs, batch):
        sums = heads.metric_sums(outputs, batch, head_config)
        truth = jax.nn.one_hot(batch["label"], num_classes) * batch["weight"][:, None]
        sums["confusion"] = truth.T @ jax.nn.one_hot(outputs["predicted_class"], num_classes)
        return sums

    def eval_step(params, model_state, batch, total):
        def apply(p, s):
            return model.apply({"params": p, **s}, batch, train=False)

        outputs = over_members(apply, execution, (0, 0))(params, model_state)
        member_sums = jax.vmap(lambda o: sums_of(o, batch))(outputs)
        if execution == "single":
            sums = {"members": member_sums, "ensemble": jax.tree.map(lambda x: x[0], member_sums)}
        else:
            ensemble = heads.combine_outputs(outputs, rating_range, num_classes)
            sums = {"members": member_sums, "ensemble": sums_of(ensemble, batch)}
        return add_sums(total, sums, "eval step")

    shardings = None if mesh is None else eval_sum_shardings(head_config.kind, mesh)
    return jax.jit(named(eval_step, "eval_step"), out_shardings=shardings)


def eval_sum_shardings(head_kind: str, mesh: Mesh) -> dict:
    names = heads.metric_sum_names(head_kind) + ("confusion",)
    return {"members": {name: member_sharding(mesh) for name in names},
            "ensemble": {name: NamedSharding(mesh, P()) for name in names}}


def zero_eval_sums(head_kind: str, num_classes: int, num_members: int, mesh: Mesh | None = None) -> dict:
    """The eval step's sums before the first batch: zeros for each metric of the members [K] and
    the ensemble, the confusion matrices [K, C, C] and [C, C]; on `mesh` when given (as the eval
    step of that mesh returns them), else on the default device."""
    def zeros(members):
        shape = (num_members,) if members else ()
        tree = {name: np.zeros(shape, np.float32) for name in heads.metric_sum_names(head_kind)}
        tree["confusion"] = np.zeros(shape + (num_classes, num_classes), np.float32)
        return tree

    tree = {"members": zeros(True), "ensemble": zeros(False)}
    if mesh is None:
        return jax.device_put(tree, jax.devices()[0])
    return jax.tree.map(lambda x, sharding: global_array(x, sharding), tree, eval_sum_shardings(head_kind, mesh))


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


def select_members(improved, new, old):
    """Per member, `new` where `improved[i]` else `old` (pytrees with a member axis)."""
    mask = jnp.asarray(improved)

    def pick(n, o):
        return jnp.where(mask.reshape((-1,) + (1,) * (n.ndim - 1)), n, o)

    return jax.tree.map(pick, new, old)


def keep_best(improved: np.ndarray, current, best, select: Callable):
    """The members' bests after a validation: each member's `current` parameters where it improved,
    else its `best` (None: none yet). When every member improved, copies of `current` (the train step
    donates those buffers), made without a program; `select` (`select_members`, jitted) only when
    some did and some did not."""
    improved = np.asarray(improved, bool)
    if improved.all():
        return jax.tree.map(lambda x: jax.device_put(x, x.sharding, may_alias=False), current)
    return select(improved, current, current if best is None else best)


def stack(trees: list):
    """Trees with member axes [K_i, ...] -> one with [sum K_i, ...]."""
    return jax.tree.map(lambda *xs: jnp.concatenate(xs, axis=0), *trees)
