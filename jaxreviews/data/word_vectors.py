"""In-domain word vectors: skip-gram with negative sampling (word2vec, Mikolov et al. 2013) trained on
the TRAINING split's text, as the NSC / HUAPA line of work pretrains them on each data set.

    words, vectors = train_skipgram(sentences, dim=200)           # gensim's word2vec, sg=1
    write_word2vec_text("vectors.txt", words, vectors)            # what load_word_vectors reads
    path = cached_training_vectors(collected, train_indices, options, data_paths=[...])

Why gensim and not our own JAX skip-gram (`python tools/bench_vectors.py FILE`, which trains both
with the same options on the same tokens): on the whole Musical Instruments file (10,261 reviews,
1.07M tokens, 11,808 words with min_count 2; 200 dimensions, window 5, 5 negatives, 5 epochs)
gensim's C word2vec took 22 s of CPU, a jitted JAX skip-gram (4,096 pairs a step, sparse
scatter-add updates of both tables) 181 s, 8x more, for vectors of the same use: ridge regression
of the rating on each review's mean vector scores held-out RMSE 0.8274 (gensim) and 0.8275 (JAX),
mean rating 0.8862, and both give sensible neighbours (great: terrific, fantastic, wonderful).
Measured 2026-11-28 on the project's 2 cores while other jobs held them (wall 90 s and 700 s):
the CPU seconds are the comparable figure. The JAX step is bound by its scatter-adds into the
[vocab, 200] tables, which gensim's per-pair Hogwild updates never build.

Cache (`cached_training_vectors`): the file is keyed by a sha256 of the training text (every
token of every training sentence, in order) and of the options, so a different split, file or
option trains anew, and the same ones read the file back. It is written beside the data (as
`<data file>.vectors-<dim>d-<key>.txt`) when that folder is writable (by its permission bits, even for
root: a `dr-xr-xr-x` data folder is left alone), else into `options.cache_dir`
(default `~/.cache/jaxreviews/vectors`, or `$JAXREVIEWS_CACHE_DIR/vectors`). Written to a temporary
name and renamed, so a reader never sees half a file.

Never validation or test text: the caller passes the training split's indices, and a test checks
that a word seen only in validation / test text gets no vector.
"""
from __future__ import annotations

import hashlib
import os
import stat
import tempfile
import time
from collections.abc import Iterable, Sequence

import ml_collections
import numpy as np

from jaxreviews.data.corpus import Collected

FORMAT_VERSION = 1  # part of the cache key: bump when the training or the file format changes


def train_skipgram(sentences: Sequence[Sequence[str]], *, dim: int = 200, window: int = 5, epochs: int = 5,
                   negative: int = 5, min_count: int = 2, sample: float = 1e-3, seed: int = 0,
                   workers: int = 2) -> tuple[list[str], np.ndarray]:
    """(words, float32 [len(words), dim]) of skip-gram with negative sampling over `sentences`
    (lists of tokens), by gensim's word2vec (sg=1). Words most frequent first."""
    try:
        from gensim.models import Word2Vec
    except ImportError as error:  # a dependency of the project: only a broken install gets here
        raise ImportError("pretraining word vectors needs gensim: pip install 'gensim>=4.3'") from error
    sentences = [list(sentence) for sentence in sentences if len(sentence)]
    if not sentences:
        raise ValueError("no text to train word vectors on (every training review is empty)")
    model = Word2Vec(sentences=sentences, vector_size=dim, window=window, min_count=min_count, sg=1,
                     negative=negative, sample=sample, epochs=epochs, seed=seed, workers=max(1, workers))
    words = list(model.wv.index_to_key)
    if not words:
        raise ValueError(f"no word occurs min_count={min_count} times in the training text: lower "
                         "data.pretrain.min_count")
    return words, np.asarray(model.wv.vectors, np.float32)


