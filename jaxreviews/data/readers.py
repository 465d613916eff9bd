"""Streaming readers (and writers) for the three review file formats.

  tang     Tang et al. 2015 (IMDB, Yelp13, Yelp14): `user\\t\\tproduct\\t\\trating\\t\\ttext`, the text
           already tokenised, tokens separated by single spaces, sentences by ` <sssss> `.
  amazon   JSON lines (McAuley et al.): `reviewerID`, `asin`, `overall`, `reviewText`, `summary`.
  ratings  rating tables: MovieLens `u.data` (tab separated, no header), `ratings.csv` (header
           `userId,movieId,rating,timestamp`) and `ratings.dat` (`::` separated).

Every reader iterates the file line by line (plain or gzip, told apart by magic bytes), so a 1 GB
file is never held in memory, and decodes each line on its own so a bad byte is reported with its
line number. A malformed line raises `ReadError` (a `ValueError`) whose message starts with
`"{path}:{line_number}: "`; with `lenient=True` the line is skipped and counted in a `ReadReport`
instead. Data is never lost silently: every line ends up as a review, a blank line, a header, or a
counted skip (`ReadReport.lines` is the sum of those).

Ratings. A reader given `rating_range=(low, high)` raises on a rating outside it, and given also
`rating_step` on one between the classes low, low + step, ..., high (a 4.5 with step 1 is an
error, never rounded to a class); `rating_range=None` accepts any finite number.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import gzip
import json
import logging
import math
import os
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Literal

from jaxreviews.data.text import tokenize_review
from jaxreviews.data.types import Review

PathLike = str | os.PathLike

TANG_FIELD_SEPARATOR = "\t\t"
TANG_SENTENCE_SEPARATOR = "<sssss>"
FORMATS = ("tang", "amazon", "ratings")
# 1..10 accepts both IMDB and Yelp literature files; Amazon and MovieLens rate 1..5 (0.5 steps).
DEFAULT_RATING_RANGES = {"tang": (1, 10), "amazon": (1, 5), "ratings": (0.5, 5)}
# Scales a format fixes by definition (Amazon's `overall` is 1..5 stars): a file of it has these
# classes whatever ratings it happens to hold. The others' scales are read from the training data,
# within DEFAULT_RATING_RANGES (which tools/inspect_data.py checks too).
FIXED_RATING_RANGES = {"amazon": (1.0, 5.0)}
_GZIP_MAGIC = b"\x1f\x8b"

# Kinds of bad line, the keys of `ReadReport.skipped_by_kind`.
FIELD_COUNT = "wrong field count"
RATING_NOT_A_NUMBER = "rating not a number"
RATING_OUT_OF_RANGE = "rating out of range"
RATING_OFF_GRID = "rating between classes"
BAD_UTF8 = "bad utf-8"
BAD_JSON = "bad json"
MISSING_FIELD = "missing field"
WRONG_TYPE = "wrong field type"
EMPTY_ID = "empty id"
BAD_GZIP = "bad gzip"  # corrupt or truncated: the rest is unreadable, so this one always raises

_log = logging.getLogger(__name__)


class ReadError(ValueError):
    """A malformed line: `"{path}:{line_number}: {problem}"`, with the kind of problem attached."""

    def __init__(self, path: PathLike, line_number: int, kind: str, problem: str):
        super().__init__(f"{os.fspath(path)}:{line_number}: {problem}")
        self.path, self.line_number, self.kind, self.problem = os.fspath(path), line_number, kind, problem


class _BadLine(Exception):
    """Raised by a line parser, which knows the problem but not the file or line number."""

    def __init__(self, kind: str, problem: str):
        super().__init__(problem)
        self.kind, self.problem = kind, problem


@dataclasses.dataclass
class ReadReport:
    """What a read saw. Pass one in to read the counts after iterating; one report may span files."""

    lines: int = 0  # every physical line: reviews + blank_lines + header_lines + skipped
    reviews: int = 0
    blank_lines: int = 0
    header_lines: int = 0
    skipped: int = 0
    skipped_by_kind: dict[str, int] = dataclasses.field(default_factory=dict)
    examples: list[str] = dataclasses.field(default_factory=list)  # the first `max_examples` skips
    missing_text: int = 0  # Amazon reviews kept although they had no `reviewText`
    max_examples: int = 10

    def record(self, error: ReadError) -> None:
        self.skipped += 1
        self.skipped_by_kind[error.kind] = self.skipped_by_kind.get(error.kind, 0) + 1
        if len(self.examples) < self.max_examples:
            self.examples.append(str(error))

    def summary(self) -> str:
        parts = [f"{self.lines:,} lines: {self.reviews:,} reviews"]
        if self.blank_lines:
            parts.append(f"{self.blank_lines:,} blank")
        if self.header_lines:
            parts.append(f"{self.header_lines:,} header")
        if self.missing_text:
            parts.append(f"{self.missing_text:,} reviews without text kept")
        text = ", ".join(parts) + f", {self.skipped:,} skipped"
        if self.skipped:
            kinds = ", ".join(f"{kind}: {count:,}" for kind, count in sorted(self.skipped_by_kind.items()))
            text += f" ({kinds})\n" + "\n".join(f"  {example}" for example in self.examples)
        return text


@contextlib.contextmanager
def open_bytes(path: PathLike) -> Iterator[IO[bytes]]:
    """The file's bytes, gunzipped when it starts with the gzip magic (whatever its name)."""
    with open(path, "rb") as raw:
        if raw.peek(2)[:2] == _GZIP_MAGIC:
            with gzip.GzipFile(fileobj=raw) as unzipped:
                yield unzipped
        else:
            yield raw


