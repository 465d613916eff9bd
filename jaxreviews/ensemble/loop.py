"""Training an ensemble: the fit loop's parts (`train.loop`) with a member axis.

    python -m experiments.train --config.num_seeds=5                      # 5 seeds, one program
    python -m experiments.train --config.num_seeds=8 --config.population.learning_rate="(1e-4, 1e-2)"
    python -m experiments.train --config.train.snapshots=5                # a snapshot ensemble

One compiled step trains every member (`members.make_train_steps`); validation evaluates each
member and the ensemble in one pass; each member keeps its own best parameters by the validation
metric (`stopping.MemberStopping`), and the "best" checkpoint holds every member's best (the tree
`load_run` reads). A snapshot ensemble (`train.snapshots=M`) trains M cosine cycles
(`optimizers.cyclic_cosine_schedule`), keeps each cycle's end in the "snapshots" checkpoints and is
evaluated as the ensemble of its M (x K members) snapshots; early stopping is off for it.

results.json, beside the keys of a single run: "ensemble" (the ensemble's test metrics; "test" is
the same), "members" (each member's test metrics), "members_mean" and "members_std",
"members_validation", "member_seeds", "member_best_steps", "member_hyperparameters" (a
population's), "snapshot_steps" and "model_docs_per_s" (members x docs/s). Kill and resume is
exact, as for one model: the members, their bookkeeping and their bests are all in checkpoints.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxreviews import models
from jaxreviews.data import batching
from jaxreviews.ensemble import members as members_lib, population
from jaxreviews.ensemble.stopping import MemberStopping
from jaxreviews.train import checkpoints, evaluation, loop, optimizers, step as step_lib


def is_ensemble(config: ml_collections.ConfigDict) -> bool:
    """Whether `config` trains several members (seeds, snapshots or a population)."""
    return (int(config.get("num_seeds", 1)) > 1 or int(config.train.get("snapshots", 0)) > 1
            or bool(population.values(config)))


def snapshot_steps(config: ml_collections.ConfigDict, steps_per_epoch: int) -> list[int]:
    """The (micro-)steps that end each cosine cycle of `train.snapshots`."""
    cycles = int(config.train.get("snapshots", 0))
    if cycles <= 1:
        return []
    accumulation = max(1, config.optimizer.accumulation_steps)
    total = max(1, steps_per_epoch // accumulation) * config.train.epochs
    return [boundary * accumulation for boundary in optimizers.cycle_boundaries(total, cycles)[1:]]


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


@dataclasses.dataclass
class EnsembleExperiment(loop.Experiment):
    seeds: list[int] = dataclasses.field(default_factory=list)
    hyperparameters: dict = dataclasses.field(default_factory=dict)  # population values [K] by name
    own_batches: bool = False
    snapshot_steps: list[int] = dataclasses.field(default_factory=list)

    @property
    def num_members(self) -> int:
        return len(self.seeds)

    def train_to_device(self, batch: dict) -> dict:
        """[K, B_local, ...] (each member's own batch) -> [K, B, ...] on ("members", "data")."""
        if not self.own_batches:
            return self.to_device(batch)
        batching.check_ids(batch, vocab_size=len(self.splits.vocab), num_users=len(self.splits.users),
                           num_products=len(self.splits.products))
        sharding = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec("members", "data"))
        return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)

    def init_program(self) -> Callable:
        """(keys [K], example batch, pretrained table) -> every member's fresh state, stacked on the
        members axis (`members.init_members`)."""
        model, tx = self.model, self.tx
        return members_lib.init_members(lambda key, batch, table: step_lib.init_state(
            model, tx, batch, key, pretrained_embeddings=table), self.mesh, (0, None, None))

    def init_example(self) -> dict:
        first = next(iter(self.train_batches.epoch(0)))
        if self.own_batches:  # [K, B, ...]: every member's model has the same shapes; trace with one
            first = {key: value[0] for key, value in first.items()}
        return self.to_device(first)

    def init_state(self, keys: jax.Array) -> step_lib.TrainState:
        """Every member's fresh state (from its init key), with the population's hyperparameters written in."""
        keys = jax.device_put(keys, members_lib.member_sharding(self.mesh))
        state = self.init_program()(keys, self.init_example(), self.splits.pretrained)
        return population.apply(state, self.hyperparameters)

    def evaluate(self, params, model_state, batcher) -> dict:
        """{"members": [metrics of each member], "ensemble": metrics} over `batcher`."""
        return evaluation.evaluate(self.eval_step, params, model_state, batcher.evaluation(),
                                   to_device=self.to_device, prefetch=self.config.train.prefetch,
                                   finalize=members_lib.finalize)


