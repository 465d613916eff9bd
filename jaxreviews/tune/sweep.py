"""A sweep worker: ask trials, train them, tell the study; then the report.

    run_sweep(config, "runs/sweep", trials=8, method="tpe")        # = python -m experiments.sweep ...

adds `trials` trials to the study (a continued study keeps its trials: 4, then 2 more, is 6), and
stops early when a grid has run every point. Before each ask it fails and re-enqueues the trials
of workers that died (`study.recover_interrupted`). `batch_trials=K` asks K trials at a time; with
a method other than grid, trials 2..K of a batch take the first's shape parameters (hidden size,
layers, batch size, choices: `enqueue_trial` with those fixed, the sampler draws the rest), so the
K train as one program; a grid's batch groups the points that share a program. SIGTERM stops the
worker after saving the running trials' checkpoints (Ctrl-C without saving); either way they are
failed as interrupted and re-enqueued at once, and the next sweep runs them again (a lone trial
resumes from its last checkpoint).
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import time

import ml_collections
import optuna

from jaxreviews.train.early_stopping import HIGHER_IS_BETTER
from jaxreviews.tune import methods, runner as runner_lib, space as space_lib, study as study_lib

# Config keys that do not change what a trial measures: a study may be continued with them changed.
NOT_COMPARED = ("compilation_cache_dir", "train.log_every_steps", "train.checkpoint_every_steps",
                "train.keep_checkpoints", "train.prefetch", "train.tensorboard")

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def compared_config(config: ml_collections.ConfigDict) -> dict:
    """The base config as the study records it: flat, without `search` and `NOT_COMPARED`."""
    flat = _flatten(json.loads(config.to_json_best_effort()))
    return {k: v for k, v in flat.items() if not k.startswith("search.") and k not in NOT_COMPARED}


class Sweep:
    """One worker's sweep over a study (see the module docstring)."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str, *, method: str = "tpe", storage: str = "",
                 study_name: str = "", batch_trials: int = 1, folds: int = 0, memory_budget=None, seeds: int = 1,
                 log=print):
        if method not in methods.METHODS:
            raise ValueError(f"--method={method!r}: choose one of {', '.join(methods.METHODS)}")
        if batch_trials < 1 or seeds < 1:
            raise ValueError("--batch_trials and --seeds must be at least 1")
        if folds == 1 or folds < 0:
            raise ValueError(f"--folds={folds}: give 0 (no cross-validation) or K >= 2")
        if int(config.get("num_seeds", 1)) > 1 or any(config.population.get(n) for n in runner_lib.POPULATION_KEYS.values()):
            raise ValueError("a sweep sets num_seeds and population itself: use --seeds=S, and put the population's "
                             "hyperparameters in the search space")
        self.config, self.method, self.log = config, method, log
        self.workdir = os.path.abspath(os.path.expanduser(workdir))
        os.makedirs(self.workdir, exist_ok=True)
        search = config.search
        self.space = space_lib.load_space(search.space, config)
        self.metric = search.metric or config.train.early_stopping_metric
        if self.metric not in HIGHER_IS_BETTER:
            raise ValueError(f"search.metric={self.metric!r}: choose one of {sorted(HIGHER_IS_BETTER)}")
        self.direction = "maximize" if HIGHER_IS_BETTER[self.metric] else "minimize"
        self.batch_trials, self.folds, self.seeds = batch_trials, folds, seeds
        self.url = study_lib.storage_url(self.workdir, storage)
        self.study_name = study_name or "sweep"
        attrs = {"config": compared_config(config), "space": self.space.to_json(), "metric": self.metric,
                 "direction": self.direction, "folds": folds, "seeds": seeds}
        pruner = methods.make_pruner(search.pruner, startup_trials=search.startup_trials,
                                     warmup_evaluations=search.warmup_evaluations)
        self.study = study_lib.open_study(self.url, self.study_name, direction=self.direction, attrs=attrs,
                                          pruner=pruner, sampler=self._sampler(0))
        from jaxreviews.tune.runner import device_memory, parse_bytes
        budget = parse_bytes(memory_budget)
        self.memory_budget = budget if budget is not None else device_memory()
        self.heartbeat = None
        self.runner = None

    def _sampler(self, seed: int):
        search = self.config.search
        return methods.make_sampler(self.method, self.space, seed=seed, search_seed=search.seed,
                                    startup_trials=search.startup_trials, grid_points=search.grid_points)

    # asking
    def grid_left(self) -> int | None:
        """Grid points not yet finished or running (None for the other methods)."""
        if self.method != "grid":
            return None
        sampler = self._sampler(0)
        return len(sampler._get_unvisited_grid_ids(self.study))

    def ask_one(self, fixed: dict | None = None, batch_with: int | None = None) -> runner_lib.Plan:
        if fixed:
            self.study.enqueue_trial(fixed, user_attrs={"batch_with": batch_with}, skip_if_exists=False)
        self.study.sampler = self._sampler(methods.trial_seed(self.config.search.seed, -1))
        with study_lib.quiet():
            trial = self.study.ask()
        trial.set_user_attr("worker", study_lib.this_worker())
        self.study.sampler = self._sampler(methods.trial_seed(self.config.search.seed, trial.number))
        values = space_lib.suggest(trial, self.space)
        overrides = space_lib.overrides(self.space, values)
        trial.set_user_attr("overrides", overrides)
        trial.set_user_attr("values", values)
        return runner_lib.Plan(trial=trial, values=values, overrides=overrides,
                               retry_of=trial.user_attrs.get("retry_of"))

    def ask(self, count: int) -> list[runner_lib.Plan]:
        plans = [self.ask_one()]
        shape = None
        if self.method != "grid" and self.runner.population and plans[0].retry_of is None:
            by_name = self.space.by_optuna_name()
            shape = {name: raw for name, raw in plans[0].trial.params.items()
                     if name in by_name and not runner_lib.batchable(by_name[name])}
        for _ in range(count - 1):
            plans.append(self.ask_one(shape, plans[0].number) if shape is not None else self.ask_one())
        return plans

    # the loop
    def run(self, trials: int) -> dict:
        """Adds `trials` trials to the study (fewer when a grid is done); the study's counts."""
        storage = self.study._storage
        self.heartbeat = study_lib.Heartbeat(storage)
        self.runner = runner_lib.Runner(self.study, self.config, self.space, workdir=self.workdir, metric=self.metric,
                                        seeds=self.seeds, folds=self.folds, memory_budget=self.memory_budget,
                                        heartbeat=self.heartbeat, log=self.log)
        done, started = 0, time.perf_counter()
        self.log(f"study {self.study_name!r} in {study_lib.redact(self.url)}: {len(self.study.trials)} trials so far; "
                 f"method {self.method}, {len(self.space)} parameters ({', '.join(self.space.names())}), "
                 f"{self.direction} validation {self.metric}"
                 + (f", batches of {self.batch_trials}" if self.batch_trials > 1 else "")
                 + (f", {self.seeds} seeds a trial" if self.seeds > 1 else "")
                 + (f", {self.folds}-fold cross-validation" if self.folds else ""))
        try:
            with _stop_on_sigterm() as stop:
                while done < trials and not stop.requested:
                    for number in study_lib.recover_interrupted(self.study):
                        self.log(f"trial {number} was interrupted (its worker is gone): enqueued to run again")
                    count = min(self.batch_trials, trials - done)
                    left = self.grid_left()
                    if left is not None:
                        waiting = len(self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)))
                        if left + waiting == 0:
                            self.log("the grid is complete: every point has run")
                            break
                        count = min(count, left + waiting)
                    plans = self.ask(count)
                    try:
                        self.runner.run(plans)
                    except (KeyboardInterrupt, runner_lib.Interrupted) as error:
                        self._interrupt(plans, error)
                        raise
                    done += len(plans)
        except (KeyboardInterrupt, runner_lib.Interrupted):
            self.log("stopped: the interrupted trials are enqueued again; run the same command to continue")
        finally:
            self.heartbeat.close()
        counts = study_lib.counts(self.study)
        self.log(f"{done} trials in {time.perf_counter() - started:.0f}s; the study holds {counts['complete']} "
                 f"complete, {counts['pruned']} pruned, {counts['fail']} failed ({counts['interrupted']} of them "
                 f"interrupted and run again), {counts['running']} running, {counts['waiting']} waiting")
        return {"done": done, **counts}

    def _interrupt(self, plans, error) -> None:
        for plan in plans:
            frozen = self.study._storage.get_trial(plan.trial._trial_id)
            if frozen.state == optuna.trial.TrialState.RUNNING:
                reason = f"interrupted: {error or 'stopped'} (SIGTERM or Ctrl-C); run again as a new trial"
                if study_lib.fail_trial(self.study, plan.trial._trial_id, reason):
                    study_lib.enqueue_retry(self.study, frozen, reason)


