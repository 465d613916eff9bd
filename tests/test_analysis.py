"""The report's numbers on hand-made predictions whose answers are worked out by hand."""
import json

import numpy as np
import pytest

from jaxreviews.analysis import html, run_files, scores
from jaxreviews.train import step as step_lib


def test_cold_start_buckets_of_a_hand_made_prediction_set():
    # ten test reviews: the training reviews of each one's user, whether its class was right, its error
    train_counts = np.array([0, 0, 1, 2, 3, 5, 6, 20, 21, 400])
    correct = np.array([1, 0, 1, 1, 0, 0, 1, 1, 1, 0], bool)
    error = np.array([2.0, -2.0, 0.0, 1.0, 3.0, -1.0, 0.5, 0.5, 0.0, -4.0])
    buckets = scores.count_buckets(train_counts, correct=correct, error=error)
    assert [b["label"] for b in buckets] == ["0", "1-2", "3-5", "6-20", ">20"]
    assert [b["reviews"] for b in buckets] == [2, 2, 2, 2, 2]
    assert [b["accuracy"] for b in buckets] == [0.5, 1.0, 0.0, 1.0, 0.5]
    expected_rmse = [2.0, np.sqrt(0.5), np.sqrt(5.0), 0.5, np.sqrt(8.0)]
    np.testing.assert_allclose([b["rmse"] for b in buckets], expected_rmse)
    np.testing.assert_allclose([b["mae"] for b in buckets], [2.0, 0.5, 2.0, 0.5, 2.0])
    np.testing.assert_allclose([b["accuracy_se"] for b in buckets], [0.5 / np.sqrt(2), 0, 0, 0, 0.5 / np.sqrt(2)])


def test_an_empty_bucket_says_so_without_nan():
    buckets = scores.count_buckets([7, 8], correct=[True, False], error=[0.0, 1.0])
    assert [b["reviews"] for b in buckets] == [0, 0, 0, 2, 0]
    assert buckets[0]["accuracy"] is None and buckets[0]["rmse"] is None
    json.dumps(buckets, allow_nan=False)


def test_ece_of_known_cases():
    def probabilities(top, n, classes=5):  # top class 0 with probability `top`, the rest spread
        p = np.full((n, classes), (1 - top) / (classes - 1))
        p[:, 0] = top
        return p

    # 10 reviews at confidence 0.9, 6 right: one bin, gap 0.3
    truth = np.array([0] * 6 + [1] * 4)
    result = scores.reliability(probabilities(0.9, 10), truth)
    assert result["ece"] == pytest.approx(0.3)
    assert result["mce"] == pytest.approx(0.3)
    filled = [b for b in result["bins"] if b["reviews"]]
    assert len(filled) == 1 and filled[0]["low"] == pytest.approx(0.8) and filled[0]["accuracy"] == 0.6
    # two bins: 4 at 0.55 with 2 right (gap 0.05), 6 at 0.95 all right (gap 0.05) -> 0.05
    p = np.concatenate([probabilities(0.55, 4), probabilities(0.95, 6)])
    truth = np.array([0, 0, 1, 1] + [0] * 6)
    result = scores.reliability(p, truth)
    assert result["ece"] == pytest.approx(0.4 * 0.05 + 0.6 * 0.05)
    assert result["accuracy"] == 0.8
    # calibrated: 5 at 0.8 with 4 right
    assert scores.reliability(probabilities(0.8, 5), np.array([0, 0, 0, 0, 2]))["ece"] == pytest.approx(0.0, abs=1e-12)
    # bins are (k/10, (k+1)/10]: a confidence of exactly 0.5 is in the bin (0.4, 0.5]
    bins = scores.reliability(probabilities(0.5, 1), np.array([0]))["bins"]
    assert bins[4]["reviews"] == 1


