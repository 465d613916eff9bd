"""Batches of a streamed split (`prepared.StreamedReviews`) built by Grain, in worker processes.

The batcher (`packing.PackedBatcher` or `batching.Batcher`) plans as it does in memory, from the
split's offsets alone; a batch is built by reading its reviews' records and packing them, the same
code on the same reviews, so the batches equal the in-memory ones (tests). Each process reads
only the reviews of its own parts of every global batch: P processes read disjoint records that
together are the split, once an epoch.

Grain: a `MapDataset` over the run's global step numbers (epoch * steps_per_epoch + step) maps a
step to its batch; `mp_prefetch` runs that map in `workers` processes (0: in this one). A batch is
a pure function of (seed, epoch, step), so the iterator's whole state is the step the run's
checkpoint holds: a run restarted from a checkpoint (after a SIGKILL too) resumes the stream at
that step and trains on exactly the batches an uninterrupted run would. One iterator serves
consecutive epochs; a jump (resume, a second run) starts a new one at the asked step.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import numpy as np

from jaxreviews.data import packing
from jaxreviews.data.prepared import StreamedReviews

Batch = dict[str, np.ndarray]
EPOCH_LIMIT = 1 << 20  # the training stream's length in epochs: a bound, not a plan
# An evaluation of fewer batches is built in the training process: starting workers costs more.
WORKERS_FROM_BATCHES = 64


def default_workers() -> int:
    """The cores this process may use (its CPU affinity): data.workers=-1 beside an accelerator."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _exit_with_parent(worker_index: int, worker_count: int) -> None:
    """Runs in each Grain worker: ends it when the training process is gone. A SIGKILLed run
    otherwise leaves a worker blocked on its output queue, holding the run's stdout open."""
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


class _BuildTraining:
    """Group g -> this process's part of training batches first + g*G .. first + g*G + G - 1
    (global step numbers), read from the records. Grain hands a worker's output to the training
    process per element, ~2 ms each, and a read call of ArrayRecord costs ~0.5 ms however few
    records it reads: G batches an element, their reviews read at once, make both G times smaller."""

    def __init__(self, batcher, first: int = 0, group: int = 1):
        self.batcher, self.first, self.group = batcher, first, group

    def plan(self, index: int):
        epoch, step = divmod(int(index), self.batcher.steps_per_epoch)
        if isinstance(self.batcher, packing.PackedBatcher):
            return self.batcher.step_parts(epoch, step)
        return self.batcher.epoch_plan(epoch)[step]

    def __call__(self, group: int):
        start = self.first + int(group) * self.group
        return _grouped(_built(self.batcher, [self.plan(index) for index in range(start, start + self.group)]))


class _BuildEvaluation:
    """Group g -> this process's part of evaluation batches g*G .. g*G + G - 1 (fewer at the end)."""

    def __init__(self, batcher, count: int, group: int = 1):
        self.batcher, self.count, self.group = batcher, count, group

    def plan(self, index: int):
        if isinstance(self.batcher, packing.PackedBatcher):
            return self.batcher.eval_step_parts(index)
        return self.batcher.eval_plan()[index]

    def __call__(self, group: int):
        start = int(group) * self.group
        plans = [self.plan(index) for index in range(start, min(self.count, start + self.group))]
        return _grouped(_built(self.batcher, plans))


def _grouped(batches: list[Batch]):
    """Batches of one shape stacked key by key (a worker hands over one array per key, not one
    per key and batch: each is a shared-memory block), else the list as it is."""
    first = batches[0]
    if len(batches) > 1 and all(b.keys() == first.keys() and all(b[k].shape == first[k].shape for k in first)
                                for b in batches[1:]):
        return {key: np.stack([b[key] for b in batches]) for key in first}
    return batches


def _built(batcher, plans: list) -> list[Batch]:
    """The batches of `plans` (packed: a step's global parts; padded: a PlannedBatch), built from
    one read of all their reviews: each batch's reviews lie at its positions in what was read."""
    packed = isinstance(batcher, packing.PackedBatcher)
    # Per batch, the reviews this process reads: packed, one array per local part; padded, the
    # batch's rows (-1: a padding row).
    wanted = [batcher.local_members(plan) if packed else batcher.local_indices(plan) for plan in plans]
    pieces = [np.concatenate(w) if packed else w[w >= 0] for w in wanted]
    # A padded part of only padding rows still indexes row 0 of its arrays (weight 0): one review.
    pieces = [p if len(p) or packed else np.zeros(1, np.int64) for p in pieces]
    data = batcher.data.read(np.concatenate(pieces))
    batches, start = [], 0
    for plan, members, piece in zip(plans, wanted, pieces):
        if packed:
            ends = start + np.cumsum([len(m) for m in members])
            positions = [np.arange(end - len(m), end) for m, end in zip(members, ends)]
            batches.append(batcher.local_batch(plan, data=data, positions=positions))
        else:
            rows = np.full(len(members), -1, np.int64)
            rows[members >= 0] = start + np.arange(int((members >= 0).sum()))
            batches.append(batcher._local(plan, data=data, indices=rows))
        start += len(piece)
    return batches


