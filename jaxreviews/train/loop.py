"""The fit loop: `train_and_evaluate(config, workdir)`.

Epochs of jitted steps over bucketed batches sharded on a device mesh; validation every epoch (or
every N steps) with early stopping on a chosen metric; orbax checkpoints (latest N + best) with
exact resume; a clean save-and-exit on SIGTERM; metrics as JSON lines and TensorBoard scalars;
at the end the best parameters evaluated on test, beside the majority and mean-rating baselines,
written to `results.json`.
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

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxreviews import models
from jaxreviews.data import batching, packing, pipeline
from jaxreviews.train import checkpoints, compilation, optimizers, reporting, step as step_lib

HIGHER_IS_BETTER = {"accuracy": True, "macro_f1": True, "rmse": False, "mae": False, "loss": False, "nll": False}


def default_train_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.batch_size = 32  # global: split over processes and devices
    c.epochs = 10
    c.eval_every_steps = 0  # 0: evaluate at the end of every epoch
    c.checkpoint_every_steps = 200
    c.keep_checkpoints = 2
    c.early_stopping_metric = "accuracy"  # accuracy | rmse | mae | loss
    c.patience = 3  # evaluations without improvement before stopping; 0 = never stop early
    c.log_every_steps = 50
    c.prefetch = 2
    c.tensorboard = True
    return c


class NonFiniteLossError(FloatingPointError):
    pass


@dataclasses.dataclass
class Bookkeeping:
    """What the loop remembers between evaluations; saved with every checkpoint as JSON."""

    best_value: float | None = None
    best_step: int = -1
    evaluations_without_improvement: int = 0
    stopped_early: bool = False


def param_checksum(params) -> str:
    """sha256 over the bytes of every parameter in path order: equal iff the parameters are."""
    digest = hashlib.sha256()
    for path, leaf in sorted(jax.tree_util.tree_flatten_with_path(params)[0], key=lambda x: jax.tree_util.keystr(x[0])):
        digest.update(jax.tree_util.keystr(path).encode())
        digest.update(np.ascontiguousarray(jax.device_get(leaf)).tobytes())
    return digest.hexdigest()


def baselines(train_ratings: np.ndarray, test_ratings: np.ndarray, rating_range, rating_step) -> dict:
    """Majority class and mean rating, fitted on train, scored on test."""
    lo = rating_range[0]
    classes = np.rint((train_ratings - lo) / rating_step).astype(int)
    majority = lo + np.bincount(classes).argmax() * rating_step
    mean = float(train_ratings.mean())
    num_classes = int(round((rating_range[1] - lo) / rating_step)) + 1
    test_classes = np.clip(np.rint((test_ratings - lo) / rating_step).astype(int), 0, num_classes - 1)
    out = {}
    for name, prediction, predicted_class_rating in (
            ("majority", majority, majority),
            ("mean_rating", mean, lo + round((mean - lo) / rating_step) * rating_step)):
        error = test_ratings - prediction
        predicted_class = int(round((predicted_class_rating - lo) / rating_step))
        confusion = np.zeros((num_classes, num_classes))
        np.add.at(confusion, (test_classes, predicted_class), 1)
        out[name] = {"accuracy": float(np.mean(test_classes == predicted_class)),
                     "rmse": float(np.sqrt(np.mean(error ** 2))), "mae": float(np.mean(np.abs(error))),
                     "macro_f1": step_lib.macro_f1(confusion), "prediction": float(prediction)}
    return out


class _Preemption:
    """Turns SIGTERM into a flag the loop checks after each step."""

    def __init__(self):
        self.requested = False

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


def _compilations(fn) -> int:
    try:
        return int(fn._cache_size())
    except Exception:  # private API; the count is informative only
        return -1


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains `config` in `workdir`, resuming from its checkpoints; returns the results dict."""
    workdir = os.path.abspath(os.path.expanduser(workdir))
    os.makedirs(workdir, exist_ok=True)
    is_main = jax.process_index() == 0
    results_path = os.path.join(workdir, "results.json")
    if os.path.exists(results_path):
        with open(results_path) as f:
            results = json.load(f)
        logging.info("%s holds a finished run; delete it to train again", results_path)
        print(f"{workdir} holds a finished run (results.json):")
        print(format_results(results))
        return results
    if is_main:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2, sort_keys=True))
    compilation.enable_persistent_cache(config.get("compilation_cache_dir", ""))
    compile_clock = compilation.CompileClock()

    # Data.
    started = time.perf_counter()
    splits = pipeline.load_splits(config.data)
    if is_main:
        splits.save_tables(workdir)
    train_cfg = config.train
    batch_size = train_cfg.batch_size
    mesh = Mesh(np.array(jax.devices()), ("data",))
    if batch_size % mesh.size:
        raise ValueError(f"train.batch_size={batch_size} must be a multiple of the {mesh.size} devices")
    train_batches, valid_batches, test_batches = make_batchers(config, splits, mesh)
    padding = train_batches.padding_report()
    if is_main:
        print(f"data: {len(splits.train)} train / {len(splits.validation)} validation / {len(splits.test)} test "
              f"reviews, vocabulary {len(splits.vocab)}, {len(splits.users) - 1} users, "
              f"{len(splits.products) - 1} products ({time.perf_counter() - started:.1f}s)")
        print(f"devices: {mesh.size} devices ({jax.devices()[0].platform}), {jax.process_count()} processes, "
              f"global batch {batch_size}")
        kind = "packed batches" if padding.get("layout") == "packed" else "buckets"
        sentences = (f" (sentence slots {padding['sentence_efficiency']:.1%})"
                     if "sentence_efficiency" in padding else "")
        print(f"{kind} {[list(b) for b in train_batches.buckets]}: padding efficiency "
              f"{padding['efficiency']:.1%}{sentences}, truncated tokens {padding['truncated_tokens']}")

    # Model, optimiser, state.
    train_arrays = splits.train.arrays
    statistics = models.training_statistics(  # where the biases start; MF's training pairs
        config.model, users=train_arrays.users, products=train_arrays.products, ratings=train_arrays.ratings,
        num_users=len(splits.users), num_products=len(splits.products), num_classes=splits.num_classes,
        rating_range=splits.rating_range)
    model = models.build_model(config.model, vocab_size=len(splits.vocab), num_users=len(splits.users),
                               num_products=len(splits.products), num_classes=splits.num_classes,
                               rating_range=splits.rating_range, pretrained_embeddings=splits.pretrained,
                               **statistics)
    steps_per_epoch = train_batches.steps_per_epoch
    total_steps = steps_per_epoch * train_cfg.epochs
    tx, schedule = optimizers.make_optimizer(config.optimizer, steps_per_epoch=steps_per_epoch,
                                             total_epochs=train_cfg.epochs, batch_size=batch_size)
    data_sharding = NamedSharding(mesh, P("data"))
    replicated = NamedSharding(mesh, P())

    def to_device(batch):
        return jax.tree.map(lambda x: jax.make_array_from_process_local_data(data_sharding, x), batch)

    key = jax.random.key(config.seed)
    init_key, run_key = jax.random.split(key)
    example = next(train_batches.epoch(0))
    state = jax.jit(lambda b, k: step_lib.init_state(model, tx, b, k), out_shardings=replicated)(
        to_device(example), init_key)
    if is_main:
        sizes = models.count_parameters(state.params)
        print(f"model {config.model.name}: {sizes['total']:,} parameters "
              f"({', '.join(f'{k} {v:,}' for k, v in sizes.items() if k != 'total')})")

    step_options = dict(l1=config.optimizer.l1, l2=config.optimizer.l2)
    train_step = jax.jit(step_lib.make_train_step(model, tx, config.model.head, norms=False, **step_options),
                         donate_argnums=0)
    # The same step with the global norms, for logged steps (see step_lib.make_train_step).
    logged_step = jax.jit(step_lib.make_train_step(model, tx, config.model.head, norms=True, **step_options),
                          donate_argnums=0)
    eval_step = jax.jit(step_lib.make_eval_step(model, config.model.head, splits.num_classes))

    def evaluate(params, model_state, batcher) -> dict:
        sums = None
        for batch in batching.prefetch(batcher.evaluation(), train_cfg.prefetch, to_device):
            out = eval_step(params, model_state, batch)
            sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
        return step_lib.finalize_metrics(jax.device_get(sums))

    # Resume.
    ckpt = checkpoints.RunCheckpoints(workdir, keep=train_cfg.keep_checkpoints)
    book = Bookkeeping()
    restored = ckpt.restore_latest(state)
    if restored is not None:
        state, meta = restored
        book = Bookkeeping(**meta["bookkeeping"])
        if is_main:
            print(f"resumed from step {int(state.step)} of {total_steps}")
    metric = train_cfg.early_stopping_metric
    if metric not in HIGHER_IS_BETTER:
        raise ValueError(f"train.early_stopping_metric={metric!r}: choose one of {sorted(HIGHER_IS_BETTER)}")
    higher = HIGHER_IS_BETTER[metric]

    writer = reporting.MetricWriter(workdir, tensorboard=train_cfg.tensorboard)
    progress = reporting.Progress(total_steps, every=train_cfg.log_every_steps)
    preemption = _Preemption()
    step = int(state.step)
    last_saved = step

    def meta() -> dict:
        return {"bookkeeping": dataclasses.asdict(book), "step": step}

    eval_seconds = 0.0

    def run_evaluation() -> bool:
        """Validates, updates early stopping and the best checkpoint; True when it says stop."""
        nonlocal last_saved, eval_seconds
        began = time.perf_counter()
        values = evaluate(state.params, state.model_state, valid_batches)
        value = values[metric]
        improved = book.best_value is None or (value > book.best_value if higher else value < book.best_value)
        if improved:
            book.best_value, book.best_step, book.evaluations_without_improvement = value, step, 0
            ckpt.save_best(step, state, meta())
        else:
            book.evaluations_without_improvement += 1
        stop = bool(train_cfg.patience) and book.evaluations_without_improvement >= train_cfg.patience
        book.stopped_early = stop
        writer.write("validation", step, {**values, "epoch": step / steps_per_epoch, "best": book.best_value})
        progress.newline()
        if is_main:
            print(f"epoch {step / steps_per_epoch:.2f} validation: " +
                  ", ".join(f"{k} {v:.4f}" for k, v in values.items() if k != "reviews") +
                  (" (best)" if improved else f" (best {book.best_value:.4f} at step {book.best_step})"))
        ckpt.save_latest(step, state, meta())
        last_saved = step
        spent = time.perf_counter() - began
        eval_seconds += spent
        progress.exclude(spent)
        compile_clock.take()  # compilation during evaluation is inside `spent` already
        return stop

    pending = None  # metrics of the step before: read one step late so dispatch never waits

    def check(pending_metrics, at_step):
        values = jax.device_get(pending_metrics)
        loss = float(values["loss"])
        if not math.isfinite(loss):
            grad_norm = f"{float(values['grad_norm']):.3g}" if "grad_norm" in values else "not computed at this step"
            raise NonFiniteLossError(
                f"step {at_step}: the loss is {loss} (grad norm {grad_norm}). Likely "
                f"cause: a learning rate too high ({float(schedule(at_step)):.3g}) or no gradient clipping "
                f"(optimizer.clip_norm). The last good checkpoint (step {last_saved}) in {workdir} is intact.")
        return values

    train_started = time.perf_counter()
    compile_clock.take()  # from here on, compilation during training steps is counted apart
    train_compile_seconds = 0.0
    trained_reviews = 0
    with preemption.installed():
        while step < total_steps and not book.stopped_early:
            epoch, start = divmod(step, steps_per_epoch)
            batches = batching.prefetch(train_batches.epoch(epoch, start), train_cfg.prefetch, to_device)
            for batch in batches:
                logged = step == 0 or (step + 1) % train_cfg.log_every_steps == 0
                state, metrics = (logged_step if logged else train_step)(state, batch, run_key)
                compiled = compile_clock.take()  # the first step of a shape compiles it
                train_compile_seconds += compiled
                progress.exclude(compiled)
                if pending is not None:
                    values = check(pending, step)
                    record = {"loss": values["loss"], "lr": float(schedule(step - 1))}
                    record.update({name: values[name] for name in step_lib.NORMS if name in values})
                    if "correct" in values:
                        record["accuracy"] = float(values["correct"]) / max(float(values["weight"]), 1e-9)
                    writer.write("train", step, record, scalars=step % train_cfg.log_every_steps == 0)
                    trained_reviews += int(values["weight"])
                    progress.update(step, int(values["weight"]), f"epoch {epoch + 1} loss {values['loss']:.4f}")
                pending = metrics
                step += 1
                at_epoch_end = step % steps_per_epoch == 0
                if (train_cfg.eval_every_steps and step % train_cfg.eval_every_steps == 0) or at_epoch_end:
                    check(pending, step)
                    if run_evaluation():
                        break
                elif train_cfg.checkpoint_every_steps and step % train_cfg.checkpoint_every_steps == 0:
                    check(pending, step)
                    ckpt.save_latest(step, state, meta())
                    last_saved = step
                if preemption.requested:
                    check(pending, step)
                    ckpt.save_latest(step, state, meta())
                    progress.newline()
                    print(f"SIGTERM: saved step {step} in {workdir}; run the same command to resume")
                    writer.close()
                    ckpt.close()
                    return {"preempted": True, "step": step}
                if step >= total_steps:
                    break
            if preemption.requested:
                break
        if pending is not None:
            trained_reviews += int(check(pending, step)["weight"])
        if step % steps_per_epoch and not book.stopped_early:  # ended mid-epoch (eval-every-N runs)
            run_evaluation()
    # Training time without evaluation and compilation: what docs/s is measured over.
    train_seconds = time.perf_counter() - train_started - eval_seconds - train_compile_seconds
    ckpt.save_latest(step, state, meta())

    # Final: the best parameters on test.
    best = ckpt.restore_best(state)
    best_state = best[0] if best is not None else state
    validation = evaluate(best_state.params, best_state.model_state, valid_batches)
    test = evaluate(best_state.params, best_state.model_state, test_batches)
    results = {
        "test": test, "validation": validation,
        "baselines": baselines(splits.train.arrays.ratings, splits.test.arrays.ratings,
                               splits.rating_range, splits.rating_step),
        "param_checksum": param_checksum(best_state.params),
        "model": config.model.name, "best_step": book.best_step, "steps": step,
        "stopped_early": book.stopped_early,
        "parameters": int(models.count_parameters(state.params)["total"]),
        "compilations": {"train_step": _compilations(train_step), "logged_train_step": _compilations(logged_step),
                         "eval_step": _compilations(eval_step)},
        "buckets": [list(b) for b in train_batches.buckets], "padding_efficiency": padding["efficiency"],
        "layout": padding.get("layout", "padded"),
        "train_seconds": round(train_seconds, 2), "eval_seconds": round(eval_seconds, 2),
        "compile": compile_clock.report(),
        "docs_per_s": round(trained_reviews / max(train_seconds, 1e-9), 1),
        "data": splits.report,
    }
    reference = _text_only_reference(config)
    if reference:
        results["reference"] = reference
    writer.write("test", step, {k: v for k, v in test.items()})
    writer.close()
    ckpt.close()
    if is_main:
        with open(results_path, "w") as f:
            json.dump(results, f, indent=2, sort_keys=True)
        print(format_results(results))
    return results