def write_word2vec_text(path: str | os.PathLike, words: Sequence[str], vectors: np.ndarray) -> None:
    """word2vec's text format: a `count dim` line, then `word v1 ... vd` a line (words holding
    whitespace left out). Atomic (a temporary file renamed): a concurrent reader sees all or none."""
    vectors = np.asarray(vectors, np.float32)
    if vectors.ndim != 2 or len(words) != vectors.shape[0]:
        raise ValueError(f"{len(words)} words for vectors of shape {vectors.shape}")
    # A word with whitespace in it cannot be one field of a line: left out (its row starts random).
    keep = [i for i, word in enumerate(words) if word and not any(c.isspace() for c in word)]
    words, vectors = [words[i] for i in keep], vectors[keep]
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".vectors-", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as f:
            f.write(f"{len(words)} {vectors.shape[1]}\n")
            for word, vector in zip(words, vectors):
                f.write(word + " " + " ".join(f"{value:.6g}" for value in vector) + "\n")
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def sentences_of(collected: Collected, indices: np.ndarray | None = None) -> list[list[str]]:
    """The sentences (lists of token strings) of the reviews at `indices` (all when None)."""
    arrays = collected.arrays if indices is None else collected.arrays.take(indices)
    words = np.asarray(collected.words, dtype=object)
    tokens = words[arrays.token_ids] if len(arrays.token_ids) else np.zeros(0, object)
    bounds = arrays.token_offsets
    return [tokens[bounds[s]:bounds[s + 1]].tolist() for s in range(len(bounds) - 1)]


def text_key(sentences: Iterable[Sequence[str]], options: ml_collections.ConfigDict) -> str:
    """sha256 (first 16 hex digits) of the text and of every option that changes the vectors."""
    digest = hashlib.sha256()
    settings = {key: options[key] for key in ("dim", "window", "epochs", "negative", "min_count", "sample", "seed")}
    digest.update(repr((FORMAT_VERSION, sorted(settings.items()))).encode())
    for sentence in sentences:
        digest.update(" ".join(sentence).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()[:16]


def default_cache_dir() -> str:
    root = os.environ.get("JAXREVIEWS_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "jaxreviews")
    return os.path.join(root, "vectors")


def writable(directory: str) -> bool:
    """Whether to write into `directory`: it allows it AND its permission bits say so. root may
    write into a `dr-xr-xr-x` folder (a shared, read-only data set), but must not: the bits decide."""
    if not (os.path.isdir(directory) and os.access(directory, os.W_OK | os.X_OK)):
        return False
    return bool(os.stat(directory).st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def cache_path(key: str, options: ml_collections.ConfigDict, data_paths: Sequence[str]) -> str:
    """Where the vectors of `key` live: beside the first data file when its folder is writable
    (and no cache_dir is set), else in the cache folder."""
    name = f"vectors-{options.dim}d-{key}.txt"
    if not options.get("cache_dir") and data_paths:
        first = os.path.abspath(os.path.expanduser(data_paths[0]))
        if writable(os.path.dirname(first)):
            return f"{first}.{name}"
    return os.path.join(os.path.expanduser(options.get("cache_dir") or default_cache_dir()), name)


def cached_training_vectors(collected: Collected, train_indices: np.ndarray, options: ml_collections.ConfigDict,
                            data_paths: Sequence[str] = ()) -> tuple[str, dict]:
    """(path of word2vec text vectors trained on the reviews `train_indices` of `collected`, a
    report). Trains and writes them unless the cache already holds them; see the module docstring."""
    started = time.perf_counter()
    sentences = sentences_of(collected, train_indices)
    key = text_key(sentences, options)
    path = cache_path(key, options, data_paths)
    report = {"path": path, "key": key, "from_cache": os.path.exists(path)}
    if not report["from_cache"]:
        words, vectors = train_skipgram(sentences, dim=options.dim, window=options.window, epochs=options.epochs,
                                        negative=options.negative, min_count=options.min_count,
                                        sample=options.sample, seed=options.seed, workers=options.workers)
        write_word2vec_text(path, words, vectors)
        report["words"] = len(words)
    report["seconds"] = round(time.perf_counter() - started, 2)
    return path, report
