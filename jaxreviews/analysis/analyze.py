"""Everything a run's report shows, as one plain dict: `analyze_run(workdir)`.

    analysis = analyze_run("runs/han_upa")
    analysis["cold_start"]["user"]     # [{"label": "0", "reviews": 12, "accuracy": 0.41, "rmse": ...}, ...]
    analysis["calibration"]["reliability"]["ece"]

Keys: workdir, name, model, config (config.json), results (results.json), timing, curves
(metrics.jsonl), test_metrics (rows beside the baselines), parameters (per module), data
(statistics per split), and from one pass over the test split: confusion [C][C], per_class,
calibration {rating, reliability (None for regression heads)}, cold_start {user, product},
by_length, samples (indices per kind), attention (those reviews with their weights), and seconds
(where the time went). Every value is a list, dict, str or number: `json.dumps` takes it whole.
"""
from __future__ import annotations

import os
import time

from jaxreviews.analysis import predictions as predictions_lib
from jaxreviews.analysis import run_files, scores
from jaxreviews.run import load_run


def run_name(workdir: str | os.PathLike) -> str:
    return os.path.basename(os.path.normpath(os.fspath(workdir)))


def analyze_run(workdir: str | os.PathLike, *, name: str | None = None, samples_per_kind: int = 2,
                length_bins: int = 5, data_cache: dict | None = None) -> dict:
    """The report's numbers for the run in `workdir` (its best parameters); `data_cache` (a dict
    kept between calls) lets runs on the same data load it once."""
    workdir = os.path.abspath(os.path.expanduser(os.fspath(workdir)))
    name = name or run_name(workdir)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(what: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[what] = round(now - clock, 3)
        clock = now

    results = run_files.read_json(workdir, "results.json")
    config = run_files.read_json(workdir, "config.json")
    out = {"workdir": workdir, "name": name, "model": (config.get("model") or {}).get("name"),
           "config": config, "results": results, "timing": run_files.timing(results),
           "curves": run_files.learning_curves(workdir), "test_metrics": run_files.test_metrics(results, name)}
    run = load_run(workdir)
    out["step"] = run.step
    out["members"] = int(getattr(run, "members", 0) or 0)  # an ensemble's: parameters count every member
    out["parameters"] = run_files.parameter_counts(run.params)
    lap("load_run")
    splits = predictions_lib.load_data(run, data_cache)
    out["data"] = predictions_lib.data_statistics(splits, results)
    lap("data")
    predicted = predictions_lib.predict_split(run, splits, "test")
    lap("test_pass")

    confusion = scores.confusion_matrix(predicted.true_class, predicted.predicted_class, predicted.num_classes)
    correct, error = predicted.correct, predicted.error
    out.update(
        ratings=out["data"]["ratings"], test_reviews=len(predicted),
        confusion=confusion.tolist(), per_class=scores.per_class_scores(confusion),
        calibration={"rating": scores.rating_calibration(predicted.expected_rating, predicted.ratings,
                                                         rating_range=predicted.rating_range,
                                                         rating_step=predicted.rating_step),
                     "reliability": None if predicted.probabilities is None else
                     scores.reliability(predicted.probabilities, predicted.true_class)},
        cold_start={"user": scores.count_buckets(predicted.user_train_reviews, correct=correct, error=error),
                    "product": scores.count_buckets(predicted.product_train_reviews, correct=correct, error=error)},
        by_length=scores.by_length(predicted.num_tokens, correct=correct, error=error, num_bins=length_bins))
    samples = scores.select_samples(true_class=predicted.true_class, predicted_class=predicted.predicted_class,
                                    expected_rating=predicted.expected_rating, ratings=predicted.ratings,
                                    probabilities=predicted.probabilities, per_kind=samples_per_kind)
    out["samples"] = samples
    lap("scores")
    out["attention"] = predictions_lib.attention_samples(run, predicted, samples)
    out["has_attention"] = any(sample["has_attention"] for sample in out["attention"])
    lap("attention")
    out["seconds"] = seconds
    return out


def analyze_runs(workdirs, **kw) -> list[dict]:
    """`analyze_run` of each, runs on the same data loading it once; names made unique."""
    names = unique_names(workdirs)
    cache: dict = {}
    return [analyze_run(workdir, name=name, data_cache=cache, **kw) for workdir, name in zip(workdirs, names)]


def unique_names(workdirs) -> list[str]:
    """Each run's directory name, with parent folders added until the names differ."""
    parts = [os.path.abspath(os.path.expanduser(os.fspath(w))).split(os.sep) for w in workdirs]
    for depth in range(1, max((len(p) for p in parts), default=1) + 1):
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [f"{name} ({i + 1})" for i, name in enumerate(names)]
