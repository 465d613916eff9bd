"""TFDS dataset builders for the review data sets, stored as array_record: no TensorFlow needed.

Builders (registered with TFDS when this module is imported; `import jaxreviews` does not import
it, and `tensorflow_datasets` is only imported here):

  yelp13, yelp14, imdb        Tang et al. (2015) literature files from a manual folder; the
                              train / validation / test splits are the released train / dev / test.
  amazon_reviews              one Amazon JSON-lines file (`*.json`, `*.json.gz`, `*.jsonl[.gz]`)
                              from a manual folder, split 80/10/10 by `duplicates.group_split`
                              (seeded; every copy of a review lands in one split).
  synthetic_reviews/default   the built-in generator (`synthetic.generate(default_spec(size))`),
  synthetic_reviews/tiny      split like `amazon_reviews`; no manual folder.

Features of every example:

  user     Text                the user id
  product  Text                the product id
  rating   float32 scalar
  text     Sequence(Text)      one string per sentence, its tokens joined by single spaces

Examples are stored in source order (file line order for the literature sets, corpus order for the
others): `disable_shuffling=True` and integer keys. Reading a split back with `reviews_from_tfds`
gives exactly the `Review`s the readers yield (the rating as float32, which holds every rating
the readers accept in the real data sets). Tokens are stored split already, so no tokeniser runs
on reading; a token that is empty or contains a space cannot be stored this way and raises.

Without TensorFlow (tensorflow-datasets 4.9.10), found by experiment:
  * `file_format="array_record"` is required: the default tfrecord writer calls
    `tf.io.TFRecordWriter`. The builders here default to array_record (`tfds.builder("yelp13")`
    included); a data set already prepared in another format keeps it.
  * `Text`, `Scalar` and a one-level `Sequence(Text)` encode and decode without TF
    (`as_data_source` gives `bytes`, a `float` and a `list` of `bytes`); a nested
    `Sequence(Sequence(Text))` does not (its ragged encoding imports TF), hence one string a sentence.
  * `download_and_prepare` and `as_data_source` work; `as_dataset` / `tfds.load` need TF.
  * `tfds.list_builders()` fails (the community index imports TF); `tfds.builder(name)` works.
  * `dataset_info_from_configs` reads metadata files next to the builder's module; plain
    `tfds.core.DatasetInfo(builder=self, ...)` does not.

Use:

    from jaxreviews.data import tfds_builders
    builder = tfds_builders.prepare("yelp13", data_dir="~/tensorflow_datasets",
                                    manual_dir="~/data/yelp13")
    test_reviews = list(tfds_builders.reviews_from_tfds(builder, "test"))

or through TFDS itself after `import jaxreviews.data.tfds_builders`:
`tfds.builder("yelp13").download_and_prepare(download_config=tfds.download.DownloadConfig(
manual_dir=...))`, then `builder.as_data_source()`. Training reads them with
`--config.data.name=tfds --config.data.tfds_name=yelp13 --config.data.manual_dir=~/data/yelp13`.
"""
from __future__ import annotations

import dataclasses
import inspect
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.core import utils as tfds_utils

from jaxreviews.data import corpus, duplicates, readers, synthetic
from jaxreviews.data.types import Review

VERSION = tfds.core.Version("1.0.0")
RELEASE_NOTES = {"1.0.0": "First release: array_record, sentences as Sequence(Text)."}
SPLITS = ("train", "validation", "test")

_CITATION_TANG = """@inproceedings{tang2015learning,
  title={Learning Semantic Representations of Users and Products for Document Level Sentiment Classification},
  author={Tang, Duyu and Qin, Bing and Liu, Ting},
  booktitle={ACL}, year={2015}}"""
_CITATION_AMAZON = """@inproceedings{ni2019justifying,
  title={Justifying Recommendations using Distantly-Labeled Reviews and Fine-Grained Aspects},
  author={Ni, Jianmo and Li, Jiacheng and McAuley, Julian},
  booktitle={EMNLP}, year={2019}}"""


