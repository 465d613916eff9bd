"""Data: review files and the synthetic corpus, encoded and batched in fixed shapes.

    load_splits(config.data)        train / validation / test with vocabulary, id maps and rating scale
    DataSplits                      what load_splits returns (`num_classes`, `save_tables`, `report`)
    read_reviews(path, format)      a file's reviews (literature, Amazon JSON lines, rating tables), streamed
    Review                          one review: user, product, rating, sentences of tokens
    PackedBatcher, Batcher          packed rows with segment ids, or padded [B, S, W] / [B, T] buckets
    synthetic.generate(spec)        the default corpus: ratings from text sentiment, user leniency, product quality
    Vocabulary, IdMap               the tables that encode reviews (PAD 0, OOV 1; unknown user/product 0)

The data modules do not use JAX: batches are numpy arrays that the layers above put on devices.
"""
from jaxreviews.data import synthetic
from jaxreviews.data.batching import Batcher
from jaxreviews.data.packing import PackedBatcher
from jaxreviews.data.pipeline import DataSplits, load_splits
from jaxreviews.data.readers import read_reviews
from jaxreviews.data.types import Review
from jaxreviews.data.vocab import IdMap, Vocabulary

__all__ = ["Batcher", "DataSplits", "IdMap", "PackedBatcher", "Review", "Vocabulary", "load_splits", "read_reviews",
           "synthetic"]