def test_confusion_matrix_and_per_class_scores():
    truth = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    predicted = np.array([0, 0, 1, 1, 2, 2, 2, 2, 0])
    confusion = scores.confusion_matrix(truth, predicted, 4)
    np.testing.assert_array_equal(confusion, [[2, 1, 0, 0], [0, 1, 1, 0], [1, 0, 3, 0], [0, 0, 0, 0]])
    per_class = scores.per_class_scores(confusion)
    np.testing.assert_allclose(per_class["precision"], [2 / 3, 1 / 2, 3 / 4, 0])
    np.testing.assert_allclose(per_class["recall"], [2 / 3, 1 / 2, 3 / 4, 0])
    assert per_class["support"] == [3, 2, 4, 0]
    assert per_class["accuracy"] == pytest.approx(6 / 9)
    # class 3 neither occurs nor is predicted: left out of the macro mean, as results.json does
    assert per_class["macro_f1"] == pytest.approx(np.mean([2 / 3, 1 / 2, 3 / 4]))
    assert per_class["macro_f1"] == step_lib.macro_f1(confusion)
    with pytest.raises(ValueError, match="outside 0..3"):
        scores.confusion_matrix([4], [0], 4)


def test_rating_calibration_bins_by_the_nearest_class():
    expected = np.array([1.2, 1.4, 2.6, 4.9, 5.3])
    ratings = np.array([1.0, 2.0, 3.0, 5.0, 5.0])
    result = scores.rating_calibration(expected, ratings, rating_range=(1.0, 5.0), rating_step=1.0)
    bins = result["bins"]
    assert [b["reviews"] for b in bins] == [2, 0, 1, 0, 2]
    assert bins[0]["predicted"] == pytest.approx(1.3) and bins[0]["observed"] == pytest.approx(1.5)
    assert bins[1]["predicted"] is None
    assert bins[4]["observed"] == 5.0
    assert result["mean_observed"] == pytest.approx(3.2)


def test_accuracy_by_length_covers_every_review_once():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 300, size=500)
    correct = lengths > 100
    bins = scores.by_length(lengths, correct=correct, error=np.zeros(500), num_bins=5)
    assert sum(b["reviews"] for b in bins) == 500
    assert all(80 <= b["reviews"] <= 120 for b in bins)
    assert [b["low"] for b in bins] == sorted(b["low"] for b in bins)
    assert bins[0]["accuracy"] == 0.0 and bins[-1]["accuracy"] == 1.0
    # many equal lengths: fewer bins, still every review once
    bins = scores.by_length(np.array([5] * 90 + [9] * 10), correct=np.ones(100, bool), error=np.zeros(100))
    assert sum(b["reviews"] for b in bins) == 100


def test_samples_are_the_most_confident_right_and_wrong_and_the_largest_errors():
    probabilities = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.45, 0.55], [0.99, 0.01]])
    predicted = probabilities.argmax(1)
    truth = np.array([0, 1, 1, 0, 1])
    ratings = truth + 1.0
    expected = probabilities @ np.array([1.0, 2.0])
    samples = scores.select_samples(true_class=truth, predicted_class=predicted, expected_rating=expected,
                                    ratings=ratings, probabilities=probabilities, per_kind=1)
    assert samples == {"confident_right": [0], "confident_wrong": [4], "largest_errors": [1]}
    no_probabilities = scores.select_samples(true_class=truth, predicted_class=predicted, expected_rating=expected,
                                             ratings=ratings, per_kind=2)
    assert no_probabilities == {"largest_errors": [4, 1]}


