"""What a run is made of, built once from (config, workdir): data, batchers, mesh, model, optimiser
and the jitted programs, for K >= 1 members (`members`: one model is a population of one).

    experiment = build(config, workdir)      # also writes the run's tables and model.json
    state, run_keys = experiment.init_state()  # every member's fresh state, born sharded; its keys
    experiment.programs.train(state, batch, run_keys, window) -> (state, window + metrics [K])
    experiment.evaluate(params, model_state, experiment.valid_batches) -> {"members": [...], "ensemble": {...}}

The mesh is ("members", "data", "model"): members over "members", the batch over "data", the
embedding tables' rows over "model" (and over "data" as well where that moves less data,
`sharding.TableSplit`); their row counts are then rounded up to a multiple of those devices. In a
multi-process job process 0 prepares the data first (TFDS builders, pretrained vectors) while the
others wait, then they read it.

`ProgramCache` keeps the jitted programs of a few program keys (the config but the seeds and the
population's values, the model's sizes, the shapes and the members): a caller running many
configs of one shape (a sweep's trials) compiles and traces once.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import time

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxreviews import models
from jaxreviews.data import batching, packing, pipeline, streaming
from jaxreviews.train import checkpoints, distributed, members as members_lib, optimizers, population
from jaxreviews.train import sharding as sharding_lib
from jaxreviews.train import step as step_lib

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Programs:
    """The jitted programs of a run: init (which makes the members' keys too), the train step (one
    program: its global norms cost 2-4% of a CPU step, a second program a second compilation; the
    metrics of the steps between records summed in it), the eval step (its sums kept in it) and the
    per-member best selection (compiled only when some members improve and others do not): a
    one-member run compiles three programs."""

    init: object
    train: object
    eval: object
    select: object
    costs: dict | None = None  # the train step's measured memory and FLOPs (the same for every run of them)


class ProgramCache:
    """The programs of the last `size` program keys (least recently used dropped first)."""

    def __init__(self, size: int = 8):
        self.size = size
        self.entries: collections.OrderedDict[str, Programs] = collections.OrderedDict()

    def get(self, key: str) -> Programs | None:
        entry = self.entries.get(key)
        if entry is not None:
            self.entries.move_to_end(key)
        return entry

    def put(self, key: str, programs: Programs) -> Programs:
        self.entries[key] = programs
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)
        return programs


@dataclasses.dataclass
class Experiment:
    config: ml_collections.ConfigDict
    workdir: str
    splits: pipeline.DataSplits
    train_batches: object  # batching.Batcher | packing.PackedBatcher | MemberBatches
    valid_batches: object
    test_batches: object
    model: object
    model_info: dict  # model.json: what load_run needs to build the model again
    tx: object
    schedule: object
    mesh: Mesh
    seeds: list[int]
    hyperparameters: dict  # a population's values [K] by name
    own_batches: bool  # each member its own training order: the batch has a member axis
    snapshot_steps: list[int]
    execution: str  # members.member_execution
    state_sharding: object  # the TrainState's NamedShardings, member axis first
    example_batch: dict  # this process's part of one member's first training batch (host arrays)
    programs: Programs
    program_key: str
    steps_per_transfer: int = 1  # training batches moved to the device at once (`transfer_steps`)

    @property
    def background_checkpoints(self) -> bool:
        """Checkpoints written while training goes on (`checkpoint_writes`, in model.json's "auto")."""
        return self.model_info["auto"]["train.async_checkpoints"] == "background"

    @property
    def num_members(self) -> int:
        return len(self.seeds)

    @property
    def is_main(self) -> bool:
        return jax.process_index() == 0

    @property
    def steps_per_epoch(self) -> int:
        return self.train_batches.steps_per_epoch

    @property
    def total_steps(self) -> int:
        return training_steps(self.config, self.steps_per_epoch)

    def _check(self, batch: dict) -> None:
        batching.check_ids(batch, vocab_size=len(self.splits.vocab), num_users=len(self.splits.users),
                           num_products=len(self.splits.products))

    def to_device(self, batch: dict, spec: P = P("data")) -> dict:
        """This process's part of a global batch -> global arrays split over the mesh's data axis
        (`spec`), once every id in it is checked against its embedding table. One process: the
        whole batch in one transfer call."""
        self._check(batch)
        sharding = NamedSharding(self.mesh, spec)
        if jax.process_count() == 1:
            return jax.device_put(batch, sharding)
        return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)

    def train_inputs(self, epoch: int, start: int = 0):
        """The host side of an epoch's training batches from step `start`: one batch a step, or
        groups of `steps_per_transfer` batches stacked (`batching.stacked`)."""
        batches = self.train_batches.epoch(epoch, start)
        return batches if self.steps_per_transfer == 1 else batching.stacked(batches, self.steps_per_transfer)

    def train_to_device(self, batch: dict) -> dict:
        """A training input (`train_inputs`) on the mesh: the batch axis on "data", after the
        member axis when each member has its own order, after the group axis when stacked."""
        spec = ("members", "data") if self.own_batches else ("data",)
        return self.to_device(batch, P(*((None,) if self.steps_per_transfer > 1 else ()), *spec))

    def init_state(self) -> tuple[step_lib.TrainState, jax.Array]:
        """(every member's fresh state from its seed, with the population's values written in; the
        members' run keys [K]), on the members axis (`members.init_program`)."""
        seeds = members_lib.seeds_array(self.seeds, self.mesh)
        state, run_keys = self.programs.init(seeds, self.to_device(self.example_batch), self.splits.pretrained)
        return population.apply(state, self.hyperparameters), run_keys

    def zero_window(self) -> dict:
        """The train step's metric sums before a window's first step (`members.zero_window`)."""
        return members_lib.zero_window(self.config.model.head.kind, self.num_members, self.mesh)

    def zero_eval_sums(self, params) -> dict:
        """The eval step's sums before the first batch, for `params` [K] (a snapshot ensemble
        evaluates its snapshots x members)."""
        count = int(jax.tree.leaves(params)[0].shape[0])
        return members_lib.zero_eval_sums(self.config.model.head.kind, self.splits.num_classes, count, self.mesh)

    def evaluate(self, params, model_state, batcher) -> dict:
        """{"members": [metrics of each member], "ensemble": metrics} over `batcher` (every review once)."""
        from jaxreviews.train import evaluation

        return evaluation.evaluate(self.programs.eval, params, model_state, batcher.evaluation(),
                                   to_device=self.to_device, prefetch=self.config.train.prefetch,
                                   finalize=members_lib.finalize, sums=self.zero_eval_sums(params))


