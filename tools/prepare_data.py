"""Prepare a corpus once into a directory that runs stream from (ArrayRecord records, Grain).

    python tools/prepare_data.py --input reviews.json.gz --output ~/prepared/amazon
    python tools/prepare_data.py --input part1.txt,part2.txt --format=tang --output DIR --shards=16
    python tools/prepare_data.py --train train.txt --valid dev.txt --test test.txt --output DIR
    python -m experiments.train --config.data.name=prepared --config.data.prepared_dir=DIR

One pass over the input with bounded memory: the split (seeded by --split_seed, copies of a review
kept together), the vocabulary (--max_vocab, --min_count, from the training split), the user and
product maps and the rating scale are the ones a run reading the same files in memory makes
(`jaxreviews.data.prepared`). Prints a summary, then as its last line one JSON object (the
directory's stats.json with the throughput and peak memory), for scripts.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runs from a checkout without install

from jaxreviews import options  # noqa: E402
from jaxreviews.data import prepared, readers  # noqa: E402


def _pair(text: str) -> tuple[float, float]:
    low, high = (float(part) for part in text.replace("(", "").replace(")", "").split(","))
    return low, high


def _fractions(text: str) -> tuple[float, ...]:
    return tuple(float(part) for part in text.split(","))


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_argument_group("input: --input (split by --split_fractions) or --train/--valid/--test")
    source.add_argument("--input", default="", help="FILE[,FILE...]: one corpus (several files read as one)")
    source.add_argument("--train", default="", help="the training file")
    source.add_argument("--valid", default="", help="the validation file ('' = --valid_fraction of train)")
    source.add_argument("--test", default="", help="the test file")
    parser.add_argument("--format", default="", choices=("", *readers.FORMATS),
                        help="tang (literature), amazon (JSON lines), ratings; '' = detect")
    parser.add_argument("--output", required=True, help="the directory to write (must not exist)")
    parser.add_argument("--shards", type=int, default=4, help="record files per split")
    parser.add_argument("--split_fractions", type=_fractions, default=None, help="train,valid,test e.g. 0.8,0.1,0.1")
    parser.add_argument("--split_seed", type=int, default=None)
    parser.add_argument("--valid_fraction", type=float, default=None)
    parser.add_argument("--drop_duplicates", action="store_true", help="keep one of each group of identical reviews")
    parser.add_argument("--max_vocab", type=int, default=None)
    parser.add_argument("--min_count", type=int, default=None)
    parser.add_argument("--rating_range", type=_pair, default=None, help="low,high")
    parser.add_argument("--rating_step", type=float, default=None)
    parser.add_argument("--lenient", action="store_true", help="skip (and count) malformed lines")
    return parser.parse_args(argv)


def data_config(args: argparse.Namespace):
    """The `data` options these flags mean: a run's defaults, with the flags given."""
    config = options.default_config("han_upa").data
    config.name = "files"
    if args.input and (args.train or args.valid or args.test):
        raise ValueError("--input is one corpus split by --split_fractions, --train/--valid/--test separate files: "
                         "give one or the other")
    if not args.input and not args.train:
        raise ValueError("give --input FILE (split by --split_fractions) or --train FILE --test FILE")
    config.path, config.train, config.valid, config.test = args.input, args.train, args.valid, args.test
    config.format = args.format
    for key in ("split_fractions", "split_seed", "valid_fraction", "max_vocab", "min_count", "rating_range",
                "rating_step"):
        value = getattr(args, key)
        if value is not None:
            config[key] = value
    config.drop_duplicates, config.lenient = args.drop_duplicates, args.lenient
    if args.shards < 1:
        raise ValueError(f"--shards={args.shards}: must be >= 1")
    options.validate(_wrapped(config))
    return config


def _wrapped(data):
    """A whole config around `data`, for the options' checks."""
    config = options.default_config("han_upa")
    config.data = data
    return config


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse(argv)
        config = data_config(args)
        began = time.perf_counter()
        stats = prepared.prepare(config, args.output, shards=args.shards)
    except (readers.ReadError, ValueError, OSError) as error:
        filename = getattr(error, "filename", None)
        text = f"{filename}: no such file or directory" if isinstance(error, FileNotFoundError) and filename \
            else " ".join(str(error).split())
        print(f"error: {text}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - began
    reviews = sum(split["reviews"] for split in stats["splits"].values())
    stats["reviews_per_s"] = round(reviews / max(seconds, 1e-9), 1)
    stats["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(f"prepared {reviews:,} reviews into {args.output} in {seconds:.1f}s ({stats['reviews_per_s']:,.0f} "
          f"reviews/s, peak resident memory {stats['peak_rss_mb']:,.0f} MB)")
    for name, split in stats["splits"].items():
        print(f"  {name}: {split['reviews']:,} reviews, {split['tokens']:,} tokens ({split['oov_tokens']:,} OOV), "
              f"unseen users {split['unseen_user']:,}, unseen products {split['unseen_product']:,}")
    for key, text in stats["read"].items():
        print(f"  {key}: {text}")
    print(f"train with: python -m experiments.train --config.data.name=prepared --config.data.prepared_dir="
          f"{args.output}")
    print(json.dumps(stats, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
