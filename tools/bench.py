#!/usr/bin/env python3
"""Training throughput of jaxreviews models, comparable with the PyTorch reference.

    python tools/bench.py --model han_upa                 # random batches of fixed shapes: one JSON line
    python tools/bench.py --model han_upa --compare       # + the torch reference, back to back, and the ratio
    python tools/bench.py --all --compare                 # every model, then a table
    python tools/bench.py --data FILE --format amazon --model han_upa --compare   # a file's real reviews
    python tools/bench.py --model han_upa --devices 8                # the batch over 8 (fake CPU) devices
    python tools/bench.py --model han_upa --memory --memory_budget 16  # memory per device; largest batch in 16 GB

Accounting (every mode but --num_seeds): `flops_per_step` counted from the step's jaxpr (every
matmul and convolution, 2 FLOPs a multiply-add, loop bodies times their trip count:
jaxreviews/train/accounting.py; XLA's cost analysis counts a loop once and is not used),
`achieved_flops_per_s`, `docs_per_s_per_device`, `tokens_per_s_per_device` (real tokens), and on a
GPU / TPU `mfu` against the chip's peak dense bf16 FLOP/s (accounting.PEAK_FLOPS; None on CPU).
`--devices N` (CPU: N fake devices) shards the batch over a ("data", "model") mesh of N devices,
`--mesh_model M` of them on the model axis, which splits the embedding tables by rows
(jaxreviews/train/sharding.py); the state is created sharded, as in training.

Memory (`--memory`): the compiled step's memory analysis per device (parameters, optimiser state,
batch, temporaries, peak) at --batch, then the largest global batch whose peak fits
`--memory_budget` GB (found by compiling: temporaries grow linearly with the batch). Past it,
`--config.optimizer.accumulation_steps=K` trains the same global batch in K pieces.

Real lengths (`--data FILE [--format tang|amazon]`): the file's reviews go through the library's
own pipeline (reader, vocabulary of --vocab words, `data.layout` batches: packed by default,
`--layout padded` for the length buckets) into the library's train step (`jaxreviews.train.step`,
Adam 1e-3: what `experiments.train` runs between logged steps). Every batch shape is compiled
first (`compile_s`, reported apart), then one pass over all reviews is timed: `docs_per_s` =
reviews / seconds, `padding_efficiency` = real tokens / token slots; the same pass over batches
already on the device gives `input_pipeline_overhead`. With --compare the same reviews, written in
the literature format (the Amazon text tokenised by the library, so both frameworks see the same
tokens), go to `torch_reference.py --data` (sorted by length, padded per batch), alternating
--repeats times. Reviews without text are left out, as the reference does. The reference's CNN
fails on a batch whose longest review is shorter than its widest filter (5 tokens: conv1d refuses
the input), which its sorted batches make likely; for `--model cnn --compare` both frameworks
train on the reviews of 5 tokens or more (`reviews` in the JSON).

Flags and JSON fields are those of ../shared/bench/torch_reference.py (model, framework, threads,
batch, ms_per_step, docs_per_s), plus `compilations` (backend compilations while training: 1 means
one executable for the whole run) and `compile_s`. The step is the one the reference times: Adam
(lr 1e-3) on softmax cross-entropy (MSE for mf), on one random batch of the reference's shapes,
jitted with the state donated; ms_per_step is the median over --steps steps after --warmup.

The model is the reference's architecture (`reference_config`): the library's default config with
dropout, normalisation and unknown-id replacement set as in torch_reference.py. `--defaults`
benches the library defaults instead.

Threads: XLA's CPU thread pool is sized by --threads (0 = every core the process may use) through
XLA_FLAGS, which must be set before jax is imported, so this file imports jax late.

Memory allocator (`--malloc`, and `--torch-malloc` for the reference, by default the same):
  default  glibc as it comes: the neutral comparison.
  keep     glibc keeps freed memory: one arena, no mmap for big blocks, no trimming (mallopt at
           start-up; the torch reference is started through a small wrapper that does the same
           before importing torch). XLA allocates each step's temporaries as one block of
           hundreds of MB; with glibc defaults it is a fresh mmap every step and every page
           faults again (about 1.5 us per 4 KiB page on this VM): HAN's step goes from ~150 ms
           to ~96 ms with `keep`. Torch gains on the RNN models too, but its CNN and MF steps
           become 10-300x slower under these settings, so pick per framework.
`python -m experiments.train` applies `keep` (jaxreviews/train/allocator.py) unless --nokeep_freed_memory.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # tools/, also when loaded by path
import provenance  # noqa: E402
from jaxreviews.train import allocator  # no jax import: XLA_FLAGS are set before that

REFERENCE_MODELS = ("han_upa", "han", "cnn", "bilstm", "mf")
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
# The PyTorch reference: --torch-reference, else $JAXREVIEWS_TORCH_REFERENCE, else beside the checkout.
TORCH_REFERENCE = os.environ.get("JAXREVIEWS_TORCH_REFERENCE") or os.path.normpath(
    os.path.join(REPO, "..", "shared", "bench", "torch_reference.py"))
TORCH_PYTHON = "/tmp/torch-ref/bin/python"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="han_upa", help=f"one of {REFERENCE_MODELS} or any jaxreviews model name")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--sentences", type=int, default=16)
    p.add_argument("--words", type=int, default=24)
    p.add_argument("--tokens", type=int, default=384)
    p.add_argument("--vocab", type=int, default=30000)
    p.add_argument("--embed", type=int, default=200)
    p.add_argument("--hidden", type=int, default=100)
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--products", type=int, default=2000)
    p.add_argument("--classes", type=int, default=5)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--dtype", default="float32", help="compute dtype of the jax model (float32 | bfloat16)")
    p.add_argument("--defaults", action="store_true", help="bench the library's default config, not the reference's")
    p.add_argument("--malloc", choices=("default", "keep"), default="default",
                   help="glibc allocator settings of the jax process (see the module docstring)")
    p.add_argument("--torch-malloc", choices=("same", "default", "keep"), default="same",
                   help="allocator settings of the torch process (same = as --malloc)")
    p.add_argument("--compare", action="store_true", help="also run the torch reference and print the ratio")
    p.add_argument("--torch-python", default=TORCH_PYTHON)
    p.add_argument("--torch-reference", default=TORCH_REFERENCE,
                   help="torch_reference.py (default $JAXREVIEWS_TORCH_REFERENCE or ../shared/bench/)")
    p.add_argument("--repeats", type=int, default=1, help="with --compare: alternate jax/torch this many times")
    p.add_argument("--all", action="store_true", help="every reference model, one process each, then a table")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a model config entry, e.g. --set word_encoder.unroll=2")
    p.add_argument("--num_seeds", default="", help="K members in one vmapped program, e.g. 1,2,4,8,16: "
                   "model-docs/s against K separate runs, and memory per member (see bench_members)")
    p.add_argument("--member_execution", default="vmap", help="with --num_seeds: vmap | map (lax.map)")
    p.add_argument("--memory_budget", type=float, default=0.0,
                   help="with --num_seeds: the largest K whose compiled step fits this many GB; with --memory: "
                        "the largest batch size")
    p.add_argument("--memory", action="store_true",
                   help="memory per device of the compiled step (parameters, optimiser state, temporaries, peak)")
    p.add_argument("--devices", type=int, default=0,
                   help="devices of the mesh (CPU: that many fake devices); 0 = every device there is")
    p.add_argument("--sparse_tables", action="store_true",
                   help="tables updated in the rows a step looks up (optimizer.sparse_tables), against dense Adam")
    p.add_argument("--mesh_model", type=int, default=1, help="devices on the mesh's model axis (splits the tables)")
    p.add_argument("--data", default="", help="train over this file's real reviews (see the module docstring)")
    p.add_argument("--format", default="", help="--data's format: tang | amazon ('' = detect)")
    p.add_argument("--layout", default="auto", help="--data batches: auto | packed | padded")
    p.add_argument("--max-sentences", type=int, default=32)
    p.add_argument("--max-words", type=int, default=64)
    p.add_argument("--max-tokens", type=int, default=512)
    p.add_argument("--num-buckets", type=int, default=6, help="padded layout: bucket shapes")
    p.add_argument("--steps_per_transfer", type=int, default=0,
                   help="--data: batches moved to the device at once, as train.steps_per_transfer (0 = auto: 1 on "
                        "CPU, 16 on accelerators; one batch shape only)")
    p.add_argument("--pipeline_passes", type=int, default=3,
                   help="--data: passes from the pipeline and from batches on the device, alternating")
    return p.parse_args(argv)


def configure_devices(devices: int) -> None:
    """`devices` fake CPU devices (XLA_FLAGS, before jax is imported); no effect on GPU / TPU."""
    if devices > 1:  # first: XLA stops reading at configure_threads' bare "intra_op_parallelism_threads=N"
        os.environ["XLA_FLAGS"] = (f"--xla_force_host_platform_device_count={devices} "
                                   + os.environ.get("XLA_FLAGS", "")).strip()


def threads_in_use(requested: int) -> int:
    return requested if requested > 0 else len(os.sched_getaffinity(0))


def configure_threads(threads: int) -> None:
    flags = os.environ.get("XLA_FLAGS", "")
    flags += f" --xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'}"
    flags += f" intra_op_parallelism_threads={threads}"
    os.environ["XLA_FLAGS"] = flags.strip()


def reference_config(name: str, args):
    """The jaxreviews config of the reference architecture `name` at the benchmark's sizes."""
    from jaxreviews import models

    model_name = {"bilstm": "bilstm"}.get(name, name)
    c = models.default_model_config(model_name)
    if args.defaults or name not in REFERENCE_MODELS:
        c.dtype = args.dtype
        _size(c, args)
        return c
    c.dtype = args.dtype
    c.head.kind = "regression" if name == "mf" else "classification"
    if name == "mf":
        c.factors = 50
        c.unknown_rate = 0.0
        c.l2_factors = c.l2_biases = 0.0  # the reference has no penalty
        c.factor_shrinkage = c.bias_shrinkage = 0.0
        return c
    c.embedding_dropout = 0.0
    c.word_dropout = 0.0  # the reference has no word dropout nor label smoothing
    c.head.label_smoothing = 0.0
    c.dropout = 0.0
    c.norm = "none"
    c.head_dropout = 0.5 if name == "cnn" else 0.0
    _size(c, args)
    if name == "cnn":
        c.filter_widths, c.num_filters, c.activation = (3, 4, 5), 100, "relu"
    elif name == "bilstm":
        c.encoder.kind, c.encoder.bidirectional, c.encoder.num_layers, c.pooling = "lstm", True, 1, "mean"
    else:
        for encoder in (c.word_encoder, c.sentence_encoder):
            encoder.kind, encoder.bidirectional, encoder.num_layers = "lstm", True, 1
        c.attention_dim = 2 * args.hidden
        c.sentence_norm = "none"
        if name == "han_upa":
            c.user_product.dim = args.embed
            c.user_product.word_attention = c.user_product.sentence_attention = True
            c.user_product.concat_to_document = c.user_product.rating_biases = False
            c.user_product.unknown_dropout = 0.0
    return c