class MemberBatches:
    """Each member's own training order (`member_data_order`): the members' batches of a step
    stacked on a leading member axis. Every member's batch of a step has the same shape."""

    def __init__(self, batchers: list):
        self.batchers = batchers
        first = batchers[0]
        if len(first.buckets) > 1:
            raise ValueError("member_data_order needs one batch shape for every step: use the packed layout "
                             "(data.layout=auto/packed) or data.num_buckets=1")
        if any(b.steps_per_epoch != first.steps_per_epoch for b in batchers):
            raise ValueError("member_data_order: the members' epochs have different numbers of steps")

    def __getattr__(self, name):  # sizes, shapes and the padding report are the first member's
        return getattr(self.batchers[0], name)

    def epoch(self, epoch: int, start_step: int = 0):
        for parts in zip(*(b.epoch(epoch, start_step) for b in self.batchers)):
            yield {key: np.stack([part[key] for part in parts]) for key in parts[0]}


def build(config: ml_collections.ConfigDict, workdir: str, *, cache: ProgramCache | None = None) -> Experiment:
    """The experiment of a validated `config` (`options.validate`); writes the run's tables and
    model.json into `workdir` (process 0). `cache`: reuse the programs of an equal program key."""
    is_main = jax.process_index() == 0
    started = time.perf_counter()
    with distributed.main_process_first("data preparation"):
        splits = pipeline.load_splits(config.data)
    if is_main:
        splits.save_tables(workdir)
    batch_size = config.train.batch_size
    seeds = members_lib.member_seeds(config)
    mesh = members_lib.make_mesh(len(seeds), batch_size, members=int(config.mesh.members),
                                 model=int(config.mesh.model))
    execution = members_lib.member_execution(config.member_execution, len(seeds), mesh)
    own_batches = bool(config.member_data_order) and len(seeds) > 1
    layout = batch_layout(config, workdir)
    first_order, valid_batches, test_batches = make_batchers(config, splits, layout)
    train_batches = first_order
    if own_batches:
        order = shuffle_seed(config)
        train_batches = MemberBatches([first_order] + [train_batcher(config, splits, order + i, layout,
                                                                     like=first_order)
                                                       for i in range(1, len(seeds))])
    per_transfer = transfer_steps(config, first_order)
    auto = {**models.backend.choices(config.model, layout), "train.steps_per_transfer": per_transfer,
            "train.async_checkpoints": checkpoint_writes(config.train.async_checkpoints)}
    if isinstance(first_order, streaming.StreamedBatches):
        auto["data.workers"] = first_order.workers
    if is_main:
        _log_data(splits, first_order, mesh, batch_size, time.perf_counter() - started, auto)

    example_batch = first_order.example() if isinstance(first_order, streaming.StreamedBatches) else \
        next(iter(first_order.epoch(0)))
    split = sharding_lib.TableSplit.decide(mesh, rows={
        "vocab": len(splits.vocab), "ids": min(len(splits.users), len(splits.products))}, lookups={
        "vocab": _token_slots(example_batch) * jax.process_count(), "ids": batch_size})
    if is_main and mesh.size > 1:
        log.info("embedding tables: %s", split.describe())
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
    model_info = model_description(config, splits, sizes, statistics, first_order, auto, workdir)
    tx, schedule = optimizers.make_optimizer(
        config.optimizer, steps_per_epoch=train_batches.steps_per_epoch, total_epochs=config.train.epochs,
        batch_size=batch_size, cycles=int(config.train.snapshots), max_steps=int(config.train.get("max_steps", 0)),
        injected=population.injected_hyperparameters(config))
    single = state_shardings(model, tx, mesh, _on_mesh(example_batch, mesh), splits.pretrained, split)
    state_sharding = members_lib.with_member_axis(single)
    key = program_key(config, model_info, train_batches.steps_per_epoch, len(seeds), execution, own_batches)
    programs = cache.get(key) if cache is not None else None
    if programs is None:
        programs = make_programs(model, tx, config, splits, mesh=mesh, state_sharding=state_sharding, schedule=schedule,
                                 execution=execution, own_batches=own_batches, num_members=len(seeds),
                                 steps_per_transfer=per_transfer)
        if cache is not None:
            cache.put(key, programs)
    hyperparameters = population.values(config)
    experiment = Experiment(
        config=config, workdir=workdir, splits=splits, train_batches=train_batches, valid_batches=valid_batches,
        test_batches=test_batches, model=model, model_info=model_info, tx=tx, schedule=schedule, mesh=mesh,
        seeds=seeds, hyperparameters=hyperparameters, own_batches=own_batches,
        snapshot_steps=snapshot_steps(config, train_batches.steps_per_epoch), execution=execution,
        state_sharding=state_sharding, example_batch=example_batch, programs=programs, program_key=key,
        steps_per_transfer=per_transfer)
    if is_main and len(seeds) > 1:
        described = population.describe(hyperparameters)
        log.info("members: %d (seeds %s), mesh %s, %s, %s training order%s%s", len(seeds), _seed_range(seeds),
                 dict(mesh.shape), execution, "own" if own_batches else "shared",
                 f", snapshots at steps {experiment.snapshot_steps}" if experiment.snapshot_steps else "",
                 f", population {described}" if described else "")
    return experiment


