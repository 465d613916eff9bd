"""The fit loop, in parts a caller can use on their own (the ensemble and search runs do):

    experiment = setup(config, workdir)             # data, batchers, model, optimiser, jitted steps
    ckpt = checkpoints.RunCheckpoints(workdir)
    state, stopping, resumed = restore_or_create(experiment, ckpt)
    fit = Fit(experiment, state, stopping, ckpt)    # epochs of steps; periodic validation with
    fit.run()                                       #   early stopping, checkpoints and logs
    results = final_results(experiment, fit)        # the best parameters on test, results.json

`train_and_evaluate(config, workdir)` composes them: epochs of jitted steps over packed (or
bucketed) batches sharded on a device mesh; validation every epoch (or every N steps) with early
stopping on a chosen metric; orbax checkpoints (latest N + best) with exact resume; a clean
save-and-exit on SIGTERM; metrics as JSON lines and TensorBoard scalars; at the end the best
parameters evaluated on test, beside the majority and mean-rating baselines, in `results.json`.

A run directory holds what `jaxreviews.load_run` needs to use the run later: `config.json`, the
vocabulary and id maps, `model.json` (the model's sizes and training statistics) and checkpoints.
Resuming with a changed config is refused, naming the keys, unless only `SAFE_TO_CHANGE` keys
changed (then they are reported).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import signal
import time
from collections.abc import Callable

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxreviews import models
from jaxreviews.data import batching, packing, pipeline
from jaxreviews.train import (accounting, checkpoints, compilation, distributed, evaluation, optimizers, reporting,
                              sharding as sharding_lib, step as step_lib)
from jaxreviews.train.early_stopping import HIGHER_IS_BETTER, EarlyStopping
from jaxreviews.train.evaluation import baselines

__all__ = ["HIGHER_IS_BETTER", "Experiment", "Fit", "NonFiniteLossError", "SAFE_TO_CHANGE", "baselines",
           "default_train_config", "final_results", "format_results", "param_checksum", "restore_or_create",
           "setup", "train_and_evaluate"]

# Keys a resumed run may change: they move neither the data order nor the parameters of a step.
SAFE_TO_CHANGE = ("train.epochs", "train.patience", "train.log_every_steps", "train.checkpoint_every_steps",
                  "train.keep_checkpoints", "train.prefetch", "train.tensorboard", "compilation_cache_dir",
                  "distributed", "mesh.model", "train.preemption_check_every_steps")


def default_train_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.batch_size = 32  # global: split over processes and devices
    c.epochs = 10
    c.eval_every_steps = 0  # 0: evaluate at the end of every epoch
    c.checkpoint_every_steps = 200
    c.keep_checkpoints = 2
    c.early_stopping_metric = "accuracy"  # accuracy | macro_f1 | rmse | mae | loss | nll
    c.patience = 3  # evaluations without improvement before stopping; 0 = never stop early
    c.log_every_steps = 50
    c.prefetch = 2
    c.tensorboard = True
    # Several processes: how often they agree on a SIGTERM (a one-value all-reduce; every step
    # costs ~1 ms a step on CPU over Gloo, measured). A signal is acted on within this many steps + 1.
    c.preemption_check_every_steps = 10
    c.snapshots = 0  # > 1: a snapshot ensemble of this many cosine cycles (jaxreviews.ensemble)
    return c


class NonFiniteLossError(FloatingPointError):
    pass


def param_checksum(params) -> str:
    """sha256 over the bytes of every parameter in path order: equal iff the parameters are. In a
    multi-process job every process must call it (a table split over processes is gathered)."""
    digest = hashlib.sha256()
    for path, leaf in sorted(jax.tree_util.tree_flatten_with_path(params)[0], key=lambda x: jax.tree_util.keystr(x[0])):
        digest.update(jax.tree_util.keystr(path).encode())
        digest.update(np.ascontiguousarray(distributed.host_array(leaf)).tobytes())
    return digest.hexdigest()


# -- setup ------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Experiment:
    """What a run is made of, built once from (config, workdir) by `setup`."""

    config: ml_collections.ConfigDict
    workdir: str
    splits: pipeline.DataSplits
    train_batches: object  # batching.Batcher | packing.PackedBatcher
    valid_batches: object
    test_batches: object
    model: object
    model_info: dict  # model.json: what load_run needs to build the model again
    tx: object
    schedule: object
    mesh: Mesh
    train_step: object  # jitted step(state, batch, key) -> (state, metrics), the state donated
    logged_step: object  # the same with the global norms, for logged steps
    eval_step: object  # jitted eval_step(params, model_state, batch) -> metric sums
    compile_clock: compilation.CompileClock
    state_sharding: object = None  # the TrainState's NamedShardings (sharding.state_shardings); None: replicated
    example_batch: dict | None = None  # this process's part of the first training batch (host arrays)

    @property
    def is_main(self) -> bool:
        return jax.process_index() == 0

    @property
    def steps_per_epoch(self) -> int:
        return self.train_batches.steps_per_epoch

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.config.train.epochs

    def to_device(self, batch: dict) -> dict:
        """This process's part of a global batch -> global arrays sharded on the mesh's data axis,
        once every id in it is checked against its embedding table."""
        batching.check_ids(batch, vocab_size=len(self.splits.vocab), num_users=len(self.splits.users),
                           num_products=len(self.splits.products))
        sharding = NamedSharding(self.mesh, P("data"))
        return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)

    def train_to_device(self, batch: dict) -> dict:
        """A training batch on the mesh (an ensemble's members may each have their own)."""
        return self.to_device(batch)

    def init_program(self) -> Callable:
        """The jitted init, (key, example batch, pretrained table) -> a fresh state, born sharded as
        `state_sharding` says (no device holds a whole split table). It closes over the model and
        optimiser, not the experiment, so a cache may keep it across trials."""
        shardings = self.state_sharding if self.state_sharding is not None else NamedSharding(self.mesh, P())
        model, tx = self.model, self.tx
        return jax.jit(lambda k, b, table: step_lib.init_state(model, tx, b, k, pretrained_embeddings=table),
                       out_shardings=shardings)

    def init_example(self) -> dict:
        """The batch the init traces the model with, on the mesh."""
        return self.to_device(self.example_batch if self.example_batch is not None
                              else next(iter(self.train_batches.epoch(0))))

    def init_state(self, key: jax.Array) -> step_lib.TrainState:
        return self.init_program()(key, self.init_example(), self.splits.pretrained)

    def evaluate(self, params, model_state, batcher) -> dict:
        return evaluation.evaluate(self.eval_step, params, model_state, batcher.evaluation(),
                                   to_device=self.to_device, prefetch=self.config.train.prefetch)


def setup(config: ml_collections.ConfigDict, workdir: str, *, mesh: Mesh | None = None,
          make_steps: Callable | None = None, optimizer_options: dict | None = None) -> Experiment:
    """Data, batchers, model, optimiser and jitted steps of `config`; writes the run's tables.

    An ensemble passes its own `mesh` (axes "members" and "data"), `make_steps` (vmapped steps) and
    `optimizer_options` (`optimizers.make_optimizer`'s cycles / injected hyperparameters).

    The mesh is ("data", "model") with `mesh.model` devices on the model axis, which splits the
    embedding tables by rows (`sharding`); their row counts are then rounded up to a multiple of it.
    In a multi-process job process 0 prepares the data first (TFDS builders, pretrained vectors)
    while the others wait, then they read it."""
    compilation.enable_persistent_cache(config.get("compilation_cache_dir", ""))
    compile_clock = compilation.CompileClock()
    is_main = jax.process_index() == 0
    started = time.perf_counter()
    with distributed.main_process_first("data preparation"):
        splits = pipeline.load_splits(config.data)
    if is_main:
        splits.save_tables(workdir)
    batch_size = config.train.batch_size
    model_axis = int(config.get("mesh", {}).get("model", 1))
    if mesh is None:
        mesh = sharding_lib.make_mesh(model_axis)
    elif model_axis > 1 and "model" not in mesh.axis_names:
        raise ValueError(f"mesh.model={model_axis}: the embedding tables cannot be split over devices in an "
                         "ensemble (num_seeds > 1, snapshots, populations), whose mesh splits members; use mesh.model=1")
    if batch_size % mesh.shape["data"]:
        raise ValueError(f"train.batch_size={batch_size} must be a multiple of the {mesh.shape['data']} devices "
                         "of the mesh's data axis")
    train_batches, valid_batches, test_batches = make_batchers(config, splits)
    if is_main:
        _print_data(splits, train_batches, mesh, batch_size, time.perf_counter() - started)

    example_batch = next(iter(train_batches.epoch(0)))
    # Which tables split over which devices (an ensemble's own steps keep its tables whole); a split
    # table needs a multiple of its devices in rows (the extra ones unused).
    split = sharding_lib.TableSplit(mesh)
    if make_steps is None:
        split = sharding_lib.TableSplit.decide(mesh, rows={
            "vocab": len(splits.vocab), "ids": min(len(splits.users), len(splits.products))}, lookups={
            "vocab": _token_slots(example_batch) * jax.process_count(), "ids": batch_size})
    if is_main and mesh.size > 1 and make_steps is None:
        print(f"embedding tables: {split.describe()}")
    rows = {"vocab_size": split.padded_rows(len(splits.vocab), "vocab"),
            "num_users": split.padded_rows(len(splits.users), "ids"),
            "num_products": split.padded_rows(len(splits.products), "ids")}
    if splits.pretrained is not None and rows["vocab_size"] > len(splits.pretrained):
        extra = rows["vocab_size"] - len(splits.pretrained)
        splits = dataclasses.replace(splits, pretrained=np.pad(splits.pretrained, ((0, extra), (0, 0))))
    train_arrays = splits.train.arrays
    statistics = models.training_statistics(  # where the biases start; MF's training pairs
        config.model, users=train_arrays.users, products=train_arrays.products, ratings=train_arrays.ratings,
        num_users=rows["num_users"], num_products=rows["num_products"], num_classes=splits.num_classes,
        rating_range=splits.rating_range)
    sizes = dict(**rows, num_classes=splits.num_classes, rating_range=splits.rating_range)
    model = models.build_model(config.model, pretrained_embeddings=splits.pretrained, **sizes, **statistics)
    model_info = model_description(config, splits, sizes, statistics, train_batches, workdir)
    tx, schedule = optimizers.make_optimizer(config.optimizer, steps_per_epoch=train_batches.steps_per_epoch,
                                             total_epochs=config.train.epochs, batch_size=batch_size,
                                             **(optimizer_options or {}))
    state_sharding = None
    if make_steps is None:
        state_sharding = state_shardings(model, tx, mesh, _on_mesh(example_batch, mesh), splits.pretrained, split)
        steps = single_model_steps(model, tx, config, splits.num_classes, state_sharding=state_sharding)
    else:
        steps = make_steps(model, tx, config, splits.num_classes)
    train_step, logged_step, eval_step = steps
    return Experiment(
        config=config, workdir=workdir, splits=splits, train_batches=train_batches, valid_batches=valid_batches,
        test_batches=test_batches, model=model, model_info=model_info, tx=tx, schedule=schedule, mesh=mesh,
        train_step=train_step, logged_step=logged_step, eval_step=eval_step, compile_clock=compile_clock,
        state_sharding=state_sharding, example_batch=example_batch)


def _token_slots(batch: dict) -> int:
    """Token slots of (this process's part of) a batch: what its word table looks up."""
    for key in ("words", "tokens"):
        if key in batch:
            return int(np.size(batch[key]))
    return 0


def _on_mesh(batch: dict, mesh: Mesh) -> dict:
    """This process's part of a batch -> global arrays split over the mesh's data axis."""
    data = NamedSharding(mesh, P("data"))
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(data, x), batch)


