"""Input-pipeline benchmark: reviews/s from a literature-format file to fixed-shape batches.

    python tools/bench_data.py [--reviews 100000] [--layout hierarchical] [--batching packed] [--file PATH]
    python tools/bench_data.py --write synthetic20k.txt --reviews 20000    # only write the file
    python tools/bench_data.py --write big.txt --reviews 2000000 --distinct_ids   # a large corpus
    python tools/bench_data.py --prepared DIR [--layout flat] [--steps 2000]    # streamed (Grain)

`--prepared DIR` (a directory of tools/prepare_data.py): the prepare throughput it recorded, the
time from loading the directory to the first batch, then `--steps` training batches streamed
with 0 workers (built in this process: the per-core rate, and data.workers=-1 on a CPU), 1 worker
and one per core, each as batches/s and reviews/s, and the peak memory (PSS) of this process and
its workers. `--distinct_ids` gives every synthetic corpus of the file its own users and products
(a corpus of millions then has as many ids as a real one, and the ids' tables grow with it).

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
import sys
import tempfile
import time

import numpy as np

from jaxreviews.data import batching, corpus, packing, readers, synthetic


def write_corpus(path: str, num_reviews: int, distinct_ids: bool = False) -> None:
    written, seed = 0, 0
    with open(path, "w", encoding="utf-8") as f:
        while written < num_reviews:
            spec = dataclasses.replace(synthetic.default_spec("default"), seed=seed)
            prefix = f"s{seed}-" if distinct_ids else ""
            for review in synthetic.generate(spec).reviews[: num_reviews - written]:
                text = " <sssss> ".join(" ".join(s) for s in review.sentences)
                f.write(f"{prefix}{review.user}\t\t{prefix}{review.product}\t\t{int(review.rating)}\t\t{text}\n")
                written += 1
            seed += 1


class PeakMemory:
    """The peak PSS of this process and its children (Grain workers), sampled every 0.05 s."""

    def __init__(self):
        import threading

        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import peak_memory

        self.peak_kb, self._done = 0, threading.Event()

        def sample():
            while not self._done.is_set():
                pids = peak_memory._tree(os.getpid())
                self.peak_kb = max(self.peak_kb, sum(peak_memory._memory_kb(pid)[0] for pid in pids))
                self._done.wait(0.05)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()

    def stop(self) -> float:
        self._done.set()
        self._thread.join()
        return round(self.peak_kb / 1024, 1)


def bench_prepared(args) -> None:
    """Streamed batches of a prepared directory: startup, then reviews/s with 0, 1 and N workers."""
    from jaxreviews.data import prepared, streaming

    with open(os.path.join(args.prepared, "stats.json")) as f:
        stats = json.load(f)
    memory = PeakMemory()
    began = time.perf_counter()
    splits = prepared.load(args.prepared)
    loaded = time.perf_counter() - began
    make = packing.PackedBatcher if args.batching == "packed" else batching.Batcher
    batcher = make(splits.train, layout=args.layout, batch_size=args.batch, rating_range=splits.rating_range,
                   rating_step=splits.rating_step)
    planned = time.perf_counter() - began
    first = streaming.StreamedBatches(batcher, workers=0).example()
    to_first = time.perf_counter() - began
    reviews = len(splits.train) + len(splits.validation) + len(splits.test)
    print(f"{args.prepared}: {reviews:,} reviews ({len(splits.train):,} training), layout {args.layout}, "
          f"{args.batching} batches of {args.batch}, shape {batcher.buckets[0]}")
    print(f"  prepared in {stats['seconds']:.1f} s ({reviews / stats['seconds']:,.0f} reviews/s)")
    print(f"  load {loaded:.2f} s, batch shape and plan {planned - loaded:.2f} s, first batch after {to_first:.2f} s")
    steps = min(args.steps, batcher.steps_per_epoch)
    rows = {}
    for workers in sorted({0, 1, streaming.default_workers()}):
        streamed = streaming.StreamedBatches(batcher, workers=workers)
        stream = streamed.epoch(0)
        start = time.perf_counter()
        next(stream)
        startup = time.perf_counter() - start
        start, count, real = time.perf_counter(), 0, 0
        for batch in stream:
            count += 1
            real += int(batch["weight"].sum())
            if count == steps - 1:
                break
        seconds = time.perf_counter() - start
        streamed.close()
        rows[workers] = {"batches_per_s": round(count / seconds, 1), "reviews_per_s": round(real / seconds),
                         "startup_s": round(startup, 2)}
        print(f"  {workers} workers: {count / seconds:8,.1f} batches/s {real / seconds:10,.0f} reviews/s "
              f"(first batch after {startup:.2f} s)")
    peak = memory.stop()
    print(f"  peak memory (PSS, this process and its workers): {peak:,.0f} MB")
    del first
    print(json.dumps({"prepared": args.prepared, "reviews": reviews, "layout": args.layout, "batching": args.batching,
                      "batch": args.batch, "prepare_seconds": stats["seconds"],
                      "prepare_reviews_per_s": round(reviews / stats["seconds"]), "load_seconds": round(loaded, 2),
                      "seconds_to_first_batch": round(to_first, 2), "per_core_reviews_per_s": rows[0]["reviews_per_s"],
                      "workers": {str(k): v for k, v in rows.items()}, "peak_pss_mb": peak}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reviews", type=int, default=100_000)
    parser.add_argument("--file", default="", help="a literature-format file to read instead")
    parser.add_argument("--layout", default="hierarchical", choices=["hierarchical", "flat"])
    parser.add_argument("--batching", default="packed", choices=["packed", "padded"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--write", default="", help="write the synthetic file here and stop")
    parser.add_argument("--distinct_ids", action="store_true", help="--write: users and products of their own "
                        "for every synthetic corpus in the file")
    parser.add_argument("--prepared", default="", help="stream a directory of tools/prepare_data.py instead")
    parser.add_argument("--steps", type=int, default=2000, help="--prepared: batches timed per worker count")
    args = parser.parse_args()
    if args.write:
        write_corpus(args.write, args.reviews, args.distinct_ids)
        print(f"wrote {args.reviews:,} synthetic reviews to {args.write}")
        return
    if args.prepared:
        bench_prepared(args)
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
