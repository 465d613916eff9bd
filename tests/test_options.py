"""The option reference: one definition of every option, presets as overlays, `validate` before
any data is read, docs/options.md generated from it, and one declared set of keys that do not
change results."""
import os
import subprocess
import sys

import pytest

from jaxreviews import options
from jaxreviews.options import reference
from jaxreviews.options.schema import MODEL_NAMES, walk
from tests.training import REPO


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_every_default_and_preset_validates(model):
    options.validate(options.default_config(model))
    for name, preset in options.PRESETS.items():
        try:
            preset.values(model)
        except ValueError:  # a preset for other models (svdpp: mf only) says so
            with pytest.raises(ValueError, match=f"preset {name} is for"):
                options.default_config(model, name)
            continue
        options.validate(options.default_config(model, ["tiny", name]))


def test_the_config_files_are_the_reference_defaults():
    """`make run`'s model is `models.default_model_config("han_upa")`: one set of defaults."""
    from experiments.configs import cnn, han_upa, mf, svdpp, transformer
    from jaxreviews import models

    assert han_upa.get_config().to_dict() == options.default_config("han_upa").to_dict()
    assert han_upa.get_config().model.to_dict() == models.default_model_config("han_upa").to_dict()
    assert cnn.get_config("tiny").to_dict() == options.default_config("cnn", "tiny").to_dict()
    assert mf.get_config().to_dict() == options.default_config("mf").to_dict()
    assert svdpp.get_config().model.implicit_feedback and svdpp.get_config().model.l2_implicit == 0.03
    assert transformer.get_config("han").model.word_encoder.kind == "transformer"


