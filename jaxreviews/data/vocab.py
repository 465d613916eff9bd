"""Vocabulary and user/product id maps, built from the training split only.

Token ids: PAD=0, OOV=1, then words by decreasing training count (ties by first appearance, so a
vocabulary is deterministic). User/product ids: 0 is the reserved id of anyone not seen in training.
"""
from __future__ import annotations

import dataclasses
import gzip
import os
from collections.abc import Iterable, Sequence

import numpy as np

from jaxreviews.data.types import OOV_ID, PAD_ID, UNKNOWN_ID

PAD_TOKEN = "<pad>"
OOV_TOKEN = "<unk>"
UNKNOWN_NAME = "<unknown>"


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    tokens: tuple[str, ...]  # tokens[i] is the word of id i; tokens[0] = PAD, tokens[1] = OOV

    def __post_init__(self):
        if self.tokens[:2] != (PAD_TOKEN, OOV_TOKEN):
            raise ValueError(f"a vocabulary starts with {PAD_TOKEN!r}, {OOV_TOKEN!r}; got {self.tokens[:2]}")
        object.__setattr__(self, "_index", {t: i for i, t in enumerate(self.tokens)})

    @classmethod
    def from_counts(cls, words: Sequence[str], counts: Sequence[int], *, min_count: int = 1,
                    max_size: int | None = None) -> Vocabulary:
        """Keeps words seen at least `min_count` times, the most frequent first, up to `max_size` ids
        in all (PAD and OOV included). `words` are in first-appearance order."""
        counts = np.asarray(counts, np.int64)
        order = np.argsort(-counts, kind="stable")
        order = order[counts[order] >= min_count]
        if max_size is not None:
            order = order[: max(0, max_size - 2)]
        return cls((PAD_TOKEN, OOV_TOKEN) + tuple(words[i] for i in order))

    @classmethod
    def build(cls, sentences_of_reviews: Iterable[Iterable[Sequence[str]]], **kw) -> Vocabulary:
        """A vocabulary from tokenised reviews (each an iterable of sentences of tokens)."""
        counts: dict[str, int] = {}
        for review in sentences_of_reviews:
            for sentence in review:
                for token in sentence:
                    counts[token] = counts.get(token, 0) + 1
        return cls.from_counts(list(counts), list(counts.values()), **kw)

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: str) -> bool:
        return token in self._index

    def id(self, token: str) -> int:
        return self._index.get(token, OOV_ID)

    def encode(self, tokens: Iterable[str]) -> np.ndarray:
        get = self._index.get
        return np.fromiter((get(t, OOV_ID) for t in tokens), np.int32)

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.tokens[i] for i in ids if i != PAD_ID]

    def save(self, path: str | os.PathLike) -> None:
        """One token a line, line i holds id i."""
        with open(path, "w", encoding="utf-8") as f:
            for token in self.tokens:
                if "\n" in token:
                    raise ValueError(f"token {token!r} holds a newline and cannot be saved one a line")
                f.write(token + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocabulary:
        with open(path, encoding="utf-8") as f:
            tokens = tuple(line.rstrip("\n") for line in f)
        if not tokens or tokens[:2] != (PAD_TOKEN, OOV_TOKEN):
            raise ValueError(f"{path}:1: not a jaxreviews vocabulary (expected {PAD_TOKEN!r} then {OOV_TOKEN!r})")
        if len(set(tokens)) != len(tokens):
            raise ValueError(f"{path}: a token appears twice")
        return cls(tokens)


@dataclasses.dataclass(frozen=True)
class IdMap:
    """Names of users (or products) seen in training -> ids 1..n; anything else -> 0 (unknown)."""

    names: tuple[str, ...]  # names[0] is the unknown placeholder

    def __post_init__(self):
        object.__setattr__(self, "_index", {n: i for i, n in enumerate(self.names) if i != UNKNOWN_ID})

    @classmethod
    def build(cls, names: Iterable[str]) -> IdMap:
        return cls((UNKNOWN_NAME,) + tuple(dict.fromkeys(names)))

    def __len__(self) -> int:
        """Rows an embedding table needs, the unknown id included."""
        return len(self.names)

    def id(self, name: str) -> int:
        return self._index.get(name, UNKNOWN_ID)

    def encode(self, names: Iterable[str]) -> np.ndarray:
        get = self._index.get
        return np.fromiter((get(n, UNKNOWN_ID) for n in names), np.int32)

    def save(self, path: str | os.PathLike) -> None:
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(n + "\n" for n in self.names)

    @classmethod
    def load(cls, path: str | os.PathLike) -> IdMap:
        with open(path, encoding="utf-8") as f:
            return cls(tuple(line.rstrip("\n") for line in f))


@dataclasses.dataclass(frozen=True)
class PretrainedVectors:
    matrix: np.ndarray  # float32 [len(vocab), dim], row i for token id i
    found: int  # vocabulary words (PAD and OOV excluded) that have a vector
    coverage: float  # found / (len(vocab) - 2)


VECTOR_PROCESSING = ("none", "center", "all_but_the_top")


def all_but_the_top(vectors: np.ndarray, components: int | None = None) -> np.ndarray:
    """Mu & Viswanath (2018): subtract the mean vector, then the projections on the top principal
    directions (`components`, default dim / 100, at least 1), rescaled to the std they had.
    Skip-gram vectors share a large common direction (on Musical Instruments the mean vector is 82%
    of a row's norm; two random words' cosine 0.56), so a model fed them sees every word alike."""
    std = float(vectors.std())
    centred = vectors - vectors.mean(axis=0, keepdims=True)
    if components is None:
        components = max(1, vectors.shape[1] // 100)
    if components:
        _, _, directions = np.linalg.svd(centred.astype(np.float64), full_matrices=False)
        top = directions[:components]
        centred = centred - (centred @ top.T) @ top
    return (centred * (std / max(float(centred.std()), 1e-12))).astype(np.float32)


def load_word_vectors(path: str | os.PathLike, vocab: Vocabulary, *, seed: int = 0,
                      scale: float | None = None, processing: str = "none") -> PretrainedVectors:
    """Reads GloVe (`word v1 .. vd`) or word2vec text (a `count dim` header line first) vectors.

    `processing` of the vocabulary's vectors: "center" subtracts their mean, "all_but_the_top" also
    their top principal directions (`all_but_the_top`); both keep their std. Rows of words without a
    vector are then drawn from N(0, std of the found vectors) so they train like the others; the
    PAD row is zero. Lines of words outside the vocabulary are skipped unparsed.
    """
    if processing not in VECTOR_PROCESSING:
        raise ValueError(f"vector processing {processing!r}: choose one of {VECTOR_PROCESSING}")
    opener = gzip.open if str(path).endswith(".gz") else open
    matrix = None
    found = np.zeros(len(vocab), bool)
    with opener(path, "rt", encoding="utf-8", errors="strict") as f:
        for line_number, line in enumerate(f, 1):
            word, _, rest = line.rstrip("\n").rstrip(" ").partition(" ")
            if line_number == 1 and word.isdigit() and rest.strip().isdigit():
                continue  # word2vec header "count dim"
            token_id = vocab._index.get(word)
            if token_id is None or token_id in (PAD_ID, OOV_ID):
                continue
            try:
                vector = np.array(rest.split(" "), np.float32)
            except ValueError:
                raise ValueError(f"{path}:{line_number}: vector of {word!r} has a value that is not a number") from None
            if matrix is None:
                matrix = np.zeros((len(vocab), vector.size), np.float32)
            if vector.size != matrix.shape[1]:
                raise ValueError(f"{path}:{line_number}: vector of {word!r} has {vector.size} values, "
                                 f"earlier ones {matrix.shape[1]}")
            matrix[token_id] = vector
            found[token_id] = True
    if matrix is None:
        raise ValueError(f"{path}: no vector for any of the {len(vocab) - 2} vocabulary words")
    if processing != "none":
        matrix[found] = all_but_the_top(matrix[found], None if processing == "all_but_the_top" else 0)
    std = float(matrix[found].std()) if scale is None else scale
    missing = ~found
    missing[PAD_ID] = False
    rng = np.random.default_rng(seed)
    matrix[missing] = rng.normal(0.0, std, (int(missing.sum()), matrix.shape[1])).astype(np.float32)
    matrix[PAD_ID] = 0.0
    return PretrainedVectors(matrix, int(found.sum()), float(found.sum()) / max(1, len(vocab) - 2))
