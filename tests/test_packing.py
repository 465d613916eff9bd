"""Packed batches: the invariants stated in jaxreviews/data/packing.py, each checked."""
import dataclasses

import numpy as np
import pytest

from jaxreviews.data import corpus, packing, synthetic
from tests.test_batching import random_reviews

B = 8


@pytest.fixture(scope="module")
def encoded():
    collected = corpus.collect(random_reviews(157, seed=4))
    vocab = collected.build_vocabulary()
    users, products = collected.build_id_maps()
    return collected.encode(None, vocab, users, products)


@pytest.fixture(scope="module")
def synthetic_corpus():
    spec = synthetic.default_spec(num_reviews=3000)
    collected = corpus.collect(synthetic.generate(spec).reviews)
    vocab = collected.build_vocabulary()
    users, products = collected.build_id_maps()
    return collected.encode(None, vocab, users, products)


def test_best_fit_places_every_item_whole_without_overlap():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 33, 200)
    row, offset, used = packing.best_fit_rows(lengths, 32)
    assert (offset + lengths <= 32).all()
    occupied = np.zeros((used, 32), int)
    for r, o, n in zip(row, offset, lengths):
        occupied[r, o:o + n] += 1
    assert occupied.max() == 1 and occupied.sum() == lengths.sum()
    assert used <= np.ceil(lengths.sum() / 32) * 1.06  # near the lower bound
    assert packing.best_fit_rows(lengths, 32, max_rows=used - 1) is None
    pairs = rng.integers(1, 32, 50)  # items that pair up exactly: the optimum is one row per pair
    _, _, used = packing.best_fit_rows(rng.permutation(np.concatenate([pairs, 32 - pairs])), 32)
    assert used == 50


def test_balanced_batches_take_every_item_once_with_level_loads():
    rng = np.random.default_rng(1)
    loads = rng.lognormal(3, 1, 1000).astype(int) + 1
    sizes = packing.group_sizes(1000, 40, 25)
    groups = packing.balanced_batches(loads, sizes, rng)
    everything = np.sort(np.concatenate(groups))
    np.testing.assert_array_equal(everything, np.arange(1000))
    assert [len(g) for g in groups] == sizes.tolist() == [25] * 40
    assert packing.group_sizes(990, 40, 25, parts=2).tolist() == [25] * 38 + [20, 20]
    totals = np.array([loads[g].sum() for g in groups])
    assert totals.max() - totals.min() <= loads.max() * 0.5 + 10


def decode(batch, layout):
    """Packed batch -> {review slot: list of sentences (token id lists)}, reading only the batch."""
    if layout == "flat":
        out = {}
        for r in range(batch["tokens"].shape[0]):
            for t in np.flatnonzero(batch["token_mask"][r]):
                out.setdefault(int(batch["token_review"][r, t]), [[]])[0].append(int(batch["tokens"][r, t]))
        return out
    sentence_tokens: dict[int, list[int]] = {}
    for r in range(batch["words"].shape[0]):
        for t in np.flatnonzero(batch["word_mask"][r]):
            sentence_tokens.setdefault(int(batch["word_sentence"][r, t]), []).append(int(batch["words"][r, t]))
    out = {}
    rows, length = batch["sentence_review"].shape
    for r in range(rows):
        for s in np.flatnonzero(batch["sentence_mask"][r]):
            out.setdefault(int(batch["sentence_review"][r, s]), []).append(sentence_tokens[r * length + s])
    return out


def expected(data, review, layout, shape):
    sentences = [list(map(int, s)) for s in data.arrays.review_tokens(review)]
    if layout == "flat":
        tokens = [t for s in sentences for t in s][:shape.row_length]
        return [tokens] if tokens else None
    kept = [s[:shape.row_length] for s in sentences[:shape.sentence_row_length]]
    return kept or None


@pytest.mark.parametrize("layout", ["hierarchical", "flat"])
def test_an_epoch_holds_every_review_once_in_fixed_shapes(encoded, layout):
    batcher = packing.PackedBatcher(encoded, layout=layout, batch_size=B, seed=3)
    seen = []
    for batch in batcher.epoch(0):
        for key, value in batch.items():
            expected_shape = {"user": (B,), "product": (B,), "label": (B,), "rating": (B,), "weight": (B,)}.get(key)
            if expected_shape is None:
                rows = batcher.shape.rows if key in ("words", "word_mask", "word_sentence", "tokens", "token_mask",
                                                      "token_review") else batcher.shape.sentence_rows
                length = batcher.shape.row_length if rows == batcher.shape.rows else batcher.shape.sentence_row_length
                expected_shape = (rows, length)
            assert value.shape == expected_shape, key
        seen.append(int((batch["weight"] > 0).sum()))
    assert sum(seen) == len(encoded)
    assert sorted(seen)[1:] == [B] * (len(seen) - 1)  # one batch holds the remainder
    assert len(batcher.epoch_parts(0)) == batcher.steps_per_epoch == -(-len(encoded) // B)
    members = np.sort(np.concatenate(batcher.epoch_parts(0)))
    np.testing.assert_array_equal(members, np.arange(len(encoded)))


@pytest.mark.parametrize("layout", ["hierarchical", "flat"])
def test_batches_hold_the_reviews_tokens_in_order(encoded, layout):
    """Decoding a packed batch from its arrays alone gives back each review's sentences and
    tokens in order (after the documented truncation), with its user, product and rating."""
    batcher = packing.PackedBatcher(encoded, layout=layout, batch_size=B, seed=0, max_words=12, max_sentences=5)
    for members, batch in zip(batcher.epoch_parts(1), batcher.epoch(1)):
        got = decode(batch, layout)
        for slot, review in enumerate(members):
            assert got.get(slot) == expected(encoded, review, layout, batcher.shape)
            assert batch["user"][slot] == encoded.arrays.users[review]
            assert batch["rating"][slot] == encoded.arrays.ratings[review]
        assert set(got) <= set(range(len(members)))


def test_order_is_a_pure_function_of_seed_and_epoch_and_resumes(encoded):
    a = packing.PackedBatcher(encoded, layout="hierarchical", batch_size=B, seed=5)
    b = packing.PackedBatcher(encoded, layout="hierarchical", batch_size=B, seed=5)
    for x, y in zip(a.epoch_parts(2), b.epoch_parts(2)):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y) for x, y in zip(a.epoch_parts(2), a.epoch_parts(3)))
    full = list(a.epoch(2))
    resumed = list(a.epoch(2, start_step=3))
    assert len(resumed) == len(full) - 3
    for x, y in zip(full[3:], resumed):
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])