def _lines(path: PathLike, report: ReadReport, lenient: bool) -> Iterator[tuple[int, str]]:
    """(line number, text without its line end) for each non-blank line that decodes as UTF-8."""
    with open_bytes(path) as source:
        try:
            for line_number, data in enumerate(source, 1):
                report.lines += 1
                data = data.rstrip(b"\r\n")
                if not data:
                    report.blank_lines += 1
                    continue
                try:
                    line = data.decode("utf-8")
                except UnicodeDecodeError as error:
                    problem = (f"not valid UTF-8: byte {data[error.start]:#04x} at offset {error.start} "
                               f"({error.reason})")
                    _fail(path, line_number, BAD_UTF8, problem, report, lenient)
                    continue
                if line_number == 1 and line.startswith("\ufeff"):
                    line = line[1:]
                yield line_number, line
        except (EOFError, gzip.BadGzipFile, zlib.error) as error:
            problem = f"corrupt or truncated gzip data: {error}"
            raise ReadError(path, report.lines + 1, BAD_GZIP, problem) from error


def _fail(path: PathLike, line_number: int, kind: str, problem: str, report: ReadReport, lenient: bool):
    error = ReadError(path, line_number, kind, problem)
    if not lenient:
        raise error
    report.record(error)


def _parse_lines(
    path: PathLike,
    parse: Callable[[str, ReadReport], Review | None],
    lenient: bool,
    report: ReadReport | None,
) -> Iterator[Review]:
    """Runs `parse` over the lines; `None` from it means a header line."""
    caller_reads_report = report is not None
    report = report if report is not None else ReadReport()
    for line_number, line in _lines(path, report, lenient):
        try:
            review = parse(line, report)
        except _BadLine as bad:
            _fail(path, line_number, bad.kind, bad.problem, report, lenient)
            continue
        if review is None:
            report.header_lines += 1
            continue
        report.reviews += 1
        yield review
    if report.skipped and not caller_reads_report:  # nobody else will see the count: say it here
        _log.warning("%s: %s", os.fspath(path), report.summary())


def _check_rating(value: float, field: str, rating_range: tuple[float, float] | None,
                  rating_step: float | None = None) -> float:
    if not math.isfinite(value):
        raise _BadLine(RATING_NOT_A_NUMBER, f"{field} {value} is not a finite number")
    if rating_range is None:
        return value
    low, high = rating_range
    if not low <= value <= high:
        raise _BadLine(RATING_OUT_OF_RANGE, f"{field} {value:g} outside the rating range {low:g}..{high:g}")
    if rating_step is not None and not on_rating_grid(value, low=low, step=rating_step):
        raise _BadLine(RATING_OFF_GRID, f"{field} {value:g} is between the classes of the rating range "
                                        f"{low:g}..{high:g} in steps of {rating_step:g}")
    return value


# How far (in steps) a rating may sit from its class: float32 storage of 0.1-step ratings is ~1e-6 off.
GRID_TOLERANCE = 1e-3