def test_learning_curves_from_metrics_jsonl(tmp_path):
    records = [{"kind": "train", "step": 1, "loss": 2.0, "lr": 0.1},
               {"kind": "train", "step": 2, "loss": 1.5, "lr": 0.1},
               {"kind": "validation", "step": 2, "accuracy": 0.5, "rmse": 1.0, "epoch": 1.0, "best": 0.5},
               {"kind": "train", "step": 3, "loss": 1.0, "lr": 0.1},
               {"kind": "validation", "step": 4, "accuracy": 0.4, "rmse": 0.9, "epoch": 2.0, "best": 0.5},
               {"kind": "test", "step": 4, "accuracy": 0.45}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp_path / "config.json").write_text(json.dumps({"train": {"early_stopping_metric": "accuracy"}}))
    curves = run_files.learning_curves(tmp_path)
    assert curves["train"]["step"] == [1, 2, 3] and curves["train"]["loss"] == [2.0, 1.5, 1.0]
    assert curves["validation"]["step"] == [2, 4] and curves["validation"]["rmse"] == [1.0, 0.9]
    assert curves["best_step"] == 2  # no results.json yet: the evaluation that set the best
    (tmp_path / "results.json").write_text(json.dumps({"best_step": 4}))
    assert run_files.learning_curves(tmp_path)["best_step"] == 4
    (tmp_path / "metrics.jsonl").write_text("{not json\n")
    with pytest.raises(ValueError, match="metrics.jsonl:1"):
        run_files.learning_curves(tmp_path)


def test_config_differences_and_parameter_counts():
    first = {"model": {"name": "han", "embed_dim": 100}, "train": {"epochs": 5}, "data": {"caps": [1, 2]}}
    second = {"model": {"name": "han_upa", "embed_dim": 100, "user_product": {"dim": 100}},
              "train": {"epochs": 5}, "data": {"caps": [1, 2]}}
    assert run_files.config_differences([first, second]) == {
        "model.name": ["han", "han_upa"], "model.user_product.dim": ["<absent>", 100]}
    params = {"word_embedding": {"embedding": np.zeros((10, 4))},
              "encoder": {"layer_0": {"kernel": np.zeros((4, 3)), "bias": np.zeros(3)}, "scale": np.zeros(2)}}
    assert run_files.parameter_counts(params) == {"word_embedding": 40, "encoder": 17, "encoder/layer_0": 15,
                                                  "total": 57}


def test_test_metrics_rows_with_an_ensemble():
    metrics = {"accuracy": 0.6, "macro_f1": 0.5, "rmse": 0.8, "mae": 0.5, "nll": 0.9}
    results = {"test": metrics, "ensemble": metrics, "members": [metrics] * 4,
               "members_mean": {**metrics, "accuracy": 0.55}, "members_std": {"accuracy": 0.01},
               "baselines": {"majority": {"accuracy": 0.3, "rmse": 1.8}}}
    rows = run_files.test_metrics(results, "run")
    assert [r["kind"] for r in rows] == ["ensemble", "members", "baseline"]
    assert rows[0]["name"] == "run: ensemble" and rows[1]["name"] == "run: 4 members, mean ± std"
    assert rows[1]["accuracy"] == 0.55 and rows[1]["std"]["accuracy"] == 0.01
    assert rows[2]["nll"] is None
    assert [r["kind"] for r in run_files.test_metrics({"test": metrics}, "run")] == ["model"]


def test_attention_words_are_escaped_and_shaded_by_weight():
    sample = {"kind": "confident_right", "index": 3, "user": "<u>", "product": "p", "rating": 5.0,
              "predicted_rating": 5.0, "expected_rating": 4.9, "confidence": 0.97, "user_train_reviews": 0,
              "product_train_reviews": 12, "has_attention": True,
              "tokens": [["<script>", "good"], ["ok"]], "word_attention": [[0.1, 0.9], [1.0]],
              "sentence_attention": [0.75, 0.25]}
    page = html.render_sample(sample)
    assert "<script>" not in page and "&lt;script&gt;" in page and "&lt;u&gt;" in page
    alphas = [float(a) for a in __import__("re").findall(r"rgba\(230, 85, 13, ([0-9.]+)\)", page)]
    assert alphas == [pytest.approx(0.85 * 0.1), pytest.approx(0.85 * 0.9), pytest.approx(0.85)]
    assert "rgba(49, 130, 189, 0.35)" in page and "rgba(49, 130, 189, 0.117)" in page
