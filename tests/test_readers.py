import gzip
import json
import logging
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaxreviews.data import readers
from jaxreviews.data.readers import (
    ReadError,
    ReadReport,
    detect_format,
    read_amazon,
    read_ratings,
    read_reviews,
    read_tang,
    write_amazon,
    write_ratings,
    write_tang,
)
from jaxreviews.data.types import Review
from tests.test_text import ordinary_reviews


def write_bytes(path, lines: list[str | bytes], gz: bool = False):
    data = b"".join((line if isinstance(line, bytes) else line.encode("utf-8")) + b"\n" for line in lines)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def amazon_line(user="u1", product="p1", overall=5.0, text="Nice.", **extra):
    record = {"reviewerID": user, "asin": product, "overall": overall, "reviewText": text, **extra}
    return json.dumps({key: value for key, value in record.items() if value is not ...})


# --- literature format ----------------------------------------------------------------------------


def test_read_tang_keeps_tokens_and_sentence_breaks_exactly(tmp_path):
    path = write_bytes(tmp_path / "train.txt", [
        "u1\t\tp1\t\t4\t\tGreat Food . <sssss> service was SLOW !",
        "u2\t\tp2\t\t10\t\tone  sentence with  doubled spaces <sssss>  <sssss> <sssss> last",
        "u3\t\tp1\t\t1\t\t",
    ])
    assert list(read_tang(path)) == [
        Review("u1", "p1", 4.0, (("Great", "Food", "."), ("service", "was", "SLOW", "!"))),
        Review("u2", "p2", 10.0, (("one", "sentence", "with", "doubled", "spaces"), ("last",))),
        Review("u3", "p1", 1.0, ()),
    ]


def test_read_tang_handles_crlf_bom_and_gzip_without_gz_name(tmp_path):
    lines = ["\ufeffu1\t\tp1\t\t3\t\ta b <sssss> c\r", "u2\t\tp2\t\t5\t\td\r"]
    expected = [Review("u1", "p1", 3.0, (("a", "b"), ("c",))), Review("u2", "p2", 5.0, (("d",),))]
    assert list(read_tang(write_bytes(tmp_path / "plain.txt", lines))) == expected
    assert list(read_tang(write_bytes(tmp_path / "zipped.txt", lines, gz=True))) == expected


def test_readers_stream_line_by_line(tmp_path):
    path = write_bytes(tmp_path / "train.txt", ["u1\t\tp1\t\t3\t\ta", "broken line"])
    reviews = read_tang(path)
    assert next(reviews) == Review("u1", "p1", 3.0, (("a",),))  # yielded before the bad line is read
    with pytest.raises(ReadError, match=":2: "):
        next(reviews)


# --- Amazon JSON lines ------------------------------------------------------------------------------


def test_read_amazon_tokenises_raw_text(tmp_path):
    path = write_bytes(tmp_path / "beauty.json", [
        amazon_line("A1", "B1", 5.0, "Smells GREAT. I don't regret it!", summary="Five Stars"),
        amazon_line("A2", "B1", 2, "meh", summary="Two Stars", vote="3"),
    ])
    assert list(read_amazon(path)) == [
        Review("A1", "B1", 5.0, (("smells", "great", "."), ("i", "don't", "regret", "it", "!"))),
        Review("A2", "B1", 2.0, (("meh",),)),
    ]
    with_summary = list(read_amazon(path, include_summary=True))
    assert with_summary[0].sentences[0] == ("five", "stars")
    assert with_summary[1].sentences == (("two", "stars"), ("meh",))


@pytest.mark.parametrize("name", ["beauty.json.gz", "beauty.json"])
def test_read_amazon_gzip_detected_by_magic_bytes(tmp_path, name):
    path = write_bytes(tmp_path / name, [amazon_line(text="Good. Cheap")], gz=True)
    assert list(read_amazon(path)) == [Review("u1", "p1", 5.0, (("good", "."), ("cheap",)))]


@pytest.mark.parametrize(
    "missing_text, sentences",
    [("summary", (("five", "stars"),)), ("empty", ())],
)
def test_read_amazon_keeps_and_counts_reviews_without_text(tmp_path, missing_text, sentences):
    path = write_bytes(tmp_path / "beauty.json", [
        amazon_line(text="ok"),
        amazon_line("u2", text=..., summary="Five Stars"),
        amazon_line("u3", text=None),  # null counts as missing; no summary either
    ])
    report = ReadReport()
    reviews = list(read_amazon(path, missing_text=missing_text, report=report))
    assert [review.user for review in reviews] == ["u1", "u2", "u3"]
    assert reviews[1].sentences == sentences and reviews[2].sentences == ()
    assert (report.reviews, report.missing_text, report.skipped) == (3, 2, 0)