def _seed_range(seeds: list[int]) -> str:
    if seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}..{seeds[-1]}"
    return ", ".join(map(str, seeds))


def make_programs(model, tx, config, splits, *, mesh: Mesh, state_sharding, execution: str, own_batches: bool,
                  num_members: int, steps_per_transfer: int = 1, schedule=None) -> Programs:
    """The jitted init, train, eval and best-selection programs."""
    steps = dict(state_sharding=state_sharding, own_batches=own_batches, execution=execution,
                 indexed=steps_per_transfer > 1, schedule=schedule)
    params_sharding = state_sharding.params, state_sharding.model_state
    # A snapshot ensemble is evaluated as its snapshots x members: a batched program whatever K.
    evaluated = num_members * max(1, int(config.train.snapshots))
    eval_execution = execution if evaluated == num_members else \
        members_lib.member_execution(config.member_execution, evaluated, mesh)
    return Programs(
        init=members_lib.init_program(model, tx, mesh, state_sharding, num_members),
        train=members_lib.make_train_step(model, tx, config, **steps),
        eval=members_lib.make_eval_step(model, config.model.head, splits.num_classes, splits.rating_range,
                                        eval_execution, mesh),
        select=jax.jit(members_lib.select_members, out_shardings=params_sharding))


def program_key(config: ml_collections.ConfigDict, model_info: dict, steps_per_epoch: int, num_members: int,
                execution: str, own_batches: bool) -> str:
    """What a run's programs depend on: the config but the seeds and the population's values (the
    names it varies stay: they shape the optimiser state), the model's sizes and statistics, the
    batch shapes and the members."""
    tree = json.loads(config.to_json_best_effort())
    for key in ("seed", "member_seeds"):
        tree.pop(key, None)
    varied = sorted(name for name, value in tree.pop("population", {}).items() if name != "spacing" and value)
    tree.pop("search", None)
    return json.dumps({"config": tree, "varied": varied, "model": model_info, "steps_per_epoch": steps_per_epoch,
                       "members": num_members, "execution": execution, "own_batches": own_batches}, sort_keys=True)


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
    """Where each array of one member's fresh TrainState lives (`sharding.state_shardings`): the
    shapes from `jax.eval_shape` of the init, the tables' logical axes from the model, split as
    `split` says."""
    abstract = jax.eval_shape(lambda b, table: step_lib.init_state(model, tx, b, jax.random.key(0),
                                                                   pretrained_embeddings=table), batch, pretrained)
    params = sharding_lib.param_shardings(sharding_lib.param_logical_axes(model, batch), mesh, split)
    return sharding_lib.state_shardings(abstract, params, mesh)


