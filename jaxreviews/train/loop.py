"""Training and evaluating a run of K >= 1 members: `train_and_evaluate(config, workdir)`.

    results = train_and_evaluate(config, "runs/x")                    # a RunResults, as results.json
    results = train_and_evaluate(config, "runs/x", callbacks=[reporter], stop=threading.Event())

One loop for one model and for K members (`num_seeds`, snapshots, populations): a single model is
a population of one. Epochs of one jitted step over packed (or bucketed) batches sharded on the
device mesh; validation every epoch (or every N steps), where each member keeps its own best
parameters and stops on its own (`early_stopping.MemberStopping`); orbax checkpoints (latest N and
the members' bests) with exact resume; a stop requested through `stop` (SIGTERM in the command-line
tools) saves the step and returns None; metrics as JSON lines and TensorBoard scalars; at the end
the members' best parameters, and their ensemble, on validation and test beside the baselines
(`results.RunResults`, results.json).

Callers attach `Callback`s (the tuner reports trials and prunes members through them) instead of
subclassing. A run directory holds what `jaxreviews.load_run` needs (config.json, the tables,
model.json, checkpoints); whether a config may train in it is `workdir.RunDirectory.prepare`'s.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import logging
import math
import time

import jax
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxreviews import models, options
from jaxreviews.data import batching, prepared
from jaxreviews.train import (accounting, checkpoints, compilation, distributed, evaluation, experiment as
                              experiment_lib, members as members_lib, optimizers, population, reporting,
                              step as step_lib, text_baseline)
from jaxreviews.train.early_stopping import HIGHER_IS_BETTER, MemberStopping
from jaxreviews.train.preemption import Preemption
from jaxreviews.train.results import RunResults
from jaxreviews.train.workdir import RunDirectory

log = logging.getLogger(__name__)

__all__ = ["HIGHER_IS_BETTER", "Callback", "NonFiniteLossError", "Trainer", "final_results", "param_checksum",
           "prepare_config", "restore_or_create", "train_and_evaluate"]


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


class Callback:
    """What a caller hooks into a run. A hook may stop members (`trainer.stopping.stop(i)`: they
    keep their best, the run ends when every member has stopped) or raise to end the run."""

    def on_start(self, trainer: Trainer) -> None:
        """After the state is ready and the train step compiled (`trainer.costs`), before step 1."""

    def on_train_metrics(self, trainer: Trainer, values: dict, step: int) -> None:
        """The metrics of the steps up to `step` since the last record (every `log_every_steps`;
        summed over those `trainer.window_steps` steps, members on the leading axis), on the host,
        before they are checked."""

    def on_evaluation(self, trainer: Trainer, values: dict, step: int) -> None:
        """After a validation: {"members": [metrics], "ensemble": metrics}."""


@dataclasses.dataclass(frozen=True)
class Every:
    """A periodic action's schedule: due every `steps` steps; 0 = never."""

    steps: int

    def due(self, step: int) -> bool:
        return self.steps > 0 and step % self.steps == 0


@dataclasses.dataclass
class Totals:
    """What a run has spent and trained, over every session of it (kept in each checkpoint)."""

    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    compile_seconds: float = 0.0
    checkpoint_seconds: float = 0.0
    trained_reviews: int = 0
    trained_steps: int = 0
    evaluated_reviews: int = 0  # validation and test reviews, each evaluation's (what eval_seconds is spent on)


def restore_or_create(experiment: experiment_lib.Experiment, ckpt: checkpoints.RunCheckpoints):
    """(state, run keys [K], stopping, meta): the run's latest checkpoint, else fresh members from
    their seeds (meta None); the run keys come from the seeds either way."""
    state, run_keys = experiment.init_state()
    train = experiment.config.train
    patience = 0 if experiment.snapshot_steps else train.patience  # a snapshot ensemble runs every cycle
    stopping = MemberStopping.create(train.early_stopping_metric, patience, experiment.num_members)
    restored = ckpt.restore_latest(state)
    if restored is None:
        return state, run_keys, stopping, None
    state, meta = restored
    return state, run_keys, stopping.load_state_dict(meta["bookkeeping"]), meta


