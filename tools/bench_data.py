"""Input-pipeline benchmark: reviews/s from a literature-format file to fixed-shape batches.

    python tools/bench_data.py [--reviews 100000] [--layout hierarchical] [--batching packed] [--file PATH]
    python tools/bench_data.py --write synthetic20k.txt --reviews 20000    # only write the file

Writes a synthetic literature-format file (unless --file is given), then times each stage on one
core: read + tokens to provisional ids (`corpus.collect`), vocabulary + id maps + encoding, the
batch shapes (packed: the shape and the first epochs' plans; padded: the buckets), and one epoch of
batches. Prints a table, then one JSON line. `--write` writes the file (the synthetic corpus of
`jaxreviews.data.synthetic`, seeds 0, 1, ... until there are enough) and stops: the synthetic file
of the real-length benchmark (tools/bench.py --data).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time

import numpy as np

from jaxreviews.data import batching, corpus, packing, readers, synthetic


def write_corpus(path: str, num_reviews: int) -> None:
    written, seed = 0, 0
    with open(path, "w", encoding="utf-8") as f:
        while written < num_reviews:
            spec = dataclasses.replace(synthetic.default_spec("default"), seed=seed)
            for review in synthetic.generate(spec).reviews[: num_reviews - written]:
                text = " <sssss> ".join(" ".join(s) for s in review.sentences)
                f.write(f"{review.user}\t\t{review.product}\t\t{int(review.rating)}\t\t{text}\n")
                written += 1
            seed += 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reviews", type=int, default=100_000)
    parser.add_argument("--file", default="", help="a literature-format file to read instead")
    parser.add_argument("--layout", default="hierarchical", choices=["hierarchical", "flat"])
    parser.add_argument("--batching", default="packed", choices=["packed", "padded"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--write", default="", help="write the synthetic file here and stop")
    args = parser.parse_args()
    if args.write:
        write_corpus(args.write, args.reviews)
        print(f"wrote {args.reviews:,} synthetic reviews to {args.write}")
        return
    path = args.file
    if not path:
        path = os.path.join(tempfile.mkdtemp(), "reviews.ss")
        write_corpus(path, args.reviews)
    size_mb = os.path.getsize(path) / 2**20

    times = {}
    start = time.perf_counter()
    collected = corpus.collect(readers.read_tang(path, rating_range=(1, 10)))
    times["read_and_collect"] = time.perf_counter() - start
    n = len(collected.arrays)

    start = time.perf_counter()
    vocab = collected.build_vocabulary(max_size=50_000)
    users, products = collected.build_id_maps()
    encoded = collected.encode(None, vocab, users, products)
    times["vocabulary_and_encode"] = time.perf_counter() - start

    start = time.perf_counter()
    make = packing.PackedBatcher if args.batching == "packed" else batching.Batcher
    batcher = make(encoded, layout=args.layout, batch_size=args.batch, rating_range=(1, 10))
    times["batch_shapes"] = time.perf_counter() - start

    start = time.perf_counter()
    batches = 0
    for batch in batcher.epoch(0):
        batches += 1
    times["one_epoch_of_batches"] = time.perf_counter() - start
    total = sum(times.values())

    print(f"{n:,} reviews, {int(collected.arrays.num_tokens.sum()):,} tokens, {size_mb:.0f} MiB, layout {args.layout}, "
          f"{args.batching} batches")
    for stage, seconds in times.items():
        print(f"  {stage:24} {seconds:7.2f} s  {n / seconds:12,.0f} reviews/s")
    print(f"  {'file to batches':24} {total:7.2f} s  {n / total:12,.0f} reviews/s")
    report = batcher.padding_report()
    print(json.dumps({"reviews": n, "layout": args.layout, "batching": args.batching, "batches": batches,
                      "reviews_per_s": round(n / total), "stage_seconds": {k: round(v, 3) for k, v in times.items()},
                      "buckets": [list(b) for b in batcher.buckets], "padding_efficiency": report["efficiency"]}))


if __name__ == "__main__":
    main()
