"""Sweeps that train (cnn:tiny, in this process): random and TPE, pruning, batched trials equal to the
same trials run alone, K-fold scores, and failures recorded with their reasons (memory budget,
divergence)."""
import json
import os

import jax
import numpy as np
import optuna
import pytest

import jaxreviews
from experiments.configs import cnn, mf
from jaxreviews import options as options_lib
from jaxreviews.tune import space as space_lib, sweep as sweep_lib
from tests.training import CACHE, set_keys

State = optuna.trial.TrialState
LR = {"optimizer.learning_rate": {"log": [1e-3, 1e-1]}}


def tiny(space: dict, **options):
    """cnn:tiny, 2 epochs, the tests' compilation cache, `space` as its search space."""
    config = cnn.get_config("tiny")
    config.train.epochs = 2
    config.train.tensorboard = False
    config.compilation.cache_dir = CACHE
    config.search.space = json.dumps(space)
    return set_keys(config, options)


def mf_tiny(like):
    """mf:tiny with `like`'s search settings (each fold has its own tables: mf compiles fastest)."""
    config = mf.get_config("tiny")
    config.train.epochs, config.train.tensorboard = like.train.epochs, False
    config.compilation.cache_dir, config.search = CACHE, like.search
    return config


def make(tmp_path, config, **options) -> sweep_lib.Sweep:
    return sweep_lib.Sweep(config, str(tmp_path), log=lambda *_: None, **options)


def trials(sweep):
    return sorted(sweep.study.get_trials(), key=lambda t: t.number)


@pytest.mark.parametrize("method", ["random", "tpe"])
def test_random_and_tpe_on_a_tiny_config(tmp_path, method):
    config = tiny({**LR, "model.head_dropout": {"float": [0.0, 0.5]}}, **{"search.startup_trials": 2,
                                                                          "search.pruner": "none"})
    result = sweep_lib.run_sweep(config, str(tmp_path), trials=3, method=method, log=lambda *_: None)
    assert result["complete"] == 3 and result["done"] == 3
    study = result["study"]
    for trial in study.trials:
        assert 1e-3 <= trial.params["optimizer.learning_rate"] <= 1e-1
        assert trial.value == pytest.approx(trial.user_attrs["seed_scores"][0][0])
        summary = json.load(open(tmp_path / "trials" / f"{trial.number:04d}" / "trial.json"))
        assert summary["state"] == "COMPLETE" and summary["value"] == trial.value
    run = jaxreviews.load_run(tmp_path / "trials" / "0002")  # each trial is a run directory
    assert run.members == 0 and len(run.config.population.learning_rate) == 1  # a population of one: one model
    assert os.path.exists(tmp_path / "report.html") and os.path.exists(tmp_path / "report.md")
    # a trial after the first reuses its compiled programs
    results = json.load(open(tmp_path / "trials" / "0002" / "results.json"))
    assert results["compile"]["programs"] == 0 and results["compile"]["cache_reads"] == 0


@pytest.mark.parametrize("space, good, bad", [
    ({"optimizer.learning_rate": {"log": [1e-6, 1e-1]}}, {"optimizer.learning_rate": 0.05},
     {"optimizer.learning_rate": 1e-5}),  # trials in a population of one
    ({"optimizer.eps": {"log": [1e-8, 1e4]}}, {"optimizer.eps": 1e-8}, {"optimizer.eps": 1e4}),  # plain runs
], ids=["population", "plain"])
def test_pruning_stops_a_bad_trial(tmp_path, space, good, bad):
    config = tiny(space, **{"search.metric": "nll", "search.startup_trials": 1, "search.warmup_evaluations": 0,
                            "train.epochs": 3})
    sweep = make(tmp_path, config, method="random")
    sweep.study.enqueue_trial(good)  # learns
    sweep.study.enqueue_trial(bad)  # barely moves: worse than the median at its first evaluation
    sweep.run(2)
    good, bad = trials(sweep)
    assert good.state == State.COMPLETE and bad.state == State.PRUNED
    assert "pruned at evaluation 1" in bad.user_attrs["prune_reason"]
    with open(tmp_path / "trials" / "0001" / "metrics.jsonl") as f:
        steps = [json.loads(line)["step"] for line in f]
    total = json.load(open(tmp_path / "trials" / "0000" / "results.json"))["steps"]
    assert max(steps) < total / 2  # stopped after its first evaluation, of three