def test_read_amazon_missing_text_can_be_an_error(tmp_path):
    path = write_bytes(tmp_path / "beauty.json", [amazon_line(), amazon_line(text=...)])
    with pytest.raises(ReadError, match=r"beauty.json:2: field 'reviewText' is missing") as caught:
        list(read_amazon(path, missing_text="error"))
    assert caught.value.kind == readers.MISSING_FIELD
    with pytest.raises(ValueError, match="missing_text"):
        read_amazon(path, missing_text="drop")


# --- rating tables --------------------------------------------------------------------------------


def test_read_ratings_u_data(tmp_path):
    path = write_bytes(tmp_path / "u.data", ["196\t242\t3\t881250949", "186\t302\t3\t891717742"])
    assert list(read_ratings(path)) == [Review("196", "242", 3.0), Review("186", "302", 3.0)]


def test_read_ratings_csv_with_header_and_half_stars(tmp_path):
    path = write_bytes(tmp_path / "ratings.csv",
                       ["userId,movieId,rating,timestamp", "1,31,2.5,1260759144", "1,1029,0.5,1260759179"])
    report = ReadReport()
    assert list(read_ratings(path, report=report)) == [Review("1", "31", 2.5), Review("1", "1029", 0.5)]
    assert (report.lines, report.header_lines, report.reviews) == (3, 1, 2)


def test_read_ratings_dat(tmp_path):
    path = write_bytes(tmp_path / "ratings.dat", ["1::1193::5::978300760", "1::661::3::978302109"])
    assert list(read_ratings(path)) == [Review("1", "1193", 5.0), Review("1", "661", 3.0)]


# --- format detection and dispatch ------------------------------------------------------------------


@pytest.mark.parametrize(
    "lines, format",
    [
        (["", "u1\t\tp1\t\t5\t\ta b"], "tang"),
        ([amazon_line()], "amazon"),
        (["196\t242\t3\t881250949"], "ratings"),
        (["userId,movieId,rating,timestamp", "1,31,2.5,1260759144"], "ratings"),
        (["1::1193::5::978300760"], "ratings"),
        (["{odd}id\t242\t3\t881250949"], "ratings"),
        (["{odd}id\t\tp1\t\t5\t\ta b"], "tang"),
    ],
)
@pytest.mark.parametrize("gz", [False, True])
def test_detect_format(tmp_path, lines, format, gz):
    path = write_bytes(tmp_path / "data", lines, gz=gz)
    assert detect_format(path) == format
    assert len(list(read_reviews(path))) == len([line for line in lines if line]) - ("userId" in lines[0])


def test_detect_format_refuses_what_it_cannot_tell(tmp_path):
    with pytest.raises(ValueError, match="empty file"):
        detect_format(write_bytes(tmp_path / "empty", ["", ""]))
    with pytest.raises(ValueError, match="cannot detect"):
        detect_format(write_bytes(tmp_path / "prose", ["just some prose here"]))
    with pytest.raises(ValueError, match="unknown format 'xml'"):
        read_reviews(write_bytes(tmp_path / "x", [amazon_line()]), format="xml")


# --- bad lines --------------------------------------------------------------------------------------

