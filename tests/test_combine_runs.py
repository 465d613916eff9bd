"""Ensembles across runs (jaxreviews.analysis.combine_runs, experiments.ensemble_runs): the same
reviews or a refusal, each member's figures as its run scored them, the average, weights chosen
on validation only."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import jaxreviews
from jaxreviews.analysis import combine_runs
from tests.training import REPO, results, run_here, tiny


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three tiny runs on one split: fasttext, cnn (2 members) and mf (a regression head)."""
    made = {}
    for name, overrides in (("fasttext", {}), ("cnn", {"num_seeds": 2}), ("mf", {"train.epochs": 3})):
        workdir = tmp_path_factory.mktemp(name)
        run_here(workdir, tiny(name, **{"train.epochs": 2, **overrides}))
        made[name] = str(workdir)
    return made


def test_members_score_as_their_runs_and_the_ensemble_is_their_average(runs):
    loaded = [jaxreviews.load_run(runs[name]) for name in ("fasttext", "cnn")]
    combined = combine_runs.combine_runs(loaded, names=["fasttext", "cnn"])
    assert combined["members"] == ["fasttext", "cnn"] and combined["weights"] == [0.5, 0.5]
    for name in ("fasttext", "cnn"):
        for metric in ("accuracy", "macro_f1", "rmse", "mae"):
            assert combined["test"][name][metric] == pytest.approx(results(runs[name])["test"][metric], abs=1e-5)
    # the average by hand, from the members' own predictions
    splits = combine_runs.predictions_lib.load_data(loaded[0])
    members = [combine_runs.run_member(run, splits, name) for run, name in zip(loaded, ("a", "b"))]
    probabilities = (members[0].splits["test"][0] + members[1].splits["test"][0]) / 2
    values = 1.0 + np.arange(probabilities.shape[1])
    ratings = splits.test.arrays.ratings.astype(np.float64)
    expected_rmse = np.sqrt(np.mean((probabilities @ values - ratings) ** 2))
    assert combined["test"]["ensemble"]["rmse"] == pytest.approx(expected_rmse)
    assert combined["test"]["ensemble"]["accuracy"] == pytest.approx(np.mean(probabilities.argmax(1) + 1 == ratings))


def test_a_regression_run_adds_its_rating_and_the_baseline_joins(runs):
    loaded = [jaxreviews.load_run(runs[name]) for name in ("fasttext", "mf")]
    combined = combine_runs.combine_runs(loaded, names=["fasttext", "mf"], text_logreg=True)
    assert combined["members"] == ["fasttext", "mf", "text_logreg"]
    assert "nll" not in combined["test"]["mf"] and "nll" in combined["test"]["ensemble"]
    assert combined["test"]["text_logreg"]["accuracy"] > results(runs["mf"])["baselines"]["majority"]["accuracy"] - 0.2


def test_validation_weights_pick_the_better_member_and_never_read_test():
    ratings = np.array([1.0, 2.0, 3.0, 4.0, 5.0] * 4)
    exact = np.eye(5)[(ratings - 1).astype(int)]
    wrong = np.roll(exact, 2, axis=1)
    good = combine_runs.Member("good", (exact, ratings), (wrong, ratings + 2))  # its test half is bad
    bad = combine_runs.Member("bad", (wrong, ratings + 2), (exact, ratings))
    weights = combine_runs.greedy_weights([good, bad], ratings, (1.0, 5.0), 1.0)
    np.testing.assert_allclose(weights, [1.0, 0.0])  # chosen on validation alone
    ratings_only = [combine_runs.Member(m.name, (None, m.splits["validation"][1]), (None, m.splits["test"][1]))
                    for m in (good, bad)]
    with pytest.raises(ValueError, match="no member has class probabilities"):
        combine_runs.greedy_weights(ratings_only, ratings, (1.0, 5.0), 1.0, metric="nll")
    np.testing.assert_allclose(combine_runs.greedy_weights(ratings_only, ratings, (1.0, 5.0), 1.0), [1.0, 0.0])
    probabilities, rating = combine_runs.average([good, bad], np.array([0.5, 0.5]), "validation")
    np.testing.assert_allclose(rating, ratings + 1)
    np.testing.assert_allclose(probabilities, (exact + wrong) / 2)


def test_runs_of_different_splits_are_refused(runs, tmp_path):
    other = tmp_path / "other-split"
    run_here(other, tiny("fasttext", **{"train.epochs": 1, "data.split_seed": 7}))
    with pytest.raises(ValueError, match=r"not scored on the same reviews.*data.split_seed: 0 vs 7"):
        combine_runs.combine_runs([jaxreviews.load_run(runs["fasttext"]), jaxreviews.load_run(other)])
    with pytest.raises(ValueError, match="two or more"):
        combine_runs.combine_runs([jaxreviews.load_run(runs["fasttext"])])
    pair = [jaxreviews.load_run(runs["fasttext"]), jaxreviews.load_run(runs["cnn"])]
    with pytest.raises(ValueError, match="one distinct name per run"):
        combine_runs.combine_runs(pair, names=["ensemble", "cnn"])
    with pytest.raises(ValueError, match="one distinct name per run"):
        combine_runs.combine_runs(pair, names=["fasttext"])


def test_the_command(runs, tmp_path):
    output = tmp_path / "ensemble.json"
    done = subprocess.run([sys.executable, "-m", "experiments.ensemble_runs", f"--workdir={runs['fasttext']}",
                           f"--workdir={runs['cnn']}", "--selection=validation", f"--output={output}"],
                          cwd=REPO, env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    written = json.loads(output.read_text())
    assert written["selection"] == "validation" and sum(written["weights"]) == pytest.approx(1.0)
    assert "ensemble (validation weights)" in done.stdout and "baseline: majority" in done.stdout
    refused = subprocess.run([sys.executable, "-m", "experiments.ensemble_runs", f"--workdir={runs['fasttext']}",
                              f"--workdir={tmp_path / 'missing'}"], cwd=REPO,
                             env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True, timeout=900)
    assert refused.returncode != 0 and "missing: no such directory" in refused.stderr
    assert "Traceback" not in refused.stderr