TRANSFER_STEPS_ON_ACCELERATORS = 16


def checkpoint_writes(asked: str, backend: str | None = None) -> str:
    """`train.async_checkpoints`: "background" or "blocking" ("auto": background on accelerators,
    where the host waits on the chip; blocking on CPU, where the writes took the training's cores:
    the default run's saves blocked 1.6 s, and in the background its training took as long again)."""
    if asked != "auto":
        return asked
    return "background" if models.backend.is_accelerator(backend) else "blocking"


def transfer_steps(config: ml_collections.ConfigDict, train_batches) -> int:
    """Training batches moved to the device at once (`train.steps_per_transfer`; 0 = auto: 1 on
    CPU, where host and device share memory, TRANSFER_STEPS_ON_ACCELERATORS elsewhere, where a
    transfer and dispatch per array per step held the first H200 run's cnn at a third of its
    step rate). One batch shape only: stacked batches must match."""
    asked, shapes = int(config.train.steps_per_transfer), len(train_batches.buckets)
    per = steps_per_transfer(asked, shapes)
    if asked > 1 and per == 1 and jax.process_index() == 0:
        log.info("train.steps_per_transfer %d: one batch a transfer (%d batch shapes)", asked, shapes)
    return per


def steps_per_transfer(asked: int, shapes: int) -> int:
    """`asked` (0 = the backend's: TRANSFER_STEPS_ON_ACCELERATORS, or 1 on CPU) with `shapes`
    batch shapes: stacked batches must match, so several shapes move one batch at a time."""
    per = asked or (TRANSFER_STEPS_ON_ACCELERATORS if models.backend.is_accelerator() else 1)
    return per if shapes == 1 else 1


