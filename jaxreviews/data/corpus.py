"""Reviews as flat ragged arrays: what a file becomes in memory, about 4 bytes a token.

`collect` makes one streaming pass over any iterable of `Review`s and stores tokens as provisional
ids (one per distinct string, in order of first appearance), so a vocabulary can then be built from
the training split alone and applied with one vectorised lookup (`encode`), without reading twice.
"""
from __future__ import annotations

import array
import dataclasses
import itertools
from collections.abc import Iterable, Sequence

import numpy as np

from jaxreviews.data import duplicates
from jaxreviews.data.types import OOV_ID, Review
from jaxreviews.data.vocab import IdMap, Vocabulary


def concatenated_ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """np.concatenate([np.arange(s, s + n) for s, n in zip(starts, lengths)]), vectorised."""
    starts = np.asarray(starts, np.int64)
    lengths = np.asarray(lengths, np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    ends = np.cumsum(lengths)
    return np.repeat(starts - (ends - lengths), lengths) + np.arange(total, dtype=np.int64)


@dataclasses.dataclass(frozen=True)
class ReviewArrays:
    """N reviews. Sentences of review r: sentence_offsets[r]..sentence_offsets[r+1]; tokens of
    sentence s: token_offsets[s]..token_offsets[s+1]. Ids are provisional (see `Collected`) or final."""

    token_ids: np.ndarray  # int32 [num_tokens]
    token_offsets: np.ndarray  # int64 [num_sentences + 1]
    sentence_offsets: np.ndarray  # int64 [N + 1]
    users: np.ndarray  # int32 [N]
    products: np.ndarray  # int32 [N]
    ratings: np.ndarray  # float32 [N]

    def __len__(self) -> int:
        return len(self.ratings)

    @property
    def num_sentences(self) -> np.ndarray:
        """int64 [N] sentences of each review."""
        return np.diff(self.sentence_offsets)

    @property
    def sentence_lengths(self) -> np.ndarray:
        """int64 [num_sentences] tokens of each sentence."""
        return np.diff(self.token_offsets)

    @property
    def num_tokens(self) -> np.ndarray:
        """int64 [N] tokens of each review."""
        return np.diff(self.token_offsets[self.sentence_offsets])

    # The same for some reviews (sentences) only: O(len(reviews)), where indexing the properties
    # above costs O(N) a call, a batch's worth of reviews of a large split included.
    def num_sentences_of(self, reviews: np.ndarray) -> np.ndarray:
        reviews = np.asarray(reviews, np.int64)
        return self.sentence_offsets[reviews + 1] - self.sentence_offsets[reviews]

    def sentence_lengths_of(self, sentences: np.ndarray) -> np.ndarray:
        sentences = np.asarray(sentences, np.int64)
        return self.token_offsets[sentences + 1] - self.token_offsets[sentences]

    def num_tokens_of(self, reviews: np.ndarray) -> np.ndarray:
        reviews = np.asarray(reviews, np.int64)
        return self.token_offsets[self.sentence_offsets[reviews + 1]] - self.token_offsets[self.sentence_offsets[reviews]]

    @property
    def longest_sentence(self) -> np.ndarray:
        """int64 [N] tokens of each review's longest sentence (0 for a review without text)."""
        lengths = self.sentence_lengths
        out = np.zeros(len(self), np.int64)
        has = self.num_sentences > 0
        if lengths.size:
            out[has] = np.maximum.reduceat(lengths, self.sentence_offsets[:-1][has])
        return out

    def take(self, indices: Sequence[int] | np.ndarray, *, with_tokens: bool = True) -> ReviewArrays:
        """The reviews at `indices`, in that order; `with_tokens=False`: their offsets, ids and
        ratings only (token_ids stays as it is: a streamed split's tokens live in records)."""
        indices = np.asarray(indices, np.int64)
        sentence_counts = self.num_sentences_of(indices)
        sentences = concatenated_ranges(self.sentence_offsets[indices], sentence_counts)
        lengths = self.sentence_lengths_of(sentences)
        tokens = concatenated_ranges(self.token_offsets[sentences], lengths) if with_tokens else None
        return ReviewArrays(
            token_ids=self.token_ids[tokens] if with_tokens else self.token_ids,
            token_offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            sentence_offsets=np.concatenate([[0], np.cumsum(sentence_counts)]).astype(np.int64),
            users=self.users[indices], products=self.products[indices], ratings=self.ratings[indices])

    def wrap_sentences(self, max_words: int) -> ReviewArrays:
        """Sentences longer than `max_words` continue on a new sentence row (no token is lost).

        Trades a little of the sentence structure for far less padding in `[S, W]` batches: long
        sentences no longer force a wide W on every sentence of their batch."""
        lengths = self.sentence_lengths
        pieces = np.maximum(1, -(-lengths // max_words))  # ceil, an empty sentence stays one row
        if (pieces == 1).all():
            return self
        piece_start = concatenated_ranges(np.zeros_like(pieces), pieces) * max_words
        starts = np.repeat(self.token_offsets[:-1], pieces) + piece_start
        ends = np.minimum(starts + max_words, np.repeat(self.token_offsets[1:], pieces))
        first_piece = np.concatenate([[0], np.cumsum(pieces)])
        return dataclasses.replace(self, token_offsets=np.concatenate([starts, ends[-1:]]).astype(np.int64),
                                   sentence_offsets=first_piece[self.sentence_offsets].astype(np.int64))

    def review_tokens(self, r: int) -> list[np.ndarray]:
        """Review r as a list of sentences of token ids (for inspection and tests)."""
        s0, s1 = self.sentence_offsets[r], self.sentence_offsets[r + 1]
        return [self.token_ids[self.token_offsets[s]:self.token_offsets[s + 1]] for s in range(s0, s1)]


@dataclasses.dataclass(frozen=True)
class Collected:
    """Reviews with provisional ids and the string tables that name them."""

    arrays: ReviewArrays
    words: list[str]  # provisional token id -> string
    user_names: list[str]
    product_names: list[str]
    duplicate_groups: np.ndarray  # int64 [N]: equal for reviews with the same user, text and rating

    def word_counts(self, indices: np.ndarray | None = None) -> np.ndarray:
        """int64 [len(words)] how often each word occurs in the reviews at `indices` (default all)."""
        arrays = self.arrays if indices is None else self.arrays.take(indices)
        return np.bincount(arrays.token_ids, minlength=len(self.words))

    def build_vocabulary(self, indices: np.ndarray | None = None, **kw) -> Vocabulary:
        return Vocabulary.from_counts(self.words, self.word_counts(indices), **kw)

    def build_id_maps(self, indices: np.ndarray | None = None) -> tuple[IdMap, IdMap]:
        """User and product maps of the reviews at `indices`, in order of first appearance."""
        users, products = self.arrays.users, self.arrays.products
        if indices is not None:
            users, products = users[indices], products[indices]
        first_users = users[np.sort(np.unique(users, return_index=True)[1])]
        first_products = products[np.sort(np.unique(products, return_index=True)[1])]
        return (IdMap.build(self.user_names[i] for i in first_users),
                IdMap.build(self.product_names[i] for i in first_products))

    def encode(self, indices: np.ndarray | None, vocab: Vocabulary, users: IdMap,
               products: IdMap) -> EncodedReviews:
        """The reviews at `indices` (all when None) with final ids: words outside `vocab` -> OOV,
        users / products outside the maps -> 0 (unknown)."""
        arrays = self.arrays if indices is None else self.arrays.take(indices)
        word_map = np.fromiter((vocab.id(w) for w in self.words), np.int32, len(self.words))
        user_map = users.encode(self.user_names)
        product_map = products.encode(self.product_names)
        encoded = dataclasses.replace(
            arrays, token_ids=word_map[arrays.token_ids], users=user_map[arrays.users],
            products=product_map[arrays.products])
        return EncodedReviews(encoded, vocab_size=len(vocab), num_users=len(users),
                              num_products=len(products))


@dataclasses.dataclass(frozen=True)
class EncodedReviews:
    """A split ready for batching: final ids and the table sizes models need."""

    arrays: ReviewArrays
    vocab_size: int
    num_users: int  # rows of a user table, the unknown id 0 included
    num_products: int

    def __len__(self) -> int:
        return len(self.arrays)

    def unseen_counts(self) -> dict[str, int]:
        """Reviews whose user / product was not in the training split (id 0), and OOV tokens."""
        return {"reviews": len(self), "unseen_user": int((self.arrays.users == 0).sum()),
                "unseen_product": int((self.arrays.products == 0).sum()),
                "tokens": int(self.arrays.token_ids.size),
                "oov_tokens": int((self.arrays.token_ids == OOV_ID).sum())}


class _Interner(dict):
    """str -> id, a new id on first sight: `list(map(interner.__getitem__, tokens))` runs in C."""

    def __missing__(self, key):
        value = self[key] = len(self)
        return value


def collect(reviews: Iterable[Review], token_sink=None) -> Collected:
    """One pass over `reviews` (any iterable; a reader's stream is never held whole).

    `token_sink`: called with each review's provisional token ids (an int32 `array.array`) instead
    of keeping them, so only offsets, ids and ratings stay in memory (`prepared` writes them to
    records); the result's token_ids is then empty."""
    words, users, products, groups = _Interner(), _Interner(), _Interner(), _Interner()
    # array.array keeps 4-8 bytes an entry where a list of ints would keep ~36.
    token_ids = array.array("i")
    token_ends = array.array("q", [0])
    sentence_ends = array.array("q", [0])
    user_ids, product_ids, group_ids = array.array("i"), array.array("i"), array.array("q")
    ratings = array.array("f")
    word_id = words.__getitem__
    chain, accumulate = itertools.chain.from_iterable, itertools.accumulate
    for review in reviews:
        sentences = review.sentences
        if sentences:
            token_ends.extend(accumulate(map(len, sentences), initial=token_ends[-1]))
            token_ends.pop(-len(sentences) - 1)  # the initial value is already the previous end
            if token_sink is None:
                token_ids.extend(map(word_id, chain(sentences)))
            else:
                token_sink(array.array("i", map(word_id, chain(sentences))))
        elif token_sink is not None:
            token_sink(array.array("i"))
        sentence_ends.append(len(token_ends) - 1)
        user_ids.append(users[review.user])
        product_ids.append(products[review.product])
        ratings.append(review.rating)
        group_ids.append(groups[duplicates.identity(review)])  # a hash, not the text: streaming
    arrays = ReviewArrays(
        token_ids=np.frombuffer(token_ids, np.int32), token_offsets=np.frombuffer(token_ends, np.int64),
        sentence_offsets=np.frombuffer(sentence_ends, np.int64),
        users=np.frombuffer(user_ids, np.int32), products=np.frombuffer(product_ids, np.int32),
        ratings=np.frombuffer(ratings, np.float32))
    return Collected(arrays, list(words), list(users), list(products), np.frombuffer(group_ids, np.int64))
