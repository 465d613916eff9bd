"""Skip-gram word vectors on a review file's text, in the word2vec text format that
`--config.data.pretrained_vectors=FILE` (jaxreviews.data.vocab.load_word_vectors) reads.

    python tools/pretrain_vectors.py reviews_Musical_Instruments_5.json.gz --dim 200 --output vectors.txt
    python tools/pretrain_vectors.py yelp13/train.ss --format tang --dim 200 --output yelp13-vectors.txt

Give it a TRAINING file: vectors trained on text that the model is later tested on leak that text
into the model. `--config.data.pretrain_vectors=True` does the same inside a run, on the training
split only, and caches the result (jaxreviews/data/word_vectors.py). Tokens are those of the
run's tokeniser (lower case, punctuation split off), so every vocabulary word can find its vector.
Uses gensim's word2vec (sg=1, negative sampling); see word_vectors.py for why not our own.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runs from a checkout without install

from jaxreviews import options
from jaxreviews.data import readers, word_vectors  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    defaults = options.section("data").pretrain
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", help="review file: Amazon JSON lines (plain or .gz) or the literature format")
    parser.add_argument("--format", choices=("tang", "amazon"), default=None, help="default: detect from the file")
    parser.add_argument("--output", required=True, help="word2vec text file to write")
    parser.add_argument("--dim", type=int, default=defaults.dim)
    parser.add_argument("--window", type=int, default=defaults.window)
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--negative", type=int, default=defaults.negative)
    parser.add_argument("--min-count", type=int, default=defaults.min_count)
    parser.add_argument("--sample", type=float, default=defaults.sample)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--workers", type=int, default=defaults.workers)
    parser.add_argument("--lenient", action="store_true", help="skip malformed lines instead of stopping")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    report = readers.ReadReport()
    sentences = [list(sentence) for review in readers.read_reviews(args.file, args.format, lenient=args.lenient,
                                                                   report=report)
                 for sentence in review.sentences]
    read_seconds = time.perf_counter() - started
    tokens = sum(map(len, sentences))
    words, vectors = word_vectors.train_skipgram(sentences, dim=args.dim, window=args.window, epochs=args.epochs,
                                                 negative=args.negative, min_count=args.min_count,
                                                 sample=args.sample, seed=args.seed, workers=args.workers)
    train_seconds = time.perf_counter() - started - read_seconds
    word_vectors.write_word2vec_text(args.output, words, vectors)
    print(f"{args.file}: {len(sentences):,} sentences, {tokens:,} tokens (read in {read_seconds:.1f}s); "
          f"{len(words):,} words x {args.dim} dimensions trained in {train_seconds:.1f}s -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