def compile_programs(experiment: experiment_lib.Experiment, clock: compilation.CompileClock | None = None) -> dict:
    """Compiles the run's init, train and eval programs (the first batch shapes) before any of them
    runs, side by side (`compilation.compile_ahead`): the train and eval steps are traced on the
    shapes and shardings the init program will give, so no program waits for another to run, and
    no validation waits for its program. Returns the train step's memory and FLOPs
    (`accounting.step_costs`). Programs shared by runs of one shape (`ProgramCache`) compile once."""
    programs = experiment.programs
    if programs.costs is not None:  # programs shared by runs of one shape cost the same
        return programs.costs
    mesh = experiment.mesh
    init_args = (members_lib.seeds_array(experiment.seeds, mesh), experiment.to_device(experiment.example_batch),
                 experiment.splits.pretrained)
    state, run_keys = jax.tree.map(
        lambda shape, sharding: jax.ShapeDtypeStruct(shape.shape, shape.dtype, sharding=sharding),
        programs.init.eval_shape(*init_args), (experiment.state_sharding, members_lib.member_sharding(mesh)))
    inputs = (experiment.train_to_device(next(iter(experiment.train_inputs(0)))),)
    if experiment.steps_per_transfer > 1:  # the index of the step's batch among the stacked ones
        inputs += (jax.ShapeDtypeStruct((), np.int32, sharding=NamedSharding(mesh, P())),)
    calls = [(programs.init, init_args), (programs.train, (state, *inputs, run_keys, experiment.zero_window()))]
    first = next(iter(experiment.valid_batches.evaluation()), None)
    if first is not None:
        calls.append((programs.eval, (state.params, state.model_state, experiment.to_device(first),
                                      experiment.zero_eval_sums(state.params))))
    _, (traced, compiled), *_ = compilation.compile_ahead(calls, clock)
    programs.costs = accounting.step_costs(traced, compiled, state)
    return programs.costs