def batch_layout(config: ml_collections.ConfigDict, workdir: str) -> str:
    """"packed" or "padded": `data.layout`, where "auto" is the backend's pick
    (`models.backend`) unless the run in `workdir` started with another: a resumed run keeps
    the batches it trained on (model.json), whichever backend it resumes on."""
    picked = models.batch_layout(config.model, config.data.layout)
    if config.data.layout != "auto" or not checkpoints.has_checkpoints(workdir):
        return picked
    try:
        with open(os.path.join(workdir, "model.json")) as f:
            recorded = json.load(f).get("batch_layout")
    except (OSError, ValueError):
        return picked
    if recorded in ("packed", "padded") and recorded != picked:
        log.info("data.layout auto: %s, as the run started (this %s backend would pick %s)", recorded,
                 models.backend.current(), picked)
        return recorded
    return picked


def make_batchers(config: ml_collections.ConfigDict, splits: pipeline.DataSplits, layout: str):
    """(train, validation, test) batchers of `layout` (`batch_layout`); evaluation reuses the
    training shapes, so it compiles one program per training shape and no more."""
    train = train_batcher(config, splits, shuffle_seed(config), layout)
    packed, common, caps = _batcher_options(config, splits, layout)
    if packed:
        parts = packing_parts(config)
        valid = packing.PackedBatcher(splits.validation, shape=train.shape, parts=parts, **caps, **common)
        test = packing.PackedBatcher(splits.test, shape=train.shape, parts=parts, **caps, **common)
    else:
        valid = batching.Batcher(splits.validation, buckets=train.buckets, **common)
        test = batching.Batcher(splits.test, buckets=train.buckets, **common)
    return train, _streamed(config, valid), _streamed(config, test)


def _streamed(config: ml_collections.ConfigDict, batcher):
    """`batcher`, its batches built by Grain workers when its split streams from records."""
    return streaming.streamed(batcher, workers=streaming_workers(config))


def streaming_workers(config: ml_collections.ConfigDict) -> int:
    """data.workers, -1 resolved per backend: on a CPU the model's own threads use every core,
    and building in the training process measured faster than handing batches over from
    workers (tools/bench_data.py); beside an accelerator the host cores are free for building."""
    asked = int(config.data.workers)
    if asked >= 0:
        return asked
    return 0 if jax.default_backend() == "cpu" else streaming.default_workers()


def train_batcher(config: ml_collections.ConfigDict, splits: pipeline.DataSplits, seed: int, layout: str, *,
                  like=None):
    """The training batcher of order `seed`; `like`: another's batcher whose shapes it takes (the
    members with their own orders must batch alike)."""
    packed, common, caps = _batcher_options(config, splits, layout)
    if packed:
        shape = None if like is None else like.shape
        orders = [shuffle_seed(config) + i for i in range(int(config.num_seeds))]
        others = tuple(o for o in orders if o != seed) if config.member_data_order else ()
        return _streamed(config, packing.PackedBatcher(
            splits.train, seed=seed, row_multiple=jax.local_device_count(), shape=shape, shape_seeds=others,
            parts=packing_parts(config), plan_window=int(config.data.plan_window), **caps, **common))
    if like is not None:
        return _streamed(config, batching.Batcher(splits.train, seed=seed, buckets=like.buckets, **common))
    return _streamed(config, batching.Batcher(splits.train, seed=seed, num_buckets=config.data.num_buckets, **caps,
                                              **common))


def packing_parts(config: ml_collections.ConfigDict) -> int:
    """The parts a packed global batch is built in: `data.batch_parts`, or one per process (0)."""
    return int(config.data.batch_parts) or jax.process_count()


def _batcher_options(config: ml_collections.ConfigDict, splits: pipeline.DataSplits, layout: str):
    data = config.data
    common = dict(layout=models.input_layout(config.model.name), batch_size=config.train.batch_size,
                  rating_range=splits.rating_range, rating_step=splits.rating_step,
                  process_index=jax.process_index(), process_count=jax.process_count())
    caps = dict(max_sentences=data.max_sentences, max_words=data.max_words, max_tokens=data.max_tokens,
                multiple=data.bucket_multiple)
    return layout == "packed", common, caps


