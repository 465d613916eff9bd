"""A prepared directory: a corpus encoded once into ArrayRecord files, then streamed per batch.

Why. `load_splits` holds every split's tokens in memory, on every process: about 3.3 KB a review
while loading, 23 GB for the 7M-review Yelp corpus. A prepared directory keeps the tokens on disk,
one record per review, and holds in memory only what plans the batches: per review its user,
product, rating and sentence offsets, per sentence its token offset (about 100 bytes a review).

Same splits, same batches. `prepare` runs `pipeline.split_and_encode`, the code `load_splits`
runs, with a `corpus.collect` that writes each review's provisional token ids to a temporary
record file instead of keeping them, in one pass over the input. The split (seeded, duplicate
groups whole), the vocabulary (training counts, `min_count` / `max_vocab`), the id maps and the
rating scale are therefore the ones `load_splits` makes of the same options, and a batcher over a
loaded directory plans the batches it plans in memory (tests check both).

Layout of DIR (FORMAT_VERSION):
  prepared.json        the data options it was prepared from, the rating scale, split sizes, shards
  stats.json           per split: reviews, tokens, OOV tokens, unseen users / products, length
                       histograms; what was read (bad lines with file:line, when data.lenient)
  vocab.txt users.txt products.txt    as in a run's workdir
  <split>/index.npz    users, products, ratings [N]; sentence_offsets [N + 1]; token_offsets
                       [sentences + 1], the offsets into the split's concatenated tokens
  <split>/tokens-00000-of-00004.array_record   review i's token ids (int32, little-endian) as
                       record i of the shards read in order; shards hold consecutive reviews

Memory while preparing: the per-review arrays above, the word / user / product tables and one
16-byte key per distinct review (duplicate groups), never the text or the tokens of the corpus.
A directory is written under a temporary name and renamed when complete: a directory that
exists is whole.
"""
from __future__ import annotations

import array
import dataclasses
import functools
import hashlib
import json
import os
import shutil
import time

import ml_collections
import numpy as np

from jaxreviews.data import corpus, pipeline
from jaxreviews.data.corpus import Collected, EncodedReviews, ReviewArrays
from jaxreviews.data.types import OOV_ID
from jaxreviews.data.vocab import IdMap, Vocabulary

FORMAT_VERSION = 1
SPLITS = ("train", "validation", "test")
# The data options that decide what a prepared directory holds: its cache key, and what a run
# streaming from it reports it was prepared with.
CONTENT_OPTIONS = ("name", "synthetic_size", "synthetic_seed", "format", "path", "train", "valid", "test",
                   "split_fractions", "split_seed", "valid_fraction", "folds", "fold", "rating_range",
                   "rating_step", "lenient", "drop_duplicates", "min_count", "max_vocab")
READ_CHUNK = 8192  # records read at once while preparing
DEFAULT_CACHE = os.path.join("~", ".cache", "jaxreviews", "prepared")


class NotInMemory:
    """The token_ids of a streamed split: its tokens are read per batch (`StreamedReviews.read`).
    Any use as an array fails loudly instead of seeing an empty corpus."""

    size = None

    def _refuse(self, *_args, **_kwargs):
        raise TypeError("the tokens of a streamed split are not in memory: read the reviews you need with "
                        "StreamedReviews.read(indices), or all of them with .materialize()")

    __getitem__ = __len__ = __array__ = __iter__ = astype = _refuse

    def __reduce__(self):
        return (NotInMemory, ())


NOT_IN_MEMORY = NotInMemory()


