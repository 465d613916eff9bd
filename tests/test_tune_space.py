"""Search spaces, methods, the edge report and K-fold splits, without training: log scales are log,
powers of two are powers of two, a grid runs every point once, the study continues and counts, a
best value at the edge of its range moves the proposed range past it, copies stay in one fold."""
import gzip
import json
import math
import os

import numpy as np
import optuna
import pytest
from scipy import stats

from experiments.configs import cnn
from jaxreviews import options as options_lib
from jaxreviews.data import duplicates, pipeline
from jaxreviews.tune import analysis, methods, report, runner as runner_lib, space as space_lib
from jaxreviews.tune.sweep import Sweep

optuna.logging.set_verbosity(optuna.logging.WARNING)


def draws(spec: dict, method: str, count: int, objective=None) -> list[dict]:
    """`count` trials of `method` over the space `spec` in an in-memory study; values as config values."""
    space = space_lib.parse_space(spec)
    study = optuna.create_study(direction="maximize")
    out = []
    for number in range(count):
        study.sampler = methods.make_sampler(method, space, seed=methods.trial_seed(0, number), startup_trials=10)
        trial = study.ask()
        values = space_lib.suggest(trial, space)
        study.tell(trial, objective(values) if objective else 0.0)
        out.append(values)
    return out


def test_log_scales_really_are_log():
    values = np.array([v["lr"] for v in draws({"lr": {"log": [1e-4, 1e-2]}}, "random", 2000)])
    exponents = np.log10(values)
    assert exponents.min() >= -4 and exponents.max() <= -2
    # evenly spread in log space: each decade gets half, and the exponents pass a uniformity test
    assert abs(np.mean(exponents < -3) - 0.5) < 0.04
    assert stats.kstest(exponents, stats.uniform(loc=-4, scale=2).cdf).pvalue > 0.01
    # ... which a linear range is not: there, nine tenths of the draws lie in the top decade
    linear = np.array([v["x"] for v in draws({"x": {"float": [1e-4, 1e-2]}}, "random", 500)])
    assert np.mean(linear > 1e-3) > 0.85
    grid = space_lib.parse_space({"lr": {"log": [1e-4, 1e-2], "grid": 5}})["lr"].grid(3)
    np.testing.assert_allclose(np.diff(np.log10(grid)), 0.5, rtol=1e-4)


@pytest.mark.parametrize("method", ["random", "tpe"])
def test_powers_of_two_take_only_powers_of_two(method):
    spec = {"train.batch_size": {"pow2": [8, 64]}, "lr": {"log": [1e-4, 1e-2]}}
    values = [v["train.batch_size"] for v in draws(spec, method, 60, objective=lambda v: -abs(v["lr"] - 1e-3))]
    assert set(values) == {8, 16, 32, 64}
    assert all(isinstance(v, int) for v in values)
    parameter = space_lib.parse_space(spec)["train.batch_size"]
    assert parameter.optuna_name == "train.batch_size:log2" and parameter.grid(3) == [3, 4, 5, 6]
    with pytest.raises(ValueError, match="powers of two"):
        space_lib.parse_space({"b": {"pow2": [8, 48]}})


def test_space_errors_name_the_problem():
    config = cnn.get_config("tiny")
    with pytest.raises(ValueError, match="did you mean optimizer.learning_rate"):
        space_lib.check_keys(space_lib.parse_space({"optimizer.learning_rat": {"log": [1e-4, 1e-2]}}), config)
    with pytest.raises(ValueError, match="not a parameter of the space"):
        space_lib.parse_space({"optimizer.momentum": {"float": [0.8, 0.99], "if": {"optimizer.name": "sgd"}}})
    with pytest.raises(ValueError, match="low > 0"):
        space_lib.parse_space({"lr": {"log": [0, 1e-2]}})
    # every config key is searchable, and the default space's keys exist in every model's config
    for name in ("cnn", "han_upa", "bilstm", "fasttext", "mf"):
        module = __import__(f"experiments.configs.{name}", fromlist=["get_config"])
        config = module.get_config(None)
        space_lib.check_keys(space_lib.default_space(config), config)