class Trainer:
    """The loop's moving parts: the state, the steps, the members' early stopping and the periodic
    actions after each step (log, validate, checkpoint), with compile and evaluation time kept
    apart from training time. `run()` trains to the end, until every member stopped, or a stop."""

    def __init__(self, experiment: experiment_lib.Experiment, state: step_lib.TrainState, stopping: MemberStopping,
                 ckpt: checkpoints.RunCheckpoints, *, run_keys: jax.Array, meta: dict | None = None, callbacks=(),
                 preemption: Preemption | None = None, clock: compilation.CompileClock | None = None,
                 progress_stream=None):
        self.experiment, self.state, self.stopping, self.ckpt = experiment, state, stopping, ckpt
        self.callbacks = list(callbacks)
        self.preemption = preemption or Preemption()
        self.clock = clock
        train = experiment.config.train
        self.step = int(np.ravel(jax.device_get(state.step))[0])
        self.last_saved = self.step
        self.key = run_keys
        self.totals = Totals(**(meta or {}).get("totals", {}))
        self.writer = reporting.MetricWriter(experiment.workdir, tensorboard=train.tensorboard,
                                             resume_step=None if meta is None else self.step)
        self.progress = reporting.Progress(experiment.total_steps, every=train.log_every_steps, stream=progress_stream)
        self.log_every = Every(train.log_every_steps)
        self.validate_every = Every(train.eval_every_steps)
        self.checkpoint_every = Every(train.checkpoint_every_steps)
        # The metrics of the steps since the last record, summed on the device by the train program
        # (no host sync a step, no second program) and read every log_every_steps; a checkpoint
        # keeps them, so a resumed run's records are an uninterrupted run's.
        self._zero_window = experiment.zero_window()
        self.window, self.window_steps = self._zero_window, int((meta or {}).get("window_steps", 0))
        saved = (meta or {}).get("window")
        if saved is not None and self.window_steps:
            if set(saved) != set(self.window):
                raise ValueError(f"the checkpoint's metric window holds {sorted(saved)}, this run's train step gives "
                                 f"{sorted(self.window)}")
            self.window = {name: members_lib.global_array(np.asarray(saved[name], np.float32), zero.sharding)
                           for name, zero in self.window.items()}
        self.preempted = False
        self.costs: dict | None = None
        self._indices: list | None = None  # the step indices of a stacked group, on the device (step_inputs)
        self._started = None  # when this session's training began (run)
        self._excluded = 0.0  # seconds of it spent outside training steps
        self._saving = 0.0  # seconds of it spent saving checkpoints
        self.best = None  # (params, model_state) [K]: each member's best so far
        if stopping.best_checkpoint_step >= 0 and not experiment.snapshot_steps:
            best_state, _ = ckpt.restore_best(state, stopping.best_checkpoint_step)
            self.best = (best_state.params, best_state.model_state)

    @property
    def num_members(self) -> int:
        return self.experiment.num_members

    def measure_costs(self) -> dict:
        """Memory per device and counted FLOPs of the train step (`accounting.step_costs`), from the
        programs `compile_programs` compiled ahead of time."""
        self.costs = compile_programs(self.experiment, self.clock)
        return self.costs

    # -- periodic actions ---------------------------------------------------------------------------
    def training_seconds(self) -> float:
        """Seconds of training steps so far, over every session (evaluation, compilation and
        checkpoints left out)."""
        running = 0.0 if self._started is None else time.perf_counter() - self._started - self._excluded
        return self.totals.train_seconds + running

    def meta(self) -> dict:
        totals = {**dataclasses.asdict(self.totals), "train_seconds": self.training_seconds()}
        window = None if not self.window_steps else jax.tree.map(lambda x: np.asarray(x).tolist(),
                                                                   jax.device_get(self.window))
        return {"bookkeeping": self.stopping.state_dict(), "step": self.step, "members": self.num_members,
                "totals": totals, "window": window, "window_steps": self.window_steps}

    def _saved(self, save, *args) -> None:
        """A checkpoint save, its time left out of training and kept as checkpoint time (what it
        compiles, orbax's programs for sharded arrays, as compile time)."""
        began = time.perf_counter()
        save(*args)
        self._outside_training(time.perf_counter() - began, "checkpoint_seconds")

    def checkpoint(self) -> None:
        self._saved(self.ckpt.save_latest, self.step, self.state, self.meta())
        self.last_saved = self.step

    def validate(self) -> None:
        """Every member and their ensemble on validation; members that improved keep these
        parameters as their best (saved as the "best" checkpoint); then the latest checkpoint."""
        experiment = self.experiment
        began, saving_before = time.perf_counter(), self._saving
        values = experiment.evaluate(self.state.params, self.state.model_state, experiment.valid_batches)
        self.totals.evaluated_reviews += int(values["ensemble"]["reviews"])
        metric = self.stopping.metric
        member_values = [m[metric] for m in values["members"]]
        improved = self.stopping.update(member_values, self.step)
        if improved.any() and not experiment.snapshot_steps:
            current = (self.state.params, self.state.model_state)
            self.best = members_lib.keep_best(improved, current, self.best, experiment.programs.select)
            self.stopping.best_checkpoint_step = self.step
            best = self.state.replace(params=self.best[0], model_state=self.best[1])
            self._saved(self.ckpt.save_best, self.step, best, self.meta())
        epoch = self.step / experiment.steps_per_epoch
        record = {**values["ensemble"], "epoch": epoch, f"member_{metric}": member_values,
                  "improved": improved.tolist(), "stopped": self.stopping.stopped}
        if self.num_members > 1:
            mean, std = members_lib.mean_and_std(values["members"])
            record.update(members_mean=mean, members_std=std)
        else:
            record["best"] = self.stopping.members[0].best_value
        self.writer.write("validation", self.step, record)
        self.progress.newline()
        if experiment.is_main:
            shown = ", ".join(f"{k} {v:.4f}" for k, v in values["ensemble"].items() if k != "reviews")
            if self.num_members == 1:
                best = self.stopping.members[0]
                log.info("epoch %.2f validation: %s%s", epoch, shown, " (best)" if improved[0] else
                         f" (best {best.best_value:.4f} at step {best.best_step})")
            else:
                log.info("epoch %.2f validation: ensemble %s; members %s %.4f ± %.4f (%d improved, %d stopped)",
                         epoch, shown, metric, record["members_mean"][metric], record["members_std"][metric],
                         int(improved.sum()), sum(self.stopping.stopped))
        for callback in self.callbacks:  # before the checkpoint: the members they stop stay stopped
            callback.on_evaluation(self, values, self.step)
        self._outside_training(time.perf_counter() - began - (self._saving - saving_before), "eval_seconds")
        self.checkpoint()

    def _outside_training(self, seconds: float, total: str | None) -> None:
        """Leaves a window of `seconds` out of the training rate: the compilation it holds counts
        as compile time, the rest in `total` (eval_seconds, checkpoint_seconds). `total` None: the
        window is the compilation since the last account (a step's first call compiles it)."""
        compiled = self.clock.take() if self.clock is not None else 0.0
        self.totals.compile_seconds += compiled
        if total is None:
            seconds = compiled
        else:
            setattr(self.totals, total, getattr(self.totals, total) + max(0.0, seconds - compiled))
            if total == "checkpoint_seconds":
                self._saving += seconds
        self.progress.exclude(seconds)
        self._excluded += seconds

    def record(self) -> None:
        """The train record of the steps since the last one: the window's metrics read from the
        device, shown to the callbacks and checked, then their means written (the members' mean
        loss, and each member's when there are several)."""
        if not self.window_steps:
            return
        values, steps = self.check(self.window), self.window_steps
        self.window, self.window_steps = self._zero_window, 0
        step = self.step
        loss = np.asarray(values["loss"], np.float64) / steps  # [K]: each member's mean loss
        record = {"loss": float(loss.mean()), "steps": steps, "lr": optimizers.learning_rate_at(
            self.experiment.schedule, step - 1, self.experiment.config.optimizer.accumulation_steps)}
        if loss.size > 1:
            record["member_loss"] = [round(float(x), 6) for x in np.ravel(loss)]
        record.update({name: float(np.mean(values[name])) / steps for name in step_lib.NORMS if name in values})
        weight = np.maximum(np.asarray(values["weight"], np.float64), 1e-9)
        if "correct" in values:
            record["accuracy"] = float(np.mean(np.asarray(values["correct"], np.float64) / weight))
        self.writer.write("train", step, record)
        reviews = int(np.ravel(values["weight"])[0])  # every member sees as many reviews
        self.totals.trained_reviews += reviews
        self.totals.trained_steps += steps
        epoch = (step - 1) // self.experiment.steps_per_epoch
        self.progress.update(step, reviews, f"epoch {epoch + 1} loss {record['loss']:.4f}")

    def check(self, metrics) -> dict:
        """A window's summed metrics on the host, shown to the callbacks; a non-finite loss of a
        member no callback stopped ends the run with what to do."""
        values = jax.device_get(metrics)
        first, last = self.step - self.window_steps + 1, self.step
        for callback in self.callbacks:
            callback.on_train_metrics(self, values, last)
        losses = np.ravel(np.asarray(values["loss"], np.float64))
        bad = [m for m in np.flatnonzero(~np.isfinite(losses)) if not self.stopping.members[m].stopped_early]
        if bad:
            m = int(bad[0])
            member = f" of member {m}" if self.num_members > 1 else ""
            steps = f"step {last}" if first == last else f"steps {first}-{last}"
            grad_norm = float(np.ravel(values["grad_norm"])[m]) if "grad_norm" in values else float("nan")
            lr = optimizers.learning_rate_at(self.experiment.schedule, last - 1,
                                             self.experiment.config.optimizer.accumulation_steps)
            if "learning_rate" in self.experiment.hyperparameters:
                lr *= float(self.experiment.hyperparameters["learning_rate"][m]) / \
                    self.experiment.config.optimizer.learning_rate
            raise NonFiniteLossError(
                f"{steps}: the loss{member} is {losses[m]} (grad norm {grad_norm:.3g}). Likely cause: a learning "
                f"rate too high ({lr:.3g}) or no gradient clipping (optimizer.clip_norm). The last good checkpoint "
                f"(step {self.last_saved}) in {self.experiment.workdir} is intact.")
        return values

    # -- the steps ----------------------------------------------------------------------------------
    def step_inputs(self, inputs, index: int) -> tuple:
        """The train program's inputs between the state and the key: the batch, or the stacked
        batches and the index of this step's (`train.steps_per_transfer`)."""
        if self.experiment.steps_per_transfer == 1:
            return (inputs,)
        if self._indices is None:  # on the device once, replicated: no transfer a step
            replicated = NamedSharding(self.experiment.mesh, P())
            self._indices = [jax.device_put(np.int32(i), replicated)
                             for i in range(self.experiment.steps_per_transfer)]
        return inputs, self._indices[index]

    def train_step(self, *inputs) -> None:
        programs = self.experiment.programs
        before = self.window
        self.state, self.window = programs.train(self.state, *inputs, self.key, before)
        self._outside_training(0.0, None)  # the first step of a shape compiles it
        # At most one step ahead of the device: the step before (whose window this one took) must
        # have finished. Unbounded dispatch gains nothing, and on CPU devices that share a thread
        # pool it lets the collectives of many programs in flight wedge each other (8 fake devices:
        # an all-gather waited forever for 2 of its 8 participants).
        jax.block_until_ready(before)
        self.window_steps += 1
        self.step += 1
        if self.log_every.due(self.step):
            self.record()

    def after_step(self) -> bool:
        """The periodic actions after a step; True when the epoch's loop should stop."""
        experiment = self.experiment
        if self.step in experiment.snapshot_steps:
            self.ckpt.save_snapshot(self.step, self.state, {"step": self.step})
        if self.validate_every.due(self.step) or self.step % experiment.steps_per_epoch == 0:
            self.validate()
            if self.stopping.stopped_early:
                return True
        elif self.checkpoint_every.due(self.step):
            self.checkpoint()
        return self.step >= experiment.total_steps

    def run_epoch(self, epoch: int, start: int) -> None:
        experiment = self.experiment
        per = experiment.steps_per_transfer
        with batching.prefetching(experiment.train_inputs(epoch, start), experiment.config.train.prefetch,
                                  experiment.train_to_device) as on_device:
            for inputs in on_device:
                # A group of `per` batches (the epoch's last may hold fewer real ones).
                left = experiment.steps_per_epoch - self.step % experiment.steps_per_epoch
                for index in range(min(per, left)):
                    self.train_step(*self.step_inputs(inputs, index))
                    if self.after_step():
                        return
                    if self.preemption.agreed(self.step):
                        self.preempted = True
                        return

    def run(self) -> None:
        """Trains until the last step, until every member stopped, or a stop (saved, then returns)."""
        experiment = self.experiment
        if self.clock is not None:  # before the loop (init, the AOT train step): compile time, not training's
            self.totals.compile_seconds += self.clock.take()
        self._started, self._excluded = time.perf_counter(), 0.0
        while self.step < experiment.total_steps and not self.stopping.stopped_early and not self.preempted:
            self.run_epoch(*divmod(self.step, experiment.steps_per_epoch))
        if not self.preempted:
            self.record()  # the last steps' record (a stopped run keeps its window in the checkpoint)
        if not self.preempted and self.step % experiment.steps_per_epoch and not self.stopping.stopped_early:
            self.validate()  # ended mid-epoch (eval-every-N runs)
        # Training time without evaluation, compilation and checkpoints: what docs/s is measured over.
        self.totals.train_seconds, self._started = self.training_seconds(), None
        self.checkpoint()
        if self.preempted:
            self._saved(self.ckpt.wait)  # written before the process is told it may exit
            self.progress.newline()
            process = f"process {jax.process_index()}: " if jax.process_count() > 1 else ""
            log.warning("%sstopped: saved step %d in %s; run the same command to resume", process, self.step,
                        experiment.workdir)

    def close(self) -> None:
        self.writer.close()
        self.ckpt.close()


