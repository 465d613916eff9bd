"""Running trials: the training loop (`train.loop`) with a trial's callback (`TrialReporter`).

A group of trials that differ only in continuous hyperparameters a population can hold
(`POPULATION_KEYS`: learning rate, weight decay, head and embedding dropout) trains as ONE program:
a run whose member k*S + s is trial k's seed s (`search.seeds_per_trial=S`), each member with its
trial's values (`train.population`). Every trial of a study whose space has such parameters runs
this way, a lone trial too (a population of one), so that

- every trial of the same shapes runs the same compiled program (the values are arrays in the
  state, not constants in the program): a sweep keeps its programs across trials
  (`train.ProgramCache`) and a trial after the first compiles nothing;
- a batched trial equals the trial run alone (members are independent; a test checks the
  parameters).

Member seeds: trial k's members have seeds seed..seed+S-1, whatever k, so trials compare on the
same initialisations and data order. The memory check refuses a program whose compiled train step
needs more than the budget (XLA's memory analysis, measured once per program); a batch that does
not fit runs its trials one by one. At every evaluation the callback reports each trial's metric
(the mean over its members) to its Optuna trial (step 1, 2, ...; with folds, fold f's evaluations
follow fold f-1's); a pruned trial's members stop (the others train on), and a member whose loss is
not finite fails its trial with the step and the likely cause. When every trial of a group is
pruned or failed, the run ends without final results.

Run directories: a lone trial's run is `DIR/trials/NNNN` itself; a batch trains in
`DIR/batches/<numbers>` and then writes each trial's run directory (its config as if run alone,
the tables, its members' best parameters as the "best" checkpoint, its results and validation
records), so `load_run("DIR/trials/NNNN")` opens any trial. With `search.folds=K`, each fold is a
run directory `fold-F` inside those. Every trial directory also gets `trial.json` (parameters,
state, score, reasons).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import time
import traceback

import jax
import ml_collections
import numpy as np
import optuna

from jaxreviews.train import checkpoints, loop, members as members_lib, population
from jaxreviews.train.experiment import ProgramCache
from jaxreviews.train.results import RunResults
from jaxreviews.tune import space as space_lib

# config key -> population name: the hyperparameters a batch of trials varies inside one program
POPULATION_KEYS = {"optimizer.learning_rate": "learning_rate", "optimizer.weight_decay": "weight_decay",
                   "model.head_dropout": "head_dropout", "model.embedding_dropout": "embedding_dropout"}

_log = logging.getLogger(__name__)


class MemoryBudgetError(RuntimeError):
    pass


class GroupStopped(Exception):
    """Every trial of a group was pruned or failed: the run stops without final results."""


class Interrupted(Exception):
    """The sweep was asked to stop (SIGTERM): the running trials are to be run again."""


def batchable(parameter: space_lib.Parameter) -> bool:
    return all(key in POPULATION_KEYS for key in parameter.keys)


@dataclasses.dataclass
class Plan:
    """One asked trial: its Optuna trial, parameter values and config overrides."""

    trial: optuna.Trial
    values: dict
    overrides: dict
    trial_id: int  # the storage's id of the trial
    retry_of: int | None = None

    @property
    def number(self) -> int:
        return self.trial.number


@dataclasses.dataclass
class Outcome:
    state: str = "running"  # running | complete | pruned | fail
    reason: str = ""
    scores: list = dataclasses.field(default_factory=list)  # per fold: the mean over seeds
    seed_scores: list = dataclasses.field(default_factory=list)  # per fold: each seed's
    test: list = dataclasses.field(default_factory=list)  # per fold: test metrics (mean over seeds)
    run_dirs: list = dataclasses.field(default_factory=list)
    best_steps: list = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    batch: str = ""

    @property
    def finished(self) -> bool:
        return self.state in ("pruned", "fail")


class TrialReporter(loop.Callback):
    """What one run (a group of trials, one fold) tells its Optuna trials, and how they stop it."""

    def __init__(self, plans: list[Plan], *, seeds: int, metric: str, memory_budget: int | None, fold: int | None,
                 outcomes: dict[int, Outcome]):
        self.plans, self.seeds, self.metric = plans, seeds, metric
        self.memory_budget, self.fold, self.outcomes = memory_budget, fold, outcomes
        self.fold_offset = 0  # fold f reports after the evaluations of folds 0..f-1

    def member_range(self, k: int) -> range:
        return range(k * self.seeds, (k + 1) * self.seeds)

    def on_start(self, trainer) -> None:
        experiment = trainer.experiment
        if self.fold:  # fold f's first report follows the most evaluations a fold has
            train = experiment.config.train
            per_epoch = math.ceil(experiment.steps_per_epoch / (train.eval_every_steps or experiment.steps_per_epoch))
            self.fold_offset = self.fold * int(train.epochs) * max(1, per_epoch)
        peak = (trainer.costs or {}).get("peak_bytes")
        if peak is not None and self.memory_budget and peak > self.memory_budget:
            costs = trainer.costs
            raise MemoryBudgetError(
                f"memory: the train step needs {format_bytes(peak)} (arguments {format_bytes(costs['argument_bytes'])}, "
                f"temporaries {format_bytes(costs['temporary_bytes'])}; XLA's memory analysis), over the budget of "
                f"{format_bytes(self.memory_budget)} (search.memory_budget); not run")

    def on_evaluation(self, trainer, values: dict, step: int) -> None:
        experiment = trainer.experiment
        interval = experiment.config.train.eval_every_steps or experiment.steps_per_epoch
        evaluation = self.fold_offset + max(1, math.ceil(step / max(1, interval)))
        last = step >= experiment.total_steps  # the run ends here anyway: its score counts
        for k, plan in enumerate(self.plans):
            outcome = self.outcomes[plan.number]
            if outcome.finished or all(trainer.stopping.members[m].stopped_early for m in self.member_range(k)):
                continue  # pruned or failed, or early-stopped: its best is kept, nothing more to report
            value = float(np.mean([values["members"][m][self.metric] for m in self.member_range(k)]))
            plan.trial.report(value, evaluation)
            if not last and plan.trial.should_prune():
                outcome.state = "pruned"
                outcome.reason = (f"pruned at evaluation {evaluation} (training step {step}): validation "
                                  f"{self.metric} {value:.4f}")
                self._stop_members(trainer, k)
        self._all_finished()

    def on_train_metrics(self, trainer, values: dict, step: int) -> None:
        losses = np.ravel(np.asarray(values["loss"], np.float64))
        for m in np.flatnonzero(~np.isfinite(losses)):
            k = int(m) // self.seeds
            outcome = self.outcomes[self.plans[k].number]
            if outcome.finished:
                continue
            grad_norm = (f"{float(np.ravel(values['grad_norm'])[m]):.3g}" if "grad_norm" in values
                         else "not computed at this step")
            hyper = trainer.experiment.hyperparameters
            lr = float(hyper["learning_rate"][m]) if "learning_rate" in hyper else \
                float(trainer.experiment.config.optimizer.learning_rate)
            outcome.state = "fail"
            outcome.reason = (f"diverged: step {step}: the loss is {losses[m]} (grad norm {grad_norm}). Likely "
                              f"cause: a learning rate too high ({lr:.3g}) or no gradient clipping "
                              "(optimizer.clip_norm)")
            self._stop_members(trainer, k)
        self._all_finished()

    def _stop_members(self, trainer, k: int) -> None:
        for m in self.member_range(k):
            trainer.stopping.stop(m)

    def _all_finished(self) -> None:
        if all(self.outcomes[p.number].finished for p in self.plans):
            raise GroupStopped()


def format_bytes(n: float) -> str:
    for unit, size in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


def parse_bytes(text: str | int | None) -> int | None:
    """'8GB', '512MiB', '1e9', 0 / '' (None: the device's memory)."""
    if text in (None, "", 0, "0"):
        return None
    if isinstance(text, (int, float)):
        return int(text)
    units = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "kib": 2 ** 10, "m": 1e6, "mb": 1e6, "mib": 2 ** 20,
             "g": 1e9, "gb": 1e9, "gib": 2 ** 30, "t": 1e12, "tb": 1e12, "tib": 2 ** 40}
    cleaned = text.strip().lower().replace(" ", "")
    number = cleaned.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = cleaned[len(number):]
    if unit not in units or not number:
        raise ValueError(f"--memory_budget={text!r}: give bytes with a unit, e.g. 8GB, 512MiB")
    return int(float(number) * units[unit])


