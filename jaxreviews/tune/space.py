"""Search spaces: which config keys a sweep varies, on which scale, and when.

A space is a JSON object (a file, or the text itself, in `--config.search.space`; `""` is the
model's default space, `default_space`). Each entry names a parameter and how it is drawn:

    {
      "optimizer.learning_rate": {"log": [1e-4, 1e-2]},             log-uniform float
      "model.head_dropout":      {"float": [0.0, 0.5]},              uniform float
      "train.batch_size":        {"pow2": [8, 64]},                  8, 16, 32 or 64
      "model.word_encoder.num_layers": {"int": [1, 5]},              1, 2, 3, 4 or 5
      "model.word_encoder.kind": {"choice": ["lstm", "gru"]},        categorical
      "optimizer.name":          {"choice": ["adam", "sgd"]},
      "optimizer.momentum":      {"float": [0.8, 0.99], "if": {"optimizer.name": "sgd"}},
      "hidden_size": {"pow2": [32, 256],
                      "keys": ["model.word_encoder.hidden_size", "model.sentence_encoder.hidden_size"]}
    }

- The name is the config key it sets (any `--config.` key: a sweep refuses a key the config does
  not have), or any name with `"keys"`: the config keys that all take the value.
- `"log"` and `"float"` ranges take `"grid": N` (default `search.grid_points`): the N points,
  evenly spaced on the parameter's scale, that `--method=grid` tries. Ints, powers of two and
  choices are tried at every value.
- `"if": {"key": value}` (or a list of values): the parameter exists only when the parameter
  `key` has that value (momentum only for sgd); it is neither drawn nor set otherwise.

Optuna sees a power of two as its exponent (the parameter `"<name>:log2"`, an int), so that TPE and
GP model it on its own scale; everything else keeps its name. `suggest` draws a trial's values in
the order of the space (a condition's parameter first) and returns them as config overrides.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import math
import os
from typing import Any

import ml_collections

KINDS = ("log", "float", "int", "pow2", "choice")
LOG2_SUFFIX = ":log2"


@dataclasses.dataclass(frozen=True)
class Parameter:
    name: str
    kind: str  # log | float | int | pow2 | choice
    low: float | None = None
    high: float | None = None
    choices: tuple = ()
    keys: tuple[str, ...] = ()
    grid_points: int = 0  # float ranges: points in a grid; 0 = search.grid_points
    condition: tuple[tuple[str, tuple], ...] = ()  # ((parameter name, allowed values), ...)

    @property
    def optuna_name(self) -> str:
        return self.name + LOG2_SUFFIX if self.kind == "pow2" else self.name

    @property
    def log_scale(self) -> bool:
        """Plotted and proposed on a log scale."""
        return self.kind in ("log", "pow2")

    @property
    def numeric(self) -> bool:
        return self.kind != "choice"

    def distribution(self):
        import optuna

        if self.kind == "log":
            return optuna.distributions.FloatDistribution(self.low, self.high, log=True)
        if self.kind == "float":
            return optuna.distributions.FloatDistribution(self.low, self.high)
        if self.kind == "int":
            return optuna.distributions.IntDistribution(int(self.low), int(self.high))
        if self.kind == "pow2":
            return optuna.distributions.IntDistribution(int(math.log2(self.low)), int(math.log2(self.high)))
        return optuna.distributions.CategoricalDistribution(list(self.choices))

    def value(self, optuna_value):
        """The config value of Optuna's value (2 ** exponent for a power of two)."""
        if self.kind == "pow2":
            return 2 ** int(optuna_value)
        if self.kind == "int":
            return int(optuna_value)
        if self.kind in ("log", "float"):
            return float(optuna_value)
        return optuna_value

    def grid(self, default_points: int) -> list:
        """Optuna's values that `--method=grid` tries."""
        if self.kind == "choice":
            return list(self.choices)
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1))
        if self.kind == "pow2":
            return list(range(int(math.log2(self.low)), int(math.log2(self.high)) + 1))
        count = self.grid_points or default_points
        if count == 1:
            return [self.low if self.kind == "float" else math.sqrt(self.low * self.high)]
        if self.kind == "log":
            a, b = math.log(self.low), math.log(self.high)
            return [float(f"{math.exp(a + (b - a) * i / (count - 1)):.6g}") for i in range(count)]
        return [float(f"{self.low + (self.high - self.low) * i / (count - 1):.6g}") for i in range(count)]

    def to_json(self) -> dict:
        spec: dict[str, Any] = {self.kind: list(self.choices) if self.kind == "choice" else
                                [_number(self.low), _number(self.high)]}
        if self.keys != (self.name,):
            spec["keys"] = list(self.keys)
        if self.grid_points:
            spec["grid"] = self.grid_points
        if self.condition:
            spec["if"] = {name: list(values) if len(values) > 1 else values[0] for name, values in self.condition}
        return spec


def _number(x: float):
    return int(x) if float(x).is_integer() and abs(x) >= 1 else float(f"{x:.6g}")


