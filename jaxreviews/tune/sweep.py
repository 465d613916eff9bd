"""A sweep worker: ask trials, train them, tell the study; then the report.

    run_sweep(config, "runs/sweep")       # = python -m experiments.sweep; options in config.search
    run_sweep(config, "runs/sweep", trials=8, method="tpe")     # keywords override config.search

adds `search.trials` trials to the study (a continued study keeps its trials: 4, then 2 more, is
6), and stops early when a grid has run every point. Before each ask it fails and re-enqueues the
trials of workers that died (`study.recover_interrupted`). `search.batch_trials=K` asks K trials at
a time; with a method other than grid, trials 2..K of a batch take the first's shape parameters
(hidden size, layers, batch size, choices: `enqueue_trial` with those fixed, the sampler draws the
rest), so the K train as one program; a grid's batch groups the points that share a program. When
`stop` is set (SIGTERM in experiments.sweep) the worker saves the running trials' checkpoints and
stops; Ctrl-C stops without saving; either way they are failed as interrupted and re-enqueued at
once, and the next sweep runs them again (a lone trial resumes from its last checkpoint). The
sweep keeps its trials' compiled programs (`train.ProgramCache`): a trial of an earlier trial's
shapes compiles nothing.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time

import ml_collections
import optuna

from jaxreviews import options
from jaxreviews.train.early_stopping import HIGHER_IS_BETTER
from jaxreviews.train.experiment import ProgramCache
from jaxreviews.tune import methods, runner as runner_lib, space as space_lib, study as study_lib

# The sweep's option name (run_sweep's keywords, experiments.sweep's flags) -> its key in config.search.
SEARCH_KEYS = {"trials": "trials", "method": "method", "storage": "storage", "study_name": "study",
               "batch_trials": "batch_trials", "folds": "folds", "memory_budget": "memory_budget",
               "seeds": "seeds_per_trial", "next_space": "next_space"}

_log = logging.getLogger(__name__)


def compared_config(config: ml_collections.ConfigDict) -> dict:
    """The base config as the study records it: flat, without `search` and the options that do
    not change results (`options.NO_EFFECT_KEYS`)."""
    flat = options.flatten(json.loads(config.to_json_best_effort()))
    return {k: v for k, v in flat.items() if not k.startswith("search.") and k not in options.NO_EFFECT_KEYS}


def with_search_options(config: ml_collections.ConfigDict, **overrides) -> ml_collections.ConfigDict:
    """A copy of `config` with `run_sweep`'s keyword options written into `config.search`."""
    import copy

    config = copy.deepcopy(config)
    for name, value in overrides.items():
        if name not in SEARCH_KEYS:
            raise TypeError(f"unknown sweep option {name!r}; choose from {', '.join(SEARCH_KEYS)}")
        if value is not None:
            config.search[SEARCH_KEYS[name]] = value
    return config