def setup(config: ml_collections.ConfigDict, workdir: str) -> EnsembleExperiment:
    """`loop.setup` with the members mesh, vmapped steps, the population's optimiser and the
    snapshot schedule; with `member_data_order`, a training order per member."""
    seeds = members_lib.member_seeds(config)
    hyperparameters = population.values(config)
    own_batches = bool(config.get("member_data_order", False))
    mesh = members_lib.make_mesh(len(seeds), config.train.batch_size, int(config.get("mesh", {}).get("members", 0)))
    execution = members_lib.member_execution(config.get("member_execution", "auto"), len(seeds), mesh)

    def make_steps(model, tx, config, num_classes):
        train_step, logged_step = members_lib.make_train_steps(model, tx, config, num_classes, mesh=mesh,
                                                               own_batches=own_batches, execution=execution)
        return train_step, logged_step, None  # the eval step needs the rating range: below

    experiment = loop.setup(config, workdir, mesh=mesh, make_steps=make_steps, optimizer_options=dict(
        cycles=int(config.train.get("snapshots", 0)), injected=population.injected_hyperparameters(config)))
    fields = {f.name: getattr(experiment, f.name) for f in dataclasses.fields(loop.Experiment)}
    fields["eval_step"] = members_lib.make_eval_step(experiment.model, config.model.head,
                                                     experiment.splits.num_classes, experiment.splits.rating_range,
                                                     execution)
    if own_batches:
        first = fields["train_batches"]
        order = loop.shuffle_seed(config)
        fields["train_batches"] = MemberBatches(
            [first] + [loop.train_batcher(config, experiment.splits, order + i, like=first)
                       for i in range(1, len(seeds))])
    ensemble = EnsembleExperiment(**fields, seeds=seeds, hyperparameters=hyperparameters, own_batches=own_batches,
                                  snapshot_steps=snapshot_steps(config, experiment.steps_per_epoch))
    if ensemble.is_main:
        described = population.describe(hyperparameters)
        print(f"ensemble: {len(seeds)} members (seeds {seeds[0]}..{seeds[-1]}), mesh {dict(mesh.shape)}, {execution}, "
              f"{'own' if own_batches else 'shared'} training order"
              + (f", snapshots at steps {ensemble.snapshot_steps}" if ensemble.snapshot_steps else "")
              + (f", population {described}" if described else ""))
    return ensemble


def restore_or_create(experiment: EnsembleExperiment, ckpt: checkpoints.RunCheckpoints):
    """(states, per-member early stopping, resumed): the latest checkpoint, else fresh members."""
    init_keys, _ = members_lib.member_keys(experiment.seeds)
    state = experiment.init_state(init_keys)
    train = experiment.config.train
    patience = 0 if experiment.snapshot_steps else train.patience  # a snapshot ensemble runs every cycle
    stopping = MemberStopping.create(train.early_stopping_metric, patience, experiment.num_members)
    restored = ckpt.restore_latest(state)
    if restored is None:
        return state, stopping, False
    state, meta = restored
    return state, stopping.load_state_dict(meta["bookkeeping"]), True


class EnsembleFit(loop.Fit):
    """`loop.Fit` with per-member validation, bests and snapshots."""

    def __init__(self, experiment: EnsembleExperiment, state, stopping: MemberStopping,
                 ckpt: checkpoints.RunCheckpoints, *, resumed: bool = False):
        super().__init__(experiment, state, stopping, ckpt, resumed=resumed)
        self.best = None  # (params, model_state) [K]: each member's best so far
        self._select = jax.jit(members_lib.select_members,
                               out_shardings=members_lib.member_sharding(experiment.mesh))
        if stopping.best_checkpoint_step >= 0 and not experiment.snapshot_steps:
            best_state, _ = ckpt.restore_best(state, stopping.best_checkpoint_step)
            self.best = (best_state.params, best_state.model_state)

    def meta(self) -> dict:
        return {**super().meta(), "members": self.experiment.num_members}

    def make_key(self) -> jax.Array:
        _, run_keys = members_lib.member_keys(self.experiment.seeds)
        return jax.device_put(run_keys, members_lib.member_sharding(self.experiment.mesh))

    def after_step(self) -> bool:
        if self.step in self.experiment.snapshot_steps:
            self.flush()
            self.ckpt.save_snapshot(self.step, self.state, {"step": self.step})
        return super().after_step()

    def validate(self) -> None:
        """Every member and the ensemble on validation; members that improved keep these
        parameters as their best (saved as the "best" checkpoint); then the latest checkpoint."""
        experiment = self.experiment
        began = time.perf_counter()
        values = experiment.evaluate(self.state.params, self.state.model_state, experiment.valid_batches)
        metric = self.stopping.metric
        member_values = [m[metric] for m in values["members"]]
        improved = self.stopping.update(member_values, self.step)
        if improved.any() and not experiment.snapshot_steps:
            current = (self.state.params, self.state.model_state)
            self.best = self._select(jnp.asarray(improved), current, current if self.best is None else self.best)
            self.stopping.best_checkpoint_step = self.step
            self.ckpt.save_best(self.step, self.state.replace(params=self.best[0], model_state=self.best[1]),
                                self.meta())
        epoch = self.step / experiment.steps_per_epoch
        mean, std = members_lib.mean_and_std(values["members"])
        self.writer.write("validation", self.step, {
            **values["ensemble"], "epoch": epoch, "members_mean": mean, "members_std": std,
            f"member_{metric}": member_values, "improved": improved.tolist(), "stopped": self.stopping.stopped})
        self.progress.newline()
        if experiment.is_main:
            print(f"epoch {epoch:.2f} validation: ensemble " +
                  ", ".join(f"{k} {v:.4f}" for k, v in values["ensemble"].items() if k != "reviews") +
                  f"; members {metric} {mean[metric]:.4f} ± {std[metric]:.4f} "
                  f"({int(improved.sum())} improved, {sum(self.stopping.stopped)} stopped)")
        self.checkpoint()
        spent = time.perf_counter() - began
        self.eval_seconds += spent
        self.progress.exclude(spent)
        experiment.compile_clock.take()


