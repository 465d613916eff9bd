"""Finished runs, used: load_run, predict, evaluate, and the experiments.predict / evaluate commands."""
import dataclasses
import json
import os

import numpy as np
import pytest

import jaxreviews
from jaxreviews.data import readers, synthetic
from tests.test_train_loop import REPO, results, train


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A training file and a test file of the tiny synthetic corpus; a fifth of the test reviews are
    by users the training file never has."""
    folder = tmp_path_factory.mktemp("files")
    reviews = synthetic.generate(synthetic.default_spec("tiny")).reviews
    train_reviews, test_reviews = reviews[:480], reviews[480:]
    test_reviews = [dataclasses.replace(r, user=f"new-{i}") if i % 5 == 0 else r for i, r in enumerate(test_reviews)]
    readers.write_tang(folder / "train.txt", train_reviews)
    readers.write_tang(folder / "test.txt", test_reviews)
    return folder


def train_on_files(workdir, files, config="han_upa", *flags):
    done = train(workdir, "--config.data.name=files", f"--config.data.train={files / 'train.txt'}",
                 f"--config.data.test={files / 'test.txt'}", "--config.data.format=tang",
                 "--config.train.epochs=2", *flags, config=f"--config={REPO}/experiments/configs/{config}.py:tiny")
    assert done.returncode == 0, done.stdout + done.stderr
    return workdir


@pytest.fixture(scope="module")
def han_upa_run(tmp_path_factory, files):
    return train_on_files(tmp_path_factory.mktemp("han_upa"), files)


def test_evaluating_the_test_file_gives_the_metrics_of_results_json(han_upa_run, files):
    run = jaxreviews.load_run(han_upa_run)
    evaluated = run.evaluate(files / "test.txt")
    expected = results(han_upa_run)
    for key in ("accuracy", "macro_f1", "rmse", "mae", "nll", "reviews"):
        assert evaluated["metrics"][key] == pytest.approx(expected["test"][key], rel=1e-5, abs=1e-6), key
    for key in ("majority", "mean_rating"):
        assert evaluated["baselines"][key]["rmse"] == pytest.approx(expected["baselines"][key]["rmse"], rel=1e-6)
    assert evaluated["data"]["unseen_user"] == expected["data"]["test"]["unseen_user"] >= 24
    assert evaluated["data"]["oov_tokens"] == expected["data"]["test"]["oov_tokens"]


def test_predictions_are_per_review_in_order_and_consistent(han_upa_run, files):
    run = jaxreviews.load_run(han_upa_run)
    test_reviews = list(readers.read_reviews(files / "test.txt", "tang"))
    predictions = list(run.predict(files / "test.txt"))
    assert [(p["user"], p["product"], p["rating"]) for p in predictions] == \
           [(r.user, r.product, r.rating) for r in test_reviews]
    ratings = np.arange(1.0, 6.0)
    for p in predictions:
        probabilities = np.asarray(p["probabilities"])
        assert probabilities.sum() == pytest.approx(1.0, abs=1e-4)
        assert p["predicted_class"] == int(np.argmax(probabilities))
        assert p["predicted_class_rating"] == 1.0 + p["predicted_class"]
        assert p["expected_rating"] == pytest.approx(float(probabilities @ ratings), abs=1e-3)
        assert p["unseen_user"] == p["user"].startswith("new-")
    accuracy = np.mean([p["predicted_class_rating"] == p["rating"] for p in predictions])
    assert accuracy == pytest.approx(results(han_upa_run)["test"]["accuracy"])


def test_predictions_stream_in_chunks_with_the_same_numbers(han_upa_run, files):
    run = jaxreviews.load_run(han_upa_run)
    whole = list(run.predict(files / "test.txt"))
    chunked = list(run.predict(files / "test.txt", chunk_size=7))
    assert len(chunked) == len(whole)
    for a, b in zip(whole, chunked):
        assert a["user"] == b["user"] and a["predicted_class"] == b["predicted_class"]
        np.testing.assert_allclose(a["probabilities"], b["probabilities"], atol=1e-5)


def test_review_dicts_with_raw_text_and_attention(han_upa_run):
    run = jaxreviews.load_run(han_upa_run)
    reviews = [{"user": "someone new", "product": "p00", "text": "Not good at all. It broke on day two!"},
               {"user": "u00", "product": "p01", "sentences": [["w12", "good"], ["very", "good", "w3"]], "rating": 4}]
    first, second = run.predict(reviews, attention=True)
    assert first["rating"] is None and second["rating"] == 4.0
    assert first["unseen_user"] and first["oov_tokens"] > 0
    assert second["tokens"][0][1] == "good"
    for p in (first, second):
        assert len(p["tokens"]) == len(p["word_attention"]) == len(p["sentence_attention"])
        assert sum(p["sentence_attention"]) == pytest.approx(1.0, abs=1e-4)
        for tokens, weights in zip(p["tokens"], p["word_attention"]):
            assert len(tokens) == len(weights) and sum(weights) == pytest.approx(1.0, abs=1e-4)


def test_the_predict_and_evaluate_commands(han_upa_run, files, tmp_path):
    import subprocess
    import sys
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    out = tmp_path / "predictions.jsonl"
    predicted = subprocess.run([sys.executable, "-m", "experiments.predict", f"--workdir={han_upa_run}",
                                f"--input={files / 'test.txt'}", f"--output={out}"],
                               cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert predicted.returncode == 0, predicted.stderr
    lines = [json.loads(line) for line in open(out)]
    assert len(lines) == results(han_upa_run)["test"]["reviews"]
    assert {"user", "product", "rating", "predicted_class", "expected_rating", "probabilities"} <= set(lines[0])
    evaluated = subprocess.run([sys.executable, "-m", "experiments.evaluate", f"--workdir={han_upa_run}",
                                f"--input={files / 'test.txt'}"], cwd=REPO, env=env, capture_output=True,
                               text=True, timeout=900)
    assert evaluated.returncode == 0, evaluated.stderr
    assert "baseline: majority" in evaluated.stdout and "unseen in training" in evaluated.stdout
    written = json.load(open(os.path.join(han_upa_run, "evaluation-test.json")))
    assert written["metrics"]["accuracy"] == pytest.approx(results(han_upa_run)["test"]["accuracy"])


@pytest.mark.parametrize("config,flags", [
    ("cnn", ()), ("mf", ()), ("fasttext", ()),
    pytest.param("han", ("--config.data.layout=padded",), marks=pytest.mark.slow),
    pytest.param("bilstm", (), marks=pytest.mark.slow),
    pytest.param("svdpp", (), marks=pytest.mark.slow),
    pytest.param("transformer", (), marks=pytest.mark.slow),
])
def test_every_config_loads_predicts_and_evaluates(tmp_path, files, config, flags):
    workdir = train_on_files(tmp_path / config, files, config, *flags)
    run = jaxreviews.load_run(workdir)
    evaluated = run.evaluate(files / "test.txt")
    for key in ("accuracy", "rmse", "mae", "reviews"):
        assert evaluated["metrics"][key] == pytest.approx(results(workdir)["test"][key], rel=1e-5, abs=1e-6), key
    predictions = list(run.predict(files / "test.txt"))
    assert len(predictions) == evaluated["metrics"]["reviews"]
    latest = jaxreviews.load_run(workdir, which="latest")
    assert latest.step == results(workdir)["steps"]


def test_load_run_names_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        jaxreviews.load_run(tmp_path)