GOOD = {"tang": "u\t\tp\t\t3\t\ta b", "amazon": amazon_line(), "ratings": "1\t2\t3\t0"}
BAD_LINES = [
    ("tang", "u\t\tp\t\t3", readers.FIELD_COUNT, "expected 4 fields"),
    ("tang", "u\t\tp\t\t3\t\ta\t\tb", readers.FIELD_COUNT, "got 5"),
    ("tang", "u\t\tp\t\tfive\t\ta", readers.RATING_NOT_A_NUMBER, "rating 'five' is not a number"),
    ("tang", "u\t\tp\t\tnan\t\ta", readers.RATING_NOT_A_NUMBER, "rating nan is not a finite number"),
    ("tang", "u\t\tp\t\t11\t\ta", readers.RATING_OUT_OF_RANGE, "rating 11 outside the rating range 1..10"),
    ("tang", b"u\t\tp\t\t3\t\tcaf\xe9", readers.BAD_UTF8, "not valid UTF-8: byte 0xe9 at offset 12"),
    ("tang", " \t\tp\t\t3\t\ta", readers.EMPTY_ID, "user id is empty"),
    ("tang", "u\t\t\t\t3\t\ta", readers.EMPTY_ID, "product id is empty"),
    ("tang", "   ", readers.FIELD_COUNT, "got 1"),  # only a completely empty line is blank
    ("amazon", '{"reviewerID": "u", "asin": ', readers.BAD_JSON, "invalid JSON"),
    ("amazon", "[1, 2]", readers.BAD_JSON, "expected a JSON object, got list"),
    ("amazon", amazon_line(product=...), readers.MISSING_FIELD, "field 'asin' is missing"),
    ("amazon", amazon_line(overall=...), readers.MISSING_FIELD, "field 'overall' is missing"),
    ("amazon", amazon_line(overall=6.0), readers.RATING_OUT_OF_RANGE, "field 'overall' 6 outside the rating range"),
    ("amazon", amazon_line(overall="great"), readers.RATING_NOT_A_NUMBER, "field 'overall' 'great' is not a number"),
    ("amazon", amazon_line(overall=True), readers.RATING_NOT_A_NUMBER, "should be a number, got bool"),
    ("amazon", amazon_line(user=""), readers.EMPTY_ID, "user id is empty"),
    ("amazon", amazon_line(text=["a"]), readers.WRONG_TYPE, "field 'reviewText' should be a string, got list"),
    ("amazon", amazon_line(user={"id": 1}), readers.WRONG_TYPE, "field 'reviewerID' should be a string, got dict"),
    ("ratings", "1\t2\t3", readers.FIELD_COUNT, "expected 4 fields separated by '\\t', got 3"),
    ("ratings", "1\t2\tx\t0", readers.RATING_NOT_A_NUMBER, "rating 'x' is not a number"),
    ("ratings", "1\t2\t0\t0", readers.RATING_OUT_OF_RANGE, "rating 0 outside the rating range 0.5..5"),
    ("ratings", "\t2\t3\t0", readers.EMPTY_ID, "user id is empty"),
]


@pytest.mark.parametrize("format, bad_line, kind, problem", BAD_LINES)
def test_bad_line_raises_with_file_line_and_problem(tmp_path, format, bad_line, kind, problem):
    path = write_bytes(tmp_path / "data.txt", [GOOD[format], "", bad_line, GOOD[format]])
    with pytest.raises(ReadError) as caught:
        list(read_reviews(path, format))
    message = str(caught.value)
    assert message.startswith(f"{path}:3: "), message
    assert problem in message
    assert caught.value.kind == kind and caught.value.line_number == 3
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("format, bad_line, kind, problem", BAD_LINES)
def test_lenient_skips_bad_line_and_counts_it(tmp_path, format, bad_line, kind, problem):
    path = write_bytes(tmp_path / "data.txt", [GOOD[format], "", bad_line, GOOD[format]])
    report = ReadReport()
    assert len(list(read_reviews(path, format, lenient=True, report=report))) == 2
    assert (report.lines, report.reviews, report.blank_lines, report.skipped) == (4, 2, 1, 1)
    assert report.skipped_by_kind == {kind: 1}
    assert report.examples == [f"{path}:3: {report.examples[0].split(': ', 1)[1]}"]
    assert problem in report.examples[0]


def test_lenient_report_counts_by_kind_across_files(tmp_path):
    first = write_bytes(tmp_path / "train.txt",
                        ["u\t\tp\t\t3\t\ta", "u\t\tp\t\tx\t\ta", "u\t\tp\t\t3", "", "u\t\tp\t\t99\t\ta"])
    second = write_bytes(tmp_path / "dev.txt", ["u\t\tp", b"u\t\tp\t\t3\t\t\xff", "u\t\tp\t\t4\t\tb"])
    report = ReadReport(max_examples=2)
    reviews = [*read_tang(first, lenient=True, report=report), *read_tang(second, lenient=True, report=report)]
    assert len(reviews) == 2
    assert report.lines == report.reviews + report.blank_lines + report.header_lines + report.skipped == 8
    assert report.skipped_by_kind == {
        readers.RATING_NOT_A_NUMBER: 1, readers.FIELD_COUNT: 2, readers.RATING_OUT_OF_RANGE: 1, readers.BAD_UTF8: 1,
    }
    assert report.examples == [f"{first}:2: rating 'x' is not a number",
                               f"{first}:3: expected 4 fields (user, product, rating, text) separated by '\\t\\t', got 3"]
    summary = report.summary()
    assert "8 lines: 2 reviews, 1 blank, 5 skipped" in summary and "wrong field count: 2" in summary