def on_rating_grid(value: float, *, low: float, step: float) -> bool:
    """Whether `value` is low + k * step for a whole k (within `GRID_TOLERANCE` of a step)."""
    position = (value - low) / step
    return abs(position - round(position)) <= GRID_TOLERANCE


def _check_rating_options(rating_range: tuple[float, float] | None, rating_step: float | None) -> None:
    if rating_step is not None and rating_range is None:
        raise ValueError("rating_step needs a rating_range: the classes are low, low + step, ..., high")
    if rating_step is not None and not rating_step > 0:
        raise ValueError(f"rating_step must be positive, got {rating_step}")


def _parse_rating(text: str, field: str, rating_range: tuple[float, float] | None,
                  rating_step: float | None = None) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _BadLine(RATING_NOT_A_NUMBER, f"{field} {text[:40]!r} is not a number") from None
    return _check_rating(value, field, rating_range, rating_step)


def _check_ids(user: str, product: str) -> None:
    if not user or user.isspace():
        raise _BadLine(EMPTY_ID, "user id is empty")
    if not product or product.isspace():
        raise _BadLine(EMPTY_ID, "product id is empty")


# --- literature format ----------------------------------------------------------------------------


def read_tang(
    path: PathLike,
    *,
    rating_range: tuple[float, float] | None = DEFAULT_RATING_RANGES["tang"],
    rating_step: float | None = None,
    lenient: bool = False,
    report: ReadReport | None = None,
) -> Iterator[Review]:
    """Reviews of a Tang et al. file, tokens and sentence breaks exactly as the file has them.

    The default range 1..10 accepts IMDB and Yelp alike; pass (1, 5) for Yelp to catch strays, or
    None to accept any number. `rating_step` also rejects ratings between classes.
    """
    _check_rating_options(rating_range, rating_step)

    def parse(line: str, report: ReadReport) -> Review:
        fields = line.split(TANG_FIELD_SEPARATOR)
        if len(fields) != 4:
            raise _BadLine(FIELD_COUNT, f"expected 4 fields (user, product, rating, text) separated by "
                                        f"'\\t\\t', got {len(fields)}")
        user, product, rating, text = fields
        _check_ids(user, product)
        rating = _parse_rating(rating, "rating", rating_range, rating_step)
        return Review(user, product, rating, _tang_sentences(text))

    return _parse_lines(path, parse, lenient, report)


def _tang_sentences(text: str) -> tuple[tuple[str, ...], ...]:
    """Splits on "<sssss>" and single spaces, dropping the empty tokens stray spaces leave."""
    sentences = []
    for sentence in text.split(TANG_SENTENCE_SEPARATOR):
        tokens = sentence.strip(" ").split(" ")
        if "" in tokens:  # doubled spaces or an empty sentence: rare, so only then a Python loop
            tokens = [token for token in tokens if token]
            if not tokens:
                continue
        sentences.append(tuple(tokens))
    return tuple(sentences)


# --- Amazon JSON lines ------------------------------------------------------------------------------

MissingText = Literal["error", "empty", "summary"]


def read_amazon(
    path: PathLike,
    *,
    rating_range: tuple[float, float] | None = DEFAULT_RATING_RANGES["amazon"],
    rating_step: float | None = None,
    lenient: bool = False,
    report: ReadReport | None = None,
    include_summary: bool = False,
    missing_text: MissingText = "summary",
) -> Iterator[Review]:
    """Reviews of an Amazon JSON-lines dump (plain or gzip); raw text goes through `tokenize_review`.

    `include_summary` puts the summary before the text as sentences of their own. Real dumps have a
    few reviews without `reviewText` (5 of 5,269 in the 2018 All_Beauty 5-core); by default
    (`missing_text="summary"`) such a review keeps its rating, user and product, its summary stands
    in for the text (no sentences if there is none), and it is counted in `report.missing_text`.
    "empty" keeps it with no sentences; "error" makes it a bad line of kind "missing field".
    """
    if missing_text not in ("error", "empty", "summary"):
        raise ValueError(f"missing_text must be 'error', 'empty' or 'summary', got {missing_text!r}")
    _check_rating_options(rating_range, rating_step)

    def parse(line: str, report: ReadReport) -> Review:
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise _BadLine(BAD_JSON, f"invalid JSON: {error.msg} at column {error.colno}") from None
        if not isinstance(record, dict):
            raise _BadLine(BAD_JSON, f"expected a JSON object, got {type(record).__name__}")
        user, product = _id_field(record, "reviewerID"), _id_field(record, "asin")
        _check_ids(user, product)
        rating = _rating_field(record, "overall", rating_range, rating_step)
        summary = _text_field(record, "summary")
        text = _text_field(record, "reviewText")
        if text is None:
            if missing_text == "error":
                raise _BadLine(MISSING_FIELD, "field 'reviewText' is missing")
            report.missing_text += 1
            text = summary if missing_text == "summary" and not include_summary else None
        sentences = tokenize_review(text) if text else ()
        if include_summary and summary:
            sentences = tokenize_review(summary) + sentences
        return Review(user, product, rating, sentences)

    return _parse_lines(path, parse, lenient, report)


