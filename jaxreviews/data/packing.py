"""Packed batches: the words of many reviews in dense rows with segment ids, so few slots are padding.

Why. `[B, S, W]` pads every sentence to the bucket's W and every review to its S: on real reviews
(a few long sentences among many short ones) 20-35% of the slots hold a word. Packing places the
units that a model treats independently next to each other in fixed-length rows, as packed
sequences in large-model training, and tells the model where each unit starts with segment ids.

Layouts and batch keys (R = rows, L = row length, B = review slots = the batch size):

  packed hierarchical (han, han_upa)
    words           int32 [R, L]    token ids; every sentence lies whole in one row, PAD = 0
    word_mask       bool  [R, L]
    word_sentence   int32 [R, L]    the sentence slot of each token: row-major index into [Rs, Ls]
    sentence_review int32 [Rs, Ls]  the review slot (0..B-1) of each sentence slot; a review's
                                    sentences lie whole and in order in one sentence row
    sentence_mask   bool  [Rs, Ls]
  packed flat (cnn, rnn, bilstm)
    tokens          int32 [R, L]    every review lies whole in one row
    token_mask      bool  [R, L]
    token_review    int32 [R, L]    the review slot of each token
  always: user, product, label, rating, weight [B] (weight 0 for an empty slot), as in `types`.

The word recurrences reset at every sentence (review) start in both directions, attention pools
per segment, so a packed batch gives the same numbers as `[B, S, W]` (tests check it).

Invariants (tests check each):
  * Shapes are fixed for a run: one training and one evaluation program, whatever the lengths.
  * Every batch of an epoch holds exactly `batch_size` reviews but one, which holds the rest
    (its empty slots have weight 0), and there are ceil(N / batch_size) of them, as in the
    `[B, S, W]` layout: an epoch, a schedule and `train.batch_size` mean the same in both.
    Evaluation batches need not be full: they are as even as the shape allows.
  * Order: epoch e of seed s is a pure function of (s, e); a resumed run sees the same batches.
    Reviews are spread over the epoch's batches longest first, each to the batch with the fewest
    tokens so far (LPT, with random tie-breaks and noisy lengths), so every batch has about the
    same number of tokens and the rows are full: each batch is a length-stratified random sample.
  * Planning windows: a split of more than `plan_window` reviews is shuffled by (s, e) and cut
    into windows of `plan_window // batch_size` batches, each balanced (and its batches shuffled)
    on its own, in step order. A step's batch then costs one window's plan, not the epoch's, so
    a corpus of millions starts training at once and batches can be built out of order (Grain
    workers, `streaming`); the shape is chosen from the first window of epochs 0 and 1. A split
    of at most `plan_window` reviews is one window: the whole-epoch plan above.
  * Completeness: no review is lost or seen twice; evaluation visits every review exactly once.
  * Truncation as `[B, S, W]`: a review keeps its first `max_sentences` sentences, each its first
    `max_words` words (flat: its first `max_tokens` tokens); the row lengths come from the
    training split (its longest sentence / review within those caps), and evaluation splits
    reuse them, as they reuse the training buckets of `[B, S, W]`.
  * The shape has the rows the first two epochs need (balanced batches all need about
    ceil(tokens / L)); a later batch that would overflow swaps reviews with another batch.
  * Multi-host: every global batch is `parts` parts packed apart (rows and slots split evenly; by
    default one per process); process p builds its parts_per_process consecutive parts, their
    segment ids offset to global positions. The global batch depends on `parts` alone, so a run of
    one process with `parts=2` trains on exactly the batches of a two-process run.
"""
from __future__ import annotations

import bisect
import collections
import dataclasses
import heapq
import math
from collections.abc import Iterator

import numpy as np

from jaxreviews.data.batching import check_split, rating_labels
from jaxreviews.data.corpus import EncodedReviews, concatenated_ranges

Batch = dict[str, np.ndarray]

# Reviews planned together (`PackedBatcher.plan_window`): well above the files read in memory
# (tens of thousands), far below the corpora streamed from a prepared directory (millions).
PLAN_WINDOW = 262144


