"""From a data config to train / validation / test splits ready for batching.

Sources: the synthetic corpus (default), one file split by seeded fractions, separate files, or a
TFDS builder. A file flag is never ignored: setting any of data.path / train / valid / test while
data.name is the default "synthetic" reads those files (`report["source"]` is then "files" and
`report["selected_by"]` names the flags); a combination that cannot mean one thing (a TFDS
builder and data.path; data.valid without data.train) is a one-line ValueError saying what to add
or remove (`resolve_source`).

Ratings: one range, one step, one number of classes. `data.rating_range` / `data.rating_step`
when given; each one not given is read from the training data (`rating_scale`): low and high are
its smallest and largest rating, the step the largest that divides every rating - low (0.5 for
MovieLens half stars, 1 for stars). A single file (data.path) and the synthetic corpus are read
whole, before they are split. Then every rating of every split is one of the classes low,
low + step, ..., high, or loading fails naming file:line (the readers check) or, for the synthetic
and TFDS sources, the split and the review's index: nothing is clipped or rounded into a class.
`report["rating_range"]` says what was used and where it came from; `DataSplits.num_classes` is
the one definition of C, and batchers, heads and baselines take range, step and C from the same
DataSplits.

The vocabulary and the user / product maps come from the training split only; each split reports
how many of its reviews have a user / product unseen in training. Exact duplicates (same user,
text and rating) are grouped, so copies never straddle splits, and can be dropped.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
from fractions import Fraction

import ml_collections
import numpy as np
from ml_collections import config_dict

from jaxreviews.data import corpus, duplicates, readers, synthetic, word_vectors
from jaxreviews.data.corpus import EncodedReviews
from jaxreviews.data.vocab import IdMap, Vocabulary, load_word_vectors


TFDS_BUILDERS = ("yelp13", "yelp14", "imdb", "amazon_reviews")
FILE_FLAGS = ("path", "train", "valid", "test")
# An inferred step finer than this many classes means the ratings are not on a grid (averages, scores).
MAX_INFERRED_CLASSES = 1000
_RATING_KINDS = (readers.RATING_OUT_OF_RANGE, readers.RATING_OFF_GRID)


@dataclasses.dataclass(frozen=True)
class DataSplits:
    train: EncodedReviews
    validation: EncodedReviews
    test: EncodedReviews
    vocab: Vocabulary
    users: IdMap
    products: IdMap
    rating_range: tuple[float, float]
    rating_step: float
    report: dict
    pretrained: np.ndarray | None = None

    @property
    def num_classes(self) -> int:
        """C, the number of rating classes: every batcher, head and baseline uses this one."""
        return int(round((self.rating_range[1] - self.rating_range[0]) / self.rating_step)) + 1

    def save_tables(self, directory: str | os.PathLike) -> None:
        """vocab.txt, users.txt, products.txt: what a later run needs to map text and ids the same way."""
        os.makedirs(directory, exist_ok=True)
        self.vocab.save(os.path.join(directory, "vocab.txt"))
        self.users.save(os.path.join(directory, "users.txt"))
        self.products.save(os.path.join(directory, "products.txt"))


# --- which source --------------------------------------------------------------------------------


def resolve_source(config: ml_collections.ConfigDict) -> tuple[str, list[str]]:
    """(the source to read: "synthetic" | "files" | "tfds" | a builder, the file flags that chose
    "files" when data.name was left at "synthetic"), or a one-line ValueError for flags that
    would be ignored or contradict each other."""
    file_flags = [f"data.{key}" for key in FILE_FLAGS if config.get(key)]
    name = config.name
    selected_by = []
    if name == "synthetic":
        if not file_flags:
            if config.get("format"):
                raise ValueError(f"data.format={config.format!r} names the format of a file, but no file is set: "
                                 "add data.path=FILE (one file, split by data.split_fractions) or data.train=FILE "
                                 "and data.test=FILE")
            return name, selected_by
        name, selected_by = "files", file_flags
    if name == "tfds" or name in TFDS_BUILDERS:
        if file_flags:
            reads = "data.tfds_name" if name == "tfds" else "data.manual_dir"
            raise ValueError(f"data.name={name!r} reads a TFDS builder (from {reads}), not "
                             f"{' / '.join(file_flags)}: remove {' / '.join(file_flags)}, or set data.name=files "
                             "to read the files")
        return name, selected_by
    if name != "files":
        raise ValueError(f"unknown data.name {name!r}: 'synthetic', 'files', 'tfds' or a TFDS builder "
                         f"({', '.join(TFDS_BUILDERS)})")
    separate = [flag for flag in file_flags if flag != "data.path"]
    if config.path and separate:
        raise ValueError(f"data.path is one file split by data.split_fractions, {' / '.join(separate)} separate "
                         f"files: remove data.path or {' / '.join(separate)}")
    if not config.path and not config.train:
        if not file_flags:
            raise ValueError("data.name='files' needs data.path=FILE (one file, split by data.split_fractions) "
                             "or data.train=FILE and data.test=FILE")
        raise ValueError(f"{' and '.join(file_flags)} without data.train: add data.train=FILE (its ratings, "
                         "vocabulary and ids are what the model learns)")
    if not config.path and not config.test:
        raise ValueError("data.train without data.test: add data.test=FILE (or give one file as data.path=FILE, "
                         "split by data.split_fractions)")
    return name, selected_by


# --- one rating scale ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RatingScale:
    """The rating classes low, low + step, ..., high, and where range and step came from."""

    low: float
    high: float
    step: float
    range_from: str  # "data.rating_range" or the training data it was read from
    step_from: str  # "data.rating_step" or the training data it was read from

    @property
    def rating_range(self) -> tuple[float, float]:
        return (self.low, self.high)

    @property
    def num_classes(self) -> int:
        return int(round((self.high - self.low) / self.step)) + 1

    @property
    def origin(self) -> str:
        if self.range_from == self.step_from:
            return self.range_from
        if (self.range_from, self.step_from) == ("data.rating_range", "data.rating_step"):
            return "data.rating_range and data.rating_step"
        step = "data.rating_step" if self.step_from == "data.rating_step" else f"the {self.step_from}"
        return f"{self.range_from}, step from {step}"

    def report(self) -> dict:
        return {"low": self.low, "high": self.high, "step": self.step, "classes": self.num_classes,
                "from": self.origin}

    def hint(self, kind: str) -> str:
        """Where the range (`kind` RATING_OUT_OF_RANGE) or the step (RATING_OFF_GRID) came from,
        and what to set when a rating of another split does not fit it."""
        if kind == readers.RATING_OUT_OF_RANGE:
            if self.range_from == "data.rating_range":
                return " (data.rating_range)"
            return (f", read from the {self.range_from}: set data.rating_range=(low, high) to a range that "
                    "holds every split's ratings")
        if self.step_from == "data.rating_step":
            return " (data.rating_step)"
        return (f", a step read from the {self.step_from}: set data.rating_step (and data.rating_range) to "
                "classes that hold every split's ratings")

    def problem(self, rating: float) -> str | None:
        """Why `rating` is none of the classes (with the fix), or None when it is one."""
        if not self.low <= rating <= self.high:
            if self.range_from == "data.rating_range":  # the words load_splits has always used
                return f"rating {rating:g} outside data.rating_range {self.low:g}..{self.high:g}"
            return f"rating {rating:g} outside the range {self.low:g}..{self.high:g}" + \
                self.hint(readers.RATING_OUT_OF_RANGE)
        if readers.on_rating_grid(rating, low=self.low, step=self.step):
            return None
        return (f"rating {rating:g} is between the classes {self.low:g}..{self.high:g} in steps of {self.step:g}"
                + self.hint(readers.RATING_OFF_GRID))


def given_rating_scale(config: ml_collections.ConfigDict) -> tuple[tuple[float, float] | None, float | None]:
    """(data.rating_range, data.rating_step) as numbers, each None when not given; checked."""
    rating_range, step = config.get("rating_range"), config.get("rating_step")
    if rating_range is not None and all(value is None for value in rating_range):
        rating_range = None  # () or --config.data.rating_range=None: not given
    if rating_range is not None:
        try:
            low, high = (float(value) for value in rating_range)
        except (TypeError, ValueError):
            raise ValueError(f"data.rating_range must be (low, high), e.g. --config.data.rating_range='(1, 5)', "
                             f"got {rating_range!r}") from None
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ValueError(f"data.rating_range must be (low, high) with low < high, got {rating_range!r}")
        rating_range = (low, high)
    if step is not None:
        step = float(step)
        if not (math.isfinite(step) and step > 0):
            raise ValueError(f"data.rating_step must be a positive number, e.g. 1 or 0.5, got {step!r}")
        if rating_range is not None and not readers.on_rating_grid(rating_range[1], low=rating_range[0], step=step):
            raise ValueError(f"data.rating_range {rating_range[0]:g}..{rating_range[1]:g} is not a whole number of "
                             f"data.rating_step={step:g} steps")
    return rating_range, step


def infer_rating_step(ratings: np.ndarray, *, low: float, source: str) -> float:
    """The largest step s with every rating = low + k * s for a whole k (0.5 for half stars)."""
    offsets = np.unique(np.asarray(ratings, np.float64) - low)
    offsets = offsets[offsets > 1e-9]
    if len(offsets) == 0:
        raise ValueError(f"every rating of the {source} is {low:g}: set data.rating_range=(low, high) and "
                         "data.rating_step")
    too_fine = ValueError(f"the ratings of the {source} ({low:g}..{low + offsets.max():g}) are not on a grid of at "
                          f"most {MAX_INFERRED_CLASSES} classes: set data.rating_range=(low, high) and "
                          "data.rating_step, and round the ratings to them")
    if len(offsets) >= MAX_INFERRED_CLASSES:
        raise too_fine
    fractions = [Fraction(float(offset)).limit_denominator(1000) for offset in offsets]
    denominator = math.lcm(*(fraction.denominator for fraction in fractions))
    step = float(Fraction(math.gcd(*(fraction.numerator * (denominator // fraction.denominator)
                                     for fraction in fractions)), denominator))
    positions = offsets / step
    if step <= 0 or positions.max() >= MAX_INFERRED_CLASSES or \
            np.abs(positions - np.rint(positions)).max() > readers.GRID_TOLERANCE:
        raise too_fine
    return step


def _tidy(value: float) -> float:
    """A float32 rating as the decimal it was written as (3.7, not 3.700000047)."""
    fraction = float(Fraction(float(value)).limit_denominator(1000))
    return fraction if abs(fraction - float(value)) < 1e-5 else float(value)


def rating_scale(train_ratings: np.ndarray, *, rating_range: tuple[float, float] | None,
                 rating_step: float | None, source: str, range_from: str | None = None) -> RatingScale:
    """The scale of a run: each of range and step the config's when given, else read from
    `train_ratings` (the training data, named `source` in the report and in errors). `range_from`
    names where a given range came from when not from data.rating_range (a format's fixed scale)."""
    given_from = range_from or "data.rating_range"
    if rating_range is not None and rating_step is not None:
        return RatingScale(rating_range[0], rating_range[1], rating_step, given_from, "data.rating_step")
    ratings = np.asarray(train_ratings, np.float64)
    if rating_range is None:
        if len(ratings) == 0:
            raise ValueError(f"the {source} has no ratings to read the rating range from: set "
                             "data.rating_range=(low, high) and data.rating_step")
        low, high = _tidy(ratings.min()), _tidy(ratings.max())
    else:
        low, high = rating_range
        ratings = ratings[(ratings >= low) & (ratings <= high)]  # the others fail the check that follows
    if rating_step is None:
        step = infer_rating_step(np.append(ratings, high), low=low, source=source)
    else:
        step = rating_step
        if not readers.on_rating_grid(high, low=low, step=step):
            raise ValueError(f"the ratings of the {source} span {low:g}..{high:g}, not a whole number of "
                             f"data.rating_step={step:g} steps: set data.rating_range=(low, high) too")
    return RatingScale(float(low), float(high), float(step),
                       range_from=source if rating_range is None else given_from,
                       step_from=source if rating_step is None else "data.rating_step")


def first_off_scale(ratings: np.ndarray, scale: RatingScale) -> int | None:
    """The index of the first rating that is none of the scale's classes, or None."""
    position = (np.asarray(ratings, np.float64) - scale.low) / scale.step
    nearest = np.rint(position)
    bad = (nearest < 0) | (nearest > scale.num_classes - 1) | (np.abs(position - nearest) > readers.GRID_TOLERANCE)
    return int(np.argmax(bad)) if bad.any() else None


def _check_ratings(collected, scale: RatingScale, where: str) -> None:
    """Raises naming `where` and the review's index when a rating is none of the classes."""
    bad = first_off_scale(collected.arrays.ratings, scale)
    if bad is not None:
        rating = float(collected.arrays.ratings[bad])
        raise ValueError(f"{where}: review {bad}: {scale.problem(rating)}")


class _StopAtRating(readers.ReadReport):
    """A lenient read's report that raises at the first rating outside the scale: finds its line."""

    def record(self, error: readers.ReadError) -> None:
        if error.kind in _RATING_KINDS:
            raise error
        super().record(error)


# --- reading ---------------------------------------------------------------------------------------


def input_files(value: str) -> list[str]:
    """The files of a file option: one path, or several separated by commas, read one after the
    other as one corpus (a data set shipped in parts)."""
    return [os.path.expanduser(part) for part in str(value).split(",") if part]


def _read(path: str, config, report_name: str, reports: dict, *, rating_range, rating_step,
          scale: RatingScale | None = None, collect=corpus.collect):
    """The reviews of one file; a rating outside `rating_range` / `rating_step` is a ReadError
    `path:line: ...` (and, given the `scale`, where it came from and what to set)."""
    report = readers.ReadReport()
    stream = itertools.chain.from_iterable(
        readers.read_reviews(one, config.format or None, rating_range=rating_range, rating_step=rating_step,
                             lenient=config.lenient, report=report) for one in input_files(path))
    try:
        collected = collect(stream)
    except readers.ReadError as error:
        if scale is not None and error.kind in _RATING_KINDS:
            raise readers.ReadError(error.path, error.line_number, error.kind,
                                    error.problem + scale.hint(error.kind)) from None
        raise
    reports[report_name] = report.summary()
    return collected


def _read_files(config: ml_collections.ConfigDict, rating_range, rating_step, reports: dict, collect=corpus.collect):
    """(parts, scale): the training file (data.path, or data.train) first and the scale from it,
    then data.valid / data.test read against that scale."""
    if config.path:
        first_key, first_path, report_name = "all", config.path, "read"
        source = f"whole file {config.path} (data.path, before the split)"
    else:
        first_key, first_path, report_name = "train", config.train, "read_train"
        source = f"training file {config.train} (data.train)"
    format = config.format or readers.detect_format(input_files(first_path)[0])
    bound, range_from = rating_range, None
    if rating_range is None and format in readers.FIXED_RATING_RANGES:  # Amazon: 1..5 stars whatever the file holds
        rating_range = bound = readers.FIXED_RATING_RANGES[format]
        range_from = f"{format} format (its ratings are {rating_range[0]:g}..{rating_range[1]:g} stars)"
    elif rating_range is None:  # read within the format's ratings (as tools/inspect_data.py checks)
        bound = tuple(float(v) for v in readers.DEFAULT_RATING_RANGES[format])
    try:
        first = _read(first_path, config, report_name, reports, rating_range=bound,
                      rating_step=rating_step if rating_range is not None else None, collect=collect)
    except readers.ReadError as error:
        if error.kind != readers.RATING_OUT_OF_RANGE or given_rating_scale(config)[0] is not None:
            raise
        raise readers.ReadError(error.path, error.line_number, error.kind,
                                f"{error.problem} of the {format} format: set data.rating_range=(low, high) if "
                                "this file's scale is another") from None
    scale = rating_scale(first.arrays.ratings, rating_range=rating_range, rating_step=rating_step, source=source,
                         range_from=range_from)
    bad = first_off_scale(first.arrays.ratings, scale)
    if bad is not None:  # a step given for a range read from the file: find the line that misses it
        try:
            for one in input_files(first_path):
                for _ in readers.read_reviews(one, config.format or None, rating_range=scale.rating_range,
                                              rating_step=scale.step, lenient=True, report=_StopAtRating()):
                    pass
        except readers.ReadError as error:
            raise readers.ReadError(error.path, error.line_number, error.kind,
                                    error.problem + scale.hint(error.kind)) from None
        _check_ratings(first, scale, first_path)
    parts = {first_key: first}
    for key in ("valid", "test"):
        if config[key]:
            parts[key] = _read(config[key], config, f"read_{key}", reports, rating_range=scale.rating_range,
                               rating_step=scale.step, scale=scale, collect=collect)
    return parts, scale


def _fold(groups: np.ndarray, indices: np.ndarray, folds: int, fold: int, seed: int):
    """(train, validation) of K-fold cross-validation over `indices`: fold `fold` of `folds`
    (duplicate groups kept whole, `duplicates.group_folds`) is the validation split."""
    fold_of = duplicates.group_folds(groups[indices], folds, seed=seed)
    return indices[fold_of != fold], indices[fold_of == fold]


def check_folds(config: ml_collections.ConfigDict) -> int:
    """The number of folds of `config` (0: no cross-validation), checked."""
    folds, fold = int(config.get("folds", 0) or 0), int(config.get("fold", 0) or 0)
    if folds in (0, 1):
        if fold:
            raise ValueError(f"data.fold={fold} needs data.folds >= 2 (K-fold cross-validation)")
        return 0
    if folds < 0 or not 0 <= fold < folds:
        raise ValueError(f"data.folds={folds}, data.fold={fold}: need folds >= 2 and 0 <= fold < folds")
    if config.get("valid"):
        raise ValueError(f"data.folds={folds} cuts the validation folds out of the training data: remove data.valid "
                         "(a validation file) or data.folds")
    return folds


def _holdout(groups: np.ndarray, indices: np.ndarray, fraction: float, seed: int):
    """Splits `indices` into (kept, held out) by duplicate group."""
    kept, held = duplicates.group_split(groups[indices], fractions=(1 - fraction, fraction), seed=seed)
    return indices[kept], indices[held]


def _read_tfds(config: ml_collections.ConfigDict, reports: dict, collect=corpus.collect) -> dict:
    """Train / valid / test parts from the TFDS builder `data.tfds_name`, prepared first (as
    array_record, from `data.manual_dir` for the real data sets) when `data.tfds_data_dir` lacks it.
    A builder without a validation split leaves `valid` out (then held out of train)."""
    from jaxreviews.data import tfds_builders  # imports tensorflow_datasets: only for this source

    if not config.tfds_name:
        raise ValueError("data.name='tfds' needs data.tfds_name, e.g. yelp13, yelp14, imdb, amazon_reviews "
                         "or synthetic_reviews/tiny")
    builder = tfds_builders.prepare(config.tfds_name, data_dir=config.tfds_data_dir or None,
                                    manual_dir=config.manual_dir or None)
    parts = {}
    for split, part in (("train", "train"), ("validation", "valid"), ("test", "test")):
        if split not in builder.info.splits:
            continue
        parts[part] = collect(tfds_builders.reviews_from_tfds(builder, split))
        reports[f"read_{part}"] = f"{builder.info.full_name} {split}: {len(parts[part].arrays):,} reviews"
    return parts


def load_splits(config: ml_collections.ConfigDict) -> DataSplits:
    """The splits of `config` (the `data` part of an experiment config); see the module docstring.

    data.name=prepared reads a directory of `tools/prepare_data.py`; a file of more than
    data.stream_above reviews (or any, with data.streaming) is prepared into a cache first
    (`jaxreviews.data.prepared`): the same splits, streamed instead of held in memory."""
    from jaxreviews.data import prepared  # it builds on this module

    directory = prepared.directory_for(config)
    if directory is not None:
        splits = prepared.load(directory, wrap_sentences=config.wrap_sentences)
        return _with_vectors(splits, config, None, None)
    encoded, vocab, users, products, scale, reports, train_source, train_indices = split_and_encode(config)
    splits = DataSplits(encoded["train"], encoded["validation"], encoded["test"], vocab, users, products,
                        scale.rating_range, scale.step, reports)
    return _with_vectors(splits, config, train_source, train_indices)


def split_and_encode(config: ml_collections.ConfigDict, *, collect=corpus.collect, encode=None):
    """(encoded splits by name, vocabulary, users, products, scale, report, the training source,
    its training indices): load_splits up to the word vectors. `collect` turns a stream of reviews
    into a `corpus.Collected`; `encode(name, source, indices, vocab, users, products)` makes a
    split (default: `source.encode`): the prepared directory writes records through both."""
    name, selected_by = resolve_source(config)
    rating_range, rating_step = given_rating_scale(config)
    reports: dict = {"source": name}
    folds = check_folds(config)
    if selected_by:
        reports["selected_by"] = f"{', '.join(selected_by)}; data.name was the default 'synthetic'"
    if name == "synthetic":
        spec = dataclasses.replace(synthetic.default_spec(config.synthetic_size), seed=config.synthetic_seed)
        parts = {"all": collect(synthetic.generate(spec).reviews)}
        scale = rating_scale(parts["all"].arrays.ratings, rating_range=rating_range, rating_step=rating_step,
                             source="synthetic corpus (before the split)")
        _check_ratings(parts["all"], scale, "synthetic corpus")
    elif name == "files":
        parts, scale = _read_files(config, rating_range, rating_step, reports, collect)
    else:
        if name != "tfds":  # --config.data.name=yelp13 --config.data.manual_dir=~/data/yelp13
            config = ml_collections.ConfigDict({**config.to_dict(), "tfds_name": name})
        parts = _read_tfds(config, reports, collect)
        if "train" not in parts:
            raise ValueError(f"TFDS builder {config.tfds_name} has no train split")
        scale = rating_scale(parts["train"].arrays.ratings, rating_range=rating_range, rating_step=rating_step,
                             source=f"{config.tfds_name} train split")
        for part, collected in parts.items():
            _check_ratings(collected, scale, f"{config.tfds_name} {'validation' if part == 'valid' else part}")
    reports["rating_range"] = scale.report()
    if folds:
        reports["folds"] = {"folds": folds, "fold": int(config.fold)}

    def kept_indices(collected):
        everything = np.arange(len(collected.arrays))
        if not config.drop_duplicates:
            return everything
        first = np.sort(np.unique(collected.duplicate_groups, return_index=True)[1])
        reports.setdefault("duplicates_dropped", 0)
        reports["duplicates_dropped"] += len(everything) - len(first)
        return first

    if "all" in parts:
        # One table of strings for all splits: the splits index one collected corpus.
        source = parts["all"]
        indices = kept_indices(source)
        train, valid, test = duplicates.group_split(
            source.duplicate_groups[indices], fractions=tuple(config.split_fractions), seed=config.split_seed)
        train, valid = indices[train], indices[valid]
        if folds:  # the folds cover train + validation; the test split stays as it was
            train, valid = _fold(source.duplicate_groups, np.sort(np.concatenate([train, valid])), folds,
                                 config.fold, config.split_seed)
        split_indices = {"train": train, "validation": valid, "test": indices[test]}
        sources = dict.fromkeys(split_indices, source)
    else:
        train_source = parts["train"]
        train_idx = kept_indices(train_source)
        if folds:
            train_idx, valid_idx = _fold(train_source.duplicate_groups, train_idx, folds, config.fold,
                                         config.split_seed)
            valid_source = train_source
        elif "valid" in parts:
            valid_source, valid_idx = parts["valid"], kept_indices(parts["valid"])
        else:
            train_idx, valid_idx = _holdout(train_source.duplicate_groups, train_idx,
                                            config.valid_fraction, config.split_seed)
            valid_source = train_source
        split_indices = {"train": train_idx, "validation": valid_idx, "test": kept_indices(parts["test"])}
        sources = {"train": train_source, "validation": valid_source, "test": parts["test"]}

    train_source = sources["train"]
    vocab = train_source.build_vocabulary(split_indices["train"], min_count=config.min_count,
                                          max_size=config.max_vocab or None)
    users, products = train_source.build_id_maps(split_indices["train"])
    if encode is None:
        encoded = {name: sources[name].encode(split_indices[name], vocab, users, products) for name in split_indices}
    else:
        encoded = {name: encode(name, sources[name], split_indices[name], vocab, users, products)
                   for name in split_indices}
    if config.wrap_sentences:
        encoded = {name: dataclasses.replace(split, arrays=split.arrays.wrap_sentences(config.wrap_sentences))
                   for name, split in encoded.items()}
    for name, split in encoded.items():
        if len(split) == 0:
            raise ValueError(f"the {name} split is empty: check data.split_fractions / the files")
        reports[name] = split.unseen_counts()
    reports["vocab_size"], reports["users"], reports["products"] = len(vocab), len(users) - 1, len(products) - 1
    return encoded, vocab, users, products, scale, reports, train_source, split_indices["train"]


def _with_vectors(splits: DataSplits, config: ml_collections.ConfigDict, train_source, train_indices) -> DataSplits:
    """`splits` with the word table's starting vectors, when data.pretrained_vectors names a file or
    data.pretrain_vectors trains them on the training split (`train_source` at `train_indices`)."""
    reports = splits.report
    vectors_path = config.pretrained_vectors
    if config.get("pretrain_vectors"):
        if vectors_path:
            raise ValueError(f"data.pretrain_vectors=True trains vectors on the training split, data.pretrained_vectors="
                             f"{vectors_path!r} reads a file: set one of them")
        if train_source is None:
            raise ValueError("data.pretrain_vectors=True trains on the training text in memory, and this data is "
                             "streamed: train vectors on a sample (tools/pretrain_vectors.py) and pass the file as "
                             "data.pretrained_vectors")
        data_paths = [p for p in (config.path, config.train) if p]
        vectors_path, reports["pretrain_vectors"] = word_vectors.cached_training_vectors(
            train_source, train_indices, config.pretrain, data_paths=data_paths)
    if not vectors_path:
        return splits
    processing = config.get("vector_processing", "none")  # a config saved before the option: as read
    vectors = load_word_vectors(os.path.expanduser(vectors_path), splits.vocab, processing=processing)
    reports["pretrained_coverage"] = round(vectors.coverage, 4)
    reports["vector_processing"] = processing
    return dataclasses.replace(splits, pretrained=vectors.matrix)


def describe(splits: DataSplits) -> str:
    return json.dumps(splits.report, sort_keys=True)


def describe_source(splits: DataSplits) -> str:
    """One line for a run's log: what was read, why, and the rating classes with their origin."""
    report, scale = splits.report, splits.report["rating_range"]
    selected = f" (selected by {report['selected_by']})" if "selected_by" in report else ""
    line = (f"data source {report['source']}{selected}; ratings {scale['low']:g}..{scale['high']:g} in steps of "
            f"{scale['step']:g}, {scale['classes']} classes, from {scale['from']}")
    for key in ("read", "read_train", "read_valid", "read_test"):  # what each file held, bad lines skipped
        if isinstance(report.get(key), str):
            what = {"read": "data.path", "read_train": "data.train", "read_valid": "data.valid",
                    "read_test": "data.test"}[key]
            line += f"\n{what}: {report[key]}"
    vectors = report.get("pretrain_vectors")
    if vectors:
        how = "read from the cache" if vectors["from_cache"] else f"trained on the training split ({vectors['words']:,} words)"
        line += f"\nword vectors {how} in {vectors['seconds']:.1f}s: {vectors['path']}"
    if "pretrained_coverage" in report:
        line += (f"; {report['pretrained_coverage']:.1%} of the vocabulary has a vector"
                 f" (processing: {report.get('vector_processing', 'none')})")
    return line