def test_conditional_parameters_exist_only_under_their_condition():
    spec = {"optimizer.name": {"choice": ["adam", "sgd"]},
            "optimizer.momentum": {"float": [0.8, 0.99], "if": {"optimizer.name": "sgd"}}}
    for values in draws(spec, "random", 40):
        assert ("optimizer.momentum" in values) == (values["optimizer.name"] == "sgd")


# -- the worker loop on a stub trainer ------------------------------------------------------------------

def fake_sweep(tmp_path, spec, *, method, monkeypatch, batch_trials=1, score=None):
    """A Sweep whose runs are scored by `score(overrides)` instead of training."""
    config = cnn.get_config("tiny")
    config.search.space = json.dumps(spec)
    sweep = Sweep(config, str(tmp_path), method=method, batch_trials=batch_trials, log=lambda *_: None)
    trained = []

    def run_program(self, plans, fold, outcomes):
        trained.append([plan.number for plan in plans])
        for plan in plans:
            outcome = outcomes[plan.number]
            value = (score or (lambda o: 0.5))(plan.overrides)
            outcome.scores.append(value)
            outcome.seed_scores.append([value])
            outcome.test.append({"accuracy": value})
            outcome.best_steps.append([1])

    monkeypatch.setattr(runner_lib.Runner, "run_program", run_program)
    return sweep, trained


def test_grid_runs_every_point_once_and_stops(tmp_path, monkeypatch):
    spec = {"optimizer.learning_rate": {"log": [1e-4, 1e-2], "grid": 3},
            "optimizer.name": {"choice": ["adam", "sgd"]},
            "optimizer.momentum": {"float": [0.8, 0.9], "grid": 2, "if": {"optimizer.name": "sgd"}}}
    sweep, trained = fake_sweep(tmp_path, spec, method="grid", monkeypatch=monkeypatch)
    assert methods.grid_size(sweep.space, 3) == 12
    assert sweep.run(5)["done"] == 5  # part of the grid, then the rest in a second command
    sweep2, trained2 = fake_sweep(tmp_path, spec, method="grid", monkeypatch=monkeypatch)
    assert sweep2.run(100)["done"] == 7
    trials = sweep2.study.get_trials()
    assert len(trials) == 12 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert sorted(t.system_attrs["grid_id"] for t in trials) == list(range(12))  # every point, once
    configs = {json.dumps(t.user_attrs["overrides"], sort_keys=True) for t in trials}
    assert len(configs) == 3 * (1 + 2)  # adam's two momentum points are one configuration ...
    same = [t for t in trials if "same_as" in t.user_attrs]
    assert len(same) == 3 and len(trained) + len(trained2) == 9  # ... trained once, its twin reuses the score
    assert all("optimizer.momentum" not in t.user_attrs["overrides"] for t in trials
               if t.user_attrs["overrides"]["optimizer.name"] == "adam")
    assert sweep2.run(3)["done"] == 0  # nothing left


def test_a_continued_study_adds_trials_and_batches_share_shapes(tmp_path, monkeypatch):
    spec = {"optimizer.learning_rate": {"log": [1e-4, 1e-2]}, "train.batch_size": {"pow2": [8, 64]}}
    sweep, trained = fake_sweep(tmp_path, spec, method="random", monkeypatch=monkeypatch, batch_trials=2)
    sweep.run(4)
    sweep2, trained2 = fake_sweep(tmp_path, spec, method="random", monkeypatch=monkeypatch, batch_trials=2)
    sweep2.run(2)
    trials = sweep2.study.get_trials()
    assert len(trials) == 6 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    # a batch's trials share the shape parameter (one program) and differ in the learning rate
    assert [len(group) for group in trained + trained2] == [2, 2, 2]
    for first, second in zip(trials[::2], trials[1::2]):
        assert first.params["train.batch_size:log2"] == second.params["train.batch_size:log2"]
        assert first.params["optimizer.learning_rate"] != second.params["optimizer.learning_rate"]
    # a continued study draws new points (each draw is seeded by the trial's number)
    assert len({t.params["optimizer.learning_rate"] for t in trials}) == 6
    # a study is continued only with the same config and space
    config = cnn.get_config("tiny")
    config.search.space = json.dumps(spec)
    config.train.epochs = 99
    with pytest.raises(ValueError, match="train.epochs"):
        Sweep(config, str(tmp_path), method="random", log=lambda *_: None)