def final_results(experiment: EnsembleExperiment, fit: EnsembleFit) -> dict:
    """The ensemble (of every member's best, or of the snapshots) and each member on validation
    and test; the "best" checkpoint then holds exactly the evaluated members (`load_run`)."""
    if experiment.snapshot_steps:
        trees = [fit.ckpt.restore_snapshot(fit.state, step)[0] for step in experiment.snapshot_steps]
        params = members_lib.stack([t.params for t in trees])  # [M * K]: snapshot-major
        model_state = members_lib.stack([t.model_state for t in trees])
        evaluated_step = fit.step
        fit.ckpt.save_best(evaluated_step, fit.state.replace(params=params, model_state=model_state),
                           {**fit.meta(), "members": len(trees) * experiment.num_members})
    else:
        params, model_state = fit.best if fit.best is not None else (fit.state.params, fit.state.model_state)
        evaluated_step = fit.stopping.best_checkpoint_step
    validation = experiment.evaluate(params, model_state, experiment.valid_batches)
    test = experiment.evaluate(params, model_state, experiment.test_batches)
    members_mean, members_std = members_lib.mean_and_std(test["members"])
    splits = experiment.splits
    padding = experiment.train_batches.padding_report()
    docs_per_s = fit.trained_reviews / max(fit.train_seconds, 1e-9)
    results = {
        "test": test["ensemble"], "validation": validation["ensemble"], "ensemble": test["ensemble"],
        "members": test["members"], "members_mean": members_mean, "members_std": members_std,
        "members_validation": validation["members"],
        "num_seeds": experiment.num_members, "member_seeds": experiment.seeds,
        "member_best_steps": fit.stopping.best_steps,
        "member_hyperparameters": population.describe(experiment.hyperparameters),
        "snapshot_steps": experiment.snapshot_steps,
        "baselines": evaluation.baselines(splits.train.arrays.ratings, splits.test.arrays.ratings,
                                          splits.rating_range, splits.rating_step),
        "param_checksum": loop.param_checksum(params),
        "model": experiment.config.model.name, "best_step": evaluated_step, "steps": fit.step,
        "stopped_early": fit.stopping.stopped_early,
        "parameters": int(models.count_parameters(fit.state.params)["total"]) // experiment.num_members,
        "compilations": {"train_step": loop._compilations(experiment.train_step),
                         "logged_train_step": loop._compilations(experiment.logged_step),
                         "eval_step": loop._compilations(experiment.eval_step)},
        "buckets": [list(b) for b in experiment.train_batches.buckets], "padding_efficiency": padding["efficiency"],
        "layout": padding.get("layout", "padded"),
        "train_seconds": round(fit.train_seconds, 2), "eval_seconds": round(fit.eval_seconds, 2),
        "compile": experiment.compile_clock.report(),
        "docs_per_s": round(docs_per_s, 1), "model_docs_per_s": round(docs_per_s * experiment.num_members, 1),
        "data": splits.report,
    }
    if fit.costs is not None:  # FLOPs and memory of the K-member step, reviews counted once per batch
        results["accounting"] = loop.accounting_results(experiment, fit)
    return results


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains the ensemble of `config` in `workdir` (resuming), or one model when `config` asks
    for one member only; returns the results dict."""
    if not is_ensemble(config):
        return loop.train_and_evaluate(config, workdir)
    population.resolve(config)
    return loop.train_and_evaluate(config, workdir, setup_fn=setup, restore_fn=restore_or_create,
                                   fit_class=EnsembleFit, results_fn=final_results)