def test_evaluation_visits_every_review_exactly_once_in_the_training_shape(encoded):
    train = packing.PackedBatcher(encoded, layout="hierarchical", batch_size=B, seed=0)
    other = dataclasses.replace(encoded, arrays=encoded.arrays.take(np.arange(40)))
    evaluation = packing.PackedBatcher(other, layout="hierarchical", batch_size=B, shape=train.shape)
    assert evaluation.shape == train.shape
    members = np.concatenate(evaluation.eval_parts())
    np.testing.assert_array_equal(np.sort(members), np.arange(40))
    weights = sum(batch["weight"].sum() for batch in evaluation.evaluation())
    assert weights == 40


@pytest.mark.parametrize("layout", ["hierarchical", "flat"])
def test_process_parts_are_disjoint_and_assemble_the_global_batch(encoded, layout):
    """Two processes: each builds its half of every global batch; together they hold the batch's
    reviews once, and their segment ids point into their own half of the global arrays."""
    parts = [packing.PackedBatcher(encoded, layout=layout, batch_size=B, seed=2, process_index=p, process_count=2)
             for p in (0, 1)]
    assert parts[0].shape == parts[1].shape and parts[0].shape.rows % 2 == 0
    plan = parts[0].epoch_parts(0)
    assert len(plan) == 2 * parts[0].steps_per_epoch
    for step, (first, second) in enumerate(zip(parts[0].epoch(0), parts[1].epoch(0))):
        assert not set(plan[2 * step]) & set(plan[2 * step + 1])
        glued = {key: np.concatenate([first[key], second[key]]) for key in first}
        got = decode(glued, layout)
        members = np.concatenate([plan[2 * step], np.full(B // 2 - len(plan[2 * step]), -1), plan[2 * step + 1]])
        for slot, review in enumerate(members):
            if review >= 0:
                assert got.get(slot) == expected(encoded, review, layout, parts[0].shape)


@pytest.mark.parametrize("layout", ["hierarchical", "flat"])
def test_one_process_with_two_parts_builds_the_batches_of_two_processes(encoded, layout):
    """`parts=2` on one process (with two devices) gives exactly the global batches two processes
    assemble, training and evaluation alike: a multi-host run can be reproduced on one host."""
    one = packing.PackedBatcher(encoded, layout=layout, batch_size=B, seed=2, parts=2, row_multiple=2)
    two = [packing.PackedBatcher(encoded, layout=layout, batch_size=B, seed=2, process_index=p, process_count=2)
           for p in (0, 1)]
    assert one.shape == two[0].shape == two[1].shape
    for batches in ((one.epoch(1), two[0].epoch(1), two[1].epoch(1)),
                    (one.evaluation(), two[0].evaluation(), two[1].evaluation())):
        count = 0
        for whole, first, second in zip(*batches, strict=True):
            assert set(whole) == set(first)
            for key in whole:
                np.testing.assert_array_equal(whole[key], np.concatenate([first[key], second[key]]), err_msg=key)
            count += 1
        assert count > 1
    with pytest.raises(ValueError, match="3 parts cannot be split over 2 processes"):
        packing.PackedBatcher(encoded, layout=layout, batch_size=12, parts=3, process_count=2)


def test_padding_efficiency_is_high_on_the_synthetic_corpus(synthetic_corpus):
    for layout, floor in (("hierarchical", 0.9), ("flat", 0.8)):
        batcher = packing.PackedBatcher(synthetic_corpus, layout=layout, batch_size=32, seed=0)
        report = batcher.padding_report()
        assert report["efficiency"] >= floor, (layout, report)
        assert report["truncated_tokens"] == 0
        # The measured figure is what the batches hold: count real slots in an epoch.
        real = sum(int(batch[("word_mask" if layout == "hierarchical" else "token_mask")].sum())
                   for batch in batcher.epoch(0))
        assert real == report["tokens"]


def test_overflowing_batches_are_repaired_not_truncated(encoded):
    """A shape with no slack: batches that would overflow are fixed by swapping reviews."""
    batcher = packing.PackedBatcher(encoded, layout="hierarchical", batch_size=B, seed=0)
    for epoch in range(2, 8):
        parts = batcher.epoch_parts(epoch)
        assert all(batcher._fits(part) for part in parts)
        np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(len(encoded)))