def _size(c, args) -> None:
    if c.name == "mf":
        return
    c.embed_dim = args.embed
    for key in ("encoder", "word_encoder", "sentence_encoder"):
        if key in c:
            c[key].hidden_size = args.hidden
    if "attention_dim" in c:
        c.attention_dim = 2 * args.hidden
    if "user_product" in c:
        c.user_product.dim = args.embed


def apply_overrides(c, overrides) -> None:
    import ast

    for item in overrides:
        key, _, value = item.partition("=")
        target = c
        *path, leaf = key.split(".")
        for part in path:
            target = target[part]
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            parsed = value
        target[leaf] = parsed


def random_batch(name: str, layout: str, args):
    import numpy as np

    rng = np.random.default_rng(0)
    b = args.batch
    batch = {
        "user": rng.integers(0, args.users, b, dtype=np.int32),
        "product": rng.integers(0, args.products, b, dtype=np.int32),
        "label": rng.integers(0, args.classes, b, dtype=np.int32),
        "rating": (rng.random(b, dtype=np.float32) * 4 + 1).astype(np.float32),
        "weight": np.ones(b, np.float32),
    }
    if layout == "hierarchical":
        batch["words"] = rng.integers(1, args.vocab, (b, args.sentences, args.words), dtype=np.int32)
        batch["word_mask"] = np.ones((b, args.sentences, args.words), bool)
        batch["sentence_mask"] = np.ones((b, args.sentences), bool)
    elif layout == "flat":
        batch["tokens"] = rng.integers(1, args.vocab, (b, args.tokens), dtype=np.int32)
        batch["token_mask"] = np.ones((b, args.tokens), bool)
    return batch


