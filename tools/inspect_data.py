"""What is in a review file: counts, rating histogram, lengths, vocabulary, duplicates, bad lines.

    python tools/inspect_data.py ~/data/All_Beauty_5.json
    python tools/inspect_data.py yelp13/train.txt --format=tang --rating-min=1 --rating-max=5 --lenient

Prints a readable summary, then as its last line one JSON object with the same figures, for
scripts. Streams the file, keeping per review only its lengths and a 16-byte duplicate key.
"""
from __future__ import annotations

import argparse
import array
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runs from a checkout without install

from jaxreviews.data import duplicates, readers  # noqa: E402


def _distribution(values: array.array) -> dict[str, float | int | None]:
    if not values:
        return {"mean": None, "p50": None, "p95": None, "max": None}
    data = np.asarray(values)
    return {
        "mean": round(float(data.mean()), 2),
        "p50": round(float(np.percentile(data, 50)), 2),
        "p95": round(float(np.percentile(data, 95)), 2),
        "max": int(data.max()),
    }


def _rating_label(rating: float) -> str:
    return str(int(rating)) if rating.is_integer() else str(rating)


def _raw_whitespace_words(path: str) -> array.array:
    """Words per Amazon line by `reviewText.split()`: the figure dataset cards quote (0 if no text)."""
    counts = array.array("q")
    with readers.open_bytes(path) as source:
        for data in source:
            try:
                record = json.loads(data)
            except ValueError:
                continue
            if isinstance(record, dict) and "asin" in record:
                text = record.get("reviewText")
                counts.append(len(text.split()) if isinstance(text, str) else 0)
    return counts


def inspect(
    path: str, format: str, *, lenient: bool, rating_range: tuple[float, float], missing_text: str
) -> tuple[dict, readers.ReadReport]:
    """Reads `path` once (plus a raw-text pass for Amazon) and returns its figures and read report."""
    report = readers.ReadReport()
    kwargs = {"lenient": lenient, "report": report, "rating_range": rating_range}
    if format == "amazon":
        kwargs["missing_text"] = missing_text
    users, products, vocabulary = set(), set(), set()
    ratings: dict[float, int] = {}
    sentence_counts, word_counts = array.array("q"), array.array("q")
    first_group_of_key: dict[bytes, int] = {}
    group_ids = array.array("q")
    for review in readers.read_reviews(path, format, **kwargs):
        users.add(review.user)
        products.add(review.product)
        ratings[review.rating] = ratings.get(review.rating, 0) + 1
        sentence_counts.append(len(review.sentences))
        word_counts.append(sum(map(len, review.sentences)))
        for sentence in review.sentences:
            vocabulary.update(sentence)
        key = duplicates.review_key(review)
        group_ids.append(first_group_of_key.setdefault(key, len(first_group_of_key)))
    copies = duplicates.DuplicateSummary.from_groups(np.asarray(group_ids))
    stats = {
        "path": path,
        "format": format,
        "lines": report.lines,
        "reviews": report.reviews,
        "users": len(users),
        "products": len(products),
        "ratings": {_rating_label(rating): ratings[rating] for rating in sorted(ratings)},
        "sentences_per_review": _distribution(sentence_counts),
        "words_per_review": _distribution(word_counts),
        "vocabulary_size": len(vocabulary),
        "reviews_without_sentences": sum(1 for count in sentence_counts if count == 0),
        "duplicates": {
            "duplicate_reviews": copies.duplicate_reviews,
            "groups_with_copies": copies.groups_with_copies,
            "distinct_user_text_rating": copies.distinct,
            "largest_group": copies.largest_group,
        },
        "bad_lines": {"count": report.skipped, "by_kind": dict(sorted(report.skipped_by_kind.items()))},
        "blank_lines": report.blank_lines,
        "header_lines": report.header_lines,
    }
    if format == "amazon":
        stats["lines_without_text"] = report.missing_text
        stats["raw_words_per_review"] = _distribution(_raw_whitespace_words(path))
    return stats, report


def _print_summary(stats: dict, report: readers.ReadReport) -> None:
    def distribution(name: str) -> str:
        d = stats[name]
        return f"mean {d['mean']}, median {d['p50']}, p95 {d['p95']}, max {d['max']}"

    copies = stats["duplicates"]
    total = max(stats["reviews"], 1)
    print(f"{stats['path']} ({stats['format']}): {report.summary()}")
    print(f"  reviews   {stats['reviews']:,} by {stats['users']:,} users "
          f"about {stats['products']:,} products")
    print("  ratings   " + ", ".join(f"{value}: {count:,} ({count / total:.1%})"
                                     for value, count in stats["ratings"].items()))
    print(f"  sentences per review  {distribution('sentences_per_review')}")
    print(f"  tokens per review     {distribution('words_per_review')}")
    if "raw_words_per_review" in stats:
        print(f"  raw words per review  {distribution('raw_words_per_review')} "
              "(whitespace split of reviewText)")
        print(f"  lines without reviewText  {stats['lines_without_text']:,}")
    print(f"  vocabulary  {stats['vocabulary_size']:,} distinct tokens; "
          f"{stats['reviews_without_sentences']:,} reviews without text")
    print(f"  duplicates  {copies['duplicate_reviews']:,} copies in {copies['groups_with_copies']:,} groups; "
          f"{copies['distinct_user_text_rating']:,} distinct user/text/rating (largest group "
          f"{copies['largest_group']:,}): split by group, see jaxreviews.data.duplicates.group_split")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("path")
    parser.add_argument("--format", choices=readers.FORMATS,
                        help="detected from the first lines when not given")
    parser.add_argument("--lenient", action="store_true", help="skip and count bad lines instead of stopping")
    parser.add_argument("--rating-min", type=float, help="default: the format's usual range")
    parser.add_argument("--rating-max", type=float)
    parser.add_argument("--missing-text", choices=("error", "empty", "summary"), default="summary",
                        help="amazon: what a review without reviewText becomes")
    args = parser.parse_args(argv)
    try:
        format = args.format or readers.detect_format(args.path)
        low, high = readers.DEFAULT_RATING_RANGES[format]
        rating_range = (low if args.rating_min is None else args.rating_min,
                        high if args.rating_max is None else args.rating_max)
        stats, report = inspect(args.path, format, lenient=args.lenient, rating_range=rating_range,
                                missing_text=args.missing_text)
    except readers.ReadError as error:
        print(f"error: {error}\n(--lenient skips and counts bad lines)", file=sys.stderr)
        return 1
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    _print_summary(stats, report)
    print(json.dumps(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