# --- one review <-> one example ---------------------------------------------------------------


def features() -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict({
        "user": tfds.features.Text(doc="user id"),
        "product": tfds.features.Text(doc="product id"),
        "rating": tfds.features.Scalar(dtype=np.float32, doc="the star rating"),
        "text": tfds.features.Sequence(tfds.features.Text(), doc="sentences, tokens joined by ' '"),
    })


def encode_review(review: Review) -> dict:
    """The example of `review`; raises if a token would not read back (empty, or has a space)."""
    for sentence in review.sentences:
        for token in sentence:
            if not token or " " in token:
                raise ValueError(f"review of user {review.user!r}, product {review.product!r}: token "
                                 f"{token!r} is empty or contains a space and would not read back")
    return {"user": review.user, "product": review.product, "rating": np.float32(review.rating),
            "text": [" ".join(sentence) for sentence in review.sentences]}


def decode_example(example: dict) -> Review:
    """The `Review` of an example as `as_data_source` returns it (strings as bytes)."""
    return Review(
        user=_text(example["user"]), product=_text(example["product"]), rating=float(example["rating"]),
        sentences=tuple(tuple(sentence.split(" ")) if sentence else ()
                        for sentence in map(_text, example["text"])))


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


# --- shared builder machinery -----------------------------------------------------------------