def state_shardings(model, tx, mesh: Mesh, batch: dict, pretrained=None, split=None):
    """Where each array of a fresh TrainState lives (`sharding.state_shardings`): the shapes from
    `jax.eval_shape` of the init, the tables' logical axes from the model, split as `split` says."""
    abstract = jax.eval_shape(lambda b, k, table: step_lib.init_state(model, tx, b, k, pretrained_embeddings=table),
                              batch, jax.random.key(0), pretrained)
    params = sharding_lib.param_shardings(sharding_lib.param_logical_axes(model, batch), mesh, split)
    return sharding_lib.state_shardings(abstract, params, mesh)


def single_model_steps(model, tx, config: ml_collections.ConfigDict, num_classes: int, *, state_sharding=None):
    """(train step, logged train step, eval step) of one model, jitted, the state donated (and
    kept where `state_sharding` puts it, when given)."""
    options = dict(l1=config.optimizer.l1, l2=config.optimizer.l2)
    head = config.model.head
    kept = {} if state_sharding is None else dict(out_shardings=(state_sharding, None))
    return (jax.jit(step_lib.make_train_step(model, tx, head, norms=False, **options), donate_argnums=0, **kept),
            jax.jit(step_lib.make_train_step(model, tx, head, norms=True, **options), donate_argnums=0, **kept),
            jax.jit(step_lib.make_eval_step(model, head, num_classes)))