def _id_field(record: dict, field: str) -> str:
    value = record.get(field)
    if value is None:
        raise _BadLine(MISSING_FIELD, f"field {field!r} is missing")
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _BadLine(WRONG_TYPE, f"field {field!r} should be a string, got {type(value).__name__}")
    return str(value)


def _rating_field(record: dict, field: str, rating_range: tuple[float, float] | None,
                  rating_step: float | None) -> float:
    value = record.get(field)
    if value is None:
        raise _BadLine(MISSING_FIELD, f"field {field!r} is missing")
    if isinstance(value, str):
        return _parse_rating(value, f"field {field!r}", rating_range, rating_step)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _BadLine(RATING_NOT_A_NUMBER, f"field {field!r} should be a number, got {type(value).__name__}")
    return _check_rating(float(value), f"field {field!r}", rating_range, rating_step)


def _text_field(record: dict, field: str) -> str | None:
    value = record.get(field)
    if value is not None and not isinstance(value, str):
        raise _BadLine(WRONG_TYPE, f"field {field!r} should be a string, got {type(value).__name__}")
    return value


# --- rating tables --------------------------------------------------------------------------------


def read_ratings(
    path: PathLike,
    *,
    rating_range: tuple[float, float] | None = DEFAULT_RATING_RANGES["ratings"],
    rating_step: float | None = None,
    lenient: bool = False,
    report: ReadReport | None = None,
) -> Iterator[Review]:
    """Reviews without text from a rating table: user, item, rating[, timestamp] per line.

    The first non-blank line decides the separator (tab for `u.data`, `::` for `ratings.dat`,
    comma for `ratings.csv`) and the number of fields every line must have; a first line whose
    rating field is not a number is the header. Columns are positional, as in every MovieLens file.
    """
    _check_rating_options(rating_range, rating_step)
    layout: dict[str, object] = {}

    def parse(line: str, report: ReadReport) -> Review | None:
        if not layout:
            separator = _ratings_separator(line)
            fields = line.split(separator)
            if len(fields) not in (3, 4):
                raise _BadLine(FIELD_COUNT, f"expected 3 or 4 fields (user, item, rating[, timestamp]) "
                                            f"separated by {separator!r}, got {len(fields)}")
            layout.update(separator=separator, field_count=len(fields))
            if not _is_number(fields[2]):
                return None  # the header
        fields = line.split(layout["separator"])
        if len(fields) != layout["field_count"]:
            raise _BadLine(FIELD_COUNT, f"expected {layout['field_count']} fields separated by "
                                        f"{layout['separator']!r}, got {len(fields)}")
        user, product = fields[0], fields[1]
        _check_ids(user, product)
        return Review(user, product, _parse_rating(fields[2], "rating", rating_range, rating_step))

    return _parse_lines(path, parse, lenient, report)


def _ratings_separator(line: str) -> str:
    if "\t" in line:
        return "\t"
    if "::" in line:
        return "::"
    return ","


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# --- dispatch -------------------------------------------------------------------------------------

_READERS = {"tang": read_tang, "amazon": read_amazon, "ratings": read_ratings}