class _Records:
    """Records by index over shards holding consecutive reviews, read with one batched call per
    shard (ArrayRecord's reader; Grain's generic source starts a thread pool per call, 3x slower
    for a batch of 32 reviews)."""

    def __init__(self, shards: tuple[str, ...]):
        from array_record.python.array_record_module import ArrayRecordReader

        self.readers = [ArrayRecordReader(path, "readahead_buffer_size:0") for path in shards]
        self.starts = np.cumsum([0] + [reader.num_records() for reader in self.readers])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def read(self, indices: np.ndarray) -> list[bytes]:
        """The records at `indices`, in that order."""
        indices = np.asarray(indices, np.int64)
        if len(indices) and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"record {int(indices.max())} of {len(self)}")
        shard = np.searchsorted(self.starts, indices, side="right") - 1
        out: list[bytes] = [b""] * len(indices)
        for k in np.unique(shard).tolist():
            at = np.flatnonzero(shard == k)
            for position, record in zip(at.tolist(), self.readers[k].read((indices[at] - self.starts[k]).tolist())):
                out[position] = record
        return out

    def close(self) -> None:
        for reader in self.readers:
            reader.close()


@functools.lru_cache(maxsize=16)
def _source(shards: tuple[str, ...]) -> _Records:
    """A split's records, opened once per process (a Grain worker opens its own)."""
    return _Records(shards)


@dataclasses.dataclass(frozen=True)
class StreamedReviews(EncodedReviews):
    """A split whose tokens stay in record files: `arrays` has every offset, id and rating, and
    token_ids NOT_IN_MEMORY. `read` builds the in-memory EncodedReviews of some reviews."""

    shards: tuple[str, ...] = ()
    counts: tuple = ()  # unseen_counts() as recorded when prepared, items

    def unseen_counts(self) -> dict[str, int]:
        return dict(self.counts)

    def read(self, indices: np.ndarray) -> EncodedReviews:
        """The reviews at `indices` (in that order) with their tokens, read from the records."""
        indices = np.asarray(indices, np.int64)
        meta = self.arrays.take(indices, with_tokens=False)
        records = _source(self.shards).read(indices) if len(indices) else []
        tokens = np.frombuffer(b"".join(records), "<i4").astype(np.int32, copy=False)
        if len(tokens) != meta.token_offsets[-1]:
            raise ValueError(f"{self.shards[0]}: records hold {len(tokens)} tokens for reviews whose index says "
                             f"{int(meta.token_offsets[-1])}: the directory is damaged, prepare it again")
        return EncodedReviews(dataclasses.replace(meta, token_ids=tokens), vocab_size=self.vocab_size,
                              num_users=self.num_users, num_products=self.num_products)

    def materialize(self) -> EncodedReviews:
        """Every review in memory (what `load_splits` would hold): for small splits only."""
        return self.read(np.arange(len(self)))


def is_streamed(data) -> bool:
    return isinstance(data, StreamedReviews)


# --- preparing ---------------------------------------------------------------------------------------


class _RecordCollected(Collected):
    """A `Collected` whose provisional token ids are records of `temp` (review i = record i)."""

    temp: tuple[str, ...] = ()

    def _token_chunks(self, indices: np.ndarray):
        source = _source(self.temp)
        for start in range(0, len(indices), READ_CHUNK):
            chunk = indices[start:start + READ_CHUNK].tolist()
            yield chunk, source.read(np.asarray(chunk, np.int64))

    def word_counts(self, indices: np.ndarray | None = None) -> np.ndarray:
        indices = np.arange(len(self.arrays)) if indices is None else np.asarray(indices, np.int64)
        counts = np.zeros(len(self.words), np.int64)
        for _, records in self._token_chunks(indices):
            counts += np.bincount(np.frombuffer(b"".join(records), np.int32), minlength=len(self.words))
        return counts


def _collect_to_records(stream, temp_dir: str) -> _RecordCollected:
    """`corpus.collect` with the tokens written to a temporary record file as they are read."""
    from array_record.python.array_record_module import ArrayRecordWriter

    os.makedirs(temp_dir, exist_ok=True)
    path = os.path.join(temp_dir, f"collected-{len(os.listdir(temp_dir)):02d}.array_record")
    writer = ArrayRecordWriter(path, "group_size:1")
    try:
        collected = corpus.collect(stream, token_sink=lambda ids: writer.write(ids.tobytes()))
    finally:
        writer.close()
    result = _RecordCollected(collected.arrays, collected.words, collected.user_names, collected.product_names,
                              collected.duplicate_groups)
    object.__setattr__(result, "temp", (path,))
    return result


