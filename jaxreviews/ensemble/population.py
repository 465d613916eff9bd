"""Populations: members that differ in continuous hyperparameters, trained in one program.

    --config.num_seeds=8 --config.population.learning_rate="(1e-4, 1e-2)"

spreads the learning rate over the 8 members evenly on a log scale (1e-4, 1.9e-4, ..., 1e-2); a
list of K values (`"[1e-3, 3e-3, 1e-2, 3e-2]"`) is used as given, and `population.spacing="random"`
draws log-uniformly from the range with the run's seed instead. Learning rate and weight decay
live in the optimiser state (`optax.inject_hyperparams`), the dropout rates in the model's
"hyperparams" collection (`model.dropout_rates_in_state`): all are arrays with a member axis in
the train state, so a checkpoint keeps them and the step stays one compiled program. Member i
with learning rate r_i equals the single run `--config.seed=seed+i --config.optimizer.learning_rate=r_i`
(and `--config.data.shuffle_seed=seed`).

Learning rates and weight decays spread on a log scale (a range starting at 0 is spread
linearly), dropout rates linearly.
"""
from __future__ import annotations

import ast

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

# population key -> (where the value lives, spread on a log scale)
PARAMETERS = {
    "learning_rate": ("optimizer", True),
    "weight_decay": ("optimizer", True),
    "head_dropout": ("model", False),
    "embedding_dropout": ("model", False),
}
SPACINGS = ("grid", "random")


def default_population_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    for name in PARAMETERS:  # "" = the config's value for every member
        setattr(c, name, "")
    c.spacing = "grid"  # grid: evenly over the range (log scale for rates) | random: drawn with the run's seed
    return c


def _parse(name: str, text) -> tuple[str, list[float]] | None:
    """("range", [lo, hi]) or ("values", [...]) of a population option, None when unset."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    value = ast.literal_eval(text) if isinstance(text, str) else text
    if isinstance(value, (int, float)):
        return "values", [float(value)]
    if isinstance(value, tuple) and len(value) == 2:
        return "range", [float(v) for v in value]
    if isinstance(value, list) and value:
        return "values", [float(v) for v in value]
    raise ValueError(f"population.{name}={text!r}: give a range \"(low, high)\" or a list of values \"[a, b, ...]\"")


def values(config: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
    """Each set population hyperparameter's value per member, float32 [K]."""
    population = config.get("population")
    if population is None:
        return {}
    num_members = int(config.get("num_seeds", 1))
    spacing = population.get("spacing", "grid")
    if spacing not in SPACINGS:
        raise ValueError(f"population.spacing={spacing!r}: choose one of {SPACINGS}")
    rng = np.random.default_rng([int(config.seed), 1])
    out = {}
    for name, (_, log_scale) in PARAMETERS.items():
        parsed = _parse(name, population.get(name, ""))
        if parsed is None:
            continue
        kind, numbers = parsed
        if kind == "values":
            if len(numbers) != num_members:
                raise ValueError(f"population.{name} lists {len(numbers)} values for num_seeds={num_members} members")
            member_values = np.asarray(numbers, np.float64)
        else:
            lo, hi = numbers
            if lo > hi or lo < 0:
                raise ValueError(f"population.{name}=({lo}, {hi}): the range must be 0 <= low <= high")
            logarithmic = log_scale and lo > 0
            a, b = (np.log(lo), np.log(hi)) if logarithmic else (lo, hi)
            if spacing == "grid":
                points = np.linspace(a, b, num_members) if num_members > 1 else np.array([(a + b) / 2])
            else:
                points = rng.uniform(a, b, num_members)
            member_values = np.exp(points) if logarithmic else points
        if name.endswith("dropout") and np.any((member_values < 0) | (member_values >= 1)):
            raise ValueError(f"population.{name}: dropout rates must lie in [0, 1), got {member_values.tolist()}")
        if np.any(member_values < 0):
            raise ValueError(f"population.{name}: values must be >= 0, got {member_values.tolist()}")
        out[name] = member_values.astype(np.float32)
    return out


def injected_hyperparameters(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The optimiser hyperparameters the population varies (`optimizers.make_optimizer(injected=)`)."""
    return tuple(name for name in values(config) if PARAMETERS[name][0] == "optimizer")


def resolve(config: ml_collections.ConfigDict) -> None:
    """Sets what the population needs in the model config (in place, before the run saves it):
    dropout rates as state when a dropout rate varies."""
    varied = values(config)
    if any(PARAMETERS[name][0] == "model" for name in varied):
        if "head_dropout" not in config.model:
            raise ValueError(f"model {config.model.name!r} has no dropout rates to vary (population."
                             f"{', population.'.join(n for n in varied if PARAMETERS[n][0] == 'model')})")
        config.model.dropout_rates_in_state = True


def apply(state, member_values: dict[str, np.ndarray]):
    """The stacked train state with each member's hyperparameters written in."""
    optimizer = {}
    for name, v in member_values.items():
        if PARAMETERS[name][0] == "optimizer":
            current = optax.tree.get(state.opt_state, name)
            optimizer[name] = jax.device_put(jnp.asarray(v, current.dtype), current.sharding)
    if optimizer:
        state = state.replace(opt_state=optax.tree.set(state.opt_state, **optimizer))
    model_state = state.model_state
    for name, v in member_values.items():
        if PARAMETERS[name][0] != "model":
            continue
        layer = model_state.get("hyperparams", {}).get(name)
        if layer is None:
            raise ValueError(f"population.{name}: the model has no '{name}' rate in its state "
                             "(model.dropout_rates_in_state is off)")
        rate = layer["rate"]
        model_state = {**model_state, "hyperparams": {**model_state["hyperparams"],
                                                      name: {"rate": jax.device_put(jnp.asarray(v, rate.dtype),
                                                                                    rate.sharding)}}}
    return state.replace(model_state=model_state)


def describe(member_values: dict[str, np.ndarray]) -> list[dict]:
    """[{name: value} per member] for results.json."""
    if not member_values:
        return []
    count = len(next(iter(member_values.values())))
    return [{name: float(v[i]) for name, v in member_values.items()} for i in range(count)]