@pytest.mark.parametrize("format", ["tang", "amazon", "ratings"])
def test_lenient_without_a_report_logs_what_it_skipped(tmp_path, caplog, format):
    path = write_bytes(tmp_path / "data.txt", [GOOD[format], b"\xff"])
    with caplog.at_level(logging.WARNING, logger="jaxreviews.data.readers"):
        assert len(list(read_reviews(path, format, lenient=True))) == 1
    assert "1 skipped (bad utf-8: 1)" in caplog.text and f"{path}:2:" in caplog.text


def test_rating_range_is_the_callers(tmp_path):
    path = write_bytes(tmp_path / "imdb.txt", ["u\t\tp\t\t10\t\ta"])
    assert [review.rating for review in read_tang(path)] == [10.0]
    with pytest.raises(ReadError, match="outside the rating range 1..5"):
        list(read_tang(path, rating_range=(1, 5)))
    assert len(list(read_tang(write_bytes(tmp_path / "any.txt", ["u\t\tp\t\t-7\t\ta"]), rating_range=None))) == 1


# --- writers round-trip ---------------------------------------------------------------------------

# Ids without the separators (writers refuse those) or a byte-order mark (a first line's is dropped).
ids = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r\t,:\ufeff"), min_size=1).filter(
    lambda text: not text.isspace())
ratings = st.integers(1, 5).map(float) | st.sampled_from([1.5, 2.5, 4.5])
tang_tokens = st.text(st.characters(blacklist_categories=("Cs", "Zs", "Cc")), min_size=1).filter(
    lambda token: "<sssss>" not in token and not any(ch.isspace() for ch in token))

tang_sentences = st.lists(st.lists(tang_tokens, min_size=1).map(tuple), max_size=4).map(tuple)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.builds(Review, ids, ids, ratings, tang_sentences), max_size=5))
def test_tang_round_trip(tmp_path, reviews):
    path = tmp_path / "round.txt"
    assert write_tang(path, reviews) == len(reviews)
    assert list(read_tang(path)) == reviews


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.builds(Review, ids, ids, ratings, ordinary_reviews), min_size=1, max_size=5), st.booleans())
def test_amazon_round_trip(tmp_path, reviews, gz):
    path = tmp_path / "round.json"
    write_amazon(path, reviews, gz=gz)
    assert detect_format(path) == "amazon"
    assert list(read_amazon(path)) == reviews


@pytest.mark.parametrize("style", ["u.data", "csv"])
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(reviews=st.lists(st.builds(Review, ids, ids, ratings), min_size=1, max_size=5))
def test_ratings_round_trip(tmp_path, style, reviews):
    path = tmp_path / f"ratings.{style}"
    write_ratings(path, reviews, style=style)
    assert detect_format(path) == "ratings"
    assert list(read_ratings(path)) == reviews


def test_writers_refuse_what_would_not_read_back(tmp_path):
    with pytest.raises(ValueError, match=re.escape(r"user id 'a\t\tb' contains")):
        write_tang(tmp_path / "t.txt", [Review("a\t\tb", "p", 1.0)])
    with pytest.raises(ValueError, match="product id"):
        write_ratings(tmp_path / "r.csv", [Review("u", "p,q", 1.0)], style="csv")
    with pytest.raises(ValueError, match=re.escape(r"product id 'p\t' contains '\t'")):
        write_tang(tmp_path / "t.txt", [Review("u", "p\t", 1.0)])  # "p\t\t\t5" would split wrongly
    for token in ["a\nb", "a b", "", "x<sssss>"]:
        with pytest.raises(ValueError, match="token"):
            write_tang(tmp_path / "t.txt", [Review("u", "p", 1.0, (("ok", token),))])


def test_truncated_gzip_raises_even_when_lenient(tmp_path):
    data = gzip.compress(b"".join(b"u\t\tp\t\t3\t\tword %d\n" % i for i in range(2000)))
    path = tmp_path / "train.txt.gz"
    path.write_bytes(data[: len(data) // 2])
    report = ReadReport()
    with pytest.raises(ReadError, match="corrupt or truncated gzip data") as caught:
        list(read_tang(path, lenient=True, report=report))
    assert caught.value.kind == readers.BAD_GZIP and caught.value.line_number == report.lines + 1 > 1