def _histogram(values: np.ndarray) -> dict[str, int]:
    """Counts in power-of-two bins: {"0": n, "1": n, "2-3": n, "4-7": n, ...}."""
    values = np.asarray(values, np.int64)
    out = {}
    if (values == 0).any():
        out["0"] = int((values == 0).sum())
    bins = np.floor(np.log2(np.maximum(values, 1))).astype(np.int64)
    for b, count in zip(*np.unique(bins[values > 0], return_counts=True)):
        low, high = 2 ** int(b), 2 ** (int(b) + 1) - 1
        out[str(low) if low == high else f"{low}-{high}"] = int(count)
    return out


class _SplitWriter:
    """`split_and_encode`'s `encode`: writes each split's records and index under `root`."""

    def __init__(self, root: str, shards: int):
        self.root, self.shards = root, shards
        self.stats: dict = {}

    def __call__(self, name, source: _RecordCollected, indices, vocab: Vocabulary, users: IdMap,
                 products: IdMap) -> StreamedReviews:
        from array_record.python.array_record_module import ArrayRecordWriter

        indices = np.asarray(indices, np.int64)
        directory = os.path.join(self.root, name)
        os.makedirs(directory, exist_ok=True)
        word_map = np.fromiter((vocab.id(w) for w in source.words), np.int32, len(source.words))
        meta = source.arrays.take(indices, with_tokens=False)
        meta = dataclasses.replace(meta, users=users.encode(source.user_names)[meta.users],
                                   products=products.encode(source.product_names)[meta.products])
        shards = max(1, min(self.shards, len(indices)))
        per_shard = -(-len(indices) // shards)
        paths = [os.path.join(directory, f"tokens-{k:05d}-of-{shards:05d}.array_record") for k in range(shards)]
        tokens = oov = written = 0
        writer = None
        try:
            for chunk, records in source._token_chunks(indices):
                for record in records:
                    if written % per_shard == 0:
                        if writer is not None:
                            writer.close()
                        writer = ArrayRecordWriter(paths[written // per_shard], "group_size:1")
                    ids = word_map[np.frombuffer(record, np.int32)]
                    writer.write(ids.astype("<i4").tobytes())
                    tokens += len(ids)
                    oov += int((ids == OOV_ID).sum())
                    written += 1
        finally:
            if writer is not None:
                writer.close()
        np.savez(os.path.join(directory, "index.npz"), users=meta.users, products=meta.products,
                 ratings=meta.ratings, sentence_offsets=meta.sentence_offsets, token_offsets=meta.token_offsets)
        counts = {"reviews": len(indices), "unseen_user": int((meta.users == 0).sum()),
                  "unseen_product": int((meta.products == 0).sum()), "tokens": tokens, "oov_tokens": oov}
        self.stats[name] = {**counts, "tokens_per_review": _histogram(meta.num_tokens),
                            "sentences_per_review": _histogram(meta.num_sentences),
                            "shards": [os.path.basename(p) for p in paths[:shards]]}
        return StreamedReviews(dataclasses.replace(meta, token_ids=NOT_IN_MEMORY), vocab_size=len(vocab),
                               num_users=len(users), num_products=len(products), shards=tuple(paths),
                               counts=tuple(counts.items()))


def content_options(config: ml_collections.ConfigDict) -> dict:
    """The data options that decide a prepared directory's content, as plain values."""
    values = {}
    for key in CONTENT_OPTIONS:
        value = config.get(key)
        values[key] = list(value) if isinstance(value, (tuple, list)) else value
    return values


def prepare(config: ml_collections.ConfigDict, output: str, *, shards: int = 4) -> dict:
    """Prepares the data of `config` (a `data` config, as load_splits reads) into `output`, which
    must not exist; returns its stats.json. One pass over the input, bounded memory (module doc)."""
    output = os.path.abspath(os.path.expanduser(output))
    if os.path.exists(output):
        raise ValueError(f"{output} exists: prepare into a new directory (or delete it first)")
    if config.get("pretrain_vectors"):
        raise ValueError("data.pretrain_vectors trains vectors on the text in memory: prepare without it, and give "
                         "trained vectors to the run as data.pretrained_vectors")
    parent = os.path.dirname(output)
    os.makedirs(parent, exist_ok=True)
    building = f"{output}.partial-{os.getpid()}"
    shutil.rmtree(building, ignore_errors=True)
    started = time.perf_counter()
    plain = ml_collections.ConfigDict(config.to_dict())
    plain.wrap_sentences = 0  # applied when a run loads the directory: one directory serves both
    writer = _SplitWriter(building, shards)
    temp = os.path.join(building, "collected")
    try:
        encoded, vocab, users, products, scale, report, _, _ = pipeline.split_and_encode(
            plain, collect=lambda stream: _collect_to_records(stream, temp), encode=writer)
        _source.cache_clear()  # the temporary records are about to go
        shutil.rmtree(temp)
        for table, name in ((vocab, "vocab.txt"), (users, "users.txt"), (products, "products.txt")):
            table.save(os.path.join(building, name))
        stats = {"splits": writer.stats, "read": {k: v for k, v in report.items() if k.startswith("read")},
                 "duplicates_dropped": report.get("duplicates_dropped", 0),
                 "seconds": round(time.perf_counter() - started, 2)}
        description = {"format_version": FORMAT_VERSION, "options": content_options(config), "report": report,
                       "rating_range": list(scale.rating_range), "rating_step": scale.step,
                       "sizes": {name: len(split) for name, split in encoded.items()},
                       "shards": {name: writer.stats[name]["shards"] for name in encoded}}
        with open(os.path.join(building, "stats.json"), "w") as f:
            json.dump(stats, f, indent=1)
        with open(os.path.join(building, "prepared.json"), "w") as f:
            json.dump(description, f, indent=1)
        os.rename(building, output)
    except BaseException:
        _source.cache_clear()
        shutil.rmtree(building, ignore_errors=True)
        raise
    return stats


# --- loading -----------------------------------------------------------------------------------------


def load(directory: str, *, wrap_sentences: int = 0) -> pipeline.DataSplits:
    """The splits of a prepared `directory`, streamed: the tokens stay in its records."""
    directory = os.path.abspath(os.path.expanduser(directory))
    described = os.path.join(directory, "prepared.json")
    if not os.path.isdir(directory):
        raise ValueError(f"{directory}: no such directory (data.prepared_dir; make one with tools/prepare_data.py)")
    try:
        with open(described) as f:
            description = json.load(f)
    except FileNotFoundError:
        raise ValueError(f"{directory} is not a prepared directory (no prepared.json): make one with "
                         "tools/prepare_data.py") from None
    except ValueError as error:
        raise ValueError(f"{described}: {error}") from None
    if description.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{described}: format version {description.get('format_version')}, this jaxreviews reads "
                         f"{FORMAT_VERSION}: prepare the data again")
    vocab = Vocabulary.load(os.path.join(directory, "vocab.txt"))
    users = IdMap.load(os.path.join(directory, "users.txt"))
    products = IdMap.load(os.path.join(directory, "products.txt"))
    splits = {}
    for name in SPLITS:
        with np.load(os.path.join(directory, name, "index.npz")) as index:
            arrays = ReviewArrays(token_ids=NOT_IN_MEMORY, token_offsets=index["token_offsets"],
                                  sentence_offsets=index["sentence_offsets"], users=index["users"],
                                  products=index["products"], ratings=index["ratings"])
        if wrap_sentences:
            arrays = arrays.wrap_sentences(wrap_sentences)
        shards = tuple(os.path.join(directory, name, shard) for shard in description["shards"][name])
        missing = [path for path in shards if not os.path.exists(path)]
        if missing:
            raise ValueError(f"{missing[0]}: missing: the directory is damaged, prepare it again")
        with open(os.path.join(directory, "stats.json")) as f:
            counts = {key: value for key, value in json.load(f)["splits"][name].items() if isinstance(value, int)}
        splits[name] = StreamedReviews(arrays, vocab_size=len(vocab), num_users=len(users),
                                       num_products=len(products), shards=shards, counts=tuple(counts.items()))
    report = dict(description["report"])
    report["prepared_from"] = report.get("source")
    report["source"] = "prepared"
    report["prepared_dir"] = directory
    return pipeline.DataSplits(splits["train"], splits["validation"], splits["test"], vocab, users, products,
                               tuple(description["rating_range"]), float(description["rating_step"]), report)


# --- which directory a config streams from -------------------------------------------------------------


def count_reviews(paths: list[str], above: int) -> int:
    """Lines of `paths` (a review a line in every format), counting stops once past `above`."""
    from jaxreviews.data import readers

    total = 0
    for path in paths:
        with readers.open_bytes(os.path.expanduser(path)) as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                total += block.count(b"\n")
                if total > above:
                    return total
    return total


def cache_key(config: ml_collections.ConfigDict) -> str:
    """A digest of the input files' bytes and the content options: a changed file or option is
    another directory, never a stale one."""
    digest = hashlib.blake2b(digest_size=12)
    digest.update(json.dumps({"version": FORMAT_VERSION, **content_options(config)}, sort_keys=True).encode())
    for key in pipeline.FILE_FLAGS:
        for path in pipeline.input_files(config.get(key) or ""):
            digest.update(f"{key}:".encode())
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 24), b""):
                    digest.update(block)
    return digest.hexdigest()