def device_memory() -> int | None:
    """Bytes of the first device: its allocator's limit, or the machine's memory on CPU."""
    device = jax.devices()[0]
    try:
        stats = device.memory_stats() or {}
    except Exception:
        stats = {}
    if stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None


# -- running groups --------------------------------------------------------------------------------------

class Runner:
    """Runs asked trials: groups them by program, trains each group (per fold), tells Optuna."""

    def __init__(self, study: optuna.Study, base: ml_collections.ConfigDict, space: space_lib.Space, *,
                 workdir: str, metric: str, seeds: int = 1, folds: int = 0, memory_budget: int | None = None,
                 heartbeat=None, programs: ProgramCache | None = None, stop=None, log=None):
        self.study, self.base, self.space = study, base, space
        self.workdir = os.path.abspath(workdir)
        self.metric, self.seeds, self.folds = metric, max(1, seeds), folds
        self.memory_budget = memory_budget
        self.heartbeat, self.stop, self.log = heartbeat, stop, log or _log.info
        self.programs = programs if programs is not None else ProgramCache()
        self.population = [p for p in space if batchable(p)]  # parameters a program's state holds
        self.population_keys = {key for p in self.population for key in p.keys}

    def trial_dir(self, number: int) -> str:
        return os.path.join(self.workdir, "trials", f"{number:04d}")

    def shape_key(self, plan: Plan) -> str:
        return json.dumps({k: v for k, v in plan.overrides.items() if k not in self.population_keys},
                          sort_keys=True, default=str)

    def groups(self, plans: list[Plan]) -> list[list[Plan]]:
        """Plans of the same program together (in asking order); without population parameters
        every trial is its own program."""
        if not self.population:
            return [[plan] for plan in plans]
        grouped: dict[str, list[Plan]] = {}
        for plan in plans:
            grouped.setdefault(self.shape_key(plan), []).append(plan)
        return list(grouped.values())

    # configs
    def trial_config(self, plans: list[Plan], fold: int | None) -> ml_collections.ConfigDict:
        """The run config of `plans` (one program): the base with the shared overrides, and each
        member's population values (trial k's S seeds take trial k's values)."""
        shared = {k: v for k, v in plans[0].overrides.items() if k not in self.population_keys}
        config = space_lib.apply(self.base, shared)
        if fold is not None:
            config.data.folds, config.data.fold = self.folds, fold
        config.num_seeds = len(plans) * self.seeds
        if len(plans) > 1:  # trial k's seeds are the lone trial's: seed..seed+S-1
            config.member_seeds = tuple(int(config.seed) + s for _ in plans for s in range(self.seeds))
        if self.population:
            for key, name in POPULATION_KEYS.items():
                if key in self.population_keys:
                    base_value = space_lib.get_key(self.base, key)
                    config.population[name] = tuple(float(plan.overrides.get(key, base_value)) for plan in plans
                                                    for _ in range(self.seeds))
        return config

    # one program over one fold
    def run_program(self, plans: list[Plan], fold: int | None, outcomes: dict[int, Outcome]) -> None:
        if len(plans) == 1:
            run_dir = self.trial_dir(plans[0].number)
            self._resume_retry(plans[0])
        else:
            run_dir = os.path.join(self.workdir, "batches", "-".join(f"{p.number:04d}" for p in plans))
        if fold is not None:
            run_dir = os.path.join(run_dir, f"fold-{fold}")
        config = self.trial_config(plans, fold)
        reporter = TrialReporter(plans, seeds=self.seeds, metric=self.metric, memory_budget=self.memory_budget,
                                 fold=fold, outcomes=outcomes)
        began = time.perf_counter()
        try:
            results = loop.train_and_evaluate(config, run_dir, callbacks=[reporter], programs=self.programs,
                                              stop=self.stop)
        except MemoryBudgetError as error:
            if len(plans) > 1:
                self.log(f"batch {run_dir} does not fit ({error}); its trials run one by one")
                for plan in plans:
                    self.run_program([plan], fold, outcomes)
                return
            self._finish(plans, outcomes, "fail", str(error))
            return
        except loop.NonFiniteLossError as error:
            self._finish(plans, outcomes, "fail", f"diverged: {error}")
            return
        except GroupStopped:
            return
        except (KeyboardInterrupt, Interrupted):
            raise
        except Exception as error:  # the trial fails, the study goes on
            os.makedirs(run_dir, exist_ok=True)
            with open(os.path.join(run_dir, "error.txt"), "w") as f:
                f.write(traceback.format_exc())
            self._finish(plans, outcomes, "fail", f"{type(error).__name__}: {error}")
            return
        if results is None:
            raise Interrupted("stopped (SIGTERM): the running trials' steps are saved")
        seconds = time.perf_counter() - began
        for k, plan in enumerate(plans):
            outcome = outcomes[plan.number]
            outcome.seconds += seconds / len(plans)
            outcome.batch = "" if len(plans) == 1 else os.path.relpath(run_dir, self.workdir)
            if outcome.finished:
                continue
            mine = reporter.member_range(k)
            seed_scores = [results.members_validation[m][self.metric] for m in mine]
            test = {key: float(np.mean([results.members[m][key] for m in mine]))
                    for key in results.members[0] if key != "reviews"}
            best_steps = [results.member_best_steps[m] for m in mine]
            outcome.seed_scores.append([float(v) for v in seed_scores])
            outcome.scores.append(float(np.mean(seed_scores)))
            outcome.test.append(test)
            outcome.best_steps.append(best_steps)
            if len(plans) == 1:
                outcome.run_dirs.append(os.path.relpath(run_dir, self.workdir))
            else:
                target = self.trial_dir(plan.number)
                if fold is not None:
                    target = os.path.join(target, f"fold-{fold}")
                write_member_run(run_dir, target, results, members=list(reporter.member_range(k)),
                                 config=self.trial_config([plan], fold), metric=config.train.early_stopping_metric)
                outcome.run_dirs.append(os.path.relpath(target, self.workdir))

    def _finish(self, plans, outcomes, state: str, reason: str) -> None:
        for plan in plans:
            outcome = outcomes[plan.number]
            if not outcome.finished:
                outcome.state, outcome.reason = state, reason

    def _resume_retry(self, plan: Plan) -> None:
        """A re-run of an interrupted lone trial continues its run directory (exact resume)."""
        if plan.retry_of is None:
            return
        old, new = self.trial_dir(plan.retry_of), self.trial_dir(plan.number)
        if os.path.isdir(old) and not os.path.exists(new) and not os.path.exists(os.path.join(old, "trial.json")):
            os.makedirs(os.path.dirname(new), exist_ok=True)
            os.rename(old, new)
            plan.trial.set_user_attr("resumed_from", f"trials/{plan.retry_of:04d}")
            self.log(f"trial {plan.number}: resumes the run directory of interrupted trial {plan.retry_of}")

    # a batch of asked trials
    def run(self, plans: list[Plan]) -> dict[int, Outcome]:
        outcomes = {plan.number: Outcome() for plan in plans}
        for group in self.groups(plans):
            duplicates = [plan for plan in group if self._reuse(plan, outcomes)]
            group = [plan for plan in group if plan not in duplicates]
            if not group:
                continue
            describe = ", ".join(f"{p.number}" for p in group)
            self.log(f"trials {describe}: " + "; ".join(_describe(p.values) for p in group)
                     if len(group) > 1 else f"trial {group[0].number}: {_describe(group[0].values)}")
            ids = [plan.trial_id for plan in group]
            with (self.heartbeat.running(ids) if self.heartbeat else _nothing()):
                for fold in (range(self.folds) if self.folds else [None]):
                    active = [plan for plan in group if not outcomes[plan.number].finished]
                    if not active:
                        break
                    self.run_program(active, fold, outcomes)
                    if fold is not None:
                        for plan in active:
                            self._report_fold(plan, outcomes[plan.number], fold)
            for plan in group:
                self.tell(plan, outcomes[plan.number])
        return outcomes

    def _report_fold(self, plan: Plan, outcome: Outcome, fold: int) -> None:
        if outcome.finished or len(outcome.scores) <= fold:
            return
        self.log(f"trial {plan.number} fold {fold}: validation {self.metric} {outcome.scores[-1]:.4f}")

    def _reuse(self, plan: Plan, outcomes: dict[int, Outcome]) -> bool:
        """A trial whose overrides equal a complete trial's (a grid's inactive conditional values)
        takes that trial's score instead of training the same run again."""
        for other in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            if other.user_attrs.get("overrides") == json.loads(json.dumps(plan.overrides)) and \
                    other.user_attrs.get("same_as") is None:
                outcome = outcomes[plan.number]
                outcome.state = "complete"
                outcome.scores = [other.value]
                plan.trial.set_user_attr("same_as", other.number)
                for key in ("score_std", "test", "run_dir"):
                    if key in other.user_attrs:
                        plan.trial.set_user_attr(key, other.user_attrs[key])
                self.study.tell(plan.trial, other.value)
                self.log(f"trial {plan.number}: the same run as trial {other.number} ({self.metric} {other.value:.4f})")
                return True
        return False

    def tell(self, plan: Plan, outcome: Outcome) -> None:
        trial = plan.trial
        attrs = {"seconds": round(outcome.seconds, 2)}
        if outcome.batch:
            attrs["batch"] = outcome.batch
        if outcome.run_dirs:
            attrs["run_dir"] = outcome.run_dirs[0] if len(outcome.run_dirs) == 1 else os.path.dirname(outcome.run_dirs[0])
        value = None
        if outcome.scores and not outcome.finished:
            value = float(np.mean(outcome.scores))
            attrs["seed_scores"] = outcome.seed_scores
            attrs["score_std"] = float(np.std(outcome.seed_scores[0], ddof=1)) if self.seeds > 1 else 0.0
            if self.folds:
                attrs["fold_scores"] = outcome.scores
                attrs["fold_std"] = float(np.std(outcome.scores, ddof=1)) if len(outcome.scores) > 1 else 0.0
                attrs["score_std"] = attrs["fold_std"]
            attrs["test"] = {k: float(np.mean([t[k] for t in outcome.test])) for k in outcome.test[0]
                             if isinstance(outcome.test[0][k], (int, float))}
            attrs["best_steps"] = outcome.best_steps
            if not math.isfinite(value):
                outcome.state, outcome.reason = "fail", f"the validation {self.metric} is {value}"
        if outcome.reason:
            attrs["fail_reason" if outcome.state == "fail" else "prune_reason"] = outcome.reason
        for key, attr in attrs.items():
            trial.set_user_attr(key, attr)
        if outcome.state == "pruned":
            frozen = self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        elif outcome.state == "fail" or value is None:
            frozen = self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            frozen = self.study.tell(trial, value)
        summary = {"number": plan.number, "state": frozen.state.name, "value": frozen.value, "params": plan.values,
                   "overrides": plan.overrides, **attrs}
        directory = self.trial_dir(plan.number)
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, "trial.json"), "w") as f:
            json.dump(summary, f, indent=2, sort_keys=True, default=str)
        if frozen.state == optuna.trial.TrialState.COMPLETE:
            spread = f" ± {attrs['score_std']:.4f}" if self.seeds > 1 or self.folds else ""
            self.log(f"trial {plan.number} complete: validation {self.metric} {value:.4f}{spread} "
                     f"({outcome.seconds:.1f}s)")
        else:
            self.log(f"trial {plan.number} {frozen.state.name.lower()}: {outcome.reason}")


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _describe(values: dict) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())


