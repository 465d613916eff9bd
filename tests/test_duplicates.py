import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jaxreviews.data.duplicates import (
    DuplicateSummary,
    drop_duplicates,
    duplicate_groups,
    find_duplicates,
    group_split,
    review_key,
)
from jaxreviews.data.types import Review

TEXT = (("love", "it", "."), ("five", "stars"))


def test_review_key_ignores_product_only():
    key = review_key(Review("u1", "p1", 5.0, TEXT))
    assert review_key(Review("u1", "p2", 5, TEXT)) == key
    assert len(key) == 16
    different = [
        Review("u2", "p1", 5.0, TEXT),
        Review("u1", "p1", 4.0, TEXT),
        Review("u1", "p1", 5.0, (("love", "it", "."),)),
        Review("u1", "p1", 5.0, (("love", "it"), (".", "five", "stars"))),  # same tokens, other sentences
        Review("u1", "p1", 5.0, (("love", "it", ".", "five", "stars"),)),
        Review("u1", "p1", 5.0, (("loveit", "."), ("five", "stars"))),
    ]
    assert len({key, *map(review_key, different)}) == len(different) + 1


def test_groups_summary_and_first_copies():
    reviews = [
        Review("u1", "p1", 5.0, TEXT),
        Review("u2", "p1", 5.0, TEXT),
        Review("u1", "p2", 5.0, TEXT),  # copy of 0 on another product variant
        Review("u3", "p1", 1.0, (("bad",),)),
        Review("u1", "p3", 5.0, TEXT),  # copy of 0
        Review("u2", "p9", 5.0, TEXT),  # copy of 1
    ]
    np.testing.assert_array_equal(duplicate_groups(reviews), [0, 1, 0, 2, 0, 1])
    assert duplicate_groups(reviews).dtype == np.int64
    assert find_duplicates(reviews) == DuplicateSummary(
        reviews=6, distinct=3, duplicate_reviews=3, groups_with_copies=2, largest_group=3)
    np.testing.assert_array_equal(drop_duplicates(reviews), [0, 1, 3])


def test_empty_input():
    assert duplicate_groups([]).shape == (0,)
    assert find_duplicates([]) == DuplicateSummary(0, 0, 0, 0, 0)
    assert [len(split) for split in group_split(np.zeros(0, np.int64))] == [0, 0, 0]


group_sizes = st.lists(st.integers(1, 6), min_size=1, max_size=200)


@given(group_sizes, st.integers(0, 2**32 - 1))
def test_group_split_keeps_groups_together_and_sizes_near_fractions(sizes, seed):
    fractions = (0.8, 0.1, 0.1)
    group_ids = np.random.default_rng(1).permutation(np.repeat(np.arange(len(sizes)) * 7, sizes))
    splits = group_split(group_ids, fractions, seed=seed)
    assert len(splits) == 3
    np.testing.assert_array_equal(np.sort(np.concatenate(splits)), np.arange(len(group_ids)))
    groups_per_split = [set(group_ids[split].tolist()) for split in splits]
    for a in range(3):
        for b in range(a + 1, 3):
            assert not groups_per_split[a] & groups_per_split[b]
    for split, fraction in zip(splits, fractions):
        assert abs(len(split) - fraction * len(group_ids)) <= max(sizes)  # half a group at each cut
        assert np.all(np.diff(split) > 0)
    for again, split in zip(group_split(group_ids, fractions, seed=seed), splits):
        np.testing.assert_array_equal(again, split)


def test_group_split_is_close_to_fractions_on_many_small_groups():
    group_ids = np.repeat(np.arange(3000), np.random.default_rng(0).integers(1, 4, 3000))
    splits = group_split(group_ids, (0.7, 0.2, 0.1), seed=3)
    np.testing.assert_allclose([len(split) / len(group_ids) for split in splits], (0.7, 0.2, 0.1), atol=0.005)
    other_seed = group_split(group_ids, (0.7, 0.2, 0.1), seed=4)
    assert not np.array_equal(splits[1], other_seed[1])


def test_group_split_allows_empty_splits_and_checks_fractions():
    assert [len(split) for split in group_split(np.arange(10), (1.0, 0.0))] == [10, 0]
    for fractions in [(0.5, 0.4), (1.2, -0.2), ()]:
        with pytest.raises(ValueError, match="fractions"):
            group_split(np.arange(10), fractions)


def test_ratings_without_text_are_copies_only_of_the_same_product():
    from jaxreviews.data import corpus
    rows = [Review("u1", "p1", 5.0), Review("u1", "p2", 5.0), Review("u1", "p1", 5.0), Review("u2", "p1", 5.0)]
    expected = [0, 1, 0, 2]
    assert duplicate_groups(rows).tolist() == expected
    assert corpus.collect(rows).duplicate_groups.tolist() == expected
