"""Data flags are never ignored: file flags select the files, one rating scale (given, or read from
the training data) that every split, batch, head and baseline shares, and ids checked at the batch
boundary."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

from jaxreviews import options
from jaxreviews import models
from jaxreviews.data import batching, packing, pipeline, readers
from jaxreviews.models import heads

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HALF_STARS = np.arange(1, 11) / 2  # 0.5, 1.0, ..., 5.0


def write_lines(path, lines) -> str:
    path.write_text("".join(f"{line}\n" for line in lines))
    return os.fspath(path)


def movielens_csv(path, *, num_users=24, num_movies=30, ratings_per_user=18, seed=0) -> str:
    """A MovieLens ratings.csv of half stars in which every one of the 10 values occurs."""
    rng = np.random.default_rng(seed)
    user_taste, movie_quality = rng.normal(0, 1, num_users), rng.normal(0, 1, num_movies)
    lines = ["userId,movieId,rating,timestamp"]
    for user in range(num_users):
        for movie in rng.choice(num_movies, ratings_per_user, replace=False):
            score = 2.75 + 1.2 * (user_taste[user] + movie_quality[movie]) + rng.normal(0, 0.3)
            rating = float(np.clip(np.round(score * 2) / 2, 0.5, 5.0))
            lines.append(f"{user + 1},{movie + 1},{rating},964982703")
    lines += [f"1,{movie + 1},{rating},964982703" for movie, rating in enumerate(HALF_STARS)]
    return write_lines(path, lines)


def files_config(**values):
    config = options.section("data")
    for key, value in values.items():
        config[key] = value
    return config


# ---- file flags select the files ----------------------------------------------------------------

def test_train_and_test_flags_without_data_name_read_the_files(tmp_path):
    train = write_lines(tmp_path / "u1.base", [f"{u}\t{p}\t{1 + (u + p) % 5}\t0" for u in range(1, 9)
                                               for p in range(1, 11)])
    test = write_lines(tmp_path / "u1.test", [f"{u}\t{p}\t{1 + (u * p) % 5}\t0" for u in range(1, 9)
                                              for p in range(11, 13)])
    splits = pipeline.load_splits(files_config(train=train, test=test, format="ratings"))
    assert splits.report["source"] == "files"
    assert "data.train, data.test" in splits.report["selected_by"]
    assert len(splits.train) + len(splits.validation) == 80 and len(splits.test) == 16
    assert sorted(splits.users.names[1:]) == sorted(str(u) for u in range(1, 9))  # the file's, not synthetic's
    assert splits.report["rating_range"] == {"low": 1.0, "high": 5.0, "step": 1.0, "classes": 5,
                                             "from": f"training file {train} (data.train)"}
    assert pipeline.describe_source(splits) == (
        "data source files (selected by data.train, data.test; data.name was the default 'synthetic'); ratings 1..5 "
        f"in steps of 1, 5 classes, from training file {train} (data.train)\n"
        "data.train: 80 lines: 80 reviews, 0 skipped\ndata.test: 16 lines: 16 reviews, 0 skipped")


@pytest.mark.parametrize("values, message", [
    (dict(name="yelp13", path="reviews.txt"), "data.name='yelp13' reads a TFDS builder (from data.manual_dir), not "
                                              "data.path: remove data.path, or set data.name=files"),
    (dict(name="tfds", train="a", test="b"), "remove data.train / data.test"),
    (dict(valid="dev.txt"), "data.valid without data.train: add data.train=FILE"),
    (dict(valid="dev.txt", test="test.txt"), "data.valid and data.test without data.train: add data.train=FILE"),
    (dict(train="train.txt"), "data.train without data.test: add data.test=FILE"),
    (dict(path="all.txt", test="test.txt"), "remove data.path or data.test"),
    (dict(format="ratings"), "data.format='ratings' names the format of a file, but no file is set: add data.path"),
    (dict(name="files"), "data.name='files' needs data.path=FILE"),
    (dict(name="movielens"), "unknown data.name 'movielens'"),
])
def test_flags_that_would_be_ignored_or_contradict_raise_one_line(values, message):
    with pytest.raises(ValueError) as error:
        pipeline.load_splits(files_config(**values))
    assert message in str(error.value)
    assert "\n" not in str(error.value)


# ---- one rating scale ------------------------------------------------------------------------------

def test_half_star_range_and_step_are_read_from_the_training_file(tmp_path):
    train = movielens_csv(tmp_path / "ratings.csv")
    test = write_lines(tmp_path / "test.csv", ["userId,movieId,rating,timestamp", "1,1,0.5,0", "2,3,4.5,0"])
    splits = pipeline.load_splits(files_config(train=train, test=test))
    assert (splits.rating_range, splits.rating_step, splits.num_classes) == ((0.5, 5.0), 0.5, 10)
    assert splits.report["rating_range"]["from"] == f"training file {train} (data.train)"
    batch = batching.make_batch(splits.test, np.array([0, 1, -1]), "ids", (), rating_range=splits.rating_range,
                                rating_step=splits.rating_step)
    np.testing.assert_array_equal(batch["label"], [0, 8, 0])  # 0.5 -> class 0, 4.5 -> class 8


@pytest.mark.parametrize("ratings, rating_range, step", [
    ([1, 2, 3, 4, 5, 4, 1], (1.0, 5.0), 1.0),  # stars (Amazon, Yelp)
    ([1, 10, 7, 3, 2, 4, 5, 6, 8, 9], (1.0, 10.0), 1.0),  # IMDB
    ([0.5, 5.0, 3.5, 1.0, 2.5], (0.5, 5.0), 0.5),  # MovieLens half stars
    ([1, 3, 5], (1.0, 5.0), 2.0),  # the largest step that divides every rating - low
    ([2.7, 3.0, 3.7, 4.1], (2.7, 4.1), 0.1),  # float32 storage does not break a decimal grid
])
def test_rating_scale_read_from_ratings(ratings, rating_range, step):
    scale = pipeline.rating_scale(np.array(ratings, np.float32), rating_range=None, rating_step=None,
                                  source="training split")
    assert scale.rating_range == pytest.approx(rating_range) and scale.step == pytest.approx(step)
    assert scale.report()["from"] == "training split"


def test_ratings_off_any_grid_or_all_equal_ask_for_the_flags():
    with pytest.raises(ValueError, match="not on a grid of at most 1000 classes: set data.rating_range"):
        pipeline.rating_scale(np.random.default_rng(0).uniform(1, 5, 50), rating_range=None, rating_step=None,
                              source="training split")
    with pytest.raises(ValueError, match="every rating of the training split is 4: set data.rating_range"):
        pipeline.rating_scale(np.full(5, 4.0), rating_range=None, rating_step=None, source="training split")


def test_a_test_rating_outside_the_range_read_from_training_names_its_line(tmp_path):
    train = write_lines(tmp_path / "train.data", [f"{u}\t{p}\t{1 + (u + p) % 5}" for u in range(5) for p in range(5)])
    test = write_lines(tmp_path / "test.data", ["1\t1\t3", "2\t2\t4", "3\t3\t7"])
    with pytest.raises(readers.ReadError, match=rf"^{test}:3: rating 7 outside the rating range 1\.\.5, read from "
                                                rf"the training file {train} \(data.train\): set data.rating_range"):
        pipeline.load_splits(files_config(train=train, test=test))
    write_lines(tmp_path / "test.data", ["1\t1\t3", "2\t2\t4.5"])
    with pytest.raises(readers.ReadError, match=rf"^{test}:2: rating 4.5 is between the classes of the rating range "
                                                r"1\.\.5 in steps of 1, a step read from the training file"):
        pipeline.load_splits(files_config(train=train, test=test))


def test_given_range_and_step_reject_off_grid_ratings_never_round_them(tmp_path):
    path = write_lines(tmp_path / "train.data", ["1\t1\t3", "2\t2\t4.5", "3\t3\t5"])
    with pytest.raises(readers.ReadError, match=rf"^{path}:2: rating 4.5 is between the classes"):
        pipeline.load_splits(files_config(path=path, rating_range=(1.0, 5.0), rating_step=1.0))
    with pytest.raises(readers.ReadError, match=rf"^{path}:3: rating 5 outside the rating range 1\.\.4\.5"):
        pipeline.load_splits(files_config(path=path, rating_range=(1.0, 4.5), rating_step=0.5))
    with pytest.raises(readers.ReadError, match=rf"^{path}:2: rating 4.5 is between .* \(data.rating_step\)"):
        pipeline.load_splits(files_config(path=path, rating_step=1.0))  # range from the file, step given
    with pytest.raises(ValueError, match=r"data.rating_range 1\.\.5 is not a whole number of data.rating_step=0.3"):
        pipeline.load_splits(files_config(path=path, rating_range=(1.0, 5.0), rating_step=0.3))


def test_readers_reject_or_count_ratings_between_classes(tmp_path):
    path = write_lines(tmp_path / "reviews.txt", ["u\t\tp\t\t4\t\tgood", "u\t\tq\t\t4.5\t\tvery good"])
    with pytest.raises(readers.ReadError, match=rf"^{path}:2: rating 4.5 is between the classes") as error:
        list(readers.read_tang(path, rating_range=(1, 5), rating_step=1))
    assert error.value.kind == readers.RATING_OFF_GRID
    report = readers.ReadReport()
    kept = list(readers.read_tang(path, rating_range=(1, 5), rating_step=1, lenient=True, report=report))
    assert [review.rating for review in kept] == [4.0] and report.skipped_by_kind == {readers.RATING_OFF_GRID: 1}
    assert len(list(readers.read_tang(path, rating_range=(1, 5), rating_step=0.5))) == 2
    with pytest.raises(ValueError, match="rating_step needs a rating_range"):
        readers.read_tang(path, rating_range=None, rating_step=1)


def test_synthetic_ratings_are_stars_and_a_given_range_is_checked():
    config = files_config(synthetic_size="tiny")
    splits = pipeline.load_splits(config)
    assert (splits.rating_range, splits.rating_step, splits.num_classes) == ((1.0, 5.0), 1.0, 5)
    config.rating_range = (1.0, 3.0)
    with pytest.raises(ValueError, match=r"^synthetic corpus: review \d+: rating [45] "
                                         r"outside data.rating_range 1\.\.3$"):
        pipeline.load_splits(config)


def parse_config_flags(*argv):
    """`argv` parsed as experiments/train.py parses its flags."""
    argv, values = ["train", *argv], flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True, sys_argv=argv)
    values(argv)
    return values.config


def test_rating_range_and_step_can_be_given_on_the_command_line():
    config = parse_config_flags(f"--config={REPO}/experiments/configs/mf.py", "--config.data.rating_range=(1.0, 10.0)",
                                "--config.data.rating_step=0.5")
    assert (config.data.rating_range, config.data.rating_step) == ((1.0, 10.0), 0.5)
    config = parse_config_flags(f"--config={REPO}/experiments/configs/mf.py:half_stars")
    assert (config.data.rating_range, config.data.rating_step) == ((0.5, 5.0), 0.5)
    config = parse_config_flags(f"--config={REPO}/experiments/configs/mf.py")
    assert (config.data.rating_range, config.data.rating_step) == (None, None)  # read from the training data


# ---- labels: never clipped into a class -------------------------------------------------------------

def test_a_rating_outside_the_batchers_range_is_an_error_not_the_last_class():
    splits = pipeline.load_splits(files_config(synthetic_size="tiny"))
    five_star = int(np.flatnonzero(splits.train.arrays.ratings == 5.0)[0])
    with pytest.raises(ValueError, match=r"rating 5 \(row 0 of the batch\) is not one of the 4 classes 1\.\.4"):
        batching.make_batch(splits.train, np.array([five_star]), "flat", (16,), rating_range=(1.0, 4.0))
    batcher = packing.PackedBatcher(splits.train, layout="flat", batch_size=len(splits.train), rating_range=(1.0, 4.0))
    with pytest.raises(ValueError, match="is not one of the 4 classes"):
        next(batcher.epoch(0))
    half_steps = batching.rating_labels(HALF_STARS, rating_range=(0.5, 5.0), rating_step=0.5)
    np.testing.assert_array_equal(half_steps, np.arange(10))


# ---- ids at the batch boundary ---------------------------------------------------------------------

def test_check_ids_passes_real_batches_and_names_an_id_outside_its_table():
    splits = pipeline.load_splits(files_config(synthetic_size="tiny"))
    sizes = dict(vocab_size=len(splits.vocab), num_users=len(splits.users), num_products=len(splits.products))
    batcher = batching.Batcher(splits.test, layout="hierarchical", batch_size=16, max_words=8)
    for batch in batcher.evaluation():
        assert batching.check_ids(batch, **sizes) is batch
    batch = dict(batch, user=batch["user"].copy())
    batch["user"][3] = sizes["num_users"]
    with pytest.raises(ValueError, match=rf"batch\['user'\]\[3\] = {sizes['num_users']} is outside the user table "
                                         rf"of {sizes['num_users']} rows"):
        batching.check_ids(batch, **sizes)
    words = np.zeros((2, 3, 4), np.int32)
    words[1, 2, 0] = -1
    with pytest.raises(ValueError, match=r"batch\['words'\]\[1, 2, 0\] = -1 is outside the vocabulary table of 7"):
        batching.check_ids({"words": words}, vocab_size=7, num_users=1, num_products=1)
    with pytest.raises(ValueError, match=r"batch\['tokens'\]\[0, 1\] = 7 is outside the vocabulary table of 7"):
        batching.check_ids({"tokens": np.array([[3, 7]])}, vocab_size=7, num_users=1, num_products=1)


# ---- half stars end to end ---------------------------------------------------------------------------

def test_half_star_heads_map_classes_to_half_steps(tmp_path):
    """Batcher, head and model of one DataSplits agree: 10 classes, ratings and expected ratings in half steps."""
    splits = pipeline.load_splits(files_config(path=movielens_csv(tmp_path / "ratings.csv")))
    config = options.default_config("mf", "tiny").model
    config.head.kind = "classification"
    config.factor_shrinkage = config.bias_shrinkage = 0.0  # no training pairs given to build_model
    model = models.build_model(config, vocab_size=len(splits.vocab), num_users=len(splits.users),
                               num_products=len(splits.products), num_classes=splits.num_classes,
                               rating_range=splits.rating_range)
    batch = next(batching.Batcher(splits.test, layout="ids", batch_size=32, rating_range=splits.rating_range,
                                  rating_step=splits.rating_step).evaluation())
    np.testing.assert_allclose(0.5 + 0.5 * batch["label"], batch["rating"])
    variables = jax.jit(lambda b: model.init({"params": jax.random.key(0)}, b, train=False))(batch)
    outputs = jax.jit(lambda v, b: model.apply(v, b, train=False))(variables, batch)
    class_ratings = np.asarray(heads.class_to_rating(np.arange(splits.num_classes), splits.rating_range,
                                                     splits.num_classes))
    np.testing.assert_allclose(class_ratings, HALF_STARS)
    probabilities = np.asarray(jax.nn.softmax(outputs["logits"], axis=-1))
    assert probabilities.shape == (32, 10)
    np.testing.assert_allclose(outputs["predicted_rating"], probabilities @ HALF_STARS, rtol=1e-5)  # expected rating
    assert set(np.asarray(outputs["predicted_class"]).tolist()) <= set(range(10))


def test_half_star_movielens_trains_end_to_end_without_data_name(tmp_path):
    train = movielens_csv(tmp_path / "ratings.csv")
    test = movielens_csv(tmp_path / "test.csv", ratings_per_user=4, seed=1)
    command = [sys.executable, "-m", "experiments.train", f"--config={REPO}/experiments/configs/mf.py:tiny",
               f"--workdir={tmp_path / 'run'}", f"--config.data.train={train}", f"--config.data.test={test}",
               "--config.data.format=ratings", "--config.model.head.kind=both", "--config.train.epochs=2",
               f"--config.compilation.cache_dir={tmp_path / 'cache'}"]
    done = subprocess.run(command, cwd=REPO, env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    with open(tmp_path / "run" / "results.json") as f:
        results = json.load(f)
    assert results["data"]["source"] == "files"
    assert results["data"]["rating_range"] == {"low": 0.5, "high": 5.0, "step": 0.5, "classes": 10,
                                               "from": f"training file {train} (data.train)"}
    assert results["test"]["reviews"] == sum(1 for _ in open(test)) - 1
    majority = results["baselines"]["majority"]["prediction"]
    assert majority in HALF_STARS
    assert 0 <= results["test"]["accuracy"] <= 1 and results["test"]["rmse"] < 2.5
