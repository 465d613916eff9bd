"""TFDS builders (array_record, no TensorFlow): what goes in from the manual folder comes back out."""
import gzip
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds  # a dependency of the project: its absence must fail, not skip

from jaxreviews import options
from jaxreviews.data import duplicates, pipeline, readers, synthetic, tfds_builders
from jaxreviews.data.types import Review

tfds.disable_progress_bar()


def tang_reviews(split, count, max_rating):
    """Tokenised reviews as a literature file holds them: Unicode, punctuation tokens, -lrb-."""
    words = ["the", "food", "was", "great", "!", "café", "naïve", "-lrb-", "5", "-rrb-", "…", "don't",
             "😀", "<", ">", "a.m.", "$", "20"]
    rng = np.random.default_rng(len(split) * 7 + count)
    reviews = []
    for i in range(count):
        sentences = tuple(tuple(words[j] for j in rng.integers(0, len(words), rng.integers(1, 9)))
                          for _ in range(rng.integers(1, 5)))
        reviews.append(Review(f"user-{split}-{i % 4}", f"prod_{i % 3}", float(1 + i % max_rating), sentences))
    return reviews


def write_literature_files(directory, file_names, max_rating, sizes=(7, 3, 4)):
    os.makedirs(directory, exist_ok=True)
    paths = {}
    for (split, name), size in zip(file_names.items(), sizes):
        paths[split] = os.path.join(directory, name)
        readers.write_tang(paths[split], tang_reviews(split, size, max_rating))
    return paths


def read_back(builder, split):
    """The split as `as_data_source` gives it, decoded into Reviews."""
    source = builder.as_data_source(split=split)
    return [tfds_builders.decode_example(source[i]) for i in range(len(source))]


def prepare(name, data_dir, manual_dir=None):
    builder = tfds.builder(name, data_dir=os.fspath(data_dir))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=os.fspath(manual_dir) if manual_dir else None))
    return builder


LITERATURE_CASES = [
    ("yelp13", {"train": "yelp-2013-seg-20-20.train.ss", "validation": "yelp-2013-seg-20-20.dev.ss",
                "test": "yelp-2013-seg-20-20.test.ss"}, (1, 5)),
    ("yelp14", {"train": "train.txt", "validation": "dev.txt", "test": "test.txt"}, (1, 5)),
    ("imdb", {"train": "imdb.train.txt.ss", "validation": "imdb.dev.txt.ss", "test": "imdb.test.txt.ss"}, (1, 10)),
]


@pytest.mark.parametrize("name, file_names, rating_range", LITERATURE_CASES, ids=[c[0] for c in LITERATURE_CASES])
def test_literature_builder_round_trips_the_reader(tmp_path, name, file_names, rating_range):
    paths = write_literature_files(tmp_path / "manual", file_names, int(rating_range[1]))
    builder = prepare(name, tmp_path / "data", tmp_path / "manual")
    assert builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD
    assert sorted(builder.info.splits) == ["test", "train", "validation"]
    for split, path in paths.items():
        expected = list(readers.read_reviews(path, "tang", rating_range=rating_range))
        assert builder.info.splits[split].num_examples == len(expected)
        assert read_back(builder, split) == expected  # every field, in file order
    raw = builder.as_data_source(split="train")[0]
    assert set(raw) == {"user", "product", "rating", "text"}
    assert isinstance(raw["user"], bytes) and isinstance(raw["text"], list)


def test_literature_builder_finds_files_in_a_subfolder_named_after_it(tmp_path):
    write_literature_files(tmp_path / "manual" / "imdb", LITERATURE_CASES[2][1], 10)
    write_literature_files(tmp_path / "manual", LITERATURE_CASES[0][1], 5, sizes=(1, 1, 1))  # yelp13's
    builder = prepare("imdb", tmp_path / "data", tmp_path / "manual")
    assert builder.info.splits["train"].num_examples == 7
    assert max(review.rating for review in read_back(builder, "train")) > 5


