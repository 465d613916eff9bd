"""Populations: members that differ in continuous hyperparameters, trained in one program.

    --config.num_seeds=8 --config.population.learning_rate_range="(1e-4, 1e-2)"
    --config.num_seeds=3 --config.population.learning_rate="(1e-3, 3e-3, 1e-2)"

A range spreads the value over the members evenly on a log scale (1e-4, 1.9e-4, ..., 1e-2), or
draws it log-uniformly with the run's seed (`population.spacing=random`); a list gives each member
its value. Learning rate and weight decay live in the optimiser state (`optax.inject_hyperparams`),
the dropout rates in the model's "hyperparams" collection (`model.dropout_rates_in_state`): all are
arrays with a member axis in the train state, so a checkpoint keeps them and the step stays one
compiled program. Member i with learning rate r_i equals the one-member run of seed `seed + i` with
`optimizer.learning_rate=r_i` and the same training order.

Learning rates and weight decays spread on a log scale (a range starting at 0 linearly), dropout
rates linearly.
"""
from __future__ import annotations

import jax
import ml_collections
import numpy as np
import optax

from jaxreviews.options.reference import POPULATION_PARAMETERS

LOG_SCALE = {"learning_rate": True, "weight_decay": True, "head_dropout": False, "embedding_dropout": False}


def values(config: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
    """Each varied hyperparameter's value per member, float32 [K] (validated options assumed;
    the checks here repeat the ones a hand-made config could miss)."""
    population = config.get("population")
    if population is None:
        return {}
    num_members = int(config.get("num_seeds", 1))
    spacing = population.get("spacing", "grid")
    rng = np.random.default_rng([int(config.seed), 1])
    out = {}
    for name in POPULATION_PARAMETERS:
        given, spread = tuple(population.get(name, ()) or ()), tuple(population.get(f"{name}_range", ()) or ())
        if given:
            if len(given) != num_members:
                raise ValueError(f"population.{name} lists {len(given)} values for num_seeds={num_members} members")
            member_values = np.asarray(given, np.float64)
        elif spread:
            lo, hi = (float(v) for v in spread)
            if not 0 <= lo <= hi:
                raise ValueError(f"population.{name}_range=({lo}, {hi}): the range must be 0 <= low <= high")
            logarithmic = LOG_SCALE[name] and lo > 0
            a, b = (np.log(lo), np.log(hi)) if logarithmic else (lo, hi)
            if spacing == "grid":
                points = np.linspace(a, b, num_members) if num_members > 1 else np.array([(a + b) / 2])
            else:
                points = rng.uniform(a, b, num_members)
            member_values = np.exp(points) if logarithmic else points
        else:
            continue
        if name.endswith("dropout") and np.any((member_values < 0) | (member_values >= 1)):
            raise ValueError(f"population.{name}: dropout rates must lie in [0, 1), got {member_values.tolist()}")
        if np.any(member_values < 0):
            raise ValueError(f"population.{name}: values must be >= 0, got {member_values.tolist()}")
        out[name] = member_values.astype(np.float32)
    return out


def injected_hyperparameters(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The optimiser hyperparameters the population varies (`optimizers.make_optimizer(injected=)`)."""
    return tuple(name for name in values(config) if POPULATION_PARAMETERS[name] == "optimizer")


def resolve(config: ml_collections.ConfigDict) -> None:
    """Sets what the population needs in the model config (in place, before the run saves it):
    dropout rates as state when a dropout rate varies."""
    varied = values(config)
    if any(POPULATION_PARAMETERS[name] == "model" for name in varied):
        if "head_dropout" not in config.model:
            raise ValueError(f"model {config.model.name!r} has no dropout rates to vary (population."
                             f"{', population.'.join(n for n in varied if POPULATION_PARAMETERS[n] == 'model')})")
        config.model.dropout_rates_in_state = True


def apply(state, member_values: dict[str, np.ndarray]):
    """The stacked train state with each member's hyperparameters written in."""
    optimizer = {}
    for name, v in member_values.items():
        if POPULATION_PARAMETERS[name] == "optimizer":
            current = optax.tree.get(state.opt_state, name)
            optimizer[name] = _placed(np.asarray(v, current.dtype), current.sharding)
    if optimizer:
        state = state.replace(opt_state=optax.tree.set(state.opt_state, **optimizer))
    model_state = state.model_state
    for name, v in member_values.items():
        if POPULATION_PARAMETERS[name] != "model":
            continue
        layer = model_state.get("hyperparams", {}).get(name)
        if layer is None:
            raise ValueError(f"population.{name}: the model has no '{name}' rate in its state "
                             "(model.dropout_rates_in_state is off)")
        rate = layer["rate"]
        model_state = {**model_state, "hyperparams": {**model_state["hyperparams"],
                                                      name: {"rate": _placed(np.asarray(v, rate.dtype),
                                                                             rate.sharding)}}}
    return state.replace(model_state=model_state)


def _placed(value: np.ndarray, sharding) -> jax.Array:
    """`value` (every process holds it whole) laid out as `sharding` says, in a multi-process job too."""
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def describe(member_values: dict[str, np.ndarray]) -> list[dict]:
    """[{name: value} per member] for results.json."""
    if not member_values:
        return []
    count = len(next(iter(member_values.values())))
    return [{name: float(v[i]) for name, v in member_values.items()} for i in range(count)]