def reference_step(model, config, sparse_tables: bool = False):
    """(init(batch, key), train_step(state, batch, key)) of the reference step: Adam 1e-3 on the
    model's loss, the step count folded into the dropout key; the state a plain dict.
    `sparse_tables`: the library's step with the tables updated in the rows looked up
    (`optimizer.sparse_tables`, lazy Adam 1e-3), its state a TrainState."""
    import jax
    import jax.numpy as jnp
    import optax

    from jaxreviews.models import heads

    tx = optax.adam(1e-3)
    if sparse_tables:
        from jaxreviews.train import optimizers, step as step_lib

        tx = optax.multi_transform({"dense": tx, "table": optimizers.table_moments()}, optimizers.table_labels)
        sparse = optimizers.SparseTables(schedule=lambda count: 1e-3, b1=0.9, b2=0.999, eps=1e-8, clip_norm=0.0,
                                         weight_decay=0.0, weight_decay_on="", embedding_weight_decay=0.0)
        library_step = step_lib.make_train_step(model, tx, config.head, norms=False, sparse=sparse)

        def sparse_step(state, batch, key):
            state, metrics = library_step(state, batch, key)
            return state, metrics["loss"]

        return (lambda batch, key: step_lib.init_state(model, tx, batch, key)), sparse_step

    def init(batch, key):
        params = model.init({"params": key}, batch, train=False)["params"]
        return {"step": jnp.zeros([], jnp.int32), "params": params, "opt_state": tx.init(params)}

    def train_step(state, batch, key):
        def loss_fn(params):
            outputs = model.apply({"params": params}, batch, train=True,
                                  rngs={"dropout": jax.random.fold_in(key, state["step"])})
            return heads.loss(outputs, batch, config.head)

        loss, grads = jax.value_and_grad(loss_fn)(state["params"])
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        return {"step": state["step"] + 1, "params": optax.apply_updates(state["params"], updates),
                "opt_state": opt_state}, loss

    return init, train_step


def build_program(args, batch_size: int | None = None):
    """The reference step (Adam 1e-3 on the model's loss, state donated) of --model on a random
    batch of `batch_size` (default --batch), on a ("data", "model") mesh of the devices, the batch
    split over "data" and the state created sharded (embedding tables over "model"). Returns
    (config, step, state, batch, key, mesh)."""
    import jax
    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P

    from jaxreviews import models
    from jaxreviews.train import members, sharding

    devices = jax.devices()[:args.devices] if args.devices else jax.devices()
    size = args.batch if batch_size is None else batch_size
    mesh = members.make_mesh(1, size, model=args.mesh_model, devices=devices)  # one member: ("data", "model")
    if size % mesh.shape["data"]:
        raise SystemExit(f"--batch {size} must be a multiple of the mesh's {mesh.shape['data']} data devices")
    config = reference_config(args.model, args)
    apply_overrides(config, args.set)
    layout = models.input_layout(config.name)
    sized = argparse.Namespace(**{**vars(args), "batch": size})
    batch = jax.device_put(random_batch(args.model, layout, sized), NamedSharding(mesh, P("data")))
    lo, hi = 1.0, float(args.classes)
    token_slots = sum(int(np.size(batch[k])) for k in ("words", "tokens") if k in batch)
    split = sharding.TableSplit.decide(mesh, rows={"vocab": args.vocab, "ids": min(args.users, args.products)},
                                       lookups={"vocab": token_slots, "ids": size})
    model = models.build_model(config, vocab_size=split.padded_rows(args.vocab, "vocab"),
                               num_users=split.padded_rows(args.users, "ids"),
                               num_products=split.padded_rows(args.products, "ids"),
                               num_classes=args.classes, rating_range=(lo, hi))
    key = jax.random.key(0)
    init, train_step = reference_step(model, config, args.sparse_tables)
    jax.set_mesh(mesh)  # the steps are traced with the mesh in effect, as in training (layers.batch_shards)
    params = sharding.param_shardings(sharding.param_logical_axes(model, batch), mesh, split)
    shardings = sharding.state_shardings(jax.eval_shape(init, batch, key), params, mesh)
    state = jax.jit(init, out_shardings=shardings)(batch, key)
    step = jax.jit(train_step, donate_argnums=0, out_shardings=(shardings, NamedSharding(mesh, P())))
    return config, step, state, batch, key, mesh