# -- the edge report ------------------------------------------------------------------------------------

def test_best_learning_rate_at_the_edge_moves_the_proposed_range_past_it(tmp_path):
    space = space_lib.parse_space({"optimizer.learning_rate": {"log": [1e-4, 1e-2]},
                                   "model.head_dropout": {"float": [0.0, 0.5]},
                                   "train.batch_size": {"pow2": [8, 64]},
                                   "model.encoder.kind": {"choice": ["lstm", "gru"]}})
    distributions = {p.optuna_name: p.distribution() for p in space}
    study = optuna.create_study(direction="maximize", study_name="edge")
    number = 0
    for lr in np.logspace(-4, -2, 6):
        for dropout in (0.05, 0.15, 0.25, 0.35, 0.45):
            params = {"optimizer.learning_rate": float(lr), "model.head_dropout": dropout,
                      "train.batch_size:log2": 3 + number % 4, "model.encoder.kind": ["lstm", "gru"][number % 2]}
            # better with the learning rate all the way to the top of its range; dropout best at 0.25
            value = 0.5 + 0.1 * (math.log10(lr) + 4) - 2 * (dropout - 0.25) ** 2
            study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, value=value,
                                                      user_attrs={"seconds": 1.0, "test": {"accuracy": value}}))
            number += 1
    found = {f.name: f for f in analysis.findings(study, space)}
    lr = found["optimizer.learning_rate"]
    assert lr.edge == "high" and lr.best == pytest.approx(1e-2)
    assert lr.proposed.high > 1e-2 * 2  # moved past the edge ...
    assert lr.proposed.low > 1e-4  # ... and narrowed from the side the good trials are not on
    dropout = found["model.head_dropout"]
    assert dropout.edge == "" and 0 <= dropout.proposed.low < dropout.best < dropout.proposed.high <= 0.5
    assert found["train.batch_size"].proposed.kind == "pow2"
    assert math.log2(found["train.batch_size"].proposed.low).is_integer()

    written = report.write_report(study, space, str(tmp_path), metric="accuracy",
                                  next_space=str(tmp_path / "next.json"), method="random")
    proposed = space_lib.load_space(str(tmp_path / "next.json"))
    assert proposed["optimizer.learning_rate"].high == lr.proposed.high  # the next sweep takes the file
    page = open(written["html"]).read()
    assert page.count("data:image/png;base64,") == 4 and "http" not in page.replace("http-equiv", "")
    md = open(written["md"]).read()
    assert "yes (high end)" in md and "moved past 0.01" in md
    for name in ("history", "parameters", "parallel", "importance"):
        assert os.path.getsize(tmp_path / "report" / f"{name}.png") > 1000


# -- K-fold splits keep copies together ---------------------------------------------------------------------

def test_group_folds_keep_each_group_in_one_fold():
    rng = np.random.default_rng(1)
    groups = rng.integers(0, 300, 2000)
    folds = duplicates.group_folds(groups, 5, seed=3)
    for group in np.unique(groups):
        assert len(set(folds[groups == group])) == 1
    sizes = np.bincount(folds, minlength=5)
    assert sizes.sum() == 2000 and sizes.max() - sizes.min() < 2 * np.bincount(groups).max() + 2