def test_missing_manual_file_names_the_expected_files(tmp_path):
    paths = write_literature_files(tmp_path / "manual", LITERATURE_CASES[0][1], 5)
    os.remove(paths["validation"])
    with pytest.raises(FileNotFoundError, match=r"(?s)no validation file.*yelp-2013-seg-20-20\.dev\.ss.*dev\.txt"):
        prepare("yelp13", tmp_path / "data", tmp_path / "manual")
    assert not tfds_builders.is_prepared(tfds.builder("yelp13", data_dir=os.fspath(tmp_path / "data")))
    with pytest.raises(FileNotFoundError, match=r"(?s)yelp14.*does not exist or is empty.*yelp-2014-seg-20-20\.train\.ss"):
        prepare("yelp14", tmp_path / "data", tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"amazon_reviews: .* has no \*\.json, \*\.json\.gz"):
        prepare("amazon_reviews", tmp_path / "data", tmp_path / "manual")


def amazon_lines():
    """Raw Amazon records: punctuation to tokenise, copies across product variants, no reviewText."""
    records = []
    for i in range(40):
        text = f"Great product #{i % 9}!  I'd buy it again... Cost $1,000 (really). Mr. Smith agrees."
        records.append({"reviewerID": f"A{i % 11}", "asin": f"B{i % 5}", "overall": float(1 + i % 5),
                        "reviewText": text if i % 13 else "Meh.", "summary": "ok"})
    records += [dict(records[3], asin="B9"), dict(records[3], asin="B8"), dict(records[17], asin="B7")]
    records.append({"reviewerID": "A1", "asin": "B1", "overall": 4.0, "summary": "Only a summary."})
    return [json.dumps(record) for record in records]


@pytest.mark.parametrize("gz", [False, True], ids=["json", "json.gz-in-subfolder"])
def test_amazon_builder_splits_like_group_split_and_keeps_copies_together(tmp_path, gz):
    folder = tmp_path / "manual" / ("amazon_reviews" if gz else "")
    folder.mkdir(parents=True)
    path = folder / ("All_Beauty_5.json.gz" if gz else "All_Beauty_5.json")
    data = ("\n".join(amazon_lines()) + "\n").encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    builder = prepare("amazon_reviews", tmp_path / "data", tmp_path / "manual")

    expected = list(readers.read_reviews(path, "amazon", rating_range=(1, 5)))
    groups = duplicates.duplicate_groups(expected)
    parts = duplicates.group_split(groups, fractions=(0.8, 0.1, 0.1), seed=0)
    got = {split: read_back(builder, split) for split in tfds_builders.SPLITS}
    for split, indices in zip(tfds_builders.SPLITS, parts):
        assert builder.info.splits[split].num_examples == len(indices) > 0
        assert got[split] == [expected[i] for i in indices]
    keys = {split: {duplicates.review_key(r) for r in reviews} for split, reviews in got.items()}
    assert not keys["train"] & keys["validation"] and not keys["train"] & keys["test"]
    assert not keys["validation"] & keys["test"]


def test_synthetic_tiny_matches_the_generator(tmp_path):
    builder = prepare("synthetic_reviews/tiny", tmp_path / "data")
    reviews = synthetic.generate(synthetic.default_spec("tiny")).reviews
    parts = duplicates.group_split(duplicates.duplicate_groups(reviews), fractions=(0.8, 0.1, 0.1), seed=0)
    for split, indices in zip(tfds_builders.SPLITS, parts):
        assert list(tfds_builders.reviews_from_tfds(builder, split)) == [reviews[i] for i in indices]
    assert sum(split.num_examples for split in builder.info.splits.values()) == len(reviews)


def test_reviews_from_tfds_by_name_and_sliced_split(tmp_path):
    data_dir = tmp_path / "data"
    with pytest.raises(FileNotFoundError, match="not prepared"):
        list(tfds_builders.reviews_from_tfds("synthetic_reviews/tiny", "train", data_dir=data_dir))
    tfds_builders.prepare("synthetic_reviews/tiny", data_dir=data_dir)
    train = list(tfds_builders.reviews_from_tfds("synthetic_reviews/tiny", "train", data_dir=data_dir, batch_size=7))
    assert list(tfds_builders.reviews_from_tfds("synthetic_reviews/tiny", "train[:10]", data_dir=data_dir)) == train[:10]
    with pytest.raises(ValueError, match="unknown review data set 'yelp15'"):
        tfds_builders.load_builder("yelp15")