def test_docs_options_md_is_current():
    done = subprocess.run([sys.executable, os.path.join(REPO, "tools", "options_doc.py"), "--check"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr + " (run python tools/options_doc.py)"
    text = open(os.path.join(REPO, "docs", "options.md")).read()
    for key, option in walk(reference.OPTIONS):
        assert f"| `{key}` |" in text and option.meaning.replace("|", "/") in text


@pytest.mark.parametrize("key, value, message", [
    ("optimizer.learning_rate", 0.0, "optimizer.learning_rate=0.0: must be > 0"),
    ("optimizer.learning_rate", -0.1, "optimizer.learning_rate=-0.1: must be > 0"),
    ("train.epochs", 0, "train.epochs=0: must be >= 1"),
    ("train.batch_size", 0, "train.batch_size=0: must be >= 1"),
    ("train.batch_size", -4, "train.batch_size=-4: must be >= 1"),
    ("num_seeds", 0, "num_seeds=0: must be >= 1"),
    ("model.head_dropout", 1.0, "model.head_dropout=1.0: must lie in [0, 1)"),
    ("optimizer.name", "adamax", "optimizer.name='adamax': choose one of adam, adamw, sgd, adagrad, rmsprop"),
    ("train.early_stopping_metric", "f1", "choose one of accuracy, macro_f1, rmse, mae, loss, nll"),
    ("data.split_fractions", (0.8, 0.3, 0.1), "must be three fractions >= 0 that add up to 1"),
    ("data.rating_range", (5.0, 1.0), "must be (low, high) with low < high"),
    ("train.epochs", 2.5, "train.epochs=2.5: expected int, got float"),
    ("train.tensorboard", "yes", "expected bool, got str"),
    ("data.folds", 1, "data.folds=1: must be 0 (off) or >= 2"),
])
def test_validate_names_each_bad_value(key, value, message):
    config = options.default_config("han_upa").to_dict()  # as a hand-made config: a ConfigDict keeps types itself
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
        node = node[part]
    node[leaf] = value
    with pytest.raises(options.ConfigError, match="invalid config: .*" + _escaped(message)):
        options.validate(config)


def _escaped(text: str) -> str:
    import re
    return re.escape(text)


def test_validate_finds_unknown_and_missing_keys_and_combinations():
    config = options.default_config("cnn").to_dict()
    config["optimizer"]["learning_rat"] = 0.1  # a typo a hand-made config could have
    del config["train"]["patience"]
    found = options.problems(config)
    assert "optimizer.learning_rat: no such option for model cnn (did you mean optimizer.learning_rate?)" in found
    assert any(p.startswith("train.patience: missing") for p in found)
    config = options.default_config("mf")
    config.train.early_stopping_metric = "nll"
    config.data.folds, config.data.fold = 3, 3
    config.optimizer.unfreeze_epoch = 2
    found = options.problems(config)
    assert "train.early_stopping_metric=nll: a regression head has no likelihood (use rmse, mae or loss)" in found
    assert "data.fold=3: must be below data.folds=3" in found
    assert "optimizer.unfreeze_epoch=2: nothing is frozen (set optimizer.freeze)" in found
    with pytest.raises(options.ConfigError, match="model.name='transformer': choose one of"):
        options.validate({"model": {"name": "transformer"}})


def test_no_effect_and_resumable_keys_are_declared_once():
    assert {"train.log_every_steps", "train.checkpoint_every_steps", "train.keep_checkpoints", "train.prefetch",
            "train.tensorboard", "compilation.cache_dir", "distributed", "mesh.model"} <= set(options.NO_EFFECT_KEYS)
    assert not {"optimizer.learning_rate", "train.batch_size", "seed", "data.shuffle_seed"} & set(options.NO_EFFECT_KEYS)
    assert set(options.RESUMABLE_KEYS) == {"train.epochs", "train.patience", "train.max_steps"}
    from jaxreviews.tune.sweep import compared_config
    compared = compared_config(options.default_config("cnn"))
    assert not set(compared) & set(options.NO_EFFECT_KEYS) and "optimizer.learning_rate" in compared


def test_choices_agree_with_the_modules_that_implement_them():
    from jaxreviews.data import readers, vocab
    from jaxreviews.models import heads, layers, recurrent, text
    from jaxreviews.train import members, optimizers
    from jaxreviews.tune import methods

    assert reference.INITIALIZERS == tuple(sorted(layers.INITIALIZERS))
    assert reference.ACTIVATIONS == tuple(sorted(layers.ACTIVATIONS))
    assert reference.NORMS == layers.NORMS
    assert reference.ENCODER_KINDS == text.ENCODER_KINDS
    assert set(reference.INPUT_PROJECTIONS) == {"auto", *recurrent.PROJECTIONS}
    assert reference.POOLINGS == recurrent.POOLINGS
    assert reference.HEAD_KINDS == heads.KINDS and reference.RATING_ACTIVATIONS == heads.RATING_ACTIVATIONS
    assert reference.OPTIMIZERS == optimizers.OPTIMIZERS and reference.SCHEDULES == optimizers.SCHEDULES
    assert reference.FORMATS == ("", *readers.FORMATS)
    assert reference.VECTOR_PROCESSING == vocab.VECTOR_PROCESSING
    assert reference.MEMBER_EXECUTIONS == members.EXECUTIONS
    assert reference.SEARCH_METHODS == methods.METHODS and reference.PRUNERS == methods.PRUNERS


def test_population_values_are_lists_on_the_command_line(tmp_path):
    """`--config.population.learning_rate="(1e-3, 3e-3)"` reaches the config as a tuple of floats
    (no string parsed later), and an old-style string range is refused by the flag parser."""
    done = subprocess.run([sys.executable, "-c", "\n".join([
        "import sys; from absl import app, flags; from ml_collections import config_flags",
        f"config_flags.DEFINE_config_file('config', '{REPO}/experiments/configs/cnn.py')",
        "def main(_): print(repr(flags.FLAGS.config.population.learning_rate)); "
        "from jaxreviews import options; options.validate(flags.FLAGS.config)",
        "app.run(main)"]), "--config.num_seeds=2", "--config.population.learning_rate=(1e-3, 3e-3)"],
        cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(0.001, 0.003)"
