"""In-domain word vectors: trained on the training split's text only, written in word2vec's text
format that `load_word_vectors` reads back, cached by a hash of the text and options, never
written into a data folder whose permission bits say read-only; tools/pretrain_vectors.py."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from jaxreviews import options as options_lib
from jaxreviews.data import pipeline, readers, vocab as vocab_lib, word_vectors
from jaxreviews.data.types import Review
from jaxreviews.data.vocab import Vocabulary, load_word_vectors

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = ["good", "bad", "strings", "guitar", "tuner", "cable", "sound", "cheap", "great", "broke"]


def reviews(count, seed, extra_word=None):
    rng = np.random.default_rng(seed)
    out = []
    for index in range(count):
        sentences = tuple(tuple(rng.choice(WORDS, rng.integers(3, 8))) for _ in range(rng.integers(1, 4)))
        if extra_word:
            sentences += ((extra_word, "sound", extra_word),)
        out.append(Review(f"u{index % 7}", f"p{index % 5}", float(1 + index % 5), sentences))
    return out


def small_options(tmp_path, **overrides):
    options = options_lib.section("data").pretrain
    options.update(dict(dim=8, epochs=1, min_count=1, workers=1, cache_dir=os.fspath(tmp_path / "cache")))
    options.update(overrides)
    return options


def test_vectors_file_round_trips_through_load_word_vectors(tmp_path):
    words = ["<pad>", "good", "bad", "naïve", "3.5"]
    vectors = np.random.default_rng(0).normal(size=(len(words), 6)).astype(np.float32)
    path = tmp_path / "vectors.txt"
    word_vectors.write_word2vec_text(path, words[1:] + ["two words"], np.vstack([vectors[1:], np.ones((1, 6))]))
    assert path.read_text().splitlines()[0] == "4 6"  # the word with a space is left out
    vocab = Vocabulary(("<pad>", "<unk>", "good", "bad", "naïve", "3.5", "absent"))
    loaded = load_word_vectors(path, vocab)
    assert loaded.found == 4
    np.testing.assert_allclose(loaded.matrix[2:6], vectors[1:], rtol=1e-5, atol=1e-6)
    assert not np.any(loaded.matrix[0])  # PAD stays zero


def test_all_but_the_top_removes_the_common_direction_and_keeps_the_scale(tmp_path):
    rng = np.random.default_rng(0)
    # Skip-gram-like vectors: one shared direction dominates every row, plus a strong second one.
    common, second = rng.normal(size=100), rng.normal(size=100)
    vectors = (1.5 * common + rng.normal(size=(300, 1)) * second + 0.3 * rng.normal(size=(300, 100))).astype(np.float32)
    processed = vocab_lib.all_but_the_top(vectors)  # 100 dims: the top 1 direction goes
    assert processed.std() == pytest.approx(vectors.std(), rel=1e-5)
    np.testing.assert_allclose(processed.mean(axis=0), 0.0, atol=1e-5)
    unit = second / np.linalg.norm(second)
    assert np.abs(processed @ unit).mean() < 0.1 * np.abs((vectors - vectors.mean(0)) @ unit).mean()
    normed = processed / np.linalg.norm(processed, axis=1, keepdims=True)
    cosines = normed @ normed.T
    assert np.abs(cosines[np.triu_indices(300, 1)]).mean() < 0.15  # 1.0-ish before
    # Through the loader: only the vocabulary's found rows are processed; PAD stays zero.
    words = [f"w{i}" for i in range(300)]
    path = tmp_path / "vectors.txt"
    word_vectors.write_word2vec_text(path, words, vectors)
    vocab = Vocabulary(("<pad>", "<unk>", *words, "absent"))
    loaded = load_word_vectors(path, vocab, processing="all_but_the_top")
    np.testing.assert_allclose(loaded.matrix[2:302], processed, atol=2e-4)  # the text file keeps 6 digits
    assert not np.any(loaded.matrix[0]) and np.any(loaded.matrix[302])
    centred = load_word_vectors(path, vocab, processing="center").matrix[2:302]
    np.testing.assert_allclose(centred.mean(axis=0), 0.0, atol=1e-5)
    assert centred.std() == pytest.approx(vectors.std(), rel=1e-5)
    with pytest.raises(ValueError, match="all_but_the_top"):
        load_word_vectors(path, vocab, processing="pca")


def test_vectors_come_from_the_training_text_only_and_are_cached(tmp_path):
    train, test = tmp_path / "train.txt", tmp_path / "test.txt"
    readers.write_tang(train, reviews(40, 0, extra_word="trainword"))
    readers.write_tang(test, reviews(10, 1, extra_word="testonlyword"))
    config = options_lib.section("data")
    config.train, config.test, config.format = os.fspath(train), os.fspath(test), "tang"
    config.valid_fraction = 0.2
    config.pretrain_vectors = True
    config.pretrain = small_options(tmp_path, cache_dir="")  # beside the data: tmp_path is writable
    splits = pipeline.load_splits(config)
    report = splits.report["pretrain_vectors"]
    assert not report["from_cache"] and os.path.dirname(report["path"]) == os.fspath(tmp_path)
    trained = {line.split(" ", 1)[0] for line in open(report["path"], encoding="utf-8").readlines()[1:]}
    assert "trainword" in trained and "testonlyword" not in trained
    assert trained <= set(splits.vocab.tokens)  # held-out training reviews are not trained on either
    assert splits.pretrained.shape == (len(splits.vocab), 8) and splits.report["pretrained_coverage"] == 1.0
    np.testing.assert_allclose(splits.pretrained, load_word_vectors(report["path"], splits.vocab,
                                                                    processing="all_but_the_top").matrix)

    again = pipeline.load_splits(config)
    assert again.report["pretrain_vectors"]["from_cache"] and again.report["pretrain_vectors"]["path"] == report["path"]
    np.testing.assert_array_equal(again.pretrained, splits.pretrained)
    config.pretrain.window = 2  # another option, another key: trained anew
    assert pipeline.load_splits(config).report["pretrain_vectors"]["path"] != report["path"]


def test_a_read_only_data_folder_is_left_alone(tmp_path, monkeypatch):
    """Folders whose permission bits deny writing (even to root, who could) use the cache folder."""
    data = tmp_path / "data"
    data.mkdir()
    readers.write_tang(data / "all.txt", reviews(30, 2))
    os.chmod(data, 0o555)
    try:
        assert not word_vectors.writable(os.fspath(data))
        config = options_lib.section("data")
        config.path, config.format, config.pretrain_vectors = os.fspath(data / "all.txt"), "tang", True
        config.pretrain = small_options(tmp_path, cache_dir="")
        monkeypatch.setenv("JAXREVIEWS_CACHE_DIR", os.fspath(tmp_path / "home-cache"))
        report = pipeline.load_splits(config).report["pretrain_vectors"]
        assert report["path"].startswith(os.fspath(tmp_path / "home-cache" / "vectors"))
        assert sorted(os.listdir(data)) == ["all.txt"]
    finally:
        os.chmod(data, 0o755)


def test_pretrain_and_a_vectors_file_together_are_refused(tmp_path):
    config = options_lib.section("data")
    config.synthetic_size = "tiny"
    config.pretrain_vectors, config.pretrained_vectors = True, "glove.txt"
    with pytest.raises(ValueError, match="set one of them"):
        pipeline.load_splits(config)


def test_pretrain_vectors_tool_writes_what_a_run_reads(tmp_path):
    source, output = tmp_path / "reviews.json", tmp_path / "vectors.txt"
    readers.write_amazon(source, reviews(30, 3))
    result = subprocess.run([sys.executable, os.path.join(REPO, "tools", "pretrain_vectors.py"), os.fspath(source),
                             "--format", "amazon", "--dim", "6", "--epochs", "1", "--min-count", "1",
                             "--workers", "1", "--output", os.fspath(output)],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    assert "6 dimensions" in result.stdout
    loaded = load_word_vectors(output, Vocabulary(("<pad>", "<unk>", *WORDS)))
    assert loaded.found == len(WORDS) and loaded.matrix.shape == (len(WORDS) + 2, 6)