def test_encode_rejects_what_would_not_read_back():
    review = Review("u", "p", 3.0, (("a", "b c"),))
    with pytest.raises(ValueError, match="'b c' is empty or contains a space"):
        tfds_builders.encode_review(review)
    fine = Review("u", "p", 3.0, (("a", "<sssss>", "\t"), ()))
    assert tfds_builders.decode_example(tfds_builders.encode_review(fine)) == fine


def test_load_splits_from_tfds_equals_load_splits_from_the_files(tmp_path):
    write_literature_files(tmp_path / "manual", LITERATURE_CASES[0][1], 5, sizes=(30, 8, 9))
    config = options.section("data")
    config.manual_dir = os.fspath(tmp_path / "manual")
    config.name, config.format = "files", "tang"
    files = sorted(os.listdir(tmp_path / "manual"))
    for key, word in (("train", "train"), ("valid", "dev"), ("test", "test")):
        config[key] = os.fspath(tmp_path / "manual" / next(f for f in files if f".{word}." in f))
    from_files = pipeline.load_splits(config)
    config.train = config.valid = config.test = ""
    config.name, config.tfds_name, config.tfds_data_dir = "tfds", "yelp13", os.fspath(tmp_path / "data")
    from_tfds = pipeline.load_splits(config)
    assert from_tfds.vocab.tokens == from_files.vocab.tokens
    assert from_tfds.users.names == from_files.users.names
    for split in ("train", "validation", "test"):
        ours, theirs = getattr(from_tfds, split).arrays, getattr(from_files, split).arrays
        for field in ("token_ids", "token_offsets", "sentence_offsets", "users", "products", "ratings"):
            np.testing.assert_array_equal(getattr(ours, field), getattr(theirs, field))
    assert from_tfds.report["read_valid"] == "yelp13/1.0.0 validation: 8 reviews"


def test_load_splits_from_tfds_synthetic_and_rating_range_check(tmp_path):
    config = options.section("data")
    config.name, config.tfds_name, config.tfds_data_dir = "tfds", "synthetic_reviews/tiny", os.fspath(tmp_path)
    splits = pipeline.load_splits(config)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (480, 60, 60)
    config.rating_range = (1.0, 3.0)
    with pytest.raises(ValueError, match=r"outside data.rating_range 1\.\.3"):
        pipeline.load_splits(config)
    config.tfds_name = ""
    with pytest.raises(ValueError, match="needs data.tfds_name"):
        pipeline.load_splits(config)


def test_importing_jaxreviews_and_the_pipeline_does_not_import_tfds():
    code = ("import sys, jaxreviews, jaxreviews.data.pipeline; "
            "assert 'tensorflow_datasets' not in sys.modules; assert 'tensorflow' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.path.dirname(os.path.dirname(__file__)))


def test_experiment_variant_reads_a_literature_builder(tmp_path):
    """`--config=...:yelp13` = data.name yelp13 + manual_dir: the TFDS builder, prepared from the files."""
    from experiments.configs import base
    from jaxreviews.data import pipeline, readers, synthetic

    reviews = synthetic.generate(synthetic.default_spec("tiny")).reviews
    manual = tmp_path / "yelp13"
    manual.mkdir()
    for split, part in (("train", reviews[:400]), ("dev", reviews[400:500]), ("test", reviews[500:])):
        readers.write_tang(manual / f"yelp-2013-seg-20-20.{split}.ss", part)
    config = base.make_config("cnn", "yelp13")
    config.data.manual_dir = str(manual)
    config.data.tfds_data_dir = str(tmp_path / "tfds")
    splits = pipeline.load_splits(config.data)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (400, 100, 100)
