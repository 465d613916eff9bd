"""Search methods and pruners: Optuna's samplers and pruners by name, nothing written here.

    grid     optuna GridSampler over `Space.grid` (every value of ints, powers of two and choices;
             `grid` points of float ranges); the sweep stops when every point has run
    random   optuna RandomSampler
    tpe      optuna TPESampler (multivariate, grouped for conditional spaces, constant liar for
             parallel workers); the first `search.startup_trials` trials are random
    gp       optuna GPSampler (a Gaussian process; needs PyTorch: pip install torch)
    cmaes    optuna CmaEsSampler on the numeric parameters (choices drawn at random beside it)

Every trial's draw is seeded by (search.seed, the trial's number) (`sampler_for`), so a study that
is continued, or shared by several workers, never draws the same random points twice, and one
worker's sweep is reproducible. Pruners prune on the validation metric reported at every
evaluation: median (optuna MedianPruner), halving (SuccessiveHalvingPruner), hyperband
(HyperbandPruner), none.
"""
from __future__ import annotations

import zlib

import optuna

from jaxreviews.tune.space import Space

METHODS = ("grid", "random", "tpe", "gp", "cmaes")
PRUNERS = ("median", "halving", "hyperband", "none")


class GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler without its `study.stop()` after the last point, which only works
    inside `study.optimize`; the sweep asks `is_exhausted` itself."""

    def after_trial(self, study, trial, state, values) -> None:
        pass


def grid_space(space: Space, default_points: int) -> dict[str, list]:
    return {p.optuna_name: p.grid(default_points) for p in space}


def grid_size(space: Space, default_points: int) -> int:
    size = 1
    for values in grid_space(space, default_points).values():
        size *= len(values)
    return size


def trial_seed(seed: int, number: int) -> int:
    """The seed of one draw: a hash of the search seed and the trial's number."""
    return zlib.crc32(f"{seed}:{number}".encode()) & 0x7FFFFFFF


def make_sampler(method: str, space: Space, *, seed: int, search_seed: int = 0, startup_trials: int = 4,
                 grid_points: int = 3) -> optuna.samplers.BaseSampler:
    """Optuna's sampler of `method`. `seed` seeds this draw; a grid keeps `search_seed` (its
    points' order must be the same for every draw)."""
    if method == "grid":
        return GridSampler(grid_space(space, grid_points), seed=search_seed)
    if method == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if method == "tpe":
        conditional = any(p.condition for p in space)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials, multivariate=True,
                                          group=conditional, constant_liar=True)
    if method == "gp":
        try:
            import torch  # noqa: F401
        except ImportError:
            raise ImportError("--method=gp uses Optuna's GPSampler, which needs PyTorch: pip install torch "
                              "(or choose --method=tpe)") from None
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup_trials)
    if method == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=startup_trials,
                                            independent_sampler=optuna.samplers.RandomSampler(seed=seed),
                                            warn_independent_sampling=False)
    raise ValueError(f"--method={method!r}: choose one of {', '.join(METHODS)}")


def make_pruner(name: str, *, startup_trials: int = 4, warmup_evaluations: int = 1) -> optuna.pruners.BasePruner:
    """Optuna's pruner of `name`. A trial reports its validation metric at every evaluation, as
    step 1, 2, ... (evaluations, not training steps: trials of other batch sizes compare at the
    same epoch); the first `warmup_evaluations` of a trial are never pruned."""
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_min_trials=1,
                                           n_warmup_steps=warmup_evaluations + 1, interval_steps=1)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=warmup_evaluations + 1, reduction_factor=3)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=warmup_evaluations + 1, reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"search.pruner={name!r}: choose one of {', '.join(PRUNERS)}")
