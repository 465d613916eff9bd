"""A trained run, used: load it, predict with it, evaluate it on another file.

    run = jaxreviews.load_run("runs/han_upa")               # the best parameters ("latest" on request)
    for p in run.predict("new_reviews.json.gz"):            # or review dicts / `Review`s
        print(p["user"], p["expected_rating"], p["probabilities"])
    metrics = run.evaluate("test.txt")                      # the metrics of results.json, + baselines

Everything a run needs is in its directory: `config.json`, `vocab.txt`, `users.txt`,
`products.txt`, `model.json` (the model's sizes, training statistics and batch shapes;
`training_pairs.npz` for SVD++) and the checkpoints. New reviews are encoded with the run's
tables: a user or product unseen in training gets id 0, the learned unknown row, and a word outside
the vocabulary the OOV id; both are counted. They are batched in the run's own layout and shapes,
so the evaluation program compiled during training (in the persistent cache) serves again. Files are
read `chunk_size` reviews at a time: a file larger than memory works.

A review dict has "user", "product", optionally "rating", and its text as "text" (raw, tokenised as
the Amazon reader does) or "sentences" (lists of tokens).
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import os
from collections.abc import Iterable, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxreviews import models
from jaxreviews.data import batching, corpus, packing, readers
from jaxreviews.data.corpus import EncodedReviews
from jaxreviews.data.text import tokenize_review
from jaxreviews.data.types import OOV_ID, Review
from jaxreviews.data.vocab import IdMap, Vocabulary
from jaxreviews.models.mf import TrainingPairs
from jaxreviews.models.heads import combine_outputs
from jaxreviews.train import checkpoints, evaluation, members as members_lib, step as step_lib
from jaxreviews.train.results import RunResults

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Run:
    """A run directory's model and parameters, with the tables that encode new reviews."""

    workdir: str
    config: ml_collections.ConfigDict
    vocab: Vocabulary
    users: IdMap
    products: IdMap
    model: object
    params: dict
    model_state: dict
    info: dict  # model.json
    step: int  # the step of the parameters
    baselines: dict = dataclasses.field(default_factory=dict)  # training-fitted constant predictions
    members: int = 0  # an ensemble's members (params have a leading member axis); 0: one model

    @property
    def rating_range(self) -> tuple[float, float]:
        return tuple(float(r) for r in self.info["rating_range"])

    @property
    def rating_step(self) -> float:
        return float(self.info["rating_step"])

    @property
    def num_classes(self) -> int:
        return int(self.info["num_classes"])

    @property
    def layout(self) -> str:
        return models.input_layout(self.config.model.name)

    # -- input ------------------------------------------------------------------------------------
    def reviews(self, source, *, format: str | None = None) -> Iterator[tuple[Review, bool]]:
        """(Review, has a rating) of a file path, or of an iterable of review dicts / `Review`s."""
        if isinstance(source, (str, os.PathLike)):
            for review in readers.read_reviews(os.fspath(source), format,
                                               rating_range=self.rating_range):
                yield review, True
            return
        for item in source:
            if isinstance(item, Review):
                yield item, True
                continue
            sentences = item.get("sentences")
            if sentences is None:
                sentences = tokenize_review(item.get("text", ""))
            rating = item.get("rating")
            yield Review(str(item["user"]), str(item["product"]),
                         float(self.rating_range[0] if rating is None else rating),
                         tuple(tuple(s) for s in sentences)), rating is not None

    def encode(self, reviews: list[Review]) -> EncodedReviews:
        return corpus.collect(reviews).encode(None, self.vocab, self.users, self.products)

    def batches(self, data: EncodedReviews) -> Iterator[tuple[np.ndarray, dict]]:
        """(review indices of the slots, batch) in the run's layout and training shapes; slots
        without a review have index -1 and weight 0."""
        common = dict(layout=self.layout, batch_size=int(self.config.train.batch_size),
                      rating_range=self.rating_range, rating_step=self.rating_step)
        if self.info["batch_layout"] == "packed":
            shape = packing.PackedShape(*self.info["batch_shapes"][0])
            batcher = packing.PackedBatcher(data, shape=shape, **common)
            for members in batcher.eval_parts():
                indices = np.full(shape.reviews, -1, np.int64)
                indices[:len(members)] = members
                yield indices, batcher.make_local_batch(members)
            return
        batcher = batching.Batcher(data, buckets=[tuple(b) for b in self.info["batch_shapes"]], **common)
        for planned in batcher.eval_plan():
            yield planned.indices, batching.make_batch(data, planned.indices, self.layout,
                                                       batcher.buckets[planned.bucket],
                                                       rating_range=self.rating_range, rating_step=self.rating_step)

    # -- predict ----------------------------------------------------------------------------------
    def predict(self, source, *, format: str | None = None, attention: bool = False,
                chunk_size: int = 4096) -> Iterator[dict]:
        """One dict per review, in input order: user, product, rating (None if not given),
        predicted_class (index), predicted_class_rating, expected_rating, probabilities (class
        heads), unseen_user / unseen_product, oov_tokens, and with `attention` the review's
        tokens with the word and sentence attention weights of HAN models."""
        apply = self._apply(attention)
        stream = self.reviews(source, format=format)
        while chunk := list(itertools.islice(stream, chunk_size)):
            reviews = [review for review, _ in chunk]
            data = self.encode(reviews)
            results: list[dict | None] = [None] * len(reviews)
            for indices, batch in self.batches(data):
                outputs = jax.device_get(apply(self.params, self.model_state, batch))
                for slot, index in enumerate(indices):
                    if index >= 0:
                        results[index] = self._describe(outputs, batch, slot, data, int(index), attention)
            for (review, has_rating), result in zip(chunk, results):
                yield {"user": review.user, "product": review.product,
                       "rating": review.rating if has_rating else None, **result}

    def _apply(self, attention: bool):
        """jit(params, model_state, batch) -> outputs (+ probabilities); an ensemble's are its
        combined outputs (mean probabilities / ratings) and its members' mean attention weights."""
        model = self.model

        def single(params, model_state, batch):
            variables = {"params": params, **model_state}
            if attention:
                outputs, state = model.apply(variables, batch, train=False, mutable=["intermediates"])
                outputs = dict(outputs, intermediates=state.get("intermediates", {}))
            else:
                outputs = model.apply(variables, batch, train=False)
            return outputs

        def forward(params, model_state, batch):
            if self.members:
                execution = members_lib.member_execution("auto", self.members)
                outputs = members_lib.over_members(single, execution, (0, 0, None))(params, model_state, batch)
                combined = combine_outputs(outputs, self.rating_range, self.num_classes)
                if "intermediates" in outputs:
                    combined["intermediates"] = jax.tree.map(lambda x: x.mean(0), outputs["intermediates"])
                outputs = combined
            else:
                outputs = single(params, model_state, batch)
            if "logits" in outputs:
                outputs = dict(outputs, probabilities=jax.nn.softmax(outputs["logits"], axis=-1))
            return outputs

        return jax.jit(forward)

    def _describe(self, outputs: dict, batch: dict, slot: int, data: EncodedReviews, index: int,
                  attention: bool) -> dict:
        arrays = data.arrays
        predicted = int(outputs["predicted_class"][slot])
        out = {"predicted_class": predicted,
               "predicted_class_rating": self.rating_range[0] + predicted * self.rating_step,
               "expected_rating": float(outputs["predicted_rating"][slot])}
        if "probabilities" in outputs:
            out["probabilities"] = [round(float(p), 6) for p in outputs["probabilities"][slot]]
        tokens = arrays.token_ids[arrays.token_offsets[arrays.sentence_offsets[index]]:
                                  arrays.token_offsets[arrays.sentence_offsets[index + 1]]]
        out.update(unseen_user=bool(arrays.users[index] == 0), unseen_product=bool(arrays.products[index] == 0),
                   oov_tokens=int((tokens == OOV_ID).sum()))
        if attention and "intermediates" in outputs:
            out.update(self._attention(outputs["intermediates"], batch, slot))
        return out

    def _attention(self, intermediates: dict, batch: dict, slot: int) -> dict:
        """The review's tokens (as batched: truncated) with word and sentence attention weights."""
        word = intermediates.get("word_attention", {}).get("weights")
        sentence = intermediates.get("sentence_attention", {}).get("weights")
        if word is None or sentence is None:
            return {}
        word, sentence = np.asarray(word[0]), np.asarray(sentence[0])
        decode = self.vocab.decode
        if "word_sentence" in batch:  # packed: [R, L] and [Rs, Ls]
            slots = np.flatnonzero((batch["sentence_review"].reshape(-1) == slot) & batch["sentence_mask"].reshape(-1))
            tokens, weights = [], []
            for sentence_slot in slots:  # sentence rows hold a review's sentences in order
                where = (batch["word_sentence"] == sentence_slot) & batch["word_mask"]
                tokens.append(decode(batch["words"][where]))
                weights.append([round(float(w), 6) for w in word[where]])
            sentence_weights = sentence.reshape(-1)[slots]
        else:  # [B, S, W] and [B, S]
            present = np.flatnonzero(batch["sentence_mask"][slot])
            tokens = [decode(batch["words"][slot, s][batch["word_mask"][slot, s]]) for s in present]
            weights = [[round(float(w), 6) for w in word[slot, s][batch["word_mask"][slot, s]]] for s in present]
            sentence_weights = sentence[slot][present]
        return {"tokens": tokens, "word_attention": weights,
                "sentence_attention": [round(float(w), 6) for w in sentence_weights]}

    # -- evaluate ---------------------------------------------------------------------------------
    def evaluate(self, source, *, format: str | None = None, chunk_size: int = 4096) -> dict:
        """The metrics of results.json (accuracy, macro-F1, RMSE, MAE, NLL, loss, reviews) of a file,
        of review dicts or of ready batches (dicts with "label" and "weight"), and for reviews the
        training-fitted baselines on the same ratings and the unseen / OOV counts."""
        if self.members:
            eval_step = members_lib.make_eval_step(self.model, self.config.model.head, self.num_classes,
                                                   self.rating_range, members_lib.member_execution("auto", self.members))
            finalize = members_lib.finalize
            sums = members_lib.zero_eval_sums(self.config.model.head.kind, self.num_classes, self.members)
        else:
            eval_step = jax.jit(step_lib.make_eval_step(self.model, self.config.model.head, self.num_classes))
            finalize, sums = step_lib.finalize_metrics, None

        def run(batches) -> dict:
            metrics = evaluation.evaluate(eval_step, self.params, self.model_state, batches, finalize=finalize,
                                          sums=sums)
            if self.members:  # the ensemble's metrics, and each member's
                return {"metrics": metrics["ensemble"], "members": metrics["members"]}
            return {"metrics": metrics}

        if not isinstance(source, (str, os.PathLike)):
            source = iter(source)
            first = next(source, None)
            if first is None:
                raise ValueError("evaluate: nothing to evaluate")
            source = itertools.chain([first], source)
            if isinstance(first, dict) and "weight" in first and "label" in first:
                return run(source)["metrics"]
        counts = {"reviews": 0, "unseen_user": 0, "unseen_product": 0, "tokens": 0, "oov_tokens": 0}
        ratings: list[np.ndarray] = []

        def batches() -> Iterator[dict]:
            stream = self.reviews(source, format=format)
            while chunk := list(itertools.islice(stream, chunk_size)):
                data = self.encode([review for review, _ in chunk])
                for key, value in data.unseen_counts().items():
                    counts[key] += value
                ratings.append(data.arrays.ratings)
                for _, batch in self.batches(data):
                    batching.check_ids(batch, vocab_size=len(self.vocab), num_users=len(self.users),
                                       num_products=len(self.products))
                    yield batch

        try:
            result = {**run(batches()), "data": counts}
        except evaluation.NoBatches:
            where = os.fspath(source) if isinstance(source, (str, os.PathLike)) else "the reviews given"
            raise ValueError(f"{where}: no reviews to evaluate (an empty file?)") from None
        if self.baselines:
            result["baselines"] = evaluation.score_constant_predictions(
                np.concatenate(ratings), self.baselines, self.rating_range, self.rating_step)
        return result