# -- a batch member's own run directory ---------------------------------------------------------------------

def write_member_run(batch_dir: str, target: str, results: RunResults, *, members: list[int],
                     config: ml_collections.ConfigDict, metric: str) -> None:
    """`target` as the run directory of the trial whose members are `members` of the batch in
    `batch_dir`: config (as if run alone), tables, the members' best parameters, results and
    validation records; `load_run(target)` opens it."""
    os.makedirs(target, exist_ok=True)
    for name in ("vocab.txt", "users.txt", "products.txt", "model.json", "training_pairs.npz"):
        if os.path.exists(os.path.join(batch_dir, name)):
            shutil.copyfile(os.path.join(batch_dir, name), os.path.join(target, name))
    population.resolve(config)
    with open(os.path.join(target, "config.json"), "w") as f:
        f.write(config.to_json_best_effort(indent=2, sort_keys=True))
    source = checkpoints.RunCheckpoints(batch_dir)
    try:
        state, _ = source.restore_best(None, int(results.best_step))  # the tree of every member's best
    finally:
        source.close()
    best_step = max(int(results.member_best_steps[m]) for m in members)  # this trial's own best
    index = np.asarray(members)
    tree = {"params": jax.tree.map(lambda x: np.asarray(x)[index], state["params"]),
            "model_state": jax.tree.map(lambda x: np.asarray(x)[index], state.get("model_state") or {})}
    ckpt = checkpoints.RunCheckpoints(target)
    try:
        ckpt.save_best(best_step, tree, {"step": best_step, "members": len(members), "batch": batch_dir})
    finally:
        ckpt.close()
    mine = [results.members[m] for m in members]
    mine_validation = [results.members_validation[m] for m in members]
    mean, std = members_lib.mean_and_std(mine)
    own = dataclasses.replace(
        results, test=mean, validation=members_lib.mean_and_std(mine_validation)[0], members=mine,
        members_validation=mine_validation, members_mean=mean, members_std=std,
        member_seeds=[results.member_seeds[m] for m in members],
        member_best_steps=[results.member_best_steps[m] for m in members],
        member_hyperparameters=[results.member_hyperparameters[m] for m in members]
        if results.member_hyperparameters else [],
        best_step=best_step, param_checksum=loop.param_checksum(tree["params"]), accounting=None,
        trained_in={"batch": os.path.relpath(batch_dir, target), "members": members,
                    "test_of": "the mean of the trial's members (trained in a batch of trials)" if len(members) > 1
                    else "the trial's member (trained in a batch of trials)"})
    own.save(os.path.join(target, "results.json"))
    records = []
    path = os.path.join(batch_dir, "metrics.jsonl")
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                record = json.loads(line)
                if record.get("kind") == "validation" and f"member_{metric}" in record:
                    values = [record[f"member_{metric}"][m] for m in members]
                    records.append({"kind": "validation", "step": record["step"], "epoch": record.get("epoch"),
                                    metric: float(np.mean(values)), f"member_{metric}": values})
    with open(os.path.join(target, "metrics.jsonl"), "w") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