class _ReviewBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Our features, source order, and array_record unless the caller or a prepared copy says otherwise."""

    VERSION = VERSION
    RELEASE_NOTES = RELEASE_NOTES
    DESCRIPTION: ClassVar[str] = ""
    HOMEPAGE: ClassVar[str] = ""
    CITATION: ClassVar[str] = ""

    @tfds_utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # TFDS finds this file through `importlib.resources`, which fails when jaxreviews is seen as
        # a namespace package (a setuptools editable install imported from outside the checkout).
        return epath.Path(inspect.getfile(cls))

    def __init__(self, *, file_format=None, **kwargs):
        super().__init__(file_format=file_format, **kwargs)
        if file_format is None and not is_prepared(self):
            self.info.set_file_format("array_record", override=True)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(builder=self, description=self.DESCRIPTION, features=features(),
                                     homepage=self.HOMEPAGE or None, citation=self.CITATION or None,
                                     disable_shuffling=True)

    def _manual_folder(self, dl_manager) -> str:
        """The manual folder, or its subfolder named like the builder when there is one (so one
        folder can hold several data sets: `manual/yelp13/...`, `manual/imdb/...`)."""
        try:
            directory = os.fspath(dl_manager.manual_dir)
        except AssertionError as error:  # TFDS: "Manual directory ... does not exist or is empty"
            raise FileNotFoundError(f"{self.name}: {error}") from None
        own = os.path.join(directory, self.name)
        return own if os.path.isdir(own) else directory

    def _generate_examples(self, keyed_reviews: Iterable[tuple[int, Review]]) -> Iterator[tuple[int, dict]]:
        """(key, example) of (key, review); integer keys set the stored order."""
        for key, review in keyed_reviews:
            yield key, encode_review(review)


def _reviews_at(collected: corpus.Collected, indices: np.ndarray) -> Iterator[tuple[int, Review]]:
    """(index, Review) of the collected reviews at `indices`, rebuilt from the compact arrays."""
    arrays, words = collected.arrays, collected.words
    token_ids = arrays.token_ids
    token_offsets, sentence_offsets = arrays.token_offsets.tolist(), arrays.sentence_offsets.tolist()
    users, products, ratings = arrays.users.tolist(), arrays.products.tolist(), arrays.ratings.tolist()
    for index in indices.tolist():
        sentences = tuple(
            tuple(map(words.__getitem__, token_ids[token_offsets[s]:token_offsets[s + 1]].tolist()))
            for s in range(sentence_offsets[index], sentence_offsets[index + 1]))
        yield index, Review(collected.user_names[users[index]], collected.product_names[products[index]],
                            ratings[index], sentences)


def _group_splits(collected: corpus.Collected, fractions: Sequence[float],
                  seed: int) -> dict[str, np.ndarray]:
    """train / validation / test indices, copies together: the split `pipeline.load_splits` makes of
    one file or the synthetic corpus with the same fractions and seed."""
    parts = duplicates.group_split(collected.duplicate_groups, fractions=tuple(fractions), seed=seed)
    return dict(zip(SPLITS, parts))


# --- literature format (Tang et al. 2015) ------------------------------------------------------

_SPLIT_WORDS = {"train": ("train",), "validation": ("dev", "valid", "validation"), "test": ("test",)}


def find_split_files(directory: str, prefixes: Sequence[str], release: str, name: str) -> dict[str, str]:
    """{train, validation, test: path} in `directory`: the release names (`{prefix}*.{train|dev|test}.*`,
    e.g. yelp-2013-seg-20-20.train.ss) or generic ones (train.txt, dev.txt or valid.txt, test.txt)."""
    names = sorted(entry for entry in os.listdir(directory) if os.path.isfile(os.path.join(directory, entry)))
    found = {}
    for split, words in _SPLIT_WORDS.items():
        matches = [entry for entry in names if _names_split(entry, words, prefixes)]
        if len(matches) > 1:
            raise ValueError(f"{name}: {directory} has several {split} files {matches}; keep one")
        if not matches:
            raise FileNotFoundError(
                f"{name}: {directory} has no {split} file: expected {release}.{words[0]}.ss (any "
                f"{prefixes[0]}*.{words[0]}.* name) or {words[0]}.txt; found {names or 'nothing'}.\n"
                f"{expected_files_text(release)}")
        found[split] = os.path.join(directory, matches[0])
    return found


def _names_split(name: str, words: Sequence[str], prefixes: Sequence[str]) -> bool:
    parts = re.split(r"[.\-_]", name.lower())
    if not any(word in parts for word in words):
        return False
    return parts[0] in words or name.lower().startswith(tuple(prefixes))


def expected_files_text(release: str) -> str:
    return (f"Put the three files of the release into the manual folder (or a subfolder named after the "
            f"data set): {release}.train.ss, {release}.dev.ss, {release}.test.ss (gzipped is fine), or "
            f"the same data as train.txt, dev.txt, test.txt. Each line: "
            f"user\\t\\tproduct\\t\\trating\\t\\ttext, sentences separated by ' <sssss> '.")


class _TangBuilder(_ReviewBuilder, skip_registration=True):
    RATING_RANGE: ClassVar[tuple[float, float]]
    FILE_PREFIXES: ClassVar[tuple[str, ...]]
    RELEASE: ClassVar[str]  # the release's file stem, e.g. "yelp-2013-seg-20-20"
    HOMEPAGE = "https://aclanthology.org/P15-1098/"
    CITATION = _CITATION_TANG

    def _split_generators(self, dl_manager):
        files = find_split_files(self._manual_folder(dl_manager), self.FILE_PREFIXES, self.RELEASE, self.name)
        return {split: self._generate_examples(enumerate(readers.read_reviews(
                    path, "tang", rating_range=self.RATING_RANGE, lenient=False)))
                for split, path in files.items()}


class Yelp13(_TangBuilder):
    """Yelp 2013 as released by Tang et al. (2015): ratings 1..5."""

    name = "yelp13"
    RATING_RANGE = (1.0, 5.0)
    FILE_PREFIXES = ("yelp-2013", "yelp_2013", "yelp2013", "yelp13")
    RELEASE = "yelp-2013-seg-20-20"
    DESCRIPTION = "Yelp 2013 reviews (Tang et al. 2015), tokenised and sentence split; ratings 1-5."
    MANUAL_DOWNLOAD_INSTRUCTIONS = expected_files_text(RELEASE)


class Yelp14(_TangBuilder):
    """Yelp 2014 as released by Tang et al. (2015): ratings 1..5."""

    name = "yelp14"
    RATING_RANGE = (1.0, 5.0)
    FILE_PREFIXES = ("yelp-2014", "yelp_2014", "yelp2014", "yelp14")
    RELEASE = "yelp-2014-seg-20-20"
    DESCRIPTION = "Yelp 2014 reviews (Tang et al. 2015), tokenised and sentence split; ratings 1-5."
    MANUAL_DOWNLOAD_INSTRUCTIONS = expected_files_text(RELEASE)


class Imdb(_TangBuilder):
    """IMDB as released by Tang et al. (2015): ratings 1..10."""

    name = "imdb"
    RATING_RANGE = (1.0, 10.0)
    FILE_PREFIXES = ("imdb",)
    RELEASE = "imdb"
    DESCRIPTION = "IMDB movie reviews (Tang et al. 2015), tokenised and sentence split; ratings 1-10."
    MANUAL_DOWNLOAD_INSTRUCTIONS = expected_files_text(RELEASE)


# --- Amazon JSON lines ------------------------------------------------------------------------


@dataclasses.dataclass(eq=False)
class AmazonReviewsConfig(tfds.core.BuilderConfig):
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    split_seed: int = 0


_AMAZON_SUFFIXES = (".json", ".json.gz", ".jsonl", ".jsonl.gz")
_AMAZON_INSTRUCTIONS = (
    "Put one Amazon review dump in JSON lines (e.g. All_Beauty_5.json or All_Beauty_5.json.gz from "
    "https://nijianmo.github.io/amazon/) into the manual folder, or into a subfolder amazon_reviews/. "
    "Each line a JSON object with reviewerID, asin, overall and reviewText.")


class AmazonReviews(_ReviewBuilder):
    """One Amazon JSON-lines dump, split 80/10/10 (seeded) with duplicate reviews kept together."""

    name = "amazon_reviews"
    BUILDER_CONFIGS = [AmazonReviewsConfig(name="default", description="80/10/10 split, seed 0")]
    DESCRIPTION = ("Amazon product reviews (McAuley et al.), tokenised by jaxreviews.data.text; train / "
                   "validation / test split with every copy of a duplicated review in one split.")
    HOMEPAGE = "https://nijianmo.github.io/amazon/"
    CITATION = _CITATION_AMAZON
    MANUAL_DOWNLOAD_INSTRUCTIONS = _AMAZON_INSTRUCTIONS

    def _split_generators(self, dl_manager):
        path = find_amazon_file(self._manual_folder(dl_manager), self.name)
        # One tokenising pass into compact arrays (~4 bytes a token), then each split from memory.
        collected = corpus.collect(readers.read_reviews(path, "amazon", rating_range=(1.0, 5.0)))
        config = self.builder_config
        splits = _group_splits(collected, config.split_fractions, config.split_seed)
        return {split: self._generate_examples(_reviews_at(collected, indices))
                for split, indices in splits.items()}


def find_amazon_file(directory: str, name: str = "amazon_reviews") -> str:
    names = sorted(entry for entry in os.listdir(directory) if os.path.isfile(os.path.join(directory, entry)))
    matches = [entry for entry in names if entry.lower().endswith(_AMAZON_SUFFIXES)]
    if not matches:
        raise FileNotFoundError(f"{name}: {directory} has no *.json, *.json.gz, *.jsonl or *.jsonl.gz file; "
                                f"found {names or 'nothing'}.\n{_AMAZON_INSTRUCTIONS}")
    if len(matches) > 1:
        raise ValueError(f"{name}: {directory} has several JSON-lines files {matches}; keep one "
                         f"(or put each in its own folder and point manual_dir there)")
    return os.path.join(directory, matches[0])


# --- the synthetic corpus ---------------------------------------------------------------------


@dataclasses.dataclass(eq=False)
class SyntheticReviewsConfig(tfds.core.BuilderConfig):
    size: str = "default"  # synthetic.default_spec(size)
    seed: int = 0
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    split_seed: int = 0


class SyntheticReviews(_ReviewBuilder):
    """`synthetic.generate(default_spec(size))`, split like `pipeline.load_splits` splits it."""

    name = "synthetic_reviews"
    BUILDER_CONFIGS = [
        SyntheticReviewsConfig(name="default", size="default", description="20,000 reviews"),
        SyntheticReviewsConfig(name="tiny", size="tiny", description="600 reviews, for tests"),
    ]
    DESCRIPTION = ("Synthetic reviews whose rating depends on text sentiment, user leniency and product "
                   "quality (jaxreviews.data.synthetic).")

    def _split_generators(self, dl_manager):
        config = self.builder_config
        spec = dataclasses.replace(synthetic.default_spec(config.size), seed=config.seed)
        reviews = synthetic.generate(spec).reviews
        splits = _group_splits(corpus.collect(reviews), config.split_fractions, config.split_seed)
        return {split: self._generate_examples((index, reviews[index]) for index in indices.tolist())
                for split, indices in splits.items()}


# --- building and reading ---------------------------------------------------------------------

BUILDERS = {cls.name: cls for cls in (Yelp13, Yelp14, Imdb, AmazonReviews, SyntheticReviews)}


def load_builder(name: str, *, data_dir: str | os.PathLike | None = None,
                 **kwargs) -> tfds.core.DatasetBuilder:
    """The builder of "name[/config][:version]" (e.g. "yelp13", "synthetic_reviews/tiny")."""
    base = name.split("/")[0].split(":")[0]
    if base not in BUILDERS:
        raise ValueError(f"unknown review data set {name!r}; expected one of {', '.join(BUILDERS)} "
                         f"(with a config for synthetic_reviews: default or tiny)")
    data_dir = os.path.expanduser(os.fspath(data_dir)) if data_dir else None
    return tfds.builder(name, data_dir=data_dir, **kwargs)


def prepare(builder_or_name: tfds.core.DatasetBuilder | str, *, data_dir: str | os.PathLike | None = None,
            manual_dir: str | os.PathLike | None = None) -> tfds.core.DatasetBuilder:
    """The builder, its splits written as array_record under `data_dir` if they are not there yet."""
    builder = _as_builder(builder_or_name, data_dir)
    if not is_prepared(builder):
        manual_dir = os.path.expanduser(os.fspath(manual_dir)) if manual_dir else None
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir),
                                     file_format="array_record")
    return builder


def reviews_from_tfds(builder_or_name: tfds.core.DatasetBuilder | str, split: str, *,
                      data_dir: str | os.PathLike | None = None, batch_size: int = 1024) -> Iterator[Review]:
    """The reviews of a prepared split (e.g. "train", "test[:10%]") in stored order, read with
    `as_data_source` (no TensorFlow)."""
    builder = _as_builder(builder_or_name, data_dir)
    if not is_prepared(builder):
        raise FileNotFoundError(f"{builder.info.full_name} is not prepared under {builder.data_dir_root}: "
                                f"call jaxreviews.data.tfds_builders.prepare(...) first")
    source = builder.as_data_source(split=split)
    for start in range(0, len(source), batch_size):
        for example in source.__getitems__(range(start, min(start + batch_size, len(source)))):
            yield decode_example(example)


def is_prepared(builder: tfds.core.DatasetBuilder) -> bool:
    """Whether the builder's variant folder holds a prepared data set (`builder.is_prepared()`
    without its warning for a folder that does not exist yet)."""
    return (builder.data_path / "dataset_info.json").exists()


def _as_builder(builder_or_name, data_dir) -> tfds.core.DatasetBuilder:
    if isinstance(builder_or_name, tfds.core.DatasetBuilder):
        return builder_or_name
    return load_builder(builder_or_name, data_dir=data_dir)
