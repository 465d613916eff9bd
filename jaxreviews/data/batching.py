"""Fixed-shape batches from encoded reviews: length buckets, per-epoch order, multi-host slices.

Shapes. A run compiles one program per bucket shape, so reviews are grouped into a handful of
buckets: `[S, W]` (sentences x words) for the hierarchical layout, `[T]` tokens for the flat one.
A review goes to the smallest bucket it fits; one larger than every bucket is truncated.

Truncation policy (documented, counted by `padding_report`): a review keeps its first S sentences
and each sentence its first W words (hierarchical); its first T tokens (flat). Buckets chosen by
`choose_buckets` fit every review up to the caps `max_sentences` / `max_words` / `max_tokens`.

Order. Epoch e of a run with seed s is a pure function of (s, e): reviews are shuffled within
buckets, cut into global batches, and the batches shuffled. So a run resumed at (epoch, step)
sees exactly the batches an uninterrupted run would, and every host computes the same plan.

Completeness. No review is dropped: a bucket's last batch is filled with padding rows of weight 0.
Evaluation visits every review exactly once, so weighted metric sums are exact.

Multi-host. With P processes, process p gets rows [p*B/P, (p+1)*B/P) of every global batch of B:
disjoint, and together complete.

Labels and ids. `label` is (rating - low) / step, a whole class in 0..C-1 of the DataSplits'
range and step (`rating_labels` raises otherwise: no rating is clipped or rounded into a class).
`check_ids` stops a batch whose token, user or product ids have no row in the model's tables.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Literal

import numpy as np

from jaxreviews.data.corpus import EncodedReviews, concatenated_ranges
from jaxreviews.data.readers import GRID_TOLERANCE

Layout = Literal["hierarchical", "flat", "ids"]
Batch = dict[str, np.ndarray]


def _round_up(x: int, multiple: int) -> int:
    return max(multiple, int(math.ceil(x / multiple)) * multiple)


def choose_buckets(data: EncodedReviews, layout: Layout, *, num_buckets: int = 6,
                   max_sentences: int = 32, max_words: int = 64, max_tokens: int = 512,
                   multiple: int = 4) -> tuple[tuple[int, ...], ...]:
    """A few bucket shapes that cover the reviews with little padding.

    Greedy: start from the catch-all shape (the largest review, within the caps), then add, one at
    a time, the candidate shape that saves the most padded slots, until `num_buckets`. Candidates
    are quantiles of each dimension, rounded up to `multiple` (words / tokens) or 1 (sentences).
    """
    arrays = data.arrays
    if layout == "ids":
        return ((),)
    if layout == "flat":
        needs = [np.clip(arrays.num_tokens, 1, max_tokens)]
        multiples = [multiple]
    else:
        needs = [np.clip(arrays.num_sentences, 1, max_sentences), np.clip(arrays.longest_sentence, 1, max_words)]
        multiples = [1, multiple]
    if len(data) > 20000:  # the choice needs the distribution, not every review
        rows = np.random.default_rng(0).choice(len(data), 20000, replace=False)
        needs = [n[rows] for n in needs]
    values = [np.unique(_round_up_array(np.quantile(n, np.linspace(0, 1, 33)), m)) for n, m in zip(needs, multiples)]
    largest = tuple(_round_up(int(n.max()), m) for n, m in zip(needs, multiples))
    grids = np.meshgrid(*values, indexing="ij")
    candidates = np.stack([g.ravel() for g in grids], axis=1)  # [C, dims]
    fits = np.ones((len(candidates), len(needs[0])), bool)
    for dim, need in enumerate(needs):
        fits &= need[None, :] <= candidates[:, dim:dim + 1]
    area = np.prod(candidates, axis=1).astype(np.float64)
    chosen = [largest]
    current = np.full(len(needs[0]), float(np.prod(largest)))
    for _ in range(num_buckets - 1):
        saving = (np.maximum(current[None, :] - area[:, None], 0) * fits).sum(axis=1)
        best = int(np.argmax(saving))
        if saving[best] <= 0:
            break
        chosen.append(tuple(int(v) for v in candidates[best]))
        current = np.where(fits[best], np.minimum(current, area[best]), current)
    return tuple(sorted(set(chosen)))


def _round_up_array(values: np.ndarray, multiple: int) -> np.ndarray:
    return np.maximum(multiple, np.ceil(values / multiple) * multiple).astype(np.int64)


def assign_buckets(data: EncodedReviews, layout: Layout, buckets: Sequence[tuple[int, ...]]) -> np.ndarray:
    """int64 [N]: for each review the index of the smallest bucket it fits (else the largest)."""
    arrays = data.arrays
    if layout == "ids":
        return np.zeros(len(data), np.int64)
    area = np.array([math.prod(b) for b in buckets])
    order = np.argsort(area, kind="stable")
    if layout == "flat":
        need = [arrays.num_tokens]
    else:
        need = [np.maximum(arrays.num_sentences, 1), np.maximum(arrays.longest_sentence, 1)]
    assigned = np.full(len(data), order[-1], np.int64)
    placed = np.zeros(len(data), bool)
    for b in order:  # smallest first
        fits = ~placed
        for dim, n in enumerate(need):
            fits &= n <= buckets[b][dim]
        assigned[fits] = b
        placed |= fits
    return assigned


def make_batch(data: EncodedReviews, indices: np.ndarray, layout: Layout, shape: tuple[int, ...],
               *, rating_range: tuple[float, float], rating_step: float = 1.0) -> Batch:
    """The batch of the reviews at `indices` (-1 = a padding row of weight 0), in `shape`."""
    arrays = data.arrays
    indices = np.asarray(indices, np.int64)
    real = indices >= 0
    rows = np.where(real, indices, 0)
    batch_size = len(indices)
    rating = np.where(real, arrays.ratings[rows], rating_range[0]).astype(np.float32)
    batch = {
        "user": np.where(real, arrays.users[rows], 0).astype(np.int32),
        "product": np.where(real, arrays.products[rows], 0).astype(np.int32),
        "label": rating_labels(rating, rating_range=rating_range, rating_step=rating_step),
        "rating": rating,
        "weight": real.astype(np.float32),
    }
    if layout == "ids":
        return batch
    real_rows = np.flatnonzero(real)
    sentence_counts = arrays.num_sentences_of(rows[real_rows])
    if layout == "hierarchical":
        max_sentences, max_words = shape
        kept_sentences = np.minimum(sentence_counts, max_sentences)
        sentences = concatenated_ranges(arrays.sentence_offsets[rows[real_rows]], kept_sentences)
        sentence_row = np.repeat(real_rows, kept_sentences)
        sentence_slot = concatenated_ranges(np.zeros_like(kept_sentences), kept_sentences)
        lengths = np.minimum(arrays.sentence_lengths_of(sentences), max_words)
        tokens = concatenated_ranges(arrays.token_offsets[sentences], lengths)
        words = np.zeros((batch_size, max_sentences, max_words), np.int32)
        words[np.repeat(sentence_row, lengths), np.repeat(sentence_slot, lengths),
              concatenated_ranges(np.zeros_like(lengths), lengths)] = arrays.token_ids[tokens]
        batch["words"] = words
        batch["word_mask"] = words != 0
        batch["sentence_mask"] = batch["word_mask"].any(-1)
    else:
        (max_tokens,) = shape
        starts = arrays.token_offsets[arrays.sentence_offsets[rows[real_rows]]]
        lengths = np.minimum(arrays.num_tokens_of(rows[real_rows]), max_tokens)
        tokens = np.zeros((batch_size, max_tokens), np.int32)
        tokens[np.repeat(real_rows, lengths), concatenated_ranges(np.zeros_like(lengths), lengths)] = \
            arrays.token_ids[concatenated_ranges(starts, lengths)]
        batch["tokens"] = tokens
        batch["token_mask"] = tokens != 0
    return batch


def rating_labels(ratings: np.ndarray, *, rating_range: tuple[float, float], rating_step: float) -> np.ndarray:
    """int32 class of each rating: (rating - low) / step, which must be a whole number in 0..C-1.

    `pipeline.load_splits` checks every rating of every split against the range and step it
    reports, so a rating outside them here is a programming error (a batcher given another range
    than the splits'), never something to clip into the first or last class.
    """
    low, high = rating_range
    num_classes = int(round((high - low) / rating_step)) + 1
    position = (np.asarray(ratings, np.float64) - low) / rating_step
    labels = np.rint(position)
    bad = (labels < 0) | (labels > num_classes - 1) | (np.abs(position - labels) > GRID_TOLERANCE)
    if bad.any():
        first = int(np.argmax(bad))
        raise ValueError(f"rating {float(ratings[first]):g} (row {first} of the batch) is not one of the "
                         f"{num_classes} classes {low:g}..{high:g} in steps of {rating_step:g}: the batcher's "
                         "rating_range / rating_step must be the DataSplits' (load_splits checks every rating)")
    return labels.astype(np.int32)


def check_ids(batch: Batch, *, vocab_size: int, num_users: int, num_products: int) -> Batch:
    """`batch` itself, once every id in it has a row in its embedding table; else a ValueError.

    Token ids (`words` / `tokens`) index the vocabulary, `user` and `product` their id maps.
    The embedding lookups clamp an out-of-range id to the last row, so a batch built with other
    tables than the model's would train silently on wrong rows: this is where it stops instead.
    """
    tables = {"words": ("vocabulary", vocab_size), "tokens": ("vocabulary", vocab_size),
              "user": ("user", num_users), "product": ("product", num_products)}
    for key, (table, size) in tables.items():
        if key not in batch:
            continue
        ids = np.asarray(batch[key])
        if ids.size == 0 or (ids.min() >= 0 and ids.max() < size):
            continue
        where = np.unravel_index(int(np.argmax((ids < 0) | (ids >= size))), ids.shape)
        position = ", ".join(str(int(i)) for i in where)
        raise ValueError(f"batch[{key!r}][{position}] = {int(ids[where])} is outside the {table} table of "
                         f"{size} rows (ids 0..{size - 1}): the batch was built with other tables than the "
                         "model's (vocabulary / user / product maps of another DataSplits)")
    return batch


@dataclasses.dataclass(frozen=True)
class PlannedBatch:
    bucket: int
    indices: np.ndarray  # int64 [global batch]; -1 marks a padding row


def check_split(data: EncodedReviews, batch_size: int, process_count: int) -> None:
    """What every batcher needs: a non-empty split and a global batch that splits over processes."""
    if batch_size % process_count:
        raise ValueError(f"global batch size {batch_size} is not divisible by {process_count} processes")
    if len(data) == 0:
        raise ValueError("cannot batch an empty split")


class Batcher:
    """Batches of one split for one layout; deterministic in (seed, epoch), sliced per process."""

    def __init__(self, data: EncodedReviews, *, layout: Layout, batch_size: int,
                 buckets: Sequence[tuple[int, ...]] | None = None, seed: int = 0,
                 rating_range: tuple[float, float] = (1.0, 5.0), rating_step: float = 1.0,
                 process_index: int = 0, process_count: int = 1, **bucket_options):
        check_split(data, batch_size, process_count)
        self.data, self.layout, self.batch_size, self.seed = data, layout, batch_size, seed
        self.rating_range, self.rating_step = rating_range, rating_step
        self.process_index, self.process_count = process_index, process_count
        self.buckets = tuple(buckets) if buckets else choose_buckets(data, layout, **bucket_options)
        self.assignment = assign_buckets(data, layout, self.buckets)
        self.members = [np.flatnonzero(self.assignment == b) for b in range(len(self.buckets))]

    @property
    def steps_per_epoch(self) -> int:
        return sum(math.ceil(len(m) / self.batch_size) for m in self.members)

    @property
    def local_batch_size(self) -> int:
        return self.batch_size // self.process_count

    def _chunks(self, members_of_buckets: Sequence[np.ndarray]) -> list[PlannedBatch]:
        plan = []
        for bucket, members in enumerate(members_of_buckets):
            for start in range(0, len(members), self.batch_size):
                chunk = members[start:start + self.batch_size]
                padded = np.full(self.batch_size, -1, np.int64)
                padded[:len(chunk)] = chunk
                plan.append(PlannedBatch(bucket, padded))
        return plan

    def epoch_plan(self, epoch: int) -> list[PlannedBatch]:
        """The global batches of a training epoch, in order: a pure function of (seed, epoch)."""
        cached = getattr(self, "_plan", None)
        if cached is not None and cached[0] == epoch:
            return cached[1]
        rng = np.random.default_rng([self.seed, epoch])
        plan = self._chunks([rng.permutation(m) for m in self.members])
        plan = [plan[i] for i in rng.permutation(len(plan))]
        self._plan = (epoch, plan)
        return plan

    def eval_plan(self) -> list[PlannedBatch]:
        """Every review once, in bucket order."""
        return self._chunks(self.members)

    def local_indices(self, planned: PlannedBatch) -> np.ndarray:
        """This process's rows of a planned global batch: review indices, -1 for padding rows."""
        return planned.indices[self.process_index * self.local_batch_size:
                               (self.process_index + 1) * self.local_batch_size]

    def _local(self, planned: PlannedBatch, data: EncodedReviews | None = None,
               indices: np.ndarray | None = None) -> Batch:
        """This process's part of `planned`; `data` / `indices`: built from other arrays holding its
        reviews (a streamed batch's records) at those rows."""
        indices = self.local_indices(planned) if indices is None else indices
        return make_batch(self.data if data is None else data, indices, self.layout, self.buckets[planned.bucket],
                          rating_range=self.rating_range, rating_step=self.rating_step)

    def __getstate__(self):  # a Grain worker plans its own epochs
        return {key: value for key, value in self.__dict__.items() if key != "_plan"}

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        """This process's part of the training batches of `epoch`, from `start_step` on (resume)."""
        for planned in self.epoch_plan(epoch)[start_step:]:
            yield self._local(planned)

    def evaluation(self) -> Iterator[Batch]:
        for planned in self.eval_plan():
            yield self._local(planned)

    def padding_report(self) -> dict:
        """Real tokens / padded token slots over an epoch (padding rows included), and truncation."""
        arrays = self.data.arrays
        if self.layout == "ids":
            return {"efficiency": 1.0, "truncated_tokens": 0, "tokens": 0, "buckets": [()]}
        lengths, per_bucket = arrays.num_tokens, []
        kept_total = slots_total = 0
        for bucket, members in zip(self.buckets, self.members):
            slots = math.ceil(len(members) / self.batch_size) * self.batch_size * math.prod(bucket)
            kept = int(self._kept_tokens(members, bucket).sum())
            per_bucket.append({"shape": list(bucket), "reviews": len(members),
                               "efficiency": round(kept / slots, 4) if slots else 0.0})
            kept_total += kept
            slots_total += slots
        total = int(lengths.sum())
        return {"efficiency": round(kept_total / max(1, slots_total), 4), "tokens": total,
                "truncated_tokens": total - kept_total, "buckets": per_bucket}

    def _kept_tokens(self, members: np.ndarray, bucket: tuple[int, ...]) -> np.ndarray:
        arrays = self.data.arrays
        if self.layout == "flat":
            return np.minimum(arrays.num_tokens_of(members), bucket[0])
        max_sentences, max_words = bucket
        counts = np.minimum(arrays.num_sentences_of(members), max_sentences)
        sentences = concatenated_ranges(arrays.sentence_offsets[members], counts)
        return np.minimum(arrays.sentence_lengths_of(sentences), max_words)


def stacked(batches: Iterator[Batch], count: int) -> Iterator[Batch]:
    """Every `count` consecutive batches (of one shape) as one: each array gains a leading axis of
    `count`. The last group is filled up with copies of its last batch (never trained on: the
    loop knows how many steps an epoch has left), so every group has one shape."""
    group: list[Batch] = []
    for batch in batches:
        group.append(batch)
        if len(group) == count:
            yield {key: np.stack([b[key] for b in group]) for key in group[0]}
            group = []
    if group:
        group += [group[-1]] * (count - len(group))
        yield {key: np.stack([b[key] for b in group]) for key in group[0]}


def prefetch(batches: Iterator[Batch], size: int = 2,
             transform: Callable[[Batch], object] | None = None) -> Iterator[object]:
    """Builds (and optionally transforms, e.g. `jax.device_put`) the next `size` batches on a
    background thread, so the next batch is ready when a step ends. Errors surface in the caller.

    Closing the generator (or leaving `prefetching`) stops the thread and waits for it: no thread
    may still be inside JAX when the process exits (a preempted run then aborted at shutdown)."""
    if size <= 0:
        yield from (transform(b) if transform else b for b in batches)
        return
    buffer: queue.Queue = queue.Queue(maxsize=size)
    done = object()
    stop = threading.Event()

    def offer(item) -> bool:
        """Puts `item` unless asked to stop; False when stopped."""
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for batch in batches:
                if stop.is_set() or not offer(transform(batch) if transform else batch):
                    return
            offer(done)
        except BaseException as error:  # handed to the consumer
            offer(error)

    thread = threading.Thread(target=produce, daemon=True, name="jaxreviews-prefetch")
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


@contextlib.contextmanager
def prefetching(batches: Iterator[Batch], size: int = 2, transform: Callable[[Batch], object] | None = None):
    """`prefetch` as a context: the background thread is stopped and joined on leaving, however
    the block is left (an early stop, an exception, a preemption)."""
    iterator = prefetch(batches, size, transform)
    try:
        yield iterator
    finally:
        iterator.close()
