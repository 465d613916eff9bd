"""Corpus arrays, vocabulary, id maps and batches: shapes, masks, completeness, order, resume."""
import numpy as np
import pytest

from jaxreviews.data import batching, corpus
from jaxreviews.data.types import Review
from jaxreviews.data.vocab import IdMap, Vocabulary, load_word_vectors


def random_reviews(n=157, seed=0, vocab=60):
    rng = np.random.default_rng(seed)
    reviews = []
    for i in range(n):
        sentences = tuple(
            tuple(f"w{int(rng.zipf(1.5)) % vocab}" for _ in range(rng.integers(1, 30)))
            for _ in range(0 if i % 50 == 0 else rng.integers(1, 12)))
        reviews.append(Review(f"u{rng.integers(20)}", f"p{rng.integers(15)}", float(rng.integers(1, 6)), sentences))
    return reviews


@pytest.fixture(scope="module")
def collected():
    return corpus.collect(random_reviews())


@pytest.fixture(scope="module")
def encoded(collected):
    vocab = collected.build_vocabulary()
    users, products = collected.build_id_maps()
    return collected.encode(None, vocab, users, products)


def test_collect_round_trips_every_token(collected):
    reviews = random_reviews()
    assert len(collected.arrays) == len(reviews)
    for r in (0, 1, 50, 156):
        got = [[collected.words[t] for t in s] for s in collected.arrays.review_tokens(r)]
        assert got == [list(s) for s in reviews[r].sentences]
    assert collected.arrays.num_tokens.sum() == sum(len(t) for r in reviews for t in r.sentences)


def test_take_matches_reviews(collected):
    idx = np.array([5, 0, 99, 50])
    sub = collected.arrays.take(idx)
    for j, r in enumerate(idx):
        assert [list(s) for s in sub.review_tokens(j)] == [list(s) for s in collected.arrays.review_tokens(r)]
    np.testing.assert_array_equal(sub.ratings, collected.arrays.ratings[idx])


def test_duplicates_share_a_group():
    a = Review("u1", "p1", 5.0, (("great", "stuff"),))
    c = corpus.collect([a, Review("u1", "p2", 5.0, a.sentences), Review("u2", "p1", 5.0, a.sentences), a])
    g = c.duplicate_groups
    assert g[0] == g[1] == g[3] and g[2] != g[0]


def test_vocabulary_min_count_max_size_and_file_round_trip(tmp_path):
    vocab = Vocabulary.build([[["a", "b", "a"], ["c", "a", "b"]], [["d"]]], min_count=2)
    assert vocab.tokens == ("<pad>", "<unk>", "a", "b")
    assert vocab.id("c") == 1 and vocab.id("a") == 2
    assert len(Vocabulary.build([[["a", "b", "a", "c"]]], max_size=3)) == 3
    vocab.save(tmp_path / "vocab.txt")
    assert Vocabulary.load(tmp_path / "vocab.txt") == vocab
    (tmp_path / "bad.txt").write_text("hello\n")
    with pytest.raises(ValueError, match="bad.txt:1"):
        Vocabulary.load(tmp_path / "bad.txt")


def test_vocabulary_and_id_maps_come_from_train_only(collected):
    train = np.arange(100)
    vocab = collected.build_vocabulary(train)
    users, products = collected.build_id_maps(train)
    test = collected.encode(np.arange(100, 157), vocab, users, products)
    train_users = {collected.user_names[u] for u in collected.arrays.users[train]}
    test_names = [collected.user_names[u] for u in collected.arrays.users[100:]]
    expected_unseen = sum(n not in train_users for n in test_names)
    assert test.unseen_counts()["unseen_user"] == expected_unseen
    assert len(users) == len(train_users) + 1 and users.id("nobody") == 0


def test_id_map_round_trip(tmp_path):
    m = IdMap.build(["x", "y", "x"])
    assert len(m) == 3 and m.id("y") == 2 and m.id("z") == 0
    m.save(tmp_path / "m.txt")
    assert IdMap.load(tmp_path / "m.txt") == m


def test_pretrained_vectors_glove_and_word2vec(tmp_path):
    vocab = Vocabulary(("<pad>", "<unk>", "good", "bad", "meh"))
    (tmp_path / "glove.txt").write_text("good 1 2 3\nzzz 0 0 0\nbad -1 -2 -3\n")
    vectors = load_word_vectors(tmp_path / "glove.txt", vocab)
    assert vectors.found == 2 and vectors.coverage == pytest.approx(2 / 3)
    np.testing.assert_array_equal(vectors.matrix[2], [1, 2, 3])
    np.testing.assert_array_equal(vectors.matrix[0], 0)
    assert np.abs(vectors.matrix[4]).sum() > 0  # drawn, not zero
    (tmp_path / "w2v.txt").write_text("2 3\ngood 1 2 3\nbad 1 x 3\n")
    with pytest.raises(ValueError, match="w2v.txt:3"):
        load_word_vectors(tmp_path / "w2v.txt", vocab)


@pytest.mark.parametrize("layout", ["hierarchical", "flat"])
def test_batches_have_bucket_shapes_and_masks(encoded, layout):
    batcher = batching.Batcher(encoded, layout=layout, batch_size=16, num_buckets=4, max_words=16, max_sentences=8)
    assert 1 <= len(batcher.buckets) <= 4
    shapes = set()
    for batch in batcher.epoch(0):
        key = "words" if layout == "hierarchical" else "tokens"
        shapes.add(batch[key].shape[1:])
        assert batch[key].dtype == np.int32 and batch[key].shape[0] == 16
        np.testing.assert_array_equal(batch[key] != 0,
                                      batch["word_mask" if layout == "hierarchical" else "token_mask"])
        assert set(batch) >= {"user", "product", "label", "rating", "weight"}
        assert (batch["label"] == batch["rating"] - 1).all()
        if layout == "hierarchical":
            np.testing.assert_array_equal(batch["sentence_mask"], batch["word_mask"].any(-1))
    assert shapes <= set(batcher.buckets)