@dataclasses.dataclass(frozen=True)
class PackedShape:
    """Global sizes of a packed batch. Flat layouts have no sentence rows (0)."""

    rows: int  # word (token) rows R
    row_length: int  # L
    sentence_rows: int  # Rs
    sentence_row_length: int  # Ls
    reviews: int  # review slots B
    max_tokens: int = 0  # flat: the tokens a review keeps (<= L); hierarchical: L and Ls are the caps

    @property
    def slots(self) -> int:
        return self.rows * self.row_length

    def as_tuple(self) -> tuple[int, ...]:
        return dataclasses.astuple(self)


def _round_up(value: int, multiple: int) -> int:
    return max(multiple, -(-value // multiple) * multiple)


def best_fit_rows(lengths: np.ndarray, row_length: int, max_rows: int | None = None):
    """Best-fit decreasing: places items of `lengths` (each <= row_length) whole into rows.

    Returns (row [n], offset [n], rows used), or None when more than `max_rows` rows are needed.
    Near-optimal for many small items (a few % of waste), O(n log n).
    """
    lengths = np.asarray(lengths, np.int64)
    n = len(lengths)
    row = np.zeros(n, np.int64)
    offset = np.zeros(n, np.int64)
    free: list[int] = []  # free space of each open row, kept sorted (with `owner` alongside)
    owner: list[int] = []
    used: list[int] = []  # filled length of each row
    for item in np.argsort(-lengths, kind="stable").tolist():
        size = int(lengths[item])
        at = bisect.bisect_left(free, size)
        if at == len(free):  # no open row has room: open one
            if max_rows is not None and len(used) >= max_rows:
                return None
            target = len(used)
            used.append(0)
        else:
            target = owner.pop(at)
            free.pop(at)
        row[item], offset[item] = target, used[target]
        used[target] += size
        remaining = row_length - used[target]
        if remaining > 0:
            at = bisect.bisect_left(free, remaining)
            free.insert(at, remaining)
            owner.insert(at, target)
    return row, offset, len(used)


def group_sizes(items: int, groups: int, per_group: int, parts: int = 1) -> np.ndarray:
    """Sizes of `groups` groups holding `items`, read as batches of `parts` consecutive groups:
    every batch full but the last, whose parts share its remainder as evenly as possible."""
    capacity = groups * per_group
    if not capacity - parts * per_group < items <= capacity:
        raise ValueError(f"{items} items do not make {groups // parts} batches of {parts * per_group} "
                         "with only the last one short")
    sizes = np.full(groups, per_group, np.int64)
    remainder = items - (groups - parts) * per_group
    sizes[groups - parts:] = remainder // parts + (np.arange(parts) < remainder % parts)
    return sizes


def balanced_batches(loads: np.ndarray, sizes: np.ndarray, rng: np.random.Generator,
                     noise: float = 0.3) -> list[np.ndarray]:
    """Splits items 0..n-1 into groups of exactly `sizes` items with near-equal total load.

    Longest-processing-time-first on noisy loads (load * exp(noise * N(0, 1))): each item goes to
    the group with the least load so far that still has room; ties go to a random group. The noise
    varies the grouping from epoch to epoch; the big items still come first, so loads stay level.
    Each group is returned in a random order.
    """
    n, sizes = len(loads), np.asarray(sizes, np.int64)
    if n != sizes.sum():
        raise ValueError(f"{n} items for groups of {sizes.sum()} in all")
    keys = np.asarray(loads, np.float64) * np.exp(noise * rng.standard_normal(n))
    order = np.argsort(-keys, kind="stable")
    tie_break = rng.permutation(len(sizes)).tolist()
    heap = [(0, tie_break[g], g) for g in range(len(sizes)) if sizes[g] > 0]
    heapq.heapify(heap)
    members: list[list[int]] = [[] for _ in sizes]
    loads_list = np.asarray(loads, np.int64).tolist()
    for item in order.tolist():
        load, tie, group = heapq.heappop(heap)
        members[group].append(item)
        if len(members[group]) < sizes[group]:
            heapq.heappush(heap, (load + loads_list[item], tie, group))
    return [rng.permutation(np.asarray(m, np.int64)) for m in members]


class PackedBatcher:
    """Packed batches of one split: same interface as `batching.Batcher` (epoch, evaluation, ...).

    `shape` fixes the global batch shape (take it from the training split's batcher for the
    evaluation splits, so evaluation compiles one program); None chooses it from this split.
    `row_multiple`: local row counts are rounded up to it (the devices of a process, so the rows
    shard evenly over the mesh's data axis). `shape_seeds`: other training orders the chosen shape
    must hold as well (an ensemble whose members each have their own order batches alike).
    `parts`: the parts a global batch is packed in (0 = `process_count`), a multiple of `process_count`.
    """

    def __init__(self, data: EncodedReviews, *, layout: str, batch_size: int, seed: int = 0,
                 rating_range: tuple[float, float] = (1.0, 5.0), rating_step: float = 1.0,
                 process_index: int = 0, process_count: int = 1, shape: PackedShape | None = None,
                 max_sentences: int = 32, max_words: int = 64, max_tokens: int = 512, multiple: int = 4,
                 row_multiple: int = 1, shape_seeds: tuple[int, ...] = (), parts: int = 0,
                 plan_window: int = PLAN_WINDOW):
        if layout not in ("hierarchical", "flat"):
            raise ValueError(f"packed batches are for the hierarchical and flat layouts, not {layout!r}")
        parts = parts or process_count
        if parts % process_count:
            raise ValueError(f"packed batches in {parts} parts cannot be split over {process_count} processes")
        check_split(data, batch_size, parts)
        self.data, self.layout, self.batch_size, self.seed = data, layout, batch_size, seed
        self.rating_range, self.rating_step = rating_range, rating_step
        self.process_index, self.process_count = process_index, process_count
        self.parts, self.parts_per_process = parts, parts // process_count
        self.row_multiple = row_multiple
        # Batches per planning window: a whole epoch when the split has at most plan_window reviews.
        self.window_batches = max(1, plan_window // batch_size)
        self._windows: collections.OrderedDict = collections.OrderedDict()  # (seed, epoch, window) -> parts
        self._permutations: collections.OrderedDict = collections.OrderedDict()  # (seed, epoch) -> order
        # A part's rows: a process's parts_per_process parts together fill a multiple of row_multiple.
        self.part_row_multiple = row_multiple // math.gcd(row_multiple, self.parts_per_process)
        arrays = data.arrays
        if layout == "hierarchical":
            # Word-level units are the kept sentences, sentence-level units the reviews.
            cap = shape.sentence_row_length if shape is not None else max_sentences
            self.kept_sentences = np.minimum(arrays.num_sentences, cap)
            sentences = concatenated_ranges(arrays.sentence_offsets[:-1], self.kept_sentences)
            if shape is not None:
                self.row_length = shape.row_length
            else:
                longest = int(arrays.sentence_lengths_of(sentences).max(initial=1))
                self.row_length = min(max_words, _round_up(longest, multiple))
            self.sentence_row_length = cap if shape is not None else max(1, int(self.kept_sentences.max(initial=1)))
            self.unit_lengths = np.minimum(arrays.sentence_lengths_of(sentences), self.row_length)
            self.first_unit = np.concatenate([[0], np.cumsum(self.kept_sentences)]).astype(np.int64)
            cumulative = np.concatenate([[0], np.cumsum(self.unit_lengths)])
            self.review_tokens = cumulative[self.first_unit[1:]] - cumulative[self.first_unit[:-1]]
        else:
            # Truncation at max_tokens (as [B, T]'s largest bucket: at most the training split's
            # longest review); the row length is chosen apart, >= every kept review (`_choose_shape`).
            longest = min(max_tokens, _round_up(int(arrays.num_tokens.max(initial=1)), multiple))
            self.max_tokens = longest if shape is None else shape.max_tokens
            self.review_tokens = np.minimum(arrays.num_tokens, self.max_tokens)
            self.row_length = longest if shape is None else shape.row_length
            self.sentence_row_length = 0
        self.multiple = multiple
        self.shape_seeds = tuple(shape_seeds)
        self.shape = shape if shape is not None else self._choose_shape()
        if self.shape.reviews != batch_size:
            raise ValueError(f"packed shape has {self.shape.reviews} review slots, batch size is {batch_size}")
        self._eval_plan: list[np.ndarray] | None = None

    def __getstate__(self):  # a Grain worker plans its own windows: the caches stay behind
        state = dict(self.__dict__)
        state["_windows"], state["_permutations"] = collections.OrderedDict(), collections.OrderedDict()
        return state

    # -- sizes ----------------------------------------------------------------------------------
    @property
    def buckets(self) -> tuple[tuple[int, ...], ...]:
        """The one batch shape, (rows, row length, sentence rows, sentence row length, reviews)."""
        return (self.shape.as_tuple(),)

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.data) / self.batch_size)

    @property
    def local_batch_size(self) -> int:
        return self.batch_size // self.process_count

    @property
    def part_size(self) -> int:
        return self.batch_size // self.parts

    def _units_of(self, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lengths of the word-level units (sentences, or whole reviews when flat) of `members`,
        and their sentence counts (the sentence-level units; empty when flat)."""
        if self.layout == "flat":
            return self.review_tokens[members], np.zeros(0, np.int64)
        units = concatenated_ranges(self.first_unit[members], self.kept_sentences[members])
        counts = self.kept_sentences[members]
        return self.unit_lengths[units], counts[counts > 0]

    def _rows_needed(self, members: np.ndarray, max_rows: tuple[int, int] | None = None):
        """(word rows, sentence rows) that `members` pack into; None if over `max_rows`."""
        words, counts = self._units_of(members)
        needed = []
        for units, length, limit in ((words, self.row_length, None if max_rows is None else max_rows[0]),
                                     (counts, self.sentence_row_length, None if max_rows is None else max_rows[1])):
            placed = best_fit_rows(units, length, limit) if len(units) else (None, None, 0)
            if placed is None:
                return None
            needed.append(placed[2])
        return tuple(needed)

    def _local_limits(self) -> tuple[int, int]:
        return self.shape.rows // self.parts, self.shape.sentence_rows // self.parts

    def _fits(self, members: np.ndarray) -> bool:
        return self._rows_needed(members, self._local_limits()) is not None

    def _choose_shape(self) -> PackedShape:
        """Rows for every local batch of the first two epochs (balanced batches need about the
        same, the lower bound ceil(tokens / L)); a later batch that overflows is repaired by
        swapping reviews (`_fit`). Flat rows need only be as long as the longest review: of the
        (rows, length) pairs that hold every batch, the one with the fewest slots (a batch of 32
        reviews of ~100 tokens fills 6.2 rows of 512: 7 rows waste 11%, 6 rows of 544 waste 3%)."""
        parts = [part for seed in (self.seed, *self.shape_seeds) for epoch in (0, 1)
                 for part in self._raw_window_parts(epoch, 0, seed)]
        if self.layout == "flat":
            self.row_length = self._flat_row_length(parts)
        word_rows = sentence_rows = 1
        for part in parts:
            words, sentences = self._rows_needed(part)
            word_rows, sentence_rows = max(word_rows, words), max(sentence_rows, sentences)
        word_rows = _round_up(word_rows, self.part_row_multiple)
        sentence_rows = _round_up(sentence_rows, self.part_row_multiple) if self.layout == "hierarchical" else 0
        return PackedShape(word_rows * self.parts, self.row_length, sentence_rows * self.parts,
                           self.sentence_row_length, self.batch_size,
                           max_tokens=self.max_tokens if self.layout == "flat" else 0)

    def _flat_row_length(self, parts: list[np.ndarray]) -> int:
        """The row length of `_choose_shape` for flat rows: of the lengths >= the longest review
        whose rows hold every batch of `parts`, one within 2% of the fewest slots, with the most
        rows (a recurrence walks a row's length step by step)."""
        longest = self.row_length
        heaviest = max(int(self.review_tokens[part].sum()) for part in parts)
        feasible = []
        for rows in range(1, -(-heaviest // longest) + 1):
            rows = _round_up(rows, self.part_row_multiple)
            length = max(longest, _round_up(-(-heaviest // rows), self.multiple))
            while not all(best_fit_rows(self.review_tokens[part], length, rows) is not None for part in parts):
                length += self.multiple
            feasible.append((rows * length, rows, length))
        fewest = min(area for area, _, _ in feasible)
        return max((rows, length) for area, rows, length in feasible if area <= 1.02 * fewest)[1]

    # -- plans ----------------------------------------------------------------------------------
    @property
    def num_windows(self) -> int:
        return -(-self.steps_per_epoch // self.window_batches)

    def _window_steps(self, window: int) -> range:
        return range(window * self.window_batches, min(self.steps_per_epoch, (window + 1) * self.window_batches))

    def _epoch_order(self, epoch: int, seed: int) -> np.ndarray:
        """The split's reviews shuffled by (seed, epoch): window w plans the next slice of it."""
        key = (seed, epoch)
        if key not in self._permutations:
            self._permutations[key] = np.random.default_rng([seed, epoch]).permutation(len(self.data))
            while len(self._permutations) > 2:
                self._permutations.popitem(last=False)
        return self._permutations[key]

    def _raw_window_parts(self, epoch: int, window: int, seed: int | None = None) -> list[np.ndarray]:
        """The parts of window `window`'s batches of `epoch`, `parts` per global batch, in step
        order (before any repair). One window: the whole epoch, as planned before windows existed."""
        seed = self.seed if seed is None else seed
        sizes = group_sizes(len(self.data), self.steps_per_epoch * self.parts, self.part_size, self.parts)
        if self.num_windows == 1:
            rng = np.random.default_rng([seed, epoch])
            groups = balanced_batches(self.review_tokens, sizes, rng)
        else:
            steps = self._window_steps(window)
            first, last = steps.start * self.parts, steps.stop * self.parts
            start = int(sizes[:first].sum())
            members = self._epoch_order(epoch, seed)[start:start + int(sizes[first:last].sum())]
            rng = np.random.default_rng([seed, epoch, window])
            groups = [members[g] for g in balanced_batches(self.review_tokens[members], sizes[first:last], rng)]
        count = len(groups) // self.parts
        order = rng.permutation(count).tolist()
        return [groups[batch * self.parts + p] for batch in order for p in range(self.parts)]

    def _raw_epoch_parts(self, epoch: int, seed: int | None = None) -> list[np.ndarray]:
        """The parts of `epoch`'s batches, `parts` per global batch, in step order (before any repair)."""
        return [part for window in range(self.num_windows) for part in self._raw_window_parts(epoch, window, seed)]

    def window_parts(self, epoch: int, window: int) -> list[np.ndarray]:
        """The repaired parts of one planning window of `epoch` (the last few are kept)."""
        key = (self.seed, epoch, window)
        if key not in self._windows:
            self._windows[key] = self._fit(self._raw_window_parts(epoch, window))
            while len(self._windows) > 4:
                self._windows.popitem(last=False)
        return self._windows[key]

    def step_parts(self, epoch: int, step: int) -> list[np.ndarray]:
        """The `parts` parts of global batch `step` of `epoch`: one window's plan, not the epoch's."""
        window, at = divmod(step, self.window_batches)
        parts = self.window_parts(epoch, window)
        return parts[at * self.parts:(at + 1) * self.parts]

    def _fit(self, parts: list[np.ndarray]) -> list[np.ndarray]:
        """Repairs local batches that overflow the shape, deterministically: reviews of the
        overflowing batch swap with smaller ones of the lightest batches that still fit after the
        swap. Batch sizes do not change; no review is lost or truncated further."""
        loads = np.array([self.review_tokens[p].sum() for p in parts], np.int64)
        for index, mine in enumerate(parts):
            for _ in range(4 * len(mine) + 4):
                if self._fits(mine):
                    break
                if not self._swap_out(index, parts, loads):
                    raise RuntimeError(f"packed batches: {len(mine)} reviews do not fit {self.shape} and no "
                                       "swap helps; report this with the data set")
        return parts

    def _sizes(self, members: np.ndarray) -> np.ndarray:
        """What overflows: tokens, or sentences when the sentence rows are the ones too few."""
        limits = self._local_limits()
        if self.layout == "hierarchical" and self._rows_needed(members, (None, limits[1])) is None:
            return self.kept_sentences
        return self.review_tokens

    def _swap_out(self, index: int, parts: list[np.ndarray], loads: np.ndarray) -> bool:
        """One swap that makes batch `index` smaller where it overflows; False if no swap keeps the
        other batch fitting."""
        mine = parts[index]
        sizes = self._sizes(mine)
        for mine_at in np.argsort(-sizes[mine], kind="stable")[:4].tolist():
            for other in np.argsort(loads, kind="stable")[:16].tolist():
                theirs = parts[other]
                if other == index:
                    continue
                for their_at in np.argsort(sizes[theirs], kind="stable")[:4].tolist():
                    if sizes[theirs[their_at]] >= sizes[mine[mine_at]]:
                        break
                    mine[mine_at], theirs[their_at] = theirs[their_at], mine[mine_at]
                    if self._fits(theirs):
                        loads[index] = self.review_tokens[mine].sum()
                        loads[other] = self.review_tokens[theirs].sum()
                        return True
                    mine[mine_at], theirs[their_at] = theirs[their_at], mine[mine_at]  # undo
        return False

    def epoch_parts(self, epoch: int) -> list[np.ndarray]:
        """The parts of `epoch`'s batches: `steps_per_epoch * parts` arrays of review indices."""
        return [part for window in range(self.num_windows) for part in self.window_parts(epoch, window)]

    def eval_parts(self) -> list[np.ndarray]:
        """Every review once, in balanced batches: as many as it takes for each to fit the shape."""
        if self._eval_plan is None:
            per_part = self.shape.slots // self.parts
            num_parts = max(math.ceil(len(self.data) / self.part_size),
                            math.ceil(int(self.review_tokens.sum()) / per_part))
            while True:
                num_parts = _round_up(num_parts, self.parts)
                rng = np.random.default_rng([self.seed, 2 ** 31 - 1])
                # As even as possible: evaluation batches need not be full.
                sizes = len(self.data) // num_parts + (np.arange(num_parts) < len(self.data) % num_parts)
                parts = balanced_batches(self.review_tokens, sizes, rng, noise=0.0)
                if all(self._fits(p) for p in parts):
                    break
                num_parts = int(num_parts * 1.05) + 1
            self._eval_plan = [np.sort(p) for p in parts]
        return self._eval_plan

    # -- batches --------------------------------------------------------------------------------
    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        """This process's part of the training batches of `epoch`, from `start_step` on (resume)."""
        for step in range(start_step, self.steps_per_epoch):
            yield self.local_batch(self.step_parts(epoch, step))

    def local_members(self, global_parts: list[np.ndarray]) -> list[np.ndarray]:
        """This process's parts of one global batch's `parts`: the reviews it reads."""
        first = self.process_index * self.parts_per_process
        return global_parts[first:first + self.parts_per_process]

    def local_batch(self, global_parts: list[np.ndarray], data: EncodedReviews | None = None,
                    positions: list[np.ndarray] | None = None) -> Batch:
        """This process's parts of one global batch, side by side. `data` / `positions`: build it
        from other arrays holding the reviews (a streamed batch's records) at those positions."""
        first = self.process_index * self.parts_per_process
        mine = self.local_members(global_parts) if positions is None else positions
        built = [make_packed_batch(self.data if data is None else data, members, self.layout, self.shape,
                                   part=first + j, parts=self.parts, rating_range=self.rating_range,
                                   rating_step=self.rating_step)
                 for j, members in enumerate(mine)]
        if len(built) == 1:
            return built[0]
        return {key: np.concatenate([b[key] for b in built]) for key in built[0]}

    @property
    def eval_steps(self) -> int:
        return len(self.eval_parts()) // self.parts

    def eval_step_parts(self, batch: int) -> list[np.ndarray]:
        return self.eval_parts()[batch * self.parts:(batch + 1) * self.parts]

    def evaluation(self) -> Iterator[Batch]:
        for batch in range(self.eval_steps):
            yield self.local_batch(self.eval_step_parts(batch))

    def make_local_batch(self, members: np.ndarray, part: int | None = None) -> Batch:
        """Part `part` (default: this process's first) of a global batch, holding the reviews
        `members` (<= B / parts)."""
        part = self.process_index * self.parts_per_process if part is None else part
        return make_packed_batch(self.data, members, self.layout, self.shape, part=part, parts=self.parts,
                                 rating_range=self.rating_range, rating_step=self.rating_step)

    def padding_report(self) -> dict:
        """Real tokens / token slots over an epoch's batches, and truncation."""
        kept = int(self.review_tokens.sum())
        slots = self.steps_per_epoch * self.shape.slots
        total = int(self.data.arrays.num_tokens.sum())
        efficiency = round(kept / max(1, slots), 4)
        report = {"efficiency": efficiency, "tokens": total, "truncated_tokens": total - kept, "layout": "packed",
                  "buckets": [{"shape": list(self.shape.as_tuple()), "reviews": len(self.data),
                               "efficiency": efficiency}]}
        if self.layout == "hierarchical":
            sentence_slots = self.steps_per_epoch * self.shape.sentence_rows * self.shape.sentence_row_length
            report["sentence_efficiency"] = round(int(self.kept_sentences.sum()) / max(1, sentence_slots), 4)
        return report


def make_packed_batch(data: EncodedReviews, members: np.ndarray, layout: str, shape: PackedShape, *,
                      part: int = 0, parts: int = 1, rating_range: tuple[float, float] = (1.0, 5.0),
                      rating_step: float = 1.0) -> Batch:
    """Part `part` of `parts` of a packed batch (local shape = global / parts) holding `members`.

    Segment ids are global: they point at this part's slots in the global batch.
    """
    arrays = data.arrays
    members = np.asarray(members, np.int64)
    rows, length = shape.rows // parts, shape.row_length
    slots = shape.reviews // parts
    if len(members) > slots:
        raise ValueError(f"{len(members)} reviews for {slots} review slots")
    slot_offset = part * slots
    ratings = np.full(slots, rating_range[0], np.float32)
    ratings[:len(members)] = arrays.ratings[members]
    weight = np.zeros(slots, np.float32)
    weight[:len(members)] = 1.0
    batch = {
        "user": np.zeros(slots, np.int32), "product": np.zeros(slots, np.int32),
        "label": rating_labels(ratings, rating_range=rating_range, rating_step=rating_step),
        "rating": ratings, "weight": weight,
    }
    batch["user"][:len(members)] = arrays.users[members]
    batch["product"][:len(members)] = arrays.products[members]
    words = np.zeros((rows, length), np.int32)
    owner = np.zeros((rows, length), np.int32)
    if layout == "flat":
        lengths = np.minimum(arrays.num_tokens_of(members), shape.max_tokens or length)
        placed = best_fit_rows(lengths, length, rows)
        if placed is None:
            raise ValueError(f"the reviews of a batch do not fit {rows} rows of {length}")
        row, offset, _ = placed
        starts = arrays.token_offsets[arrays.sentence_offsets[members]]
        positions = np.repeat(row * length + offset, lengths) + concatenated_ranges(np.zeros_like(lengths), lengths)
        words.reshape(-1)[positions] = arrays.token_ids[concatenated_ranges(starts, lengths)]
        owner.reshape(-1)[positions] = np.repeat(np.arange(len(members)) + slot_offset, lengths)
        batch.update(tokens=words, token_mask=words != 0, token_review=owner)
        return batch

    sentence_rows, sentence_length = shape.sentence_rows // parts, shape.sentence_row_length
    counts = np.minimum(arrays.num_sentences_of(members), sentence_length)
    # Sentence level: each review's sentences, in order, whole in one sentence row.
    review_row = np.zeros(len(members), np.int64)
    review_offset = np.zeros(len(members), np.int64)
    has = counts > 0
    if has.any():
        placed = best_fit_rows(counts[has], sentence_length, sentence_rows)
        if placed is None:
            raise ValueError(f"the reviews of a batch do not fit {sentence_rows} sentence rows of {sentence_length}")
        review_row[has], review_offset[has], _ = placed
    sentence_slot = (np.repeat(review_row * sentence_length + review_offset, counts)
                     + concatenated_ranges(np.zeros_like(counts), counts))  # local, row-major in [Rs, Ls]
    sentence_review = np.zeros((sentence_rows, sentence_length), np.int32)
    sentence_review.reshape(-1)[sentence_slot] = np.repeat(np.arange(len(members)) + slot_offset, counts)
    sentence_mask = np.zeros((sentence_rows, sentence_length), bool)
    sentence_mask.reshape(-1)[sentence_slot] = True
    # Word level: every sentence whole in one word row.
    sentences = concatenated_ranges(arrays.sentence_offsets[members], counts)
    lengths = np.minimum(arrays.sentence_lengths_of(sentences), length)
    placed = best_fit_rows(lengths, length, rows)
    if placed is None:
        raise ValueError(f"the sentences of a batch do not fit {rows} rows of {length}")
    row, offset, _ = placed
    positions = np.repeat(row * length + offset, lengths) + concatenated_ranges(np.zeros_like(lengths), lengths)
    words.reshape(-1)[positions] = arrays.token_ids[concatenated_ranges(arrays.token_offsets[sentences], lengths)]
    global_slot = sentence_slot + part * sentence_rows * sentence_length
    owner.reshape(-1)[positions] = np.repeat(global_slot, lengths)
    batch.update(words=words, word_mask=words != 0, word_sentence=owner, sentence_review=sentence_review,
                 sentence_mask=sentence_mask)
    return batch


def is_packed(batch: dict) -> bool:
    """Whether `batch` is packed (segment ids present) rather than `[B, S, W]` / `[B, T]`."""
    return "word_sentence" in batch or "token_review" in batch