# -- results ----------------------------------------------------------------------------------------

def final_results(experiment: experiment_lib.Experiment, trainer: Trainer,
                  clock: compilation.CompileClock | None = None) -> RunResults:
    """The members' bests (or a snapshot ensemble's snapshots) and their ensemble on validation
    and test, and the run's figures. The "best" checkpoint then holds exactly the evaluated
    members (what `load_run` reads)."""
    splits, config = experiment.splits, experiment.config
    stopping = trainer.stopping
    num_members = experiment.num_members
    if experiment.snapshot_steps:
        trees = [trainer.ckpt.restore_snapshot(trainer.state, step)[0] for step in experiment.snapshot_steps]
        params = members_lib.stack([t.params for t in trees])  # [M * K]: snapshot-major
        model_state = members_lib.stack([t.model_state for t in trees])
        evaluated_step = trainer.step
        trainer.ckpt.save_best(evaluated_step, trainer.state.replace(params=params, model_state=model_state),
                               {**trainer.meta(), "members": len(trees) * num_members})
        seeds = [seed for _ in trees for seed in experiment.seeds]
        best_steps = [step for step in experiment.snapshot_steps for _ in experiment.seeds]
    else:
        params, model_state = trainer.best if trainer.best is not None else (trainer.state.params,
                                                                              trainer.state.model_state)
        evaluated_step = stopping.best_checkpoint_step
        seeds, best_steps = experiment.seeds, stopping.best_steps
    began = time.perf_counter()
    validation = experiment.evaluate(params, model_state, experiment.valid_batches)
    test = experiment.evaluate(params, model_state, experiment.test_batches)
    trainer._outside_training(time.perf_counter() - began, "eval_seconds")
    trainer._saved(trainer.ckpt.wait)  # the last saves, written while the above evaluated
    trainer.totals.evaluated_reviews += int(validation["ensemble"]["reviews"]) + int(test["ensemble"]["reviews"])
    members_mean, members_std = members_lib.mean_and_std(test["members"])
    totals = trainer.totals
    docs_per_s = totals.trained_reviews / max(totals.train_seconds, 1e-9)
    padding = experiment.train_batches.padding_report()
    results = RunResults(
        model=config.model.name, test=test["ensemble"], validation=validation["ensemble"],
        members=test["members"], members_validation=validation["members"], members_mean=members_mean,
        members_std=members_std, member_seeds=list(seeds), member_best_steps=list(best_steps),
        member_hyperparameters=population.describe(experiment.hyperparameters),
        snapshot_steps=list(experiment.snapshot_steps),
        baselines=run_baselines(splits),
        reference=_text_only_reference(config), param_checksum=param_checksum(params), best_step=evaluated_step,
        steps=trainer.step, stopped_early=stopping.stopped_early,
        parameters=int(models.count_parameters(trainer.state.params)["total"]) // num_members,
        compilations={name: clock.compilations(name) if clock is not None else -1
                      for name in ("train_step", "eval_step")},
        buckets=[list(b) for b in experiment.train_batches.buckets], padding_efficiency=padding["efficiency"],
        layout=padding.get("layout", "padded"), train_seconds=round(totals.train_seconds, 2),
        eval_seconds=round(totals.eval_seconds, 2), checkpoint_seconds=round(totals.checkpoint_seconds, 2),
        compile={**(clock.report() if clock is not None else {"programs": -1, "cache_reads": -1}),
                 "seconds": round(totals.compile_seconds, 2)},
        docs_per_s=round(docs_per_s, 1), model_docs_per_s=round(docs_per_s * num_members, 1), data=splits.report)
    if trainer.costs is not None:  # FLOPs and memory of the K-member step, reviews counted once per batch
        results.accounting = {**trainer.costs, **accounting.throughput(
            flops_per_step=trainer.costs["flops_per_step"], steps=totals.trained_steps,
            seconds=totals.train_seconds, reviews=totals.trained_reviews,
            tokens=totals.trained_reviews * tokens_per_review(experiment.train_batches),
            devices=experiment.mesh.size, device=experiment.mesh.devices.flat[0], dtype=config.model.dtype),
            "eval_docs_per_s": round(totals.evaluated_reviews / max(totals.eval_seconds, 1e-9), 1)}
    return results


