"""From a data config to train / validation / test splits ready for batching.

Sources: the synthetic corpus (default), one file split by seeded fractions, or separate files.
The vocabulary and the user / product maps come from the training split only; each split reports
how many of its reviews have a user / product unseen in training. Exact duplicates (same user,
text and rating) are grouped, so copies never straddle splits, and can be dropped.
"""
from __future__ import annotations

import dataclasses
import json
import os

import ml_collections
import numpy as np

from jaxreviews.data import corpus, duplicates, readers, synthetic
from jaxreviews.data.corpus import EncodedReviews
from jaxreviews.data.vocab import IdMap, Vocabulary, load_word_vectors


TFDS_BUILDERS = ("yelp13", "yelp14", "imdb", "amazon_reviews")


def default_data_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = "synthetic"  # "synthetic" | "files" | "tfds" | a TFDS builder: yelp13, yelp14, imdb, amazon_reviews
    c.synthetic_size = "default"  # "default" | "tiny"
    c.synthetic_seed = 0
    c.format = ""  # tang | amazon | ratings; "" = detect from the file
    c.path = ""  # one file, split by `split_fractions`
    c.train = ""  # or separate files
    c.valid = ""
    c.test = ""
    c.manual_dir = ""  # TFDS builders of real data read their files from here
    c.tfds_name = ""  # name="tfds": a jaxreviews.data.tfds_builders builder, "yelp13", "synthetic_reviews/tiny"
    c.tfds_data_dir = ""  # where TFDS keeps prepared data sets; "" = TFDS's default (~/tensorflow_datasets)
    c.split_fractions = (0.8, 0.1, 0.1)
    c.split_seed = 0
    c.valid_fraction = 0.1  # held out of `train` when there is no `valid` file
    c.rating_range = (1.0, 5.0)
    c.rating_step = 1.0
    c.lenient = False  # skip (and count) malformed lines instead of raising
    c.drop_duplicates = False  # keep one of each group of identical (user, text, rating) reviews
    c.min_count = 1
    c.max_vocab = 50000
    c.pretrained_vectors = ""  # GloVe / word2vec text file
    c.layout = "auto"  # auto | packed | padded: packed rows with segment ids, or [B, S, W] / [B, T] buckets
    c.num_buckets = 6  # padded layout only
    c.max_sentences = 32
    c.max_words = 64
    c.max_tokens = 512
    c.bucket_multiple = 4
    c.wrap_sentences = 0  # > 0: sentences longer than this continue on a new row (less padding)
    return c


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
        return int(round((self.rating_range[1] - self.rating_range[0]) / self.rating_step)) + 1

    def save_tables(self, directory: str | os.PathLike) -> None:
        """vocab.txt, users.txt, products.txt: what a later run needs to map text and ids the same way."""
        os.makedirs(directory, exist_ok=True)
        self.vocab.save(os.path.join(directory, "vocab.txt"))
        self.users.save(os.path.join(directory, "users.txt"))
        self.products.save(os.path.join(directory, "products.txt"))


def _read(path: str, config, report_name: str, reports: dict):
    report = readers.ReadReport()
    stream = readers.read_reviews(os.path.expanduser(path), config.format or None,
                                  rating_range=tuple(config.rating_range), lenient=config.lenient, report=report)
    collected = corpus.collect(stream)
    reports[report_name] = report.summary()
    return collected


def _holdout(groups: np.ndarray, indices: np.ndarray, fraction: float, seed: int):
    """Splits `indices` into (kept, held out) by duplicate group."""
    kept, held = duplicates.group_split(groups[indices], fractions=(1 - fraction, fraction), seed=seed)
    return indices[kept], indices[held]