@dataclasses.dataclass(frozen=True)
class Space:
    parameters: tuple[Parameter, ...]

    def __iter__(self):
        return iter(self.parameters)

    def __len__(self) -> int:
        return len(self.parameters)

    def __getitem__(self, name: str) -> Parameter:
        for parameter in self.parameters:
            if parameter.name == name:
                return parameter
        raise KeyError(name)

    def names(self) -> list[str]:
        return [p.name for p in self.parameters]

    def by_optuna_name(self) -> dict[str, Parameter]:
        return {p.optuna_name: p for p in self.parameters}

    def to_json(self) -> dict:
        return {p.name: p.to_json() for p in self.parameters}

    def dumps(self) -> str:
        """The space as a JSON file: one parameter a line."""
        lines = [f"  {json.dumps(name)}: {json.dumps(spec)}" for name, spec in self.to_json().items()]
        return "{\n" + ",\n".join(lines) + "\n}"


def parse_space(spec: dict) -> Space:
    """A `Space` from the JSON object described in the module docstring, checked."""
    if not isinstance(spec, dict) or not spec:
        raise ValueError(f"a search space is a non-empty JSON object of parameters, got {spec!r}")
    parameters = []
    for name, entry in spec.items():
        if not isinstance(entry, dict):
            raise ValueError(f"search space: {name}: expected an object such as {{\"log\": [1e-4, 1e-2]}}, got {entry!r}")
        kinds = [k for k in KINDS if k in entry]
        unknown = set(entry) - set(KINDS) - {"keys", "grid", "if"}
        if len(kinds) != 1 or unknown:
            raise ValueError(f"search space: {name}: give exactly one of {', '.join(KINDS)} (and optionally keys, "
                             f"grid, if), got {sorted(entry)}")
        kind = kinds[0]
        keys = tuple(entry.get("keys") or (name,))
        condition = tuple((key, tuple(v if isinstance(v, list) else [v])) for key, v in (entry.get("if") or {}).items())
        if kind == "choice":
            choices = entry[kind]
            if not isinstance(choices, list) or not choices:
                raise ValueError(f"search space: {name}: choice needs a non-empty list, got {choices!r}")
            parameters.append(Parameter(name, kind, choices=tuple(choices), keys=keys, condition=condition))
            continue
        bounds = entry[kind]
        if not (isinstance(bounds, list) and len(bounds) == 2 and all(isinstance(b, (int, float)) for b in bounds)):
            raise ValueError(f"search space: {name}: {kind} needs [low, high], got {bounds!r}")
        low, high = float(bounds[0]), float(bounds[1])
        if not low < high:
            raise ValueError(f"search space: {name}: {kind} [{low:g}, {high:g}] needs low < high")
        if kind == "log" and low <= 0:
            raise ValueError(f"search space: {name}: a log range needs low > 0, got {low:g}")
        if kind == "int" and not (low.is_integer() and high.is_integer()):
            raise ValueError(f"search space: {name}: int [{low:g}, {high:g}] needs whole bounds")
        if kind == "pow2":
            for bound in (low, high):
                if bound < 1 or not math.log2(bound).is_integer():
                    raise ValueError(f"search space: {name}: pow2 bounds must be powers of two, got {bound:g}")
        grid = int(entry.get("grid", 0))
        if grid < 0:
            raise ValueError(f"search space: {name}: grid must be a positive number of points, got {grid}")
        parameters.append(Parameter(name, kind, low=low, high=high, keys=keys, grid_points=grid, condition=condition))
    names = {p.name for p in parameters}
    ordered, placed = [], set()
    while len(ordered) < len(parameters):  # a condition's parameter before the parameters it enables
        progress = False
        for p in parameters:
            if p.name in placed:
                continue
            missing = [key for key, _ in p.condition if key not in names]
            if missing:
                raise ValueError(f"search space: {p.name}: its condition names {missing[0]!r}, which is not a "
                                 f"parameter of the space ({', '.join(sorted(names))})")
            if all(key in placed for key, _ in p.condition):
                ordered.append(p)
                placed.add(p.name)
                progress = True
        if not progress:
            raise ValueError("search space: the conditions are circular: "
                             + ", ".join(p.name for p in parameters if p.name not in placed))
    return Space(tuple(ordered))


def load_space(text: str, config: ml_collections.ConfigDict | None = None) -> Space:
    """The space of `search.space`: a JSON file's path, the JSON text, or "" (the default space
    of `config`'s model); checked against `config`'s keys when given."""
    text = (text or "").strip()
    if not text:
        if config is None:
            raise ValueError("an empty search space needs the config to take the default from")
        space = default_space(config)
    elif text.startswith("{"):
        space = parse_space(json.loads(text))
    else:
        path = os.path.expanduser(text)
        if not os.path.exists(path):
            raise FileNotFoundError(f"search.space={text!r}: no such file (give a JSON file or the JSON text)")
        with open(path) as f:
            try:
                space = parse_space(json.load(f))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{error.lineno}: not JSON: {error.msg}") from None
    if config is not None:
        check_keys(space, config)
    return space