def make_batchers(config: ml_collections.ConfigDict, splits: pipeline.DataSplits):
    """(train, validation, test) batchers of `data.layout`; evaluation reuses the training shapes,
    so it compiles one program per training shape and no more."""
    train = train_batcher(config, splits, shuffle_seed(config))
    packed, common, caps = _batcher_options(config, splits)
    if packed:
        parts = packing_parts(config)
        return (train, packing.PackedBatcher(splits.validation, shape=train.shape, parts=parts, **caps, **common),
                packing.PackedBatcher(splits.test, shape=train.shape, parts=parts, **caps, **common))
    return (train, batching.Batcher(splits.validation, buckets=train.buckets, **common),
            batching.Batcher(splits.test, buckets=train.buckets, **common))


def train_batcher(config: ml_collections.ConfigDict, splits: pipeline.DataSplits, seed: int, *, like=None):
    """The training batcher of order `seed`; `like`: another's batcher whose shapes it takes (an
    ensemble's members with their own orders must batch alike)."""
    packed, common, caps = _batcher_options(config, splits)
    if packed:
        shape = None if like is None else like.shape
        orders = [shuffle_seed(config) + i for i in range(int(config.get("num_seeds", 1)))]
        others = tuple(o for o in orders if o != seed) if config.get("member_data_order", False) else ()
        return packing.PackedBatcher(splits.train, seed=seed, row_multiple=jax.local_device_count(), shape=shape,
                                     shape_seeds=others, parts=packing_parts(config), **caps, **common)
    if like is not None:
        return batching.Batcher(splits.train, seed=seed, buckets=like.buckets, **common)
    return batching.Batcher(splits.train, seed=seed, num_buckets=config.data.num_buckets, **caps, **common)


def packing_parts(config: ml_collections.ConfigDict) -> int:
    """The parts a packed global batch is built in: `data.batch_parts`, or one per process (0)."""
    return int(config.data.get("batch_parts", 0)) or jax.process_count()


def _batcher_options(config: ml_collections.ConfigDict, splits: pipeline.DataSplits):
    data = config.data
    layout = models.input_layout(config.model.name)
    common = dict(layout=layout, batch_size=config.train.batch_size, rating_range=splits.rating_range,
                  rating_step=splits.rating_step, process_index=jax.process_index(),
                  process_count=jax.process_count())
    caps = dict(max_sentences=data.max_sentences, max_words=data.max_words, max_tokens=data.max_tokens,
                multiple=data.bucket_multiple)
    packed = models.batch_layout(config.model.name, data.get("layout", "auto")) == "packed"
    return packed, common, caps