def make_batchers(config: ml_collections.ConfigDict, splits: pipeline.DataSplits, mesh: Mesh):
    """(train, validation, test) batchers of `data.layout`; evaluation reuses the training shapes,
    so it compiles one program per training shape and no more."""
    data = config.data
    layout = models.input_layout(config.model.name)
    common = dict(layout=layout, batch_size=config.train.batch_size, rating_range=splits.rating_range,
                  rating_step=splits.rating_step, process_index=jax.process_index(),
                  process_count=jax.process_count())
    caps = dict(max_sentences=data.max_sentences, max_words=data.max_words, max_tokens=data.max_tokens,
                multiple=data.bucket_multiple)
    if models.batch_layout(config.model.name, data.get("layout", "auto")) == "packed":
        train = packing.PackedBatcher(splits.train, seed=config.seed, row_multiple=jax.local_device_count(),
                                      **caps, **common)
        return (train, packing.PackedBatcher(splits.validation, shape=train.shape, **common),
                packing.PackedBatcher(splits.test, shape=train.shape, **common))
    train = batching.Batcher(splits.train, seed=config.seed, num_buckets=data.num_buckets, **caps, **common)
    return (train, batching.Batcher(splits.validation, buckets=train.buckets, **common),
            batching.Batcher(splits.test, buckets=train.buckets, **common))


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
    """The closing table: the model beside the baselines (and reference figures when known)."""
    rows = [(f"{results.get('model', 'model')} (test)", results["test"])]
    rows += [(f"baseline: {name}", values) for name, values in results["baselines"].items()]
    for name, values in (results.get("reference") or {}).items():
        if isinstance(values, dict):
            rows.append((f"reference: {name}", values))
    columns = ("accuracy", "macro_f1", "rmse", "mae")
    lines = [f"{'':40}" + "".join(f"{c:>10}" for c in columns)]
    for name, values in rows:
        cells = [f"{values[k]:.4f}" if isinstance(values.get(k), (int, float)) else "-" for k in columns]
        lines.append(f"{name:40}" + "".join(f"{c:>10}" for c in cells))
    lines.append(f"param_checksum {results['param_checksum'][:16]}…  compilations {results.get('compilations')}")
    if "compile" in results:
        lines.append(f"training {results['train_seconds']:.1f}s ({results['docs_per_s']:,.0f} docs/s), evaluation "
                     f"{results['eval_seconds']:.1f}s, compilation {results['compile']['seconds']:.1f}s "
                     f"({results['compile']['programs']} programs compiled, {results['compile']['cache_reads']} "
                     "read from the cache)")
    return "\n".join(lines)