def shuffle_seed(config: ml_collections.ConfigDict) -> int:
    """The seed of the training order: `data.shuffle_seed`, or the run's seed when it is -1."""
    seed = config.data.shuffle_seed
    return config.seed if seed < 0 else seed


def training_steps(config: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
    """The run's training steps: `train.epochs` epochs, or `train.max_steps` when that comes first."""
    total = steps_per_epoch * config.train.epochs
    max_steps = int(config.train.get("max_steps", 0))  # a saved run's config may predate it
    return min(total, max_steps) if max_steps > 0 else total


def snapshot_steps(config: ml_collections.ConfigDict, steps_per_epoch: int) -> list[int]:
    """The (micro-)steps that end each cosine cycle of `train.snapshots`."""
    cycles = int(config.train.snapshots)
    if cycles <= 1:
        return []
    accumulation = max(1, config.optimizer.accumulation_steps)
    total = optimizers.optimizer_steps(config.optimizer, steps_per_epoch=steps_per_epoch,
                                       total_epochs=config.train.epochs,
                                       max_steps=int(config.train.get("max_steps", 0)))
    return [boundary * accumulation for boundary in optimizers.cycle_boundaries(total, cycles)[1:]]


def model_description(config, splits, sizes: dict, statistics: dict, train_batches, auto: dict,
                      workdir: str) -> dict:
    """model.json: the sizes and training statistics the model was built with, the batch shapes
    and what the run's "auto" options picked on its backend (`auto`); with the config and the
    saved tables, enough to build the same model again (load_run).
    MF's training pairs (SVD++'s N(u)) go to training_pairs.npz beside it."""
    info = {"name": config.model.name, **sizes, "rating_range": list(sizes["rating_range"]),
            "rating_step": splits.rating_step,
            "embed_dim": None if splits.pretrained is None else int(splits.pretrained.shape[1]),
            "rating_mean": statistics.get("rating_mean"),
            "label_prior": None if statistics.get("label_prior") is None else
            [float(x) for x in statistics["label_prior"]],
            "batch_layout": auto["data.layout"], "batch_shapes": [list(b) for b in train_batches.buckets],
            "auto": auto}
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "model.json"), "w") as f:
            json.dump(info, f, indent=2)
        pairs = statistics.get("training_pairs")
        if pairs is not None:
            np.savez(os.path.join(workdir, "training_pairs.npz"), users=pairs.users, products=pairs.products)
    return info


def _log_data(splits, train_batches, mesh: Mesh, batch_size: int, seconds: float, auto: dict) -> None:
    padding = train_batches.padding_report()
    log.info("data: %d train / %d validation / %d test reviews, vocabulary %d, %d users, %d products (%.1fs)",
             len(splits.train), len(splits.validation), len(splits.test), len(splits.vocab), len(splits.users) - 1,
             len(splits.products) - 1, seconds)
    axes = "" if all(size == 1 for axis, size in mesh.shape.items() if axis != "data") else f", mesh {dict(mesh.shape)}"
    log.info("devices: %d devices (%s)%s, %d processes, global batch %d", mesh.size, jax.devices()[0].platform, axes,
             jax.process_count(), batch_size)
    log.info("auto on %s: %s", auto["backend"], ", ".join(f"{k} {v}" for k, v in auto.items() if k != "backend"))
    kind = "packed batches" if padding.get("layout") == "packed" else "buckets"
    sentences = f" (sentence slots {padding['sentence_efficiency']:.1%})" if "sentence_efficiency" in padding else ""
    log.info("%s %s: padding efficiency %.1f%%%s, truncated tokens %d", kind,
             [list(b) for b in train_batches.buckets], 100 * padding["efficiency"], sentences,
             padding["truncated_tokens"])
    log.info("%s", pipeline.describe_source(splits))