def load_run(workdir: str | os.PathLike, which: str = "best") -> Run:
    """The run in `workdir` with its best parameters (those of results.json's "best_step"), or with
    `which="latest"` those of its latest checkpoint (a run still training, or stopped)."""
    workdir = os.path.abspath(os.path.expanduser(os.fspath(workdir)))
    for name in ("config.json", "model.json", "vocab.txt", "users.txt", "products.txt"):
        if not os.path.exists(os.path.join(workdir, name)):
            raise FileNotFoundError(f"{workdir} is not a run directory (written by experiments.train): no {name}")
    with open(os.path.join(workdir, "config.json")) as f:
        config = ml_collections.ConfigDict(json.load(f))
    with open(os.path.join(workdir, "model.json")) as f:
        info = json.load(f)
    if info.get("embed_dim"):  # the width of pretrained vectors, which overrode the config's
        config.model.embed_dim = info["embed_dim"]
    pairs = None
    if os.path.exists(os.path.join(workdir, "training_pairs.npz")):
        saved = np.load(os.path.join(workdir, "training_pairs.npz"))
        pairs = TrainingPairs(saved["users"], saved["products"], info["num_users"], info["num_products"])
    model = models.build_model(
        config.model, vocab_size=info["vocab_size"], num_users=info["num_users"], num_products=info["num_products"],
        num_classes=info["num_classes"], rating_range=tuple(info["rating_range"]), rating_mean=info.get("rating_mean"),
        label_prior=None if info.get("label_prior") is None else np.asarray(info["label_prior"]),
        training_pairs=pairs)
    state, step, results, meta = _restore(workdir, which)
    members = int(meta.get("members", 0))
    if members == 1:  # a one-member run is one model: its arrays without the member axis
        state = {key: jax.tree.map(lambda x: np.asarray(x)[0], state.get(key) or {}) for key in ("params", "model_state")}
        members = 0
    # The constant baselines (majority, mean rating) score any file; the text ones are the run's test split's.
    baselines = {name: values["prediction"] for name, values in (results.baselines if results else {}).items()
                 if "prediction" in values}
    return Run(workdir=workdir, config=config, vocab=Vocabulary.load(os.path.join(workdir, "vocab.txt")),
               users=IdMap.load(os.path.join(workdir, "users.txt")),
               products=IdMap.load(os.path.join(workdir, "products.txt")), model=model,
               params=jax.tree.map(jnp.asarray, state["params"]),
               model_state=jax.tree.map(jnp.asarray, state.get("model_state") or {}), info=info, step=step,
               baselines=baselines, members=members)