def _read_tfds(config: ml_collections.ConfigDict, reports: dict) -> dict:
    """Train / valid / test parts from the TFDS builder `data.tfds_name`, prepared first (as
    array_record, from `data.manual_dir` for the real data sets) when `data.tfds_data_dir` lacks it.
    A builder without a validation split leaves `valid` out (then held out of train)."""
    from jaxreviews.data import tfds_builders  # imports tensorflow_datasets: only for this source

    if not config.tfds_name:
        raise ValueError("data.name='tfds' needs data.tfds_name, e.g. yelp13, yelp14, imdb, amazon_reviews "
                         "or synthetic_reviews/tiny")
    builder = tfds_builders.prepare(config.tfds_name, data_dir=config.tfds_data_dir or None,
                                    manual_dir=config.manual_dir or None)
    low, high = config.rating_range
    parts = {}
    for split, part in (("train", "train"), ("validation", "valid"), ("test", "test")):
        if split not in builder.info.splits:
            continue
        collected = corpus.collect(tfds_builders.reviews_from_tfds(builder, split))
        ratings = collected.arrays.ratings
        if len(ratings) and (ratings.min() < low or ratings.max() > high):
            raise ValueError(f"{config.tfds_name} {split}: ratings {ratings.min():g}..{ratings.max():g} fall "
                             f"outside data.rating_range {low:g}..{high:g} (imdb needs (1, 10))")
        parts[part] = collected
        reports[f"read_{part}"] = f"{builder.info.full_name} {split}: {len(ratings):,} reviews"
    return parts


def load_splits(config: ml_collections.ConfigDict) -> DataSplits:
    reports: dict = {"source": config.name}
    if config.name == "synthetic":
        spec = dataclasses.replace(synthetic.default_spec(config.synthetic_size), seed=config.synthetic_seed)
        collected = corpus.collect(synthetic.generate(spec).reviews)
        parts = {"all": collected}
    elif config.name == "files":
        if config.path:
            parts = {"all": _read(config.path, config, "read", reports)}
        elif config.train and config.test:
            parts = {"train": _read(config.train, config, "read_train", reports),
                     "test": _read(config.test, config, "read_test", reports)}
            if config.valid:
                parts["valid"] = _read(config.valid, config, "read_valid", reports)
        else:
            raise ValueError("data.name='files' needs data.path=FILE or data.train=FILE and data.test=FILE")
    elif config.name == "tfds" or config.name in TFDS_BUILDERS:
        if config.name != "tfds":  # --config.data.name=yelp13 --config.data.manual_dir=~/data/yelp13
            config = ml_collections.ConfigDict({**config.to_dict(), "tfds_name": config.name})
        parts = _read_tfds(config, reports)
    else:
        raise ValueError(f"unknown data.name {config.name!r}: 'synthetic', 'files' or 'tfds'")

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
        split_indices = {"train": indices[train], "validation": indices[valid], "test": indices[test]}
        sources = dict.fromkeys(split_indices, source)
    else:
        train_source = parts["train"]
        train_idx = kept_indices(train_source)
        if "valid" in parts:
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
    encoded = {name: sources[name].encode(split_indices[name], vocab, users, products) for name in split_indices}
    if config.wrap_sentences:
        encoded = {name: dataclasses.replace(split, arrays=split.arrays.wrap_sentences(config.wrap_sentences))
                   for name, split in encoded.items()}
    for name, split in encoded.items():
        if len(split) == 0:
            raise ValueError(f"the {name} split is empty: check data.split_fractions / the files")
        reports[name] = split.unseen_counts()
    reports["vocab_size"], reports["users"], reports["products"] = len(vocab), len(users) - 1, len(products) - 1
    pretrained = None
    if config.pretrained_vectors:
        vectors = load_word_vectors(os.path.expanduser(config.pretrained_vectors), vocab)
        pretrained = vectors.matrix
        reports["pretrained_coverage"] = round(vectors.coverage, 4)
    return DataSplits(encoded["train"], encoded["validation"], encoded["test"], vocab, users, products,
                      tuple(float(r) for r in config.rating_range), float(config.rating_step), reports, pretrained)


def describe(splits: DataSplits) -> str:
    return json.dumps(splits.report, sort_keys=True)