class _StopFlag:
    requested = False


@contextlib.contextmanager
def _stop_on_sigterm():
    """SIGTERM between trials ends the loop; during a trial the fit loop saves and returns (its own
    handler), which the runner turns into `Interrupted`."""
    flag = _StopFlag()

    def handle(signum, frame):
        flag.requested = True

    try:
        previous = signal.signal(signal.SIGTERM, handle)
    except ValueError:  # not the main thread
        yield flag
        return
    try:
        yield flag
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_sweep(config: ml_collections.ConfigDict, workdir: str, *, trials: int, method: str = "tpe",
              storage: str = "", study_name: str = "", batch_trials: int = 1, folds: int = 0, memory_budget=None,
              seeds: int = 1, next_space: str = "", report: bool = True, log=print) -> dict:
    """`trials` more trials of the study in `workdir` (or `storage`), then the report
    (`workdir/report.md`, `report.html`) and, with `next_space`, the proposed next space as JSON."""
    sweep = Sweep(config, workdir, method=method, storage=storage, study_name=study_name, batch_trials=batch_trials,
                  folds=folds, memory_budget=memory_budget, seeds=seeds, log=log)
    counts = sweep.run(trials)
    out = {**counts, "study": sweep.study, "space": sweep.space}
    if report or next_space:
        from jaxreviews.tune import report as report_lib
        written = report_lib.write_report(sweep.study, sweep.space, sweep.workdir, metric=sweep.metric,
                                          next_space=next_space, method=method)
        for path in written.values():
            log(f"wrote {path}")
        out["report"] = written
    return out