def shuffle_seed(config: ml_collections.ConfigDict) -> int:
    """The seed of the training order: `data.shuffle_seed`, or the run's seed when it is -1."""
    seed = config.data.get("shuffle_seed", -1)
    return config.seed if seed < 0 else seed


def model_description(config, splits, sizes: dict, statistics: dict, train_batches, workdir: str) -> dict:
    """model.json: the sizes and training statistics the model was built with, and the batch
    shapes; with the config and the saved tables, enough to build the same model again (load_run).
    MF's training pairs (SVD++'s N(u)) go to training_pairs.npz beside it."""
    info = {"name": config.model.name, **sizes, "rating_range": list(sizes["rating_range"]),
            "rating_step": splits.rating_step,
            "embed_dim": None if splits.pretrained is None else int(splits.pretrained.shape[1]),
            "rating_mean": statistics.get("rating_mean"),
            "label_prior": None if statistics.get("label_prior") is None else
            [float(x) for x in statistics["label_prior"]],
            "batch_layout": models.batch_layout(config.model.name, config.data.get("layout", "auto")),
            "batch_shapes": [list(b) for b in train_batches.buckets]}
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "model.json"), "w") as f:
            json.dump(info, f, indent=2)
        pairs = statistics.get("training_pairs")
        if pairs is not None:
            np.savez(os.path.join(workdir, "training_pairs.npz"), users=pairs.users, products=pairs.products)
    return info


def _print_data(splits, train_batches, mesh, batch_size: int, seconds: float) -> None:
    padding = train_batches.padding_report()
    print(f"data: {len(splits.train)} train / {len(splits.validation)} validation / {len(splits.test)} test "
          f"reviews, vocabulary {len(splits.vocab)}, {len(splits.users) - 1} users, "
          f"{len(splits.products) - 1} products ({seconds:.1f}s)")
    axes = "" if all(size == 1 for axis, size in mesh.shape.items() if axis != "data") else f", mesh {dict(mesh.shape)}"
    print(f"devices: {mesh.size} devices ({jax.devices()[0].platform}){axes}, {jax.process_count()} processes, "
          f"global batch {batch_size}")
    kind = "packed batches" if padding.get("layout") == "packed" else "buckets"
    sentences = f" (sentence slots {padding['sentence_efficiency']:.1%})" if "sentence_efficiency" in padding else ""
    print(f"{kind} {[list(b) for b in train_batches.buckets]}: padding efficiency "
          f"{padding['efficiency']:.1%}{sentences}, truncated tokens {padding['truncated_tokens']}")
    print(pipeline.describe_source(splits))


# -- state ------------------------------------------------------------------------------------------

def check_resumable(workdir: str, config: ml_collections.ConfigDict) -> list[str]:
    """Refuses to resume `workdir` with a config that differs from its config.json in any key but
    `SAFE_TO_CHANGE` (a new batch size, say, would move the data position and change the run);
    returns the safe keys that changed, for the log."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        saved = _flatten(json.load(f))
    current = _flatten(json.loads(config.to_json_best_effort()))
    changed = sorted(k for k in set(saved) | set(current) if saved.get(k, "<absent>") != current.get(k, "<absent>"))
    unsafe = [k for k in changed if k not in SAFE_TO_CHANGE]
    if unsafe:
        details = "; ".join(f"{k}: {saved.get(k, '<absent>')!r} -> {current.get(k, '<absent>')!r}" for k in unsafe[:8])
        raise ValueError(f"{workdir} holds checkpoints of a run with another config ({details}"
                         f"{'; ...' if len(unsafe) > 8 else ''}). Resume with the same config, or use a new "
                         f"--workdir. Keys that may change on resume: {', '.join(SAFE_TO_CHANGE)}.")
    return changed


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = tuple(value) if isinstance(value, list) else value
    return out


def restore_or_create(experiment: Experiment, ckpt: checkpoints.RunCheckpoints,
                      key: jax.Array | None = None) -> tuple[step_lib.TrainState, EarlyStopping, bool]:
    """(state, early stopping, resumed): the latest checkpoint of the run, else a fresh state from
    the config's seed (its first key initialises, the second drives dropout: `run_key`)."""
    train = experiment.config.train
    key = jax.random.split(jax.random.key(experiment.config.seed))[0] if key is None else key
    state = experiment.init_state(key)
    stopping = EarlyStopping(metric=train.early_stopping_metric, patience=train.patience)
    restored = ckpt.restore_latest(state)
    if restored is None:
        return state, stopping, False
    state, meta = restored
    return state, stopping.load_state_dict(meta["bookkeeping"]), True


def state_step(state: step_lib.TrainState) -> int:
    """The step of a state (an ensemble's members all have the same)."""
    return int(np.ravel(jax.device_get(state.step))[0])


def run_key(config: ml_collections.ConfigDict) -> jax.Array:
    """The key every step folds its step number into (dropout, unknown-id replacement)."""
    return jax.random.split(jax.random.key(config.seed))[1]


# -- the loop ---------------------------------------------------------------------------------------