def detect_format(path: PathLike, *, lines_to_sniff: int = 5) -> str:
    """"tang", "amazon" or "ratings", judged from the first non-blank lines (gzip or not)."""
    sniffed = []
    with open_bytes(path) as source:
        for data in source:
            line = data.decode("utf-8", errors="replace").strip("\ufeff\r\n")
            if line:
                sniffed.append(line)
                if len(sniffed) == lines_to_sniff:
                    break
    if not sniffed:
        raise ValueError(f"{os.fspath(path)}: cannot detect the format of an empty file")
    votes = collections.Counter(_guess_format(line) for line in sniffed)
    votes.pop(None, None)
    if not votes:
        raise ValueError(f"{os.fspath(path)}: cannot detect the format: the first lines look like none "
                         f"of {', '.join(FORMATS)} (first line: {sniffed[0][:80]!r})")
    return votes.most_common(1)[0][0]


def _guess_format(line: str) -> str | None:
    if line.startswith("{"):
        try:
            if isinstance(json.loads(line), dict):
                return "amazon"
        except ValueError:
            pass  # perhaps an id that starts with "{"; the other formats may claim the line
    if line.count(TANG_FIELD_SEPARATOR) >= 3:
        return "tang"
    if len(line.split(_ratings_separator(line))) in (3, 4):
        return "ratings"
    return None


def read_reviews(path: PathLike, format: str | None = None, **kwargs) -> Iterator[Review]:
    """Reviews of `path` in `format` (detected when None); `kwargs` go to the format's reader."""
    format = format or detect_format(path)
    if format not in _READERS:
        raise ValueError(f"unknown format {format!r}; expected one of {', '.join(FORMATS)}")
    return _READERS[format](path, **kwargs)


# --- writers, for tests, benchmarks and tools -------------------------------------------------------


def _format_rating(rating: float) -> str:
    return str(int(rating)) if float(rating).is_integer() else repr(float(rating))


def _check_writable(value: str, what: str, forbidden: Iterable[str]) -> str:
    for bad in ("\n", "\r", *forbidden):
        if bad in value:
            raise ValueError(f"{what} {value[:40]!r} contains {bad!r} and would not read back")
    if not value:
        raise ValueError(f"{what} is empty and would not read back")
    return value


def write_tang(path: PathLike, reviews: Iterable[Review]) -> int:
    """Writes reviews in the literature format; returns how many. `read_tang` gives them back."""
    count = 0
    with open(path, "w", encoding="utf-8", newline="\n") as file:
        for review in reviews:
            for sentence in review.sentences:
                for token in sentence:
                    _check_writable(token, "token", (" ", "\t\t", TANG_SENTENCE_SEPARATOR))
            text = f" {TANG_SENTENCE_SEPARATOR} ".join(" ".join(sentence) for sentence in review.sentences)
            fields = (
                _check_writable(review.user, "user id", ("\t",)),
                _check_writable(review.product, "product id", ("\t",)),
                _format_rating(review.rating),
                text,
            )
            file.write(TANG_FIELD_SEPARATOR.join(fields) + "\n")
            count += 1
    return count


def write_amazon(path: PathLike, reviews: Iterable[Review], gz: bool = False) -> int:
    """Writes reviews as Amazon JSON lines, one sentence a line of `reviewText`; returns how many.

    `read_amazon` tokenises the text again, which gives back the same sentences when they are
    ordinary `tokenize_review` output (. ! ? only at a sentence's end; "wow!great" is not).
    """
    count = 0
    opener = gzip.open if gz else open
    with opener(path, "wt", encoding="utf-8", newline="\n") as file:
        for review in reviews:
            record = {
                "reviewerID": review.user,
                "asin": review.product,
                "overall": float(review.rating),
                "reviewText": "\n".join(" ".join(sentence) for sentence in review.sentences),
            }
            file.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


def write_ratings(
    path: PathLike, reviews: Iterable[Review], style: Literal["u.data", "csv"] = "u.data"
) -> int:
    """Writes a rating table (`u.data` TSV, or `ratings.csv` with its header); returns how many rows."""
    if style not in ("u.data", "csv"):
        raise ValueError(f"style must be 'u.data' or 'csv', got {style!r}")
    separator = "\t" if style == "u.data" else ","
    count = 0
    with open(path, "w", encoding="utf-8", newline="\n") as file:
        if style == "csv":
            file.write("userId,movieId,rating,timestamp\n")
        for review in reviews:
            user = _check_writable(review.user, "user id", (separator,))
            product = _check_writable(review.product, "product id", (separator,))
            rating = _format_rating(review.rating) if style == "u.data" else repr(float(review.rating))
            file.write(f"{user}{separator}{product}{separator}{rating}{separator}0\n")
            count += 1
    return count