# A streamed corpus up to this many reviews is read into memory for the TF-IDF baseline.
STREAMED_BASELINE_LIMIT = 250000


def run_baselines(splits) -> dict:
    """Majority class and mean rating, and on real text TF-IDF + logistic regression
    (`text_baseline`; the synthetic corpus has its reference models instead), each fitted on the
    training split and scored on the test split."""
    found = evaluation.baselines(splits.train.arrays.ratings, splits.test.arrays.ratings, splits.rating_range,
                                 splits.rating_step)
    if splits.report.get("source") == "synthetic" or splits.report.get("prepared_from") == "synthetic":
        return {**found, "text_logreg": {"skipped": "synthetic corpus: see its reference models"}}
    if prepared.is_streamed(splits.train):
        total = len(splits.train) + len(splits.validation) + len(splits.test)
        if total > STREAMED_BASELINE_LIMIT:
            return {**found, "text_logreg": {"skipped": f"streamed corpus of {total:,} reviews: the TF-IDF baseline "
                                                        f"is fitted in memory, up to {STREAMED_BASELINE_LIMIT:,}"}}
        splits = dataclasses.replace(splits, train=splits.train.materialize(),
                                     validation=splits.validation.materialize(), test=splits.test.materialize())
    began = time.perf_counter()
    found.update(text_baseline.baselines(splits))
    if jax.process_index() == 0 and "accuracy" in found["text_logreg"]:
        log.info("baseline text_logreg (TF-IDF 1-2-grams + logistic regression, C %g on validation): test "
                 "accuracy %.4f, RMSE %.4f (%.1fs)", found["text_logreg"]["C"], found["text_logreg"]["accuracy"],
                 found["text_logreg"]["rmse"], time.perf_counter() - began)
    return found