class Preemption:
    """Turns SIGTERM into a stop that every process of the job agrees on.

    One process: the loop stops after the step during which the signal came (`agreed`). Several:
    the signal reaches one host (or each at its own moment), so every `every` steps each process
    puts its flag into a tiny all-reduce over the mesh (a max over one value per device), dispatched
    without waiting and read after the next step has been dispatched, as the metrics are. Every
    process reads the same value after the same step, so all stop together, save that step and
    exit 0; none is left waiting in a collective the others never enter. Cost: one 4-byte
    all-reduce per check (measured ~1 ms on CPU over Gloo: `train.preemption_check_every_steps`).

    `train_and_evaluate` installs it for the whole run: a SIGTERM during set-up stops the run
    after its first step; one after the last step lets the final evaluation finish (exit 0).
    """

    def __init__(self, mesh: Mesh | None = None, *, every: int = 1):
        self.requested = False  # this process received SIGTERM
        self._pending = None  # the all-reduce dispatched after the previous step
        self._collective = False
        if mesh is not None:
            self.bind(mesh, every=every)

    def bind(self, mesh: Mesh, *, every: int = 1) -> None:
        """Agree over the devices of `mesh` every `every` steps (needed with several processes only)."""
        self.every = max(1, int(every))
        self._collective = jax.process_count() > 1
        if self._collective:
            self._devices = NamedSharding(mesh, P(mesh.axis_names))  # one value per device
            self._any = jax.jit(lambda flags: flags.max(), out_shardings=NamedSharding(mesh, P()))

    def agreed(self, step: int) -> bool:
        """Called after step `step` by every process: whether all stop now."""
        if not self._collective:
            return self.requested
        stop = False
        if self._pending is not None:  # dispatched a step ago: done, or nearly
            stop, self._pending = bool(self._pending), None
        if step % self.every == 0 and not stop:
            flags = np.full(jax.local_device_count(), int(self.requested), np.int32)
            self._pending = self._any(jax.make_array_from_process_local_data(self._devices, flags))
        return stop

    @contextlib.contextmanager
    def installed(self):
        try:
            previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread
            yield self
            return
        try:
            yield self
        finally:
            signal.signal(signal.SIGTERM, previous)

    def _handle(self, signum, frame):
        self.requested = True


@dataclasses.dataclass(frozen=True)
class Every:
    """A periodic action's schedule (CLU's periodic_actions): due every `steps` steps; 0 = never."""

    steps: int

    def due(self, step: int) -> bool:
        return self.steps > 0 and step % self.steps == 0