def tokens_per_doc(args, config) -> int:
    """Real tokens a random batch's review holds (every slot is real)."""
    from jaxreviews import models

    layout = models.input_layout(config.name)
    return {"hierarchical": args.sentences * args.words, "flat": args.tokens}.get(layout, 0)


def bench_jax(args) -> dict:
    threads = threads_in_use(args.threads)
    configure_threads(threads)
    configure_devices(args.devices)
    import jax

    from jaxreviews import models
    from jaxreviews.train import accounting

    compiles: list[float] = []

    def on_event(event: str, duration: float, **_) -> None:
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(duration)

    jax.monitoring.register_event_duration_secs_listener(on_event)

    config, step, state, batch, key, mesh = build_program(args)
    parameters = models.count_parameters(state["params"] if isinstance(state, dict) else state.params)["total"]
    compiles.clear()
    started = time.perf_counter()
    traced = step.trace(state, batch, key)  # compiled ahead of time: the calls below reuse it
    compiled = traced.lower().compile()
    compile_wall_s = time.perf_counter() - started
    flops = accounting.count_flops(traced.jaxpr)
    memory = accounting.step_memory(compiled, state)
    started = time.perf_counter()
    state, loss = step(state, batch, key)
    loss.block_until_ready()
    first_step_s = time.perf_counter() - started
    for _ in range(max(args.warmup - 1, 0)):
        state, loss = step(state, batch, key)
        loss.block_until_ready()

    cpu_seconds = []  # core-seconds a step (all threads of the process): what the step costs the machine

    def measure() -> float:
        nonlocal state, loss
        times = []
        cpu_started = time.process_time()
        for _ in range(args.steps):
            t = time.perf_counter()
            state, loss = step(state, batch, key)
            loss.block_until_ready()
            times.append(time.perf_counter() - t)
        cpu_seconds.append((time.process_time() - cpu_started) / args.steps)
        return statistics.median(times)

    devices = int(mesh.size)
    result = {"model": args.model, "framework": f"jax {jax.__version__}", "threads": threads, "batch": args.batch,
              "ms_per_step": None, "docs_per_s": None, "compilations": None, "compile_s": None,
              "first_step_s": round(first_step_s, 2), "parameters": int(parameters), "dtype": args.dtype,
              "config": "defaults" if args.defaults else "reference", "set": list(args.set), "malloc": args.malloc,
              "devices": devices, "mesh": dict(mesh.shape), "device_kind": mesh.devices.flat[0].device_kind,
              "loss": None}

    def finish(seconds_per_step: float) -> None:
        result.update(compilations=len(compiles), compile_s=round(compile_wall_s, 2), loss=round(float(loss), 4))
        result.update(accounting.throughput(flops_per_step=flops, steps=1, seconds=seconds_per_step,
                                            reviews=args.batch, tokens=args.batch * tokens_per_doc(args, config),
                                            devices=devices, device=mesh.devices.flat[0], dtype=args.dtype))
        result.update(peak_bytes=memory["peak_bytes"], temporary_bytes=memory["temporary_bytes"],
                      cpu_ms_per_step=round(statistics.median(cpu_seconds) * 1e3, 2))

    result["_measure"] = measure
    result["_finish"] = finish
    return result


