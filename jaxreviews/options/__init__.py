"""Every option of a run in one place (`reference`), presets as overlays on it (`presets`), and
`validate(config)`, which finds every problem before any data is read.

    config = options.default_config("han_upa")                   # what `make run` trains
    config = options.default_config("cnn", "tiny,musical_instruments")
    options.validate(config)                                      # ConfigError naming each bad key

The experiment config files (experiments/configs/*.py) are one call of `default_config` each;
docs/options.md is generated from here (tools/options_doc.py). `NO_EFFECT_KEYS` are the options
that do not change what a run computes (a run may resume, a study continue, with them changed);
`RESUMABLE_KEYS` change the results but a stopped or finished run may continue with a new value.
"""
from __future__ import annotations

import json

import ml_collections

from jaxreviews.options import presets as presets_lib, reference
from jaxreviews.options.presets import PRESETS
from jaxreviews.options.schema import MODEL_NAMES, TEXT_MODELS, Option, walk
from jaxreviews.options.validation import ConfigError, flatten, options_of, problems, validate

__all__ = ["ConfigError", "MODEL_NAMES", "NO_EFFECT_KEYS", "PRESETS", "RESUMABLE_KEYS", "TEXT_MODELS", "Option",
           "apply_presets", "default_config", "flatten", "options_of", "problems", "section", "validate",
           "with_defaults"]

NO_EFFECT_KEYS = tuple(key for key, option in walk(reference.OPTIONS) if not option.affects_results)
RESUMABLE_KEYS = tuple(key for key, option in walk(reference.OPTIONS) if option.resumable)


def _set(config: ml_collections.ConfigDict, key: str, value) -> None:
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
        node = node[part]
    if leaf not in node:
        raise KeyError(f"{key}: not an option of model {config.model.name!r}")
    node[leaf] = tuple(value) if isinstance(value, list) else value


def _tree(model: str) -> dict:
    tree: dict = {}
    for key, option in options_of(model).items():
        *parents, leaf = key.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = option.default_for(model)
    tree["model"]["name"] = model
    return tree


def default_config(model: str = "han_upa", presets: str | list[str] | tuple[str, ...] = ()) -> ml_collections.ConfigDict:
    """Every option of `model` at its default, then `presets` ("tiny,musical_instruments" or a list)."""
    if model not in MODEL_NAMES:
        raise ConfigError(f"unknown model {model!r}; choose one of {', '.join(MODEL_NAMES)}")
    tree = _tree(model)
    config = ml_collections.ConfigDict()
    for key, value in flatten(tree).items():  # typed placeholders keep None-valued options overridable
        option = reference_option(key)
        _assign(config, key, value, option)
    return apply_presets(config, presets)


def with_defaults(flat: dict, keys=None) -> dict:
    """A flat saved config (config.json, a study's record) with the options it lacks (of `keys`,
    default all) at their defaults for its model: a run saved before an option existed ran with its
    default (the defaults keep earlier behaviour), so comparing it with today's config must not
    see a change."""
    model = flat.get("model.name")
    if model not in MODEL_NAMES:
        return flat
    defaults = {k: v for k, v in flatten(json.loads(default_config(model).to_json_best_effort())).items()
                if k not in flat and (keys is None or k in keys)}
    return {**flat, **defaults}


def _assign(config: ml_collections.ConfigDict, key: str, value, option: Option) -> None:
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
        if part not in node:
            node[part] = ml_collections.ConfigDict()
        node = node[part]
    if value is None:
        node[leaf] = ml_collections.config_dict.placeholder(option.value_type)
    else:
        node[leaf] = value


def reference_option(key: str) -> Option:
    node = reference.OPTIONS
    for part in key.split("."):
        node = node[part]
    return node


def apply_presets(config: ml_collections.ConfigDict, presets: str | list[str] | tuple[str, ...] = ()):
    """`config` with each preset's values set, in order (in place; returned for chaining)."""
    names = [p for p in (presets.split(",") if isinstance(presets, str) else presets) if p]
    for name in names:
        for key, value in presets_lib.preset_values(name, config.model.name).items():
            _set(config, key, value)
    return config


def section(name: str, model: str = "han_upa") -> ml_collections.ConfigDict:
    """One section of the defaults (`section("optimizer")`), e.g. for a library call's config."""
    return default_config(model)[name]