class Fit:
    """The training loop's moving parts: the state, the step, early stopping and the periodic
    actions after each step (log, validate, checkpoint), with compile and evaluation time kept
    apart from training time. `run()` trains to the end, an early stop or a preemption."""

    def __init__(self, experiment: Experiment, state: step_lib.TrainState, stopping: EarlyStopping,
                 ckpt: checkpoints.RunCheckpoints, *, resumed: bool = False):
        self.experiment, self.state, self.stopping, self.ckpt = experiment, state, stopping, ckpt
        config = experiment.config
        self.train = config.train
        self.step = state_step(state)
        self.last_saved = self.step
        self.key = self.make_key()
        self.writer = reporting.MetricWriter(experiment.workdir, tensorboard=self.train.tensorboard,
                                             resume_step=self.step if resumed else None)
        self.progress = reporting.Progress(experiment.total_steps, every=self.train.log_every_steps)
        self.log_every = Every(self.train.log_every_steps)
        self.validate_every = Every(self.train.eval_every_steps)
        self.checkpoint_every = Every(self.train.checkpoint_every_steps)
        self.pending = None  # the metrics of the step before: read one step late so dispatch never waits
        self.eval_seconds = self.compile_seconds = 0.0
        self.trained_reviews = self.trained_steps = 0
        self.preempted = False
        self.train_seconds = 0.0
        self.costs: dict | None = None  # measure_costs(): memory and FLOPs of the train step
        self.preemption: Preemption | None = None  # the run's (train_and_evaluate), else run() makes one

    def measure_costs(self) -> dict:
        """Memory per device and counted FLOPs of the train step (`accounting.step_costs`),
        compiling it ahead of time for the first batch's shape (the loop then reuses the program)."""
        experiment = self.experiment
        batch = experiment.train_to_device(next(iter(experiment.train_batches.epoch(0))))
        self.costs = accounting.step_costs(experiment.train_step, self.state, batch, self.key)
        return self.costs

    def make_key(self) -> jax.Array:
        """The key of every step's randomness (an ensemble: one per member)."""
        return run_key(self.experiment.config)

    # periodic actions
    def meta(self) -> dict:
        return {"bookkeeping": self.stopping.state_dict(), "step": self.step}

    def checkpoint(self) -> None:
        self.ckpt.save_latest(self.step, self.state, self.meta())
        self.last_saved = self.step

    def validate(self) -> None:
        """Validation, early stopping, the best checkpoint and the latest one."""
        experiment = self.experiment
        began = time.perf_counter()
        values = experiment.evaluate(self.state.params, self.state.model_state, experiment.valid_batches)
        improved = self.stopping.update(values[self.stopping.metric], self.step)
        if improved:
            self.ckpt.save_best(self.step, self.state, self.meta())
        epoch = self.step / experiment.steps_per_epoch
        self.writer.write("validation", self.step, {**values, "epoch": epoch, "best": self.stopping.best_value})
        self.progress.newline()
        if experiment.is_main:
            best = self.stopping
            print(f"epoch {epoch:.2f} validation: " +
                  ", ".join(f"{k} {v:.4f}" for k, v in values.items() if k != "reviews") +
                  (" (best)" if improved else f" (best {best.best_value:.4f} at step {best.best_step})"))
        self.checkpoint()
        spent = time.perf_counter() - began
        self.eval_seconds += spent
        self.progress.exclude(spent)
        experiment.compile_clock.take()  # compilation during evaluation is inside `spent` already

    def log(self, values: dict, step: int, epoch: int) -> None:
        """The train record of the step before `step` (its metrics arrive one step late). An
        ensemble's metrics have a member axis: the record holds their mean, and each member's loss."""
        micro_step = step - 1
        loss = np.asarray(values["loss"], np.float64)
        record = {"loss": float(loss.mean()), "lr": optimizers.learning_rate_at(
            self.experiment.schedule, micro_step, self.experiment.config.optimizer.accumulation_steps)}
        if loss.ndim:
            record["member_loss"] = [round(float(x), 6) for x in loss]
        record.update({name: float(np.mean(values[name])) for name in step_lib.NORMS if name in values})
        weight = np.maximum(np.asarray(values["weight"], np.float64), 1e-9)
        if "correct" in values:
            record["accuracy"] = float(np.mean(np.asarray(values["correct"], np.float64) / weight))
        self.writer.write("train", step, record, scalars=self.log_every.due(step))
        reviews = int(np.ravel(values["weight"])[0])  # every member sees as many reviews
        self.trained_reviews += reviews
        self.trained_steps += 1
        self.progress.update(step, reviews, f"epoch {epoch + 1} loss {record['loss']:.4f}")

    def check(self, metrics, at_step: int) -> dict:
        """The step's metrics on the host; a non-finite loss stops the run with what to do."""
        values = jax.device_get(metrics)
        losses = np.ravel(np.asarray(values["loss"], np.float64))
        if not np.all(np.isfinite(losses)):
            bad = int(np.flatnonzero(~np.isfinite(losses))[0])
            loss = losses[bad]
            member = f" of member {bad}" if np.ndim(values["loss"]) else ""
            grad_norm = (f"{float(np.ravel(values['grad_norm'])[bad]):.3g}" if "grad_norm" in values
                         else "not computed at this step")
            lr = optimizers.learning_rate_at(self.experiment.schedule, at_step,
                                             self.experiment.config.optimizer.accumulation_steps)
            raise NonFiniteLossError(
                f"step {at_step}: the loss{member} is {loss} (grad norm {grad_norm}). Likely cause: a learning rate "
                f"too high ({lr:.3g}) or no gradient clipping (optimizer.clip_norm). The last good checkpoint "
                f"(step {self.last_saved}) in {self.experiment.workdir} is intact.")
        return values

    # the steps
    def train_step(self, batch, epoch: int) -> None:
        experiment = self.experiment
        logged = self.step == 0 or self.log_every.due(self.step + 1)
        step_fn = experiment.logged_step if logged else experiment.train_step
        self.state, metrics = step_fn(self.state, batch, self.key)
        compiled = experiment.compile_clock.take()  # the first step of a shape compiles it
        self.compile_seconds += compiled
        self.progress.exclude(compiled)
        if self.pending is not None:
            self.log(self.check(self.pending, self.step), self.step, epoch)
        self.pending = metrics
        self.step += 1

    def flush(self) -> None:
        """Logs the pending record now: a checkpoint of step N must follow step N's record, or a
        run killed in between would resume at N + 1 with step N's record lost."""
        if self.pending is not None:
            self.log(self.check(self.pending, self.step), self.step,
                     (self.step - 1) // self.experiment.steps_per_epoch)
            self.pending = None

    def after_step(self) -> bool:
        """The periodic actions after a step; True when the epoch's loop should stop."""
        at_epoch_end = self.step % self.experiment.steps_per_epoch == 0
        if self.validate_every.due(self.step) or at_epoch_end:
            self.flush()
            self.validate()
            if self.stopping.stopped_early:
                return True
        elif self.checkpoint_every.due(self.step):
            self.flush()
            self.checkpoint()
        return self.step >= self.experiment.total_steps

    def run_epoch(self, epoch: int, start: int, preemption: Preemption) -> None:
        experiment = self.experiment
        batches = experiment.train_batches.epoch(epoch, start)
        with batching.prefetching(batches, self.train.prefetch, experiment.train_to_device) as on_device:
            for batch in on_device:
                self.train_step(batch, epoch)
                if self.after_step():
                    return
                if preemption.agreed(self.step):
                    self.preempted = True
                    return

    def run(self) -> None:
        """Trains until the last step, an early stop or SIGTERM (which saves the step and returns)."""
        experiment = self.experiment
        started = time.perf_counter()
        experiment.compile_clock.take()  # from here on, compilation during training steps is counted apart
        if self.preemption is None:
            self.preemption = Preemption(experiment.mesh, every=self.train.get("preemption_check_every_steps", 1))
        preemption = self.preemption
        with preemption.installed():
            while self.step < experiment.total_steps and not self.stopping.stopped_early and not self.preempted:
                self.run_epoch(*divmod(self.step, experiment.steps_per_epoch), preemption)
        self.flush()  # the last step's record, so that every step is logged once
        if self.preempted:
            self.checkpoint()
            self.progress.newline()
            process = f"process {jax.process_index()}: " if jax.process_count() > 1 else ""
            print(f"{process}SIGTERM: saved step {self.step} in {experiment.workdir}; run the same command to resume",
                  flush=True)
            return
        if self.step % experiment.steps_per_epoch and not self.stopping.stopped_early:
            self.validate()  # ended mid-epoch (eval-every-N runs)
        # Training time without evaluation and compilation: what docs/s is measured over.
        self.train_seconds = time.perf_counter() - started - self.eval_seconds - self.compile_seconds
        self.checkpoint()

    def close(self) -> None:
        self.writer.close()
        self.ckpt.close()


# -- results ----------------------------------------------------------------------------------------

def _compilations(fn) -> int:
    try:
        return int(fn._cache_size())
    except Exception:  # private API; the count is informative only
        return -1


def final_results(experiment: Experiment, fit: Fit) -> dict:
    """The best parameters (by the recorded best step) on validation and test, and the run's
    figures: the contents of results.json."""
    splits, config = experiment.splits, experiment.config
    if fit.stopping.best_step >= 0:
        best_state, _ = fit.ckpt.restore_best(fit.state, fit.stopping.best_step)
    else:
        best_state = fit.state
    validation = experiment.evaluate(best_state.params, best_state.model_state, experiment.valid_batches)
    test = experiment.evaluate(best_state.params, best_state.model_state, experiment.test_batches)
    padding = experiment.train_batches.padding_report()
    results = {
        "test": test, "validation": validation,
        "baselines": baselines(splits.train.arrays.ratings, splits.test.arrays.ratings,
                               splits.rating_range, splits.rating_step),
        "param_checksum": param_checksum(best_state.params),
        "model": config.model.name, "best_step": fit.stopping.best_step, "steps": fit.step,
        "stopped_early": fit.stopping.stopped_early,
        "parameters": int(models.count_parameters(fit.state.params)["total"]),
        "compilations": {"train_step": _compilations(experiment.train_step),
                         "logged_train_step": _compilations(experiment.logged_step),
                         "eval_step": _compilations(experiment.eval_step)},
        "buckets": [list(b) for b in experiment.train_batches.buckets], "padding_efficiency": padding["efficiency"],
        "layout": padding.get("layout", "padded"),
        "train_seconds": round(fit.train_seconds, 2), "eval_seconds": round(fit.eval_seconds, 2),
        "compile": experiment.compile_clock.report(),
        "docs_per_s": round(fit.trained_reviews / max(fit.train_seconds, 1e-9), 1),
        "data": splits.report,
    }
    if fit.costs is not None:
        results["accounting"] = accounting_results(experiment, fit)
    reference = _text_only_reference(config)
    if reference:
        results["reference"] = reference
    return results


def accounting_results(experiment: Experiment, fit: Fit) -> dict:
    """results.json's "accounting": the train step's measured costs and the run's throughput."""
    return {**fit.costs, **accounting.throughput(
        flops_per_step=fit.costs["flops_per_step"], steps=fit.trained_steps, seconds=fit.train_seconds,
        reviews=fit.trained_reviews, tokens=fit.trained_reviews * tokens_per_review(experiment.train_batches),
        devices=experiment.mesh.size, device=experiment.mesh.devices.flat[0])}


def tokens_per_review(batcher) -> float:
    """Real (kept) tokens per training review: what an epoch's batches hold, per review."""
    padding = batcher.padding_report()
    return (padding["tokens"] - padding["truncated_tokens"]) / max(1, len(batcher.data))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, setup_fn: Callable = setup,
                       restore_fn: Callable = restore_or_create, fit_class: type = None,
                       results_fn: Callable = final_results) -> dict:
    """Trains `config` in `workdir`, resuming from its checkpoints; returns the results dict.

    The parts are replaceable: an ensemble (jaxreviews.ensemble) passes its own setup, restore,
    Fit and results, and keeps everything else (resume, config checks, outputs) as it is here."""
    fit_class = Fit if fit_class is None else fit_class
    workdir = os.path.abspath(os.path.expanduser(workdir))
    os.makedirs(workdir, exist_ok=True)
    results_path = os.path.join(workdir, "results.json")
    if os.path.exists(results_path):
        with open(results_path) as f:
            results = json.load(f)
        logging.info("%s holds a finished run; delete it to train again", results_path)
        print(f"{workdir} holds a finished run (results.json):")
        print(format_results(results))
        return results
    ckpt = checkpoints.RunCheckpoints(workdir, keep=config.train.keep_checkpoints)
    is_main = jax.process_index() == 0
    if ckpt.steps()["latest"]:
        changed = check_resumable(workdir, config)
        if changed and is_main:
            print(f"resuming with changed settings: {', '.join(changed)}")
    if is_main:  # replaced whole, so another process's check_resumable never reads half a file
        with open(os.path.join(workdir, "config.json.tmp"), "w") as f:
            f.write(config.to_json_best_effort(indent=2, sort_keys=True))
        os.replace(os.path.join(workdir, "config.json.tmp"), os.path.join(workdir, "config.json"))

    # SIGTERM from here on is a preemption (see Preemption): during set-up the run stops after its
    # first step, after the last step it finishes its evaluation; always saved, exit 0, every process.
    preemption = Preemption()
    with contextlib.ExitStack() as context:
        context.enter_context(preemption.installed())
        experiment = setup_fn(config, workdir)
        preemption.bind(experiment.mesh, every=config.train.get("preemption_check_every_steps", 1))
        # The steps are traced with the mesh in effect: a kernel that walks its batch in chunks
        # keeps every device on its own rows (models.layers.batch_shards).
        context.enter_context(jax.set_mesh(experiment.mesh))
        state, stopping, resumed = restore_fn(experiment, ckpt)
        if is_main:
            sizes = models.count_parameters(state.params)
            members = int(np.ravel(jax.device_get(state.step)).size) if np.ndim(state.step) else 0
            per = max(1, members)
            print(f"model {config.model.name}: {sizes['total'] // per:,} parameters "
                  f"({', '.join(f'{k} {v // per:,}' for k, v in sizes.items() if k != 'total')})"
                  + (f", {members} members" if members else ""))
            if resumed:
                print(f"resumed from step {state_step(state)} of {experiment.total_steps}")
        fit = fit_class(experiment, state, stopping, ckpt, resumed=resumed)
        fit.preemption = preemption
        try:
            costs = fit.measure_costs()
            if is_main:
                print(f"train step: {costs['flops_per_step'] / 1e9:,.3f} GFLOP (counted matmuls, all devices); per "
                      f"device: {accounting.describe_memory(costs)}")
            fit.run()
            if fit.preempted:
                return {"preempted": True, "step": fit.step}
            results = results_fn(experiment, fit)
            fit.writer.write("test", fit.step, {k: v for k, v in results["test"].items() if not isinstance(v, list)})
        finally:
            fit.close()
    if is_main:
        with open(results_path, "w") as f:
            json.dump(results, f, indent=2, sort_keys=True)
        print(format_results(results))
    return results