def default_space(config: ml_collections.ConfigDict) -> Space:
    """The issue's scales for the model of `config`: learning rate log-uniform 1e-4..1e-2, batch
    size 8..64 and hidden size 32..256 in powers of two, layers 1..3 linear, the recurrent cell a
    choice, head dropout uniform 0..0.5 (mf: factors and their L2 instead of the text model's;
    fasttext: its embedding width 16..128 and batches of 64..1024)."""
    model = config.model
    spec: dict[str, dict] = {"optimizer.learning_rate": {"log": [1e-4, 1e-2]}}
    if model.name == "mf":
        spec["train.batch_size"] = {"pow2": [256, 8192]}
        spec["model.factors"] = {"pow2": [8, 128]}
        spec["model.l2_factors"] = {"log": [1e-3, 1e-1]}
        return parse_space(spec)
    # fasttext trains in large batches (its tables dominate a step): its default 256 in the middle
    spec["train.batch_size"] = {"pow2": [64, 1024]} if model.name == "fasttext" else {"pow2": [8, 64]}
    encoders = [f"model.{name}" for name in ("encoder", "word_encoder", "sentence_encoder") if name in model]
    if encoders:
        spec["hidden_size"] = {"pow2": [32, 256], "keys": [f"{e}.hidden_size" for e in encoders]}
        spec["num_layers"] = {"int": [1, 3], "keys": [f"{e}.num_layers" for e in encoders]}
        spec["cell"] = {"choice": ["lstm", "gru"], "keys": [f"{e}.kind" for e in encoders]}
    elif "num_filters" in model:
        spec["model.num_filters"] = {"pow2": [32, 256]}
    elif "ngram_buckets" in model:  # fasttext: the width of its averaged embeddings
        spec["model.embed_dim"] = {"pow2": [16, 128]}
    spec["model.head_dropout"] = {"float": [0.0, 0.5]}
    return parse_space(spec)


def get_key(config: ml_collections.ConfigDict, key: str):
    node = config
    for part in key.split("."):
        node = node[part]
    return node


def check_keys(space: Space, config: ml_collections.ConfigDict) -> None:
    """Every key a parameter sets is a key of `config` (else a ValueError with the nearest keys)."""
    flat = _flat_keys(config.to_dict())
    for parameter in space:
        for key in parameter.keys:
            if key not in flat:
                close = difflib.get_close_matches(key, flat, n=3, cutoff=0.6)
                hint = f"; did you mean {' or '.join(close)}?" if close else ""
                raise ValueError(f"search space: {parameter.name}: {key!r} is not a key of the config{hint}")
            if isinstance(get_key(config, key), ml_collections.ConfigDict):
                raise ValueError(f"search space: {parameter.name}: {key!r} is a section of the config, not a value")


def _flat_keys(tree: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in tree.items():
        keys.append(prefix + key)
        if isinstance(value, dict):
            keys += _flat_keys(value, f"{prefix}{key}.")
    return keys


def active(parameter: Parameter, values: dict) -> bool:
    """Whether `parameter`'s condition holds for the parameter values drawn so far."""
    return all(name in values and values[name] in allowed for name, allowed in parameter.condition)


def suggest(trial, space: Space) -> dict[str, Any]:
    """{parameter name: config value} of an Optuna trial: each active parameter drawn on its scale."""
    values: dict[str, Any] = {}
    for parameter in space:
        if active(parameter, values):
            values[parameter.name] = parameter.value(_draw(trial, parameter))
    return values


def _draw(trial, parameter: Parameter):
    name, kind = parameter.optuna_name, parameter.kind
    if kind in ("log", "float"):
        return trial.suggest_float(name, parameter.low, parameter.high, log=kind == "log")
    if kind in ("int", "pow2"):
        distribution = parameter.distribution()
        return trial.suggest_int(name, distribution.low, distribution.high)
    return trial.suggest_categorical(name, list(parameter.choices))


def values_of(space: Space, optuna_params: dict) -> dict[str, Any]:
    """{parameter name: config value} of a finished trial's Optuna parameters."""
    by_name = space.by_optuna_name()
    return {by_name[name].name: by_name[name].value(raw) for name, raw in optuna_params.items() if name in by_name}


def overrides(space: Space, values: dict[str, Any]) -> dict[str, Any]:
    """{config key: value} of a trial's parameter values."""
    out = {}
    for parameter in space:
        if parameter.name in values:
            for key in parameter.keys:
                out[key] = values[parameter.name]
    return out


def apply(config: ml_collections.ConfigDict, key_values: dict[str, Any]) -> ml_collections.ConfigDict:
    """A copy of `config` (unlocked) with `{key: value}` set; a value takes the type of the key's
    current value where it can (an int key gets an int)."""
    config = copy.deepcopy(config)
    for key, value in key_values.items():
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            node = node[part]
        current = node[leaf] if leaf in node else None
        if isinstance(current, bool) or current is None:
            node[leaf] = value
        elif isinstance(current, int) and isinstance(value, (int, float)) and float(value).is_integer():
            node[leaf] = int(value)
        elif isinstance(current, float) and isinstance(value, (int, float)):
            node[leaf] = float(value)
        else:
            node[leaf] = value
    return config
