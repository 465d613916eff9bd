"""What an option is: its default (per model where models differ), a one-line meaning, and what
values it accepts. `reference.py` declares every option of a run with these; nothing else in the
library declares a default.

An option's value type is its default's (an int option takes ints, a float option ints or floats,
a tuple option tuples); an option whose default is None (an inferred value) names its `kind`. `choices` and
`check` say which values are allowed; `models` which models have the option (a model section holds
only its model's options). `affects_results=False` marks an option that changes how a run is
carried out but not one number it computes (logging, checkpoint cadence, caches, prefetch): a run
may resume and a study may continue with it changed. `resumable=True` marks one that changes the
results but that a stopped run may still continue with (more epochs: it trains on, and says so).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

# The model names. The options of a model section depend on the model (reference.MODEL_OPTIONS).
MODEL_NAMES = ("cnn", "rnn", "bilstm", "han", "han_upa", "fasttext", "mf")
TEXT_MODELS = ("cnn", "rnn", "bilstm", "han", "han_upa", "fasttext")
FLAT_RECURRENT = ("rnn", "bilstm")
HIERARCHICAL = ("han", "han_upa")


@dataclasses.dataclass(frozen=True)
class ByModel:
    """A default that differs by model: `ByModel(0.3, cnn=0.5)`."""

    default: Any
    overrides: tuple[tuple[str, Any], ...] = ()

    def __init__(self, default: Any, **overrides):
        unknown = set(overrides) - set(MODEL_NAMES)
        if unknown:
            raise ValueError(f"ByModel: unknown models {sorted(unknown)}")
        object.__setattr__(self, "default", default)
        object.__setattr__(self, "overrides", tuple(sorted(overrides.items())))

    def for_model(self, model: str) -> Any:
        return dict(self.overrides).get(model, self.default)


@dataclasses.dataclass(frozen=True)
class Check:
    """A condition on an option's value, with the phrase an error shows ("must be > 0")."""

    test: Callable[[Any], bool]
    phrase: str

    def __call__(self, value) -> bool:
        return bool(self.test(value))


def greater_than(low: float) -> Check:
    return Check(lambda v: v > low, f"must be > {low:g}")


def at_least(low: float) -> Check:
    return Check(lambda v: v >= low, f"must be >= {low:g}")


def between(low: float, high: float, *, high_open: bool = False) -> Check:
    bracket = ")" if high_open else "]"
    return Check(lambda v: low <= v < high if high_open else low <= v <= high,
                 f"must lie in [{low:g}, {high:g}{bracket}")


def all_of(check: Check) -> Check:
    """`check` on every element of a tuple."""
    return Check(lambda values: all(check(v) for v in values), f"every value {check.phrase}")


POSITIVE = greater_than(0)
NON_NEGATIVE = at_least(0)
COUNT = at_least(1)  # a count of at least one
RATE = between(0.0, 1.0, high_open=True)  # dropout-like fractions
FINITE = Check(lambda v: math.isfinite(v), "must be finite")


@dataclasses.dataclass(frozen=True)
class Option:
    """One option: default, meaning and what it accepts (see the module docstring)."""

    default: Any
    meaning: str
    choices: tuple = ()
    check: Check | None = None
    models: tuple[str, ...] = ()  # () = every model that has the section
    kind: type | None = None  # the value type when the default is None
    affects_results: bool = True
    resumable: bool = False

    def default_for(self, model: str) -> Any:
        return self.default.for_model(model) if isinstance(self.default, ByModel) else self.default

    def applies_to(self, model: str) -> bool:
        return not self.models or model in self.models

    def __post_init__(self):
        example = self.default.default if isinstance(self.default, ByModel) else self.default
        if example is None and self.kind is None:
            raise TypeError(f"option {self.meaning!r}: a default of None needs `kind`")

    @property
    def nullable(self) -> bool:
        return self.kind is not None

    @property
    def value_type(self) -> type:
        if self.kind is not None:
            return self.kind
        example = self.default.default if isinstance(self.default, ByModel) else self.default
        return type(example)


def walk(tree: dict, prefix: str = ""):
    """(dotted key, Option) of a nested dict of Options, in declaration order."""
    for name, value in tree.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict):
            yield from walk(value, key + ".")
        else:
            yield key, value