def _text_only_reference(config) -> dict | None:
    """What simple models reach on the default synthetic corpus (`synthetic.EXPECTED`, measured by
    tools/synthetic_baselines.py): text-only, user/product-only, both, and the oracle."""
    if config.data.name != "synthetic" or config.data.synthetic_size != "default" or config.data.synthetic_seed:
        return None
    from jaxreviews.data import synthetic
    names = {"user_product": "logreg user+product", "text_bigrams": "logreg text (words+bigrams)",
             "text_user_product": "logreg text+user+product", "oracle_all": "oracle (latent truth)"}
    return {label: synthetic.EXPECTED[key] for key, label in names.items()}


def format_results(results: dict) -> str:
    """The closing table: the model beside the baselines (and reference figures when known); an
    ensemble's members as mean ± std beside the ensemble."""
    columns = ("accuracy", "macro_f1", "rmse", "mae")
    model = results.get("model", "model")
    rows = []
    if "members_mean" in results:
        count = len(results.get("members", []))
        rows.append((f"{model} ensemble of {count} (test)", {k: f"{results['ensemble'][k]:.4f}" for k in columns
                                                              if k in results["ensemble"]}))
        rows.append((f"{model} members (test, mean ± std)",
                     {k: f"{results['members_mean'][k]:.4f}±{results['members_std'][k]:.4f}" for k in columns
                      if k in results["members_mean"]}))
    else:
        rows.append((f"{model} (test)", results["test"]))
    rows += [(f"baseline: {name}", values) for name, values in results["baselines"].items()]
    for name, values in (results.get("reference") or {}).items():
        if isinstance(values, dict):
            rows.append((f"reference: {name}", values))
    width = 16 if "members_mean" in results else 10
    lines = [f"{'':40}" + "".join(f"{c:>{width}}" for c in columns)]
    for name, values in rows:
        cells = [values[k] if isinstance(values.get(k), str) else
                 f"{values[k]:.4f}" if isinstance(values.get(k), (int, float)) else "-" for k in columns]
        lines.append(f"{name:40}" + "".join(f"{c:>{width}}" for c in cells))
    lines.append(f"param_checksum {results['param_checksum']}")
    lines.append(f"compilations {results.get('compilations')}")
    if "compile" in results:
        members = f", {results['model_docs_per_s']:,.0f} model-docs/s" if "model_docs_per_s" in results else ""
        lines.append(f"training {results['train_seconds']:.1f}s ({results['docs_per_s']:,.0f} docs/s{members}), "
                     f"evaluation {results['eval_seconds']:.1f}s, compilation {results['compile']['seconds']:.1f}s "
                     f"({results['compile']['programs']} programs compiled, {results['compile']['cache_reads']} "
                     "read from the cache)")
    if "accounting" in results:
        a = results["accounting"]
        mfu = "n/a on CPU" if a.get("mfu") is None else f"{a['mfu']:.1%}"
        lines.append(f"per device: {a['docs_per_s_per_device']:,.0f} docs/s, {a['tokens_per_s_per_device']:,.0f} "
                     f"tokens/s; {a['flops_per_step'] / 1e9:,.3f} GFLOP a step (counted matmuls), "
                     f"{a['achieved_flops_per_s'] / 1e9:,.2f} GFLOP/s achieved, MFU {mfu}")
    return "\n".join(lines)
