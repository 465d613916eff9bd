"""`validate(config)`: every problem of a config found before any data is read, in one line.

Structure (every key an option of the config's model, none missing), types, choices and ranges
come from the reference; the rules below add what single options cannot say (a population lists
one value per member, a fold inside the folds, ...).
"""
from __future__ import annotations

import difflib
import json

from jaxreviews.options import reference
from jaxreviews.options.schema import MODEL_NAMES, Option, walk


class ConfigError(ValueError):
    """A config that cannot run; the message names every bad key and what it accepts."""


def flatten(tree: dict, prefix: str = "") -> dict:
    """Nested dicts (a config as JSON) -> {"a.b": value}; lists become tuples (hashable, comparable)."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = tuple(value) if isinstance(value, list) else value
    return out


def options_of(model: str) -> dict[str, Option]:
    """{dotted key: Option} of the options a config of `model` has."""
    return {key: option for key, option in walk(reference.OPTIONS)
            if not key.startswith("model.") or option.applies_to(model)}


def _type_problem(key: str, option: Option, value) -> str | None:
    if value is None:
        return None if option.nullable else f"{key}=None: give a value"
    kind = option.value_type
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif kind is tuple:
        ok = isinstance(value, (tuple, list))
    else:
        ok = isinstance(value, kind)
    if ok:
        return None
    return f"{key}={value!r}: expected {kind.__name__}, got {type(value).__name__}"


def _value_problem(key: str, option: Option, value) -> str | None:
    if value is None:
        return None
    if option.choices and value not in option.choices:
        shown = ", ".join(repr(c) if c == "" else str(c) for c in option.choices)
        return f"{key}={value!r}: choose one of {shown}"
    if option.check is not None:
        try:
            ok = option.check(tuple(value) if isinstance(value, list) else value)
        except TypeError:
            ok = False
        if not ok:
            return f"{key}={value!r}: {option.check.phrase}"
    return None


def _plain(config) -> dict:
    if hasattr(config, "to_json_best_effort"):
        return json.loads(config.to_json_best_effort())
    return json.loads(json.dumps(config, default=list))


def problems(config) -> list[str]:
    """Everything wrong with `config` (a ConfigDict or nested dict), as '<key>=<value>: <why>'."""
    tree = _plain(config)
    model = tree.get("model", {}).get("name") if isinstance(tree.get("model"), dict) else None
    if model not in MODEL_NAMES:
        return [f"model.name={model!r}: choose one of {', '.join(MODEL_NAMES)}"]
    declared = options_of(model)
    given = flatten(tree)
    found = []
    for key in given:
        if key not in declared:
            close = difflib.get_close_matches(key, list(declared), n=1)
            found.append(f"{key}: no such option for model {model}" + (f" (did you mean {close[0]}?)" if close else ""))
    for key in declared:
        if key not in given:
            found.append(f"{key}: missing (the config was not made by jaxreviews.options.default_config)")
    for key, option in declared.items():
        if key in given:
            problem = _type_problem(key, option, given[key]) or _value_problem(key, option, given[key])
            if problem:
                found.append(problem)
    if found:
        return found
    return _combinations(given, model)


def _sparse_tables_problems(c: dict) -> list[str]:
    """What optimizer.sparse_tables (rows updated where looked up) cannot be combined with."""
    why = "optimizer.sparse_tables=True: "
    out = []
    if c["optimizer.name"] not in ("adam", "adamw"):
        out.append(why + f"optimizer.name={c['optimizer.name']!r} is not adam or adamw")
    if c["optimizer.accumulation_steps"] > 1:
        out.append(why + "optimizer.accumulation_steps > 1 would sum rows over micro-steps: use a larger batch")
    if c["optimizer.l1"] or c["optimizer.l2"]:
        out.append(why + "optimizer.l1 / l2 penalise every row of a table in every step: use optimizer.weight_decay "
                   "(decays the rows a step updates)")
    if c["optimizer.embedding_weight_decay"] and c["optimizer.embedding_decay_to"] != "zero":
        out.append(why + "optimizer.embedding_decay_to='start' is not supported; decay towards zero")
    if c["optimizer.freeze"]:
        out.append(why + "optimizer.freeze is not supported")
    for name in ("learning_rate", "weight_decay"):
        if c[f"population.{name}"] or c[f"population.{name}_range"]:
            out.append(why + f"a population of {name} is not supported")
    return out


def _combinations(c: dict, model: str) -> list[str]:
    """Rules that involve several options (the single options are valid here)."""
    out = []
    if c["optimizer.sparse_tables"]:
        out.extend(_sparse_tables_problems(c))
    members = c["num_seeds"]
    if c["member_seeds"] and len(c["member_seeds"]) != members:
        out.append(f"member_seeds lists {len(c['member_seeds'])} seeds for num_seeds={members} members")
    for name, where in reference.POPULATION_PARAMETERS.items():
        values, spread = c[f"population.{name}"], c[f"population.{name}_range"]
        if values and spread:
            out.append(f"population.{name} and population.{name}_range: give the members' values or a range, "
                       "not both")
        if values and len(values) != members:
            out.append(f"population.{name} lists {len(values)} values for num_seeds={members} members (a range: "
                       f"population.{name}_range=(low, high))")
        if spread and where == "model" and spread[1] >= 1:
            out.append(f"population.{name}_range={tuple(spread)}: dropout rates must lie in [0, 1)")
        if (values or spread) and where == "model" and model not in reference.TEXT_MODELS:
            out.append(f"population.{name}: model {model} has no dropout rates to vary")
    if c["data.folds"] and c["data.fold"] >= c["data.folds"]:
        out.append(f"data.fold={c['data.fold']}: must be below data.folds={c['data.folds']}")
    if c["data.pretrain_vectors"] and c["data.pretrained_vectors"]:
        out.append("data.pretrain_vectors and data.pretrained_vectors: train vectors or read them, not both")
    if c["optimizer.unfreeze_epoch"] >= 0 and not c["optimizer.freeze"]:
        out.append(f"optimizer.unfreeze_epoch={c['optimizer.unfreeze_epoch']}: nothing is frozen (set "
                   "optimizer.freeze)")
    classification = c["model.head.kind"] in ("classification", "both")
    for key in ("train.early_stopping_metric", "search.metric"):
        if c[key] == "nll" and not classification:
            out.append(f"{key}=nll: a regression head has no likelihood (use rmse, mae or loss)")
    if c["member_data_order"] and c["data.layout"] == "padded" and c["data.num_buckets"] > 1:
        out.append("member_data_order needs one batch shape for every step: use data.layout=auto (packed) or "
                   "data.num_buckets=1")
    if c["train.snapshots"] == 1:
        out.append("train.snapshots=1: a snapshot ensemble needs at least 2 cycles (0 = off)")
    return out


def validate(config) -> None:
    """Raises ConfigError naming every problem of `config` (see `problems`)."""
    found = problems(config)
    if found:
        raise ConfigError("invalid config: " + "; ".join(found))