class Sweep:
    """One worker's sweep over a study (see the module docstring)."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str, *, stop=None, log=None, **overrides):
        config = with_search_options(config, **overrides)
        options.validate(config)
        search = config.search
        if config.num_seeds > 1 or any(config.population[name] for name in config.population if name != "spacing"):
            raise ValueError("a sweep sets num_seeds and population itself: use search.seeds_per_trial (--seeds), "
                             "and put the population's hyperparameters in the search space")
        if search.memory_budget:
            runner_lib.parse_bytes(search.memory_budget)  # a bad value is refused before any trial
        self.config, self.method, self.log, self.stop = config, search.method, log or _log.info, stop
        self.workdir = os.path.abspath(os.path.expanduser(workdir))
        os.makedirs(self.workdir, exist_ok=True)
        self.space = space_lib.load_space(search.space, config)
        self.metric = search.metric or config.train.early_stopping_metric
        self.direction = "maximize" if HIGHER_IS_BETTER[self.metric] else "minimize"
        self.batch_trials, self.folds, self.seeds = search.batch_trials, search.folds, search.seeds_per_trial
        self.url = study_lib.storage_url(self.workdir, search.storage)
        self.study_name = search.study or "sweep"
        attrs = {"config": compared_config(config), "space": self.space.to_json(), "metric": self.metric,
                 "direction": self.direction, "folds": self.folds, "seeds": self.seeds}
        pruner = methods.make_pruner(search.pruner, startup_trials=search.startup_trials,
                                     warmup_evaluations=search.warmup_evaluations)
        self.stale = study_lib.StaleTrials()
        self.storage = study_lib.open_storage(self.url, on_stale=self.stale)
        self.study = study_lib.open_study(self.storage, self.study_name, direction=self.direction, attrs=attrs,
                                          pruner=pruner, sampler=self._sampler(0), url=self.url)
        self.study_id = self.storage.get_study_id_from_name(self.study_name)
        budget = runner_lib.parse_bytes(search.memory_budget)
        self.memory_budget = budget if budget is not None else runner_lib.device_memory()
        self.programs = ProgramCache()
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
        taken = {t.system_attrs.get("grid_id") for t in self.study.get_trials(deepcopy=False)
                 if t.state.is_finished() or t.state == optuna.trial.TrialState.RUNNING}
        size = methods.grid_size(self.space, self.config.search.grid_points)
        return len(set(range(size)) - taken)

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
        trial_id = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, trial.number)
        return runner_lib.Plan(trial=trial, values=values, overrides=overrides, trial_id=trial_id,
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
        self.heartbeat = study_lib.Heartbeat(self.storage)
        self.runner = runner_lib.Runner(self.study, self.config, self.space, workdir=self.workdir, metric=self.metric,
                                        seeds=self.seeds, folds=self.folds, memory_budget=self.memory_budget,
                                        heartbeat=self.heartbeat, programs=self.programs, stop=self.stop,
                                        log=self.log)
        done, started = 0, time.perf_counter()
        self.log(f"study {self.study_name!r} in {study_lib.redact(self.url)}: {len(self.study.trials)} trials so far; "
                 f"method {self.method}, {len(self.space)} parameters ({', '.join(self.space.names())}), "
                 f"{self.direction} validation {self.metric}"
                 + (f", batches of {self.batch_trials}" if self.batch_trials > 1 else "")
                 + (f", {self.seeds} seeds a trial" if self.seeds > 1 else "")
                 + (f", {self.folds}-fold cross-validation" if self.folds else ""))
        stop = self.stop if self.stop is not None else threading.Event()
        try:
            while done < trials and not stop.is_set():
                for number in study_lib.recover_interrupted(self.study, self.storage, self.study_id, self.stale):
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
            frozen = self.storage.get_trial(plan.trial_id)
            if frozen.state == optuna.trial.TrialState.RUNNING:
                reason = f"interrupted: {error or 'stopped'} (SIGTERM or Ctrl-C); run again as a new trial"
                if study_lib.fail_trial(self.storage, plan.trial_id, reason):
                    study_lib.enqueue_retry(self.study, frozen, reason)


def run_sweep(config: ml_collections.ConfigDict, workdir: str, *, report: bool = True, stop=None, log=None,
              **overrides) -> dict:
    """`search.trials` more trials of the study in `workdir` (or `search.storage`), then the report
    (`workdir/report.md`, `report.html`) and, with `search.next_space`, the proposed next space as
    JSON. Keywords (trials, method, storage, study_name, batch_trials, folds, memory_budget, seeds,
    next_space) override `config.search`; `stop`: an event that stops the sweep (saving)."""
    log = log or _log.info
    sweep = Sweep(config, workdir, stop=stop, log=log, **overrides)
    search = sweep.config.search
    counts = sweep.run(search.trials)
    out = {**counts, "study": sweep.study, "space": sweep.space}
    if report or search.next_space:
        from jaxreviews.tune import report as report_lib
        written = report_lib.write_report(sweep.study, sweep.space, sweep.workdir, metric=sweep.metric,
                                          next_space=search.next_space, method=sweep.method)
        for path in written.values():
            log(f"wrote {path}")
        out["report"] = written
    return out