class StreamedBatches:
    """A batcher whose split streams from records: `epoch` and `evaluation` as the batcher's
    (same batches), built by Grain in `workers` processes; everything else is the batcher's."""

    def __init__(self, batcher, *, workers: int = 0, buffer: int = 2, group: int = 16):
        if not isinstance(batcher.data, StreamedReviews):
            raise TypeError("StreamedBatches needs a batcher over a streamed split (prepared.load)")
        self.batcher, self.workers, self.buffer, self.group = batcher, int(workers), int(buffer), int(group)
        self._stream = None  # [its batches, the global step they yield next, the Grain iterator]

    def __getattr__(self, name):
        return getattr(self.batcher, name)

    def _iterate(self, dataset, workers: int | None = None) -> Iterator[Batch]:
        import grain

        workers = self.workers if workers is None else workers
        # No reading threads: built here, a thread would contend for the GIL with the training
        # loop (which prefetches in its own thread); in workers, mp_prefetch buffers.
        iterable = dataset.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
        if workers > 0:
            from absl import flags

            if not flags.FLAGS.is_parsed():  # Grain's workers read absl flags; as a library, nothing parsed them
                flags.FLAGS.mark_as_parsed()
            iterable = iterable.mp_prefetch(grain.MultiprocessingOptions(
                num_workers=workers, per_worker_buffer_size=self.buffer), worker_init_fn=_exit_with_parent)
        return iter(iterable)

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        """This process's part of the training batches of `epoch`, from `start_step` on."""
        import grain

        steps = self.batcher.steps_per_epoch
        first = epoch * steps + start_step
        if self._stream is None or self._stream[1] != first:
            self.close()
            dataset = grain.MapDataset.range(EPOCH_LIMIT * steps // self.group).map(
                _BuildTraining(self.batcher, first, self.group))
            iterator = self._iterate(dataset)
            self._stream = [_flattened(iterator), first, iterator]
        for _ in range(start_step, steps):
            batch = next(self._stream[0])
            self._stream[1] += 1
            yield batch

    def example(self) -> Batch:
        """This process's part of the first training batch, built here (no workers started)."""
        return _built(self.batcher, [_BuildTraining(self.batcher).plan(0)])[0]

    def evaluation(self) -> Iterator[Batch]:
        import grain

        count = len(self.batcher.eval_parts()) // self.batcher.parts \
            if isinstance(self.batcher, packing.PackedBatcher) else len(self.batcher.eval_plan())
        workers = self.workers if count >= WORKERS_FROM_BATCHES else 0
        dataset = grain.MapDataset.range(-(-count // self.group)).map(
            _BuildEvaluation(self.batcher, count, self.group))
        iterator = self._iterate(dataset, workers=workers)
        try:
            yield from _flattened(iterator)
        finally:
            _close(iterator)

    def close(self) -> None:
        """Stops the training stream's workers (a new one starts where the next epoch asks)."""
        if self._stream is not None:
            iterator, self._stream = self._stream[2], None
            _close(iterator)


def _flattened(groups) -> Iterator[Batch]:
    """The batches of `_grouped` groups, one by one."""
    for group in groups:
        if isinstance(group, dict):
            count = len(next(iter(group.values())))
            yield from ({key: value[i] for key, value in group.items()} for i in range(count))
        else:
            yield from group


def _close(iterator) -> None:
    """Stops a Grain iterator's worker processes now (not at interpreter exit)."""
    close = getattr(iterator, "close", None)
    if close is not None:
        close()


def streamed(batcher, *, workers: int = 0, buffer: int = 2):
    """`batcher` itself for an in-memory split, else its `StreamedBatches` built by `workers`
    processes (data.workers' auto is resolved per backend by the caller, which knows the backend)."""
    if not isinstance(batcher.data, StreamedReviews):
        return batcher
    return StreamedBatches(batcher, workers=workers, buffer=buffer)