def directory_for(config: ml_collections.ConfigDict) -> str | None:
    """The prepared directory `config` (a `data` config) streams from, prepared first when it is a
    file above data.stream_above reviews (or data.streaming) not yet in the cache; None: in memory."""
    if config.get("name") == "prepared":
        if not config.get("prepared_dir"):
            raise ValueError("data.name='prepared' needs data.prepared_dir=DIR (made by tools/prepare_data.py)")
        return config.prepared_dir
    if config.get("prepared_dir"):
        raise ValueError(f"data.prepared_dir={config.prepared_dir!r} is read with data.name=prepared: add it, or "
                         "remove data.prepared_dir")
    streaming, above = bool(config.get("streaming", False)), int(config.get("stream_above", 0) or 0)
    if not streaming and not above:
        return None
    source, _ = pipeline.resolve_source(config)
    if source != "files":
        if streaming:
            raise ValueError(f"data.streaming streams files (data.path / data.train ...), not data.name="
                             f"{config.name!r}: prepare it with tools/prepare_data.py and set data.name=prepared")
        return None
    paths = [path for key in pipeline.FILE_FLAGS for path in pipeline.input_files(config.get(key) or "")]
    for path in paths:
        if not os.path.exists(path):
            raise ValueError(f"{path}: no such file or directory")
    if not streaming and count_reviews(paths, above) <= above:
        return None
    cache = os.path.expanduser(config.get("cache_dir") or DEFAULT_CACHE)
    directory = os.path.join(cache, cache_key(config))
    if not os.path.exists(os.path.join(directory, "prepared.json")):
        import logging

        logging.getLogger("jaxreviews").info("preparing %s into %s (streamed: data.streaming / data.stream_above)",
                                             ", ".join(paths), directory)
        prepare(config, directory)
    return directory