def _restore(workdir: str, which: str):
    """(state as plain arrays, its step, its RunResults or None, the checkpoint's meta)."""
    if which not in ("best", "latest"):
        raise ValueError(f"which={which!r}: 'best' or 'latest'")
    results = None
    if os.path.exists(os.path.join(workdir, "results.json")):
        results = RunResults.load(os.path.join(workdir, "results.json"))
    ckpt = checkpoints.RunCheckpoints(workdir)
    try:
        if which == "latest":
            restored = ckpt.restore_latest(None, set_aside=False)
            if restored is None:
                raise FileNotFoundError(f"{workdir} has no checkpoint yet: train it (experiments.train) first")
            state, meta = restored
            return state, int(meta["step"]), results, meta
        best_step = None if results is None else results.best_step
        if best_step is None:  # still training: the best so far, as the latest checkpoint records it
            restored = ckpt.restore_latest(None, set_aside=False)
            if restored is None:
                raise FileNotFoundError(f"{workdir} has no checkpoint yet: train it (experiments.train) first")
            bookkeeping = restored[1]["bookkeeping"]  # an ensemble's: the tree of its members' bests
            best_step = bookkeeping.get("best_step", bookkeeping.get("best_checkpoint_step"))
            if best_step is None or int(best_step) < 0:
                raise FileNotFoundError(f"{workdir} has not been validated yet (step {restored[1]['step']}): no best "
                                        "parameters to use; wait for its first validation, or pass which='latest'")
            log.warning("%s has not finished (no results.json): using its best parameters so far, of step %d",
                        workdir, int(best_step))
        state, meta = ckpt.restore_best(None, int(best_step))
        return state, int(best_step), results, meta
    finally:
        ckpt.close()