def test_batched_trials_equal_the_same_trials_run_alone(tmp_path):
    space = {**LR, "model.head_dropout": {"float": [0.0, 0.5]}}
    points = [{"optimizer.learning_rate": 0.03, "model.head_dropout": 0.1},
              {"optimizer.learning_rate": 0.005, "model.head_dropout": 0.4}]
    runs = {}
    for batch in (2, 1):
        sweep = make(tmp_path / f"batch{batch}", tiny(space), method="random", batch_trials=batch)
        for point in points:
            sweep.study.enqueue_trial(point)
        sweep.run(2)
        runs[batch] = sweep
    assert os.path.isdir(tmp_path / "batch2" / "batches" / "0000-0001")  # one program ...
    assert not os.path.exists(tmp_path / "batch1" / "batches")  # ... against two
    for number in (0, 1):
        batched = jaxreviews.load_run(tmp_path / "batch2" / "trials" / f"{number:04d}")
        alone = jaxreviews.load_run(tmp_path / "batch1" / "trials" / f"{number:04d}")
        assert batched.step == alone.step
        for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(alone.params)[0], jax.tree.leaves(batched.params)):
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-3, atol=1e-4,
                                       err_msg=jax.tree_util.keystr(path))
        assert trials(runs[2])[number].value == pytest.approx(trials(runs[1])[number].value, abs=1e-6)
    # ... and the two trials really differ
    a, b = (jaxreviews.load_run(tmp_path / "batch2" / "trials" / f"{n:04d}").params for n in (0, 1))
    assert not np.allclose(jax.tree.leaves(a)[0], jax.tree.leaves(b)[0])


def test_k_fold_scores_are_the_mean_over_folds_and_seeds(tmp_path):
    config = tiny(LR, **{"train.epochs": 1})
    config = mf_tiny(config)
    sweep = make(tmp_path, config, method="random", folds=2, seeds=2)
    sweep.run(1)
    trial = trials(sweep)[0]
    assert trial.state == State.COMPLETE
    folds = trial.user_attrs["fold_scores"]
    seeds = trial.user_attrs["seed_scores"]
    assert len(folds) == 2 and [len(s) for s in seeds] == [2, 2]
    assert folds == pytest.approx([np.mean(s) for s in seeds])
    assert trial.value == pytest.approx(np.mean(folds))
    assert trial.user_attrs["score_std"] == pytest.approx(np.std(folds, ddof=1))
    for fold in (0, 1):
        run = jaxreviews.load_run(tmp_path / "trials" / "0000" / f"fold-{fold}")
        assert run.members == 2 and run.config.data.folds == 2 and run.config.data.fold == fold


def test_memory_budget_and_divergence_fail_trials_with_their_reasons(tmp_path):
    # a budget no train step fits: failed, not run
    sweep = make(tmp_path / "memory", tiny(LR), method="random", memory_budget="64KiB")
    sweep.run(1)
    trial = trials(sweep)[0]
    assert trial.state == State.FAIL
    reason = trial.user_attrs["fail_reason"]
    assert reason.startswith("memory: the train step needs") and "over the budget of 64.00 KiB" in reason
    assert not os.listdir(tmp_path / "memory" / "trials" / "0000" / "checkpoints" / "latest")  # no step trained
    # a diverging member fails its trial with the step and the cause; its batch-mate completes
    space = {"optimizer.learning_rate": {"log": [1e-3, 1e36]}}
    sweep = make(tmp_path / "diverge", tiny(space), method="random", batch_trials=2)
    sweep.study.enqueue_trial({"optimizer.learning_rate": 1e35})
    sweep.study.enqueue_trial({"optimizer.learning_rate": 0.01})
    sweep.run(2)
    diverged, fine = trials(sweep)
    assert diverged.state == State.FAIL and fine.state == State.COMPLETE
    assert diverged.user_attrs["fail_reason"].startswith("diverged: step ")
    assert "the loss is nan" in diverged.user_attrs["fail_reason"] or "inf" in diverged.user_attrs["fail_reason"]
    assert "learning rate too high (1e+35)" in diverged.user_attrs["fail_reason"]
    report = open(tmp_path / "diverge" / "trials" / "0000" / "trial.json").read()
    assert "diverged" in report


@pytest.mark.slow  # the default space's keys are checked in test_tune_space; this trains two trials
def test_fasttext_sweeps_its_default_space(tmp_path):
    """The fasttext model in a sweep like every model: its default space varies its width."""
    config = options_lib.default_config("fasttext", "tiny")
    config.train.epochs, config.train.tensorboard, config.compilation.cache_dir = 1, False, CACHE
    set_keys(config, {"search.startup_trials": 2, "search.pruner": "none"})
    result = sweep_lib.run_sweep(config, str(tmp_path), trials=2, method="random", log=lambda *_: None)
    assert result["complete"] == 2
    for trial in result["study"].trials:
        width = 2 ** trial.params["model.embed_dim" + space_lib.LOG2_SUFFIX]
        assert 16 <= width <= 128
        assert jaxreviews.load_run(tmp_path / "trials" / f"{trial.number:04d}").config.model.embed_dim == width