def test_folds_partition_the_reviews_outside_test_and_keep_copies_together(tmp_path):
    path = tmp_path / "reviews.json.gz"
    rng = np.random.default_rng(0)
    lines = []
    for i in range(120):
        # the text names i with words every split has (x1 y2 z0 = 120), so it decodes the same in every fold
        digits = f"{i:03d}"
        review = {"reviewerID": f"u{i % 17}", "asin": f"p{i % 11}", "overall": float(1 + i % 5),
                  "reviewText": f"x{digits[0]} y{digits[1]} z{digits[2]} {'good' if i % 2 else 'bad'} ."}
        for copy in range(1 + int(rng.integers(0, 3))):  # up to three copies (other products)
            lines.append(json.dumps({**review, "asin": f"p{(i + copy) % 11}"}))
    with gzip.open(path, "wt") as f:
        f.write("\n".join(lines) + "\n")
    config = options_lib.section("data")
    config.path, config.format, config.folds = str(path), "amazon", 3
    plain = pipeline.load_splits(_files(path))
    validations, test_texts = [], None

    def texts(splits, split):
        return {" ".join(" ".join(splits.vocab.decode(sentence)) for sentence in split.arrays.review_tokens(r))
                for r in range(len(split))}
    for fold in range(3):
        config.fold = fold
        splits = pipeline.load_splits(config)
        train, valid = texts(splits, splits.train), texts(splits, splits.validation)
        assert not train & valid  # no copy of a validation review in training
        validations.append(valid)
        test = texts(splits, splits.test)
        assert test_texts is None or test == test_texts  # the test split does not move
        test_texts = test
        assert splits.report["folds"] == {"folds": 3, "fold": fold}
    assert not (validations[0] & validations[1]) and not (validations[1] & validations[2])
    total = sum(pipeline.load_splits(_files(path, folds=3, fold=f)).validation.arrays.ratings.size for f in range(3))
    assert total == len(plain.train) + len(plain.validation)
    with pytest.raises(ValueError, match="0 <= fold < folds"):
        pipeline.load_splits(_files(path, folds=3, fold=3))


def _files(path, **options):
    config = options_lib.section("data")
    config.path, config.format = str(path), "amazon"
    for key, value in options.items():
        config[key] = value
    return config


@pytest.mark.parametrize("method", ["cmaes", "gp"])
def test_cmaes_and_gp_through_the_worker_loop(tmp_path, monkeypatch, method):
    if method == "gp":
        pytest.importorskip("torch", reason="--method=gp needs PyTorch (pip install torch, or .[gp])")
    spec = {"optimizer.learning_rate": {"log": [1e-4, 1e-2]}, "model.head_dropout": {"float": [0.0, 0.5]}}
    sweep, _ = fake_sweep(tmp_path, {**spec}, method=method, monkeypatch=monkeypatch,
                          score=lambda o: -abs(math.log10(o["optimizer.learning_rate"]) + 3) - o["model.head_dropout"])
    sweep.config.search.startup_trials = 3
    sweep.run(8)
    trials = sweep.study.get_trials()
    assert len(trials) == 8 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert all(1e-4 <= t.params["optimizer.learning_rate"] <= 1e-2 for t in trials)


def test_a_study_recorded_before_an_option_existed_continues_at_its_default(tmp_path):
    """A study's recorded config lacks an option added since (train.max_steps): at its default it
    is the same study; at another value the study searches something else."""
    from jaxreviews.tune import study as study_lib
    from jaxreviews.tune.sweep import compared_config

    config = cnn.get_config("tiny")
    url = f"sqlite:///{tmp_path / 'study.db'}"
    storage = study_lib.open_storage(url)
    recorded = compared_config(config)
    del recorded["train.max_steps"]
    attrs = {"config": recorded, "space": {}, "metric": "accuracy", "direction": "maximize", "folds": 0, "seeds": 1}
    study_lib.open_study(storage, "s", direction="maximize", attrs=attrs, url=url)
    study_lib.open_study(storage, "s", direction="maximize", attrs={**attrs, "config": compared_config(config)}, url=url)
    config.train.max_steps = 5
    with pytest.raises(ValueError, match=r"config train.max_steps: 0 -> 5"):
        study_lib.open_study(storage, "s", direction="maximize", attrs={**attrs, "config": compared_config(config)},
                             url=url)