def tokens_per_review(batcher) -> float:
    """Real (kept) tokens per training review: what an epoch's batches hold, per review."""
    padding = batcher.padding_report()
    return (padding["tokens"] - padding["truncated_tokens"]) / max(1, len(batcher.data))


def _text_only_reference(config) -> dict | None:
    """What simple models reach on the default synthetic corpus (`synthetic.EXPECTED`, measured by
    tools/synthetic_baselines.py): text-only, user/product-only, both, and the oracle."""
    if config.data.name != "synthetic" or config.data.synthetic_size != "default" or config.data.synthetic_seed:
        return None
    from jaxreviews.data import synthetic
    names = {"user_product": "logreg user+product", "text_bigrams": "logreg text (words+bigrams)",
             "text_user_product": "logreg text+user+product", "oracle_all": "oracle (latent truth)"}
    return {label: synthetic.EXPECTED[key] for key, label in names.items()}


# -- the run ----------------------------------------------------------------------------------------

def prepare_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A validated copy of `config` with what its population needs set (the run saves this one)."""
    options.validate(config)
    config = copy.deepcopy(config)
    population.resolve(config)
    return config


def _log_model(experiment, state) -> None:
    sizes = models.count_parameters(state.params)
    per = experiment.num_members
    log.info("model %s: %s parameters (%s)%s", experiment.config.model.name, f"{sizes['total'] // per:,}",
             ", ".join(f"{k} {v // per:,}" for k, v in sizes.items() if k != "total"),
             f", {per} members" if per > 1 else "")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, callbacks=(), stop=None,
                       programs: experiment_lib.ProgramCache | None = None,
                       progress_stream=None) -> RunResults | None:
    """Trains `config` in `workdir`, resuming what the directory holds (`RunDirectory.prepare`);
    returns the results (also results.json), or None when `stop` was set (the step is saved: the
    same call resumes). `callbacks`: `Callback`s; `programs`: a cache of compiled programs shared
    by runs of one shape; `progress_stream`: a terminal to redraw the progress line on."""
    config = prepare_config(config)
    run_dir = RunDirectory(workdir)
    with run_dir.locked(), contextlib.ExitStack() as context:
        finished = run_dir.prepare(config, has_checkpoints=checkpoints.has_checkpoints(run_dir.path))
        if finished is not None:
            log.info("%s holds a finished run of this config (results.json)", run_dir.path)
            return finished
        clock = context.enter_context(compilation.CompileClock())
        experiment = experiment_lib.build(config, run_dir.path, cache=programs)
        # Orbax's manager starts a clean-up thread: made once the data is read, so that a data error
        # ends the process without it.
        ckpt = context.enter_context(contextlib.closing(checkpoints.RunCheckpoints(
            run_dir.path, keep=config.train.keep_checkpoints, background=experiment.background_checkpoints)))
        # The steps are traced with the mesh in effect: a kernel that walks its batch in chunks
        # keeps every device on its own rows (models.layers.batch_shards).
        context.enter_context(jax.set_mesh(experiment.mesh))
        compile_programs(experiment, clock)
        state, run_keys, stopping, meta = restore_or_create(experiment, ckpt)
        preemption = Preemption(stop, experiment.mesh, every=config.train.preemption_check_every_steps)
        trainer = Trainer(experiment, state, stopping, ckpt, run_keys=run_keys, meta=meta, callbacks=callbacks,
                          preemption=preemption,
                          clock=clock, progress_stream=progress_stream)
        context.callback(trainer.writer.close)
        if experiment.is_main:
            _log_model(experiment, trainer.state)
            if meta is not None:
                log.info("resumed from step %d of %d", trainer.step, experiment.total_steps)
        costs = trainer.measure_costs()
        if experiment.is_main:
            log.info("train step: %s GFLOP (counted matmuls, all devices); per device: %s",
                     f"{costs['flops_per_step'] / 1e9:,.3f}", accounting.describe_memory(costs))
        for callback in callbacks:
            callback.on_start(trainer)
        trainer.run()
        if trainer.preempted:
            return None
        results = final_results(experiment, trainer, clock)
        trainer.writer.write("test", trainer.step, {k: v for k, v in results.test.items() if not isinstance(v, list)})
        run_dir.save_results(results)
    return results