@pytest.mark.parametrize("layout", ["hierarchical", "flat", "ids"])
def test_epoch_sees_every_review_once(encoded, layout):
    batcher = batching.Batcher(encoded, layout=layout, batch_size=16, seed=3)
    for plan in (batcher.epoch_plan(0), batcher.epoch_plan(1), batcher.eval_plan()):
        seen = np.concatenate([p.indices for p in plan])
        seen = seen[seen >= 0]
        np.testing.assert_array_equal(np.sort(seen), np.arange(len(encoded)))
    weights = sum(b["weight"].sum() for b in batcher.evaluation())
    assert weights == len(encoded)


def test_batch_content_matches_review_with_truncation(encoded):
    arrays = encoded.arrays
    r = int(np.argmax(arrays.num_sentences))
    batch = batching.make_batch(encoded, np.array([r, -1]), "hierarchical", (3, 4), rating_range=(1, 5))
    for s, sentence in enumerate(arrays.review_tokens(r)[:3]):
        expected = np.zeros(4, np.int32)
        expected[:min(4, len(sentence))] = sentence[:4]
        np.testing.assert_array_equal(batch["words"][0, s], expected)
    assert batch["weight"].tolist() == [1.0, 0.0] and not batch["words"][1].any()
    flat = batching.make_batch(encoded, np.array([r]), "flat", (10,), rating_range=(1, 5))
    np.testing.assert_array_equal(flat["tokens"][0], np.concatenate(arrays.review_tokens(r))[:10])


def test_review_without_text_gets_empty_masks(encoded):
    empty = int(np.flatnonzero(encoded.arrays.num_sentences == 0)[0])
    batch = batching.make_batch(encoded, np.array([empty]), "hierarchical", (2, 4), rating_range=(1, 5))
    assert not batch["sentence_mask"].any() and batch["weight"][0] == 1


def test_order_is_deterministic_new_each_epoch_and_resumable(encoded):
    a = batching.Batcher(encoded, layout="flat", batch_size=8, seed=1)
    b = batching.Batcher(encoded, layout="flat", batch_size=8, seed=1)
    first = [p.indices for p in a.epoch_plan(0)]
    np.testing.assert_array_equal(np.concatenate(first), np.concatenate([p.indices for p in b.epoch_plan(0)]))
    assert not np.array_equal(np.concatenate(first), np.concatenate([p.indices for p in a.epoch_plan(1)]))
    full = list(a.epoch(2))
    resumed = list(b.epoch(2, start_step=5))
    assert len(resumed) == len(full) - 5
    for x, y in zip(full[5:], resumed):
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])


def test_processes_get_disjoint_complete_slices(encoded):
    processes = [batching.Batcher(encoded, layout="hierarchical", batch_size=12, seed=4,
                                  process_index=p, process_count=3) for p in range(3)]
    single = batching.Batcher(encoded, layout="hierarchical", batch_size=12, seed=4)
    for step, parts in enumerate(zip(*(p.epoch(1) for p in processes))):
        assert all(part["words"].shape[0] == 4 for part in parts)
        whole = next(iter(single.epoch(1, start_step=step)))
        for key in whole:
            np.testing.assert_array_equal(np.concatenate([part[key] for part in parts]), whole[key])
    with pytest.raises(ValueError, match="divisible"):
        batching.Batcher(encoded, layout="flat", batch_size=10, process_count=3)


def test_padding_report_counts_truncation(encoded):
    batcher = batching.Batcher(encoded, layout="hierarchical", batch_size=8, buckets=[(2, 4)])
    report = batcher.padding_report()
    assert report["truncated_tokens"] > 0
    assert 0 < report["efficiency"] <= 1
    kept = sum(int(b["word_mask"].sum()) for b in batcher.evaluation())
    assert kept == report["tokens"] - report["truncated_tokens"]


def test_prefetch_yields_in_order_and_raises_errors():
    assert list(batching.prefetch(iter(range(10)), size=3)) == list(range(10))
    assert list(batching.prefetch(iter(range(4)), size=2, transform=lambda x: x * 2)) == [0, 2, 4, 6]

    def broken():
        yield 1
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError, match="boom"):
        list(batching.prefetch(broken()))


def test_wrap_sentences_keeps_every_token_in_order(encoded):
    arrays = encoded.arrays
    wrapped = arrays.wrap_sentences(5)
    np.testing.assert_array_equal(wrapped.token_ids, arrays.token_ids)
    np.testing.assert_array_equal(wrapped.num_tokens, arrays.num_tokens)
    assert wrapped.sentence_lengths.max() <= 5
    r = int(np.argmax(arrays.longest_sentence))
    long = arrays.review_tokens(r)
    np.testing.assert_array_equal(np.concatenate(wrapped.review_tokens(r)), np.concatenate(long))
    assert len(wrapped.review_tokens(r)) == sum(-(-len(s) // 5) for s in long)


def test_chosen_buckets_fit_most_reviews_and_beat_one_shape(encoded):
    one = batching.Batcher(encoded, layout="flat", batch_size=8, num_buckets=1)
    several = batching.Batcher(encoded, layout="flat", batch_size=8, num_buckets=5)
    assert len(one.buckets) == 1 and len(several.buckets) <= 5
    assert several.padding_report()["efficiency"] > one.padding_report()["efficiency"]
    assert several.padding_report()["truncated_tokens"] == 0