def bench_memory(args) -> list[dict]:
    """Memory per device of the compiled step at --batch, and the largest global batch within
    --memory_budget GB: temporaries grow linearly with the batch, so two compilations give the
    slope, and compiling at the predicted size (then smaller, while over) confirms it."""
    configure_threads(threads_in_use(args.threads))
    configure_devices(args.devices)
    from jaxreviews.train import accounting

    def memory_at(size: int) -> dict:
        _, step, state, batch, key, mesh = build_program(args, size)
        costs = accounting.step_memory(step.lower(state, batch, key).compile(), state)
        return {"model": args.model, "batch": size, "devices": int(mesh.size), "mesh": dict(mesh.shape),
                "dtype": args.dtype, **costs}

    rows = [memory_at(args.batch)]
    print(json.dumps(rows[0]), flush=True)
    if args.memory_budget:
        budget = args.memory_budget * 2 ** 30
        multiple = rows[0]["mesh"]["data"] * 8
        double = memory_at(2 * args.batch)
        per_review = max(1.0, (double["peak_bytes"] - rows[0]["peak_bytes"]) / args.batch)
        fixed = rows[0]["peak_bytes"] - per_review * args.batch
        size = max(multiple, int((budget - fixed) // per_review) // multiple * multiple)
        found = memory_at(size)
        while found["peak_bytes"] > budget and size > multiple:
            size = max(multiple, int(size * 0.95) // multiple * multiple)
            found = memory_at(size)
        fits = found["peak_bytes"] <= budget
        found.update(memory_budget_gb=args.memory_budget, largest_batch_in_budget=size if fits else None,
                     bytes_per_review=int(per_review))
        rows.append(found)
        print(json.dumps(found), flush=True)
    return rows


def bench_members(args) -> list[dict]:
    """K members trained in one program (`jax.vmap` over parameters, optimiser state and keys; one
    shared batch: what `--config.num_seeds=K` runs) against one model's step, in one process, back
    to back. Per K: ms per step, model-docs/s (K x batch / step time), `ratio_vs_separate` (K
    separate runs' time / the K-member step's: >= 1 means one program costs no more than K runs),
    `cpu_ratio_vs_separate` (the same in process CPU time: the cost in core-seconds, which a
    machine busy with other work disturbs less than wall time),
    and XLA's memory analysis of the compiled step: peak bytes, and bytes per member (the growth
    from K/2, or from 1, members)."""
    threads = threads_in_use(args.threads)
    configure_threads(threads)
    import jax

    from jaxreviews import models
    from jaxreviews.train import accounting, members as members_lib

    config = reference_config(args.model, args)
    apply_overrides(config, args.set)
    batch = jax.device_put(random_batch(args.model, models.input_layout(config.name), args))
    model = models.build_model(config, vocab_size=args.vocab, num_users=args.users, num_products=args.products,
                               num_classes=args.classes, rating_range=(1.0, float(args.classes)))
    init, train_step = reference_step(model, config, args.sparse_tables)

    def program(count: int):
        keys = jax.random.split(jax.random.key(0), count)
        mesh = members_lib.make_mesh(count, args.batch)
        on_cpu = mesh.devices.flat[0].platform == "cpu"  # members initialised one after another there: see init_program
        init_execution = "single" if count == 1 else "map" if on_cpu else "vmap"
        state = jax.jit(members_lib.over_members(lambda key: init(batch, key), init_execution, (0,)),
                        out_shardings=members_lib.member_sharding(mesh))(keys)
        execution = members_lib.member_execution(args.member_execution, count, mesh)  # one member: the single step
        step = jax.jit(members_lib.over_members(train_step, execution, (0, None, 0)), donate_argnums=0)
        compiled = step.lower(state, batch, keys).compile()
        return state, keys, compiled

    def time_steps(count: int) -> tuple[float, dict]:
        state, keys, compiled = program(count)
        for _ in range(max(args.warmup, 1)):
            state, loss = compiled(state, batch, keys)
            loss.block_until_ready()
        times, cpu = [], time.process_time()
        for _ in range(args.steps):
            started = time.perf_counter()
            state, loss = compiled(state, batch, keys)
            loss.block_until_ready()
            times.append(time.perf_counter() - started)
        cpu_ms = (time.process_time() - cpu) / args.steps * 1e3
        memory = accounting.step_memory(compiled, state)
        return statistics.median(times), {"peak_bytes": memory["peak_bytes"], "argument_bytes": memory["argument_bytes"],
                                          "temporary_bytes": memory["temporary_bytes"],
                                          "cpu_ms_per_step": round(cpu_ms, 1)}

    counts = [int(k) for k in str(args.num_seeds).split(",") if k.strip()]
    single_ms, single_memory = time_steps(1)
    single_cpu = [single_memory.pop("cpu_ms_per_step")]
    rows, previous = [], (1, single_memory)
    for count in counts:
        ms, memory = (single_ms, dict(single_memory, cpu_ms_per_step=single_cpu[0])) if count == 1 else time_steps(count)
        if count > 1:  # alternate with the single step: the machine's noise hits both alike
            again_ms, again = time_steps(1)
            single_ms = statistics.median([single_ms, again_ms])
            single_cpu.append(again["cpu_ms_per_step"])
        cpu_single = statistics.median(single_cpu)
        row = {"model": args.model, "num_seeds": count, "execution": args.member_execution, "threads": threads,
               "batch": args.batch,
               "ms_per_step": round(ms * 1e3, 2), "single_ms_per_step": round(single_ms * 1e3, 2),
               "model_docs_per_s": round(count * args.batch / ms, 1),
               "ratio_vs_separate": round(count * single_ms / ms, 2),
               # core-seconds: what K separate runs and the K-member program cost the machine
               "cpu_ratio_vs_separate": round(count * cpu_single / memory["cpu_ms_per_step"], 2), **memory}
        if memory and count > previous[0] and previous[1]:
            row["bytes_per_member"] = int((memory["peak_bytes"] - previous[1]["peak_bytes"]) / (count - previous[0]))
        if args.memory_budget and memory and "bytes_per_member" in row and row["bytes_per_member"] > 0:
            budget = args.memory_budget * 2 ** 30
            fixed = memory["peak_bytes"] - count * row["bytes_per_member"]
            row["max_members_in_budget"] = int((budget - fixed) // row["bytes_per_member"])
        rows.append(row)
        previous = (count, memory)
        print(json.dumps(row), flush=True)
    return rows


def step_time_fit(rows: list[dict]) -> dict | None:
    """Least squares t(K) = a + b K over the rows' (K, ms/step): a is what every step costs
    whatever K (dispatch, the host, small kernels), b what each member adds; a / b members are
    needed before the members dominate. None with fewer than two distinct K."""
    import numpy as np

    ks = np.array([r["num_seeds"] for r in rows], float)
    ts = np.array([r["ms_per_step"] for r in rows], float)
    if len(set(ks)) < 2:
        return None
    b, a = np.polyfit(ks, ts, 1)
    residual = ts - (a + b * ks)
    return {"fixed_ms": round(float(a), 3), "per_member_ms": round(float(b), 3),
            "max_abs_residual_ms": round(float(np.abs(residual).max()), 3),
            "speedup_limit": None if b <= 0 else round(float((a + b) / b), 1)}


def run_torch(args) -> dict | None:
    if not os.path.exists(args.torch_python) or not os.path.exists(args.torch_reference):
        print(f"torch reference not run: need {args.torch_python} and {args.torch_reference}", file=sys.stderr)
        return None
    flags = ["--model", args.model]
    for name in ("batch", "sentences", "words", "tokens", "vocab", "embed", "hidden", "users", "products",
                 "classes", "steps", "warmup", "threads"):
        flags += [f"--{name}", str(getattr(args, name) if name != "threads" else threads_in_use(args.threads))]
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "XLA_FLAGS")}
    malloc = args.malloc if args.torch_malloc == "same" else args.torch_malloc
    if malloc == "keep":  # glibc settings as in allocator.keep_freed_memory(), then the reference as is
        wrapper = ("import ctypes, runpy, sys; libc = ctypes.CDLL('libc.so.6'); "
                   "libc.mallopt(-8, 1); libc.mallopt(-4, 0); libc.mallopt(-1, 2**31 - 1); "
                   f"sys.argv = [{args.torch_reference!r}] + sys.argv[1:]; "
                   f"runpy.run_path({args.torch_reference!r}, run_name='__main__')")
        command = [args.torch_python, "-c", wrapper, *flags]
    else:
        command = [args.torch_python, args.torch_reference, *flags]
    out = subprocess.run(command, capture_output=True, text=True, env=env)
    if out.returncode:
        print(out.stderr, file=sys.stderr)
        return None
    return dict(json.loads(out.stdout.strip().splitlines()[-1]), malloc=malloc)


TORCH_CNN_SHORTEST = 5  # the reference's widest filter: its conv1d needs a batch this long


def read_reviews(args) -> list:
    """The file's reviews that have text (the torch reference skips the others); for a cnn
    comparison only those the reference's CNN can take (see the module docstring)."""
    from jaxreviews.data import readers

    reviews = [r for r in readers.read_reviews(args.data, args.format or None) if r.sentences]
    if args.model == "cnn" and args.compare:
        reviews = [r for r in reviews if sum(map(len, r.sentences)) >= TORCH_CNN_SHORTEST]
    # One class per integer rating of the file, for both frameworks (the reference's label is
    # rating - lowest): 5 for Amazon and Yelp, 10 for IMDB.
    args.classes = int(round(max(r.rating for r in reviews) - min(r.rating for r in reviews))) + 1
    return reviews


def bench_data_jax(args, reviews) -> dict:
    """One timed pass over `reviews` through the library's pipeline and train step."""
    threads = threads_in_use(args.threads)
    configure_threads(threads)
    import jax
    import numpy as np
    import optax

    from jaxreviews import models
    from jaxreviews.data import batching, corpus, packing
    from jaxreviews.train import step as step_lib

    compiles: list[float] = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, duration, **_: compiles.append(duration)
        if event == "/jax/core/compile/backend_compile_duration" else None)

    started = time.perf_counter()
    collected = corpus.collect(reviews)
    vocab = collected.build_vocabulary(max_size=args.vocab)
    users, products = collected.build_id_maps()
    data = collected.encode(None, vocab, users, products)
    config = reference_config(args.model, args)
    apply_overrides(config, args.set)
    layout = models.input_layout(config.name)
    packed = models.batch_layout(config, args.layout) == "packed"
    rating_range = (min(r.rating for r in reviews), max(r.rating for r in reviews))
    options = dict(layout=layout, batch_size=args.batch, seed=0, max_sentences=args.max_sentences,
                   max_words=args.max_words, max_tokens=args.max_tokens, rating_range=rating_range)
    batcher = (packing.PackedBatcher(data, **options) if packed
               else batching.Batcher(data, num_buckets=args.num_buckets, **options))
    pipeline_s = time.perf_counter() - started
    model = models.build_model(config, vocab_size=max(args.vocab, len(vocab)), num_users=len(users),
                               num_products=len(products), num_classes=args.classes, rating_range=rating_range)
    tx = optax.adam(1e-3)
    example = next(batcher.epoch(0))
    state = jax.jit(lambda b, k: step_lib.init_state(model, tx, b, k))(example, jax.random.key(0))
    # The train step without the global norms (experiments.train computes them every step: 2-4% of a
    # CPU step), as this comparison has been measured since 2026-11-28.
    train_fn = step_lib.make_train_step(model, tx, config.head, norms=False)
    step = jax.jit(train_fn, donate_argnums=0)
    key = jax.random.key(1)

    # Compile every shape first (AOT), so the timed pass compiles nothing.
    compiles.clear()
    shapes = {}
    for batch in batcher.epoch(0):
        signature = tuple((k, v.shape) for k, v in sorted(batch.items()))
        if signature not in shapes:
            shapes[signature] = batch
    compile_started = time.perf_counter()
    for batch in shapes.values():
        step.lower(state, batch, key).compile()
    compile_s = time.perf_counter() - compile_started
    for batch in list(shapes.values())[:args.warmup] or [example]:  # warm-up steps
        state, metrics = step(state, batch, key)
    jax.block_until_ready(metrics)

    # The library's input path (loop.Trainer.run_epoch): one batch a transfer, or groups of
    # `per` stacked batches, each step picking its own inside the program.
    from jaxreviews.train.experiment import steps_per_transfer

    per = steps_per_transfer(args.steps_per_transfer, len(shapes))
    if per > 1:
        grouped_step = jax.jit(step_lib.on_stacked(train_fn), donate_argnums=0)
        indices = [jax.device_put(np.int32(i)) for i in range(per)]
        steps_per_epoch = batcher.steps_per_epoch
        group = next(batching.stacked(batcher.epoch(0), per))
        compile_started = time.perf_counter()
        grouped_step.lower(state, group, indices[0], key).compile()
        compile_s += time.perf_counter() - compile_started
        state, metrics = grouped_step(state, jax.device_put(group), indices[0], key)
        jax.block_until_ready(metrics)

    def library_pass():
        nonlocal state, metrics
        if per == 1:
            for batch in batching.prefetch(batcher.epoch(1), 2, jax.device_put):
                state, metrics = step(state, batch, key)
            return
        done = 0
        for group in batching.prefetch(batching.stacked(batcher.epoch(1), per), 2, jax.device_put):
            for index in range(min(per, steps_per_epoch - done)):
                state, metrics = grouped_step(state, group, indices[index], key)
            done += per

    compiles_before = len(compiles)
    # The same pass over batches already on the device: what the input pipeline costs. The two
    # passes alternate --pipeline_passes times (medians), so a change in the machine's load hits both.
    on_device = [jax.device_put(batch) for batch in batcher.epoch(1)]
    jax.block_until_ready(on_device)
    pipeline_runs, device_runs = [], []
    for _ in range(max(1, args.pipeline_passes)):
        timed_started = time.perf_counter()
        library_pass()
        jax.block_until_ready(metrics)
        pipeline_runs.append(time.perf_counter() - timed_started)
        device_started = time.perf_counter()
        for batch in on_device:
            state, metrics = step(state, batch, key)
        jax.block_until_ready(metrics)
        device_runs.append(time.perf_counter() - device_started)
    seconds, device_seconds = statistics.median(pipeline_runs), statistics.median(device_runs)
    padding = batcher.padding_report()
    return {"model": args.model, "framework": f"jax {jax.__version__}", "data": args.data, "threads": threads,
            "batch": args.batch, "reviews": len(data), "padding_efficiency": padding["efficiency"],
            "seconds": round(seconds, 2), "docs_per_s": round(len(data) / seconds, 1),
            "layout": "packed" if packed else "padded", "shapes": [list(b) for b in batcher.buckets],
            "set": list(args.set),
            "steps_per_transfer": per, "backend": jax.default_backend(),
            "compile_s": round(compile_s, 2), "programs": len(shapes),
            "compilations_while_timed": len(compiles) - compiles_before, "pipeline_s": round(pipeline_s, 2),
            "docs_per_s_batches_on_device": round(len(data) / device_seconds, 1),
            "input_pipeline_overhead": round(seconds / device_seconds - 1, 3),
            "pipeline_passes_s": [round(x, 2) for x in pipeline_runs],
            "device_passes_s": [round(x, 2) for x in device_runs],
            "loss": round(float(metrics["loss"]), 4)}


def run_torch_data(args, literature_file: str) -> dict | None:
    if not os.path.exists(args.torch_python) or not os.path.exists(args.torch_reference):
        print(f"torch reference not run: need {args.torch_python} and {args.torch_reference}", file=sys.stderr)
        return None
    flags = ["--model", args.model, "--data", literature_file, "--threads", str(threads_in_use(args.threads))]
    for name in ("batch", "vocab", "embed", "hidden", "classes", "warmup", "max_sentences", "max_words", "max_tokens"):
        flags += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "XLA_FLAGS")}
    out = subprocess.run([args.torch_python, args.torch_reference, *flags], capture_output=True, text=True, env=env)
    if out.returncode:
        print(out.stderr, file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def main_data(args) -> None:
    """--data: jax (in a fresh process per repeat) and torch alternately over the same reviews."""
    import tempfile

    if args.malloc == "keep":
        allocator.keep_freed_memory()
    if os.environ.get("JAXREVIEWS_BENCH_CHILD"):
        print(json.dumps(bench_data_jax(args, read_reviews(args))), flush=True)
        return
    from jaxreviews.data import readers

    jax_runs, torch_runs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        literature = os.path.join(tmp, "reviews.txt")
        if args.compare:
            readers.write_tang(literature, read_reviews(args))
        child = [sys.executable, os.path.abspath(__file__), *sys.argv[1:]]
        for _ in range(max(args.repeats, 1)):
            out = subprocess.run(child, capture_output=True, text=True,
                                 env={**os.environ, "JAXREVIEWS_BENCH_CHILD": "1"})
            if out.returncode:
                print(out.stdout, out.stderr, file=sys.stderr)
                raise SystemExit(out.returncode)
            jax_runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(jax_runs[-1]), flush=True)
            if args.compare:
                torch_runs.append(run_torch_data(args, literature))
                if torch_runs[-1]:
                    print(json.dumps(torch_runs[-1]), flush=True)
    torch_runs = [r for r in torch_runs if r]
    if torch_runs:
        jax_docs = statistics.median(r["docs_per_s"] for r in jax_runs)
        torch_docs = statistics.median(r["docs_per_s"] for r in torch_runs)
        print(json.dumps({"model": args.model, "data": args.data, "reviews": jax_runs[0]["reviews"],
                          "torch_reviews": torch_runs[0]["reviews"],
                          "jax_docs_per_s": jax_docs, "torch_docs_per_s": torch_docs,
                          "jax_padding_efficiency": jax_runs[0]["padding_efficiency"],
                          "torch_padding_efficiency": torch_runs[0]["padding_efficiency"],
                          "compile_s": jax_runs[0]["compile_s"], "ratio": round(jax_docs / torch_docs, 2)}),
              flush=True)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.data:
        sys.path.insert(0, REPO)
        return main_data(args)
    if args.all:
        return run_all(args, argv if argv is not None else sys.argv[1:])
    if args.memory:
        if args.malloc == "keep":
            allocator.keep_freed_memory()
        sys.path.insert(0, REPO)
        from jaxreviews.train.accounting import format_bytes

        rows = bench_memory(args)
        print()
        print(provenance.line(provenance.describe()) + "\n")
        print("| model | global batch | devices | parameters | optimiser state | batch | temporaries | peak |")
        print("|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['model']} | {r['batch']} | {r['devices']} | {format_bytes(r['parameter_bytes'])} | "
                  f"{format_bytes(r['optimizer_state_bytes'])} | {format_bytes(r['batch_bytes'])} | "
                  f"{format_bytes(r['temporary_bytes'])} | {format_bytes(r['peak_bytes'])} |")
        if len(rows) > 1:
            found = rows[-1]["largest_batch_in_budget"]
            print(f"\nlargest global batch within {args.memory_budget:g} GB per device: "
                  + (f"{found} (peak {format_bytes(rows[-1]['peak_bytes'])}, "
                     f"{format_bytes(rows[-1]['bytes_per_review'])} a review); beyond it, "
                     "--config.optimizer.accumulation_steps" if found else "none: the smallest does not fit"))
        return None
    if args.num_seeds:
        if args.malloc == "keep":
            allocator.keep_freed_memory()
        sys.path.insert(0, REPO)
        rows = bench_members(args)
        print()
        print(provenance.line(provenance.describe()) + "\n")
        print("| model | K | ms/step | model-docs/s | K runs / one K-member step (wall) | (CPU time) | peak MB | MB per member |")
        print("|---|---|---|---|---|---|---|---|")
        for r in rows:
            peak = f"{r['peak_bytes'] / 2 ** 20:.0f}" if "peak_bytes" in r else "-"
            per = f"{r['bytes_per_member'] / 2 ** 20:.1f}" if "bytes_per_member" in r else "-"
            print(f"| {r['model']} | {r['num_seeds']} | {r['ms_per_step']} | {r['model_docs_per_s']} | "
                  f"{r['ratio_vs_separate']:.2f} | {r['cpu_ratio_vs_separate']:.2f} | {peak} | {per} |")
        fit = step_time_fit(rows)
        if fit is not None:
            print(f"\nstep time t(K) = {fit['fixed_ms']} ms + {fit['per_member_ms']} ms x K (largest residual "
                  f"{fit['max_abs_residual_ms']} ms): K members reach at most {fit['speedup_limit']}x the "
                  "model-docs/s of one")
            print(json.dumps({"model": args.model, "step_time_fit": fit}), flush=True)
        return None
    if args.malloc == "keep":
        allocator.keep_freed_memory()
    sys.path.insert(0, REPO)
    result = bench_jax(args)
    measure, finish = result.pop("_measure"), result.pop("_finish")
    jax_ms, torch_runs = [], []
    for _ in range(max(args.repeats, 1) if args.compare else 1):
        jax_ms.append(measure())
        if args.compare:
            torch_runs.append(run_torch(args))
    ms = statistics.median(jax_ms)
    finish(ms)
    result.update(ms_per_step=round(ms * 1e3, 2), docs_per_s=round(args.batch / ms, 1))
    if len(jax_ms) > 1:
        result["ms_per_step_runs"] = [round(m * 1e3, 2) for m in jax_ms]
    print(json.dumps(result), flush=True)
    torch_runs = [r for r in torch_runs if r]
    if torch_runs:
        torch_ms = statistics.median(r["ms_per_step"] for r in torch_runs)
        reference = dict(torch_runs[0], ms_per_step=torch_ms, docs_per_s=round(args.batch / torch_ms * 1e3, 1))
        if len(torch_runs) > 1:
            reference["ms_per_step_runs"] = [r["ms_per_step"] for r in torch_runs]
        print(json.dumps(reference), flush=True)
        print(json.dumps({"model": args.model, "jax_docs_per_s": result["docs_per_s"],
                          "torch_docs_per_s": reference["docs_per_s"],
                          "ratio": round(result["docs_per_s"] / reference["docs_per_s"], 2)}), flush=True)


def run_all(args, argv) -> None:
    """Each model in its own process (fresh XLA state), then a markdown table."""
    base = [a for a in argv if a != "--all"]
    rows = []
    for name in REFERENCE_MODELS:
        out = subprocess.run([sys.executable, os.path.abspath(__file__), *base, "--model", name],
                             capture_output=True, text=True)
        lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
        if out.returncode or not lines:
            print(out.stdout, out.stderr, file=sys.stderr)
            continue
        for line in lines:
            print(json.dumps(line), flush=True)
        jax_line = lines[0]
        ratio = next((line for line in lines if "ratio" in line), None)
        rows.append((name, jax_line, ratio))
    print()
    print(provenance.line(provenance.describe()) + "\n")
    print("| model | jax ms/step | jax docs/s | torch docs/s | ratio | compilations |")
    print("|---|---|---|---|---|---|")
    for name, j, r in rows:
        torch_docs = r["torch_docs_per_s"] if r else "-"
        ratio = f"{r['ratio']:.2f}x" if r else "-"
        print(f"| {name} | {j['ms_per_step']} | {j['docs_per_s']} | {torch_docs} | {ratio} | {j['compilations']} |")


if __name__ == "__main__":
    main()
