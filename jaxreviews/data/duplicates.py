"""Exact duplicate reviews, and splits that keep every copy of a review on one side.

Real dumps repeat a review once per product variant (the Amazon All_Beauty 5-core has 5,269
reviews but only ~1,400 distinct user/text/rating triples), so a random split puts copies of a
test review in the training set. A duplicate here is the same user, the same tokens in the same
sentences and the same rating; the product may differ.
"""
from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Sequence

import numpy as np

from jaxreviews.data.types import Review

# Separators that cannot occur inside a token, user id or rating, so different reviews never
# serialise to the same bytes.
_TOKEN_SEPARATOR = "\x1f"
_SENTENCE_SEPARATOR = "\x1e"
_FIELD_SEPARATOR = "\x1d"


def identity(review: Review) -> tuple:
    """What makes two reviews copies, hashed (in-process keys, no text held): the same user, rating
    and text; a rating without text (rating tables) copies only the same user's rating of the same
    product, since a user's many 5-star ratings are not copies of each other."""
    text = hash(review.sentences) if review.sentences else ("product", review.product)
    return review.user, review.rating, text


def review_key(review: Review) -> bytes:
    """A 16-byte digest of `identity`'s fields: equal for duplicates, stable across processes."""
    if review.sentences:
        text = _SENTENCE_SEPARATOR.join(_TOKEN_SEPARATOR.join(sentence) for sentence in review.sentences)
    else:
        text = _FIELD_SEPARATOR + review.product  # no sentence serialises to this
    serialised = _FIELD_SEPARATOR.join((review.user, repr(float(review.rating)), text))
    return hashlib.blake2b(serialised.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def group_ids_from_keys(keys: Iterable[bytes]) -> np.ndarray:
    """int64 group id per key, numbered in order of first appearance."""
    first_seen: dict[bytes, int] = {}
    return np.fromiter((first_seen.setdefault(key, len(first_seen)) for key in keys), dtype=np.int64)


def duplicate_groups(reviews: Iterable[Review]) -> np.ndarray:
    """int64 group id per review; exact duplicates share one. Ids count up from 0 by first copy."""
    return group_ids_from_keys(map(review_key, reviews))


@dataclasses.dataclass(frozen=True)
class DuplicateSummary:
    reviews: int
    distinct: int  # groups: distinct (user, text, rating) triples
    duplicate_reviews: int  # copies beyond the first of each group
    groups_with_copies: int
    largest_group: int

    @classmethod
    def from_groups(cls, group_ids: np.ndarray) -> DuplicateSummary:
        _, sizes = np.unique(np.asarray(group_ids, dtype=np.int64), return_counts=True)
        return cls(
            reviews=int(sizes.sum()),
            distinct=len(sizes),
            duplicate_reviews=int(sizes.sum() - len(sizes)),
            groups_with_copies=int((sizes > 1).sum()),
            largest_group=int(sizes.max(initial=0)),
        )


def find_duplicates(reviews: Iterable[Review]) -> DuplicateSummary:
    """How many reviews are copies, and in how many groups."""
    return DuplicateSummary.from_groups(duplicate_groups(reviews))


def drop_duplicates(reviews: Iterable[Review]) -> np.ndarray:
    """Indices (ascending) of the reviews to keep: the first of each group of copies."""
    _, first_indices = np.unique(duplicate_groups(reviews), return_index=True)
    return np.sort(first_indices)


def group_split(
    group_ids: Sequence[int] | np.ndarray,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    *,
    seed: int = 0,
) -> tuple[np.ndarray, ...]:
    """Review indices of each split, all copies of a group in the same split.

    Groups are shuffled by `seed`, then laid end to end and cut where the running review count
    crosses each fraction; a group goes to the split that holds its middle. So each split's size is
    within half the largest group of its target, and the result depends only on (group_ids, seed).
    Indices within a split are ascending.
    """
    group_ids = np.asarray(group_ids, dtype=np.int64)
    fractions = np.asarray(fractions, dtype=np.float64)
    if fractions.ndim != 1 or len(fractions) == 0 or (fractions < 0).any() or abs(fractions.sum() - 1) > 1e-6:
        raise ValueError(f"fractions must be non-negative and sum to 1, got {fractions.tolist()}")
    groups, review_group = np.unique(group_ids, return_inverse=True)
    sizes = np.bincount(review_group, minlength=len(groups))
    order = np.random.default_rng(seed).permutation(len(groups))
    ends = np.cumsum(sizes[order])
    middles = ends - sizes[order] / 2
    cuts = np.cumsum(fractions)[:-1] * len(group_ids)
    split_of_group = np.empty(len(groups), dtype=np.int64)
    split_of_group[order] = np.searchsorted(cuts, middles, side="right")
    split_of_review = split_of_group[review_group]
    return tuple(np.flatnonzero(split_of_review == split) for split in range(len(fractions)))


def group_folds(group_ids: Sequence[int] | np.ndarray, folds: int, *, seed: int = 0) -> np.ndarray:
    """int64 [N] fold (0..folds-1) of each review for K-fold cross-validation, all copies of a
    group in one fold: `group_split` into `folds` equal fractions, so each fold's size is within
    half the largest group of N / folds, and the folds depend only on (group_ids, folds, seed)."""
    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    parts = group_split(group_ids, fractions=(1.0 / folds,) * folds, seed=seed)
    fold_of = np.empty(len(np.asarray(group_ids)), np.int64)
    for fold, indices in enumerate(parts):
        fold_of[indices] = fold
    return fold_of
