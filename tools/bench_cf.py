#!/usr/bin/env python3
"""Collaborative filtering against scikit-surprise: our `mf` and `svdpp` configs beside surprise's
SVD and SVD++ on exactly the same train / test split, accuracy and wall time.

    python tools/bench_cf.py TRAIN TEST [--format ratings|amazon|tang]
    python tools/bench_cf.py --synthetic [--ratings 100000] [--seed 0]
    python tools/bench_cf.py --amazon ../shared/data/amazon-musical-instruments/reviews_Musical_Instruments_5.json.gz

Data. TRAIN and TEST are read by the library's readers; `--synthetic` builds a rating table
(`synthetic_ratings`: Zipf-skewed user and product activity, biases + low-rank taste + noise,
rounded to 1-5 stars, a pure function of the seed) and `--amazon FILE` takes the (user, product,
rating) triples of an Amazon JSON-lines file; both are split 80/20 by `--seed`. Every method then
reads the same two tables, written as `u.data` files in a temporary folder.

Ours. experiments/configs/mf.py and svdpp.py, the configs a user runs, through the library's
pieces: `pipeline.load_splits` (validation held out of TRAIN by `data.valid_fraction`, for early
stopping on RMSE; the test table is scored once, at the end), `models.build_model` with the
training statistics, `optimizers.make_optimizer`, `step.make_train_step` / `make_eval_step` and
`batching.Batcher`: the batches, keys, steps and early stopping of `experiments.train`. Only the
driver differs: an epoch's steps run as one `lax.scan` program and nothing is checkpointed
(`--via-loop` also runs `mf` through `train_and_evaluate` itself, for comparison).

Surprise (only when `import surprise` works; `pip install scikit-surprise`, not a dependency of
the project): `SVD()` (100 factors, lr 0.005, reg 0.02, 20 epochs of SGD) and `SVDpp()` with
their defaults, `random_state=--seed`, the rating scale of the data.

Timing: wall seconds, data loading excluded for every method. Ours: build, initialise, compile,
train, validate and predict the test table (`compile_seconds`, measured by JAX, reported apart;
the persistent compilation cache is off so a run is cold unless --compilation-cache is given).
Surprise: fit and predict the test table.

Output: a table, then as the LAST line one JSON object
    {"mf": {"rmse", "mae", "seconds", ...}, "svdpp": {...}, "surprise_svd": {...}, "surprise_svdpp": {...}}
(the surprise keys absent when surprise is not installed).
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # tools/, also when loaded by path
import provenance  # noqa: E402
from jaxreviews.data import readers  # noqa: E402  (no jax import yet)
from jaxreviews.data.types import Review  # noqa: E402


@dataclasses.dataclass(frozen=True)
class RatingTable:
    """N ratings: user and product ids (strings, as files hold them) and the rating."""

    users: np.ndarray  # str [N]
    products: np.ndarray  # str [N]
    ratings: np.ndarray  # float32 [N]

    def __len__(self) -> int:
        return len(self.ratings)

    def take(self, indices: np.ndarray) -> RatingTable:
        return RatingTable(self.users[indices], self.products[indices], self.ratings[indices])

    def reviews(self):
        for user, product, rating in zip(self.users, self.products, self.ratings):
            yield Review(str(user), str(product), float(rating))


def synthetic_ratings(num_ratings: int = 100_000, *, seed: int = 0, rank: int = 5, selection: float = 1.0,
                      chunk: int = 512) -> RatingTable:
    """A realistic rating table of about `num_ratings` ratings, a pure function of its arguments.

    Activity is skewed as in MovieLens: there are num_ratings / 50 users and num_ratings / 60
    products; the user of activity rank r rates a share ~ 1 / (r + users / 40) of the ratings (at
    most half the products) and product i is chosen with popularity ~ 1 / (rank + products / 80),
    one rating per (user, product) pair. At 100k ratings the top 10% of users hold about 40% of the
    ratings and the least active rate a handful; the same for products. Users
    also pick what they expect to like (missing not at random, as real logs are): the chance of
    rating i grows as exp(`selection` * the user's affinity for i), so WHICH products a user
    rated says something about their taste (what SVD++ reads). A rating is 3.3 + b_user (sd 0.4)
    + affinity (b_product, sd 0.5, + a rank-`rank` taste term, sd 0.6) + noise (sd 0.7), rounded
    and clipped to 1..5 stars. Ids are shuffled, so id order says nothing about activity."""
    rng = np.random.default_rng(seed)
    num_users, num_products = max(10, num_ratings // 50), max(10, num_ratings // 60)
    user_share = 1.0 / (np.arange(num_users) + num_users / 40)
    per_user, cap = rng.multinomial(num_ratings, user_share / user_share.sum()), num_products // 2
    while np.any(per_user > cap):  # what a user cannot take goes to the others, by their shares
        excess, per_user = int(np.sum(np.maximum(per_user - cap, 0))), np.minimum(per_user, cap)
        open_users = per_user < cap
        if not open_users.any():
            break
        per_user[open_users] += rng.multinomial(excess, user_share[open_users] / user_share[open_users].sum())
    log_popularity = -np.log(np.arange(num_products) + num_products / 80)
    user_taste, product_taste = rng.normal(0, 1, (num_users, rank)), rng.normal(0, 1, (num_products, rank))
    user_bias, product_bias = rng.normal(0, 0.4, num_users), rng.normal(0, 0.5, num_products)
    users, products, ratings = [], [], []
    for first in range(0, num_users, chunk):  # [chunk, num_products] at a time: memory stays small
        rows = np.arange(first, min(first + chunk, num_users))
        affinity = product_bias + user_taste[rows] @ product_taste.T * (0.6 / math.sqrt(rank))
        # Gumbel top-k: each user's per_user[u] products, without replacement, ~ popularity * exp(...)
        keys = log_popularity + selection * affinity + rng.gumbel(size=affinity.shape)
        order = np.argsort(-keys, axis=1)
        chosen = np.arange(num_products) < per_user[rows, None]  # the first per_user[u] of each row
        row_index, slot = np.nonzero(chosen)
        picked = order[row_index, slot]
        latent = (3.3 + user_bias[rows[row_index]] + affinity[row_index, picked]
                  + rng.normal(0, 0.7, len(picked)))
        users.append(rows[row_index])
        products.append(picked)
        ratings.append(np.clip(np.rint(latent), 1, 5))
    users, products, ratings = np.concatenate(users), np.concatenate(products), np.concatenate(ratings)
    shuffle = rng.permutation(len(ratings))
    user_names, product_names = rng.permutation(num_users), rng.permutation(num_products)
    return RatingTable(np.array([f"u{u}" for u in user_names[users[shuffle]]]),
                       np.array([f"p{p}" for p in product_names[products[shuffle]]]),
                       ratings[shuffle].astype(np.float32))


def read_table(path: str, format: str | None = None) -> RatingTable:
    """The (user, product, rating) triples of any file the library reads (text is dropped), on
    whatever rating scale the file has (`rating_scale` reads it off)."""
    triples = [(r.user, r.product, r.rating) for r in readers.read_reviews(path, format or None, rating_range=None)]
    if not triples:
        raise ValueError(f"{path}: no ratings")
    users, products, ratings = zip(*triples)
    return RatingTable(np.array(users), np.array(products), np.array(ratings, np.float32))


def split_table(table: RatingTable, *, test_fraction: float = 0.2, seed: int = 0) -> tuple[RatingTable, RatingTable]:
    """(train, test): a seeded random split of the rows."""
    order = np.random.default_rng(seed).permutation(len(table))
    cut = len(table) - int(round(test_fraction * len(table)))
    return table.take(np.sort(order[:cut])), table.take(np.sort(order[cut:]))


def rating_scale(*tables: RatingTable) -> tuple[tuple[float, float], float]:
    """((lowest, highest) rating, step between neighbouring rating values) seen in the tables."""
    values = np.unique(np.concatenate([t.ratings for t in tables]))
    step = float(np.min(np.diff(values))) if len(values) > 1 else 1.0
    return (float(values[0]), float(values[-1])), step


# ---- ours -------------------------------------------------------------------------------------

def bench_config(name: str, *, train_path: str, test_path: str, rating_range, rating_step: float, seed: int):
    """experiments/configs/<name>.py pointed at the two tables."""
    import importlib

    config = importlib.import_module(f"experiments.configs.{name}").get_config()
    config.seed = seed
    config.compilation.cache_dir = ""
    config.data.name, config.data.format = "files", "ratings"
    config.data.train, config.data.test = train_path, test_path
    config.data.rating_range, config.data.rating_step = tuple(rating_range), float(rating_step)
    config.data.split_seed = seed
    return config


def fit(config, splits, *, verbose: bool = True) -> dict:
    """Trains `config` on `splits` with the library's step, early stopping on validation
    `train.early_stopping_metric`; returns test rmse / mae and the time it took."""
    import jax

    from jaxreviews import models
    from jaxreviews.data import batching
    from jaxreviews.train import compilation, optimizers, step as step_lib
    from jaxreviews.train.loop import HIGHER_IS_BETTER

    started = time.perf_counter()
    clock = compilation.CompileClock()
    train_cfg = config.train
    arrays = splits.train.arrays
    statistics = models.training_statistics(
        config.model, users=arrays.users, products=arrays.products, ratings=arrays.ratings,
        num_users=len(splits.users), num_products=len(splits.products), num_classes=splits.num_classes,
        rating_range=splits.rating_range)
    model = models.build_model(config.model, vocab_size=len(splits.vocab), num_users=len(splits.users),
                               num_products=len(splits.products), num_classes=splits.num_classes,
                               rating_range=splits.rating_range, **statistics)
    common = dict(layout="ids", rating_range=splits.rating_range, rating_step=splits.rating_step)
    train_batches = batching.Batcher(splits.train, batch_size=train_cfg.batch_size, seed=config.seed, **common)
    eval_size = max(train_cfg.batch_size, 8192)
    valid_batches = batching.Batcher(splits.validation, batch_size=eval_size, **common)
    test_batches = batching.Batcher(splits.test, batch_size=eval_size, **common)
    steps_per_epoch = train_batches.steps_per_epoch
    tx, _ = optimizers.make_optimizer(config.optimizer, steps_per_epoch=steps_per_epoch,
                                      total_epochs=train_cfg.epochs, batch_size=train_cfg.batch_size)
    train_step = step_lib.make_train_step(model, tx, config.model.head, l1=config.optimizer.l1,
                                          l2=config.optimizer.l2, norms=False)

    @functools.partial(jax.jit, donate_argnums=0)
    def train_epoch(state, epoch_batches, key):
        """One epoch: the library's train step scanned over the epoch's batches [steps, B]."""
        state, metrics = jax.lax.scan(lambda s, batch: train_step(s, batch, key), state, epoch_batches)
        return state, metrics["loss"]

    eval_step = jax.jit(step_lib.make_eval_step(model, config.model.head, splits.num_classes))

    def evaluate(params, model_state, batcher) -> dict:
        """The loop's `evaluate`, with the sums added on the host (no extra small programs)."""
        sums = None
        for batch in batcher.evaluation():
            out = jax.device_get(eval_step(params, model_state, batch))
            sums = out if sums is None else jax.tree.map(np.add, sums, out)
        return step_lib.finalize_metrics(sums)

    def stacked(epoch: int) -> dict:
        batches = list(train_batches.epoch(epoch))
        return {key: np.stack([b[key] for b in batches]) for key in batches[0]}

    @jax.jit
    def initialize(example, seed):
        """The loop's keys and initial state, in one program."""
        init_key, run_key = jax.random.split(jax.random.key(seed))
        return step_lib.init_state(model, tx, example, init_key), run_key

    first = stacked(0)
    state, run_key = initialize({key: value[0] for key, value in first.items()}, config.seed)
    metric, higher = train_cfg.early_stopping_metric, HIGHER_IS_BETTER[train_cfg.early_stopping_metric]
    best, best_epoch, waited, history = None, -1, 0, []
    for epoch in range(train_cfg.epochs):
        state, losses = train_epoch(state, first if epoch == 0 else stacked(epoch), run_key)
        values = evaluate(state.params, state.model_state, valid_batches)
        loss = float(np.asarray(losses)[-1])
        if not math.isfinite(loss):
            raise FloatingPointError(f"{config.model.name}: epoch {epoch + 1}: the loss is {loss}; lower "
                                     f"optimizer.learning_rate ({config.optimizer.learning_rate})")
        history.append(round(values[metric], 4))
        if best is None or (values[metric] > best[0] if higher else values[metric] < best[0]):
            best = (values[metric], jax.device_get(state.params), jax.device_get(state.model_state))
            best_epoch, waited = epoch + 1, 0
        else:
            waited += 1
            if train_cfg.patience and waited >= train_cfg.patience:
                break
    test = evaluate(best[1], best[2], test_batches)
    seconds = time.perf_counter() - started
    result = {"rmse": round(test["rmse"], 4), "mae": round(test["mae"], 4), "seconds": round(seconds, 2),
              "compile_seconds": round(clock.seconds, 2), "epochs": len(history), "best_epoch": best_epoch,
              "validation_rmse": round(best[0], 4) if metric == "rmse" else None}
    if verbose:
        print(f"  {config.model.name}{' (SVD++)' if config.model.get('implicit_feedback') else ''}: validation "
              f"{metric} by epoch {history}, best epoch {best_epoch}")
    return result


def run_ours(name: str, *, train_path: str, test_path: str, rating_range, rating_step: float, seed: int,
             overrides: dict | None = None, verbose: bool = True) -> dict:
    from jaxreviews.data import pipeline

    config = bench_config(name, train_path=train_path, test_path=test_path, rating_range=rating_range,
                          rating_step=rating_step, seed=seed)
    for key, value in (overrides or {}).items():
        target = config
        *path, leaf = key.split(".")
        for part in path:
            target = target[part]
        target[leaf] = value
    began = time.perf_counter()
    splits = pipeline.load_splits(config.data)
    load_seconds = time.perf_counter() - began
    return {**fit(config, splits, verbose=verbose), "load_seconds": round(load_seconds, 2)}


def run_via_loop(name: str, *, train_path: str, test_path: str, rating_range, rating_step: float,
                 seed: int) -> dict:
    """`name` through `train_and_evaluate` into a temporary workdir (checkpoints, logs and all)."""
    from jaxreviews.train import loop

    config = bench_config(name, train_path=train_path, test_path=test_path, rating_range=rating_range,
                          rating_step=rating_step, seed=seed)
    config.train.tensorboard = False
    with tempfile.TemporaryDirectory() as workdir:
        began = time.perf_counter()
        results = loop.train_and_evaluate(config, workdir)
        seconds = time.perf_counter() - began
    return {"rmse": round(results.test["rmse"], 4), "mae": round(results.test["mae"], 4),
            "seconds": round(seconds, 2), "compile_seconds": results.compile["seconds"],
            "note": "data loading included"}


# ---- surprise -----------------------------------------------------------------------------------

def surprise_available() -> bool:
    try:
        import surprise  # noqa: F401
    except ImportError:
        return False
    return True


def run_surprise(algorithm: str, *, train_path: str, test: RatingTable, rating_range, seed: int) -> dict:
    """surprise's `SVD` or `SVDpp` with its defaults, fitted on TRAIN and scored on `test`."""
    import surprise

    began = time.perf_counter()
    reader = surprise.Reader(line_format="user item rating timestamp", sep="\t", rating_scale=tuple(rating_range))
    trainset = surprise.Dataset.load_from_file(train_path, reader=reader).build_full_trainset()
    testset = [(str(u), str(p), float(r)) for u, p, r in zip(test.users, test.products, test.ratings)]
    load_seconds = time.perf_counter() - began
    model = {"SVD": surprise.SVD, "SVDpp": surprise.SVDpp}[algorithm](random_state=seed)
    began = time.perf_counter()
    model.fit(trainset)
    predictions = model.test(testset)
    seconds = time.perf_counter() - began
    errors = np.array([p.est - p.r_ui for p in predictions])
    return {"rmse": round(float(np.sqrt(np.mean(errors ** 2))), 4), "mae": round(float(np.mean(np.abs(errors))), 4),
            "seconds": round(seconds, 2), "load_seconds": round(load_seconds, 2)}


# ---- main ---------------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("train", nargs="?", help="training table (any format the library reads)")
    p.add_argument("test", nargs="?", help="test table")
    p.add_argument("--format", default="", help="TRAIN/TEST format: ratings | amazon | tang ('' = detect)")
    p.add_argument("--synthetic", action="store_true", help="build a synthetic table and split it 80/20")
    p.add_argument("--ratings", type=int, default=100_000, help="--synthetic: how many ratings")
    p.add_argument("--amazon", default="", help="an Amazon JSON-lines file (.gz too): its ratings, split 80/20")
    p.add_argument("--seed", type=int, default=0, help="split, model and surprise seed")
    p.add_argument("--models", default="mf,svdpp,surprise_svd,surprise_svdpp",
                   help="comma-separated subset of mf, svdpp, surprise_svd, surprise_svdpp")
    p.add_argument("--via-loop", action="store_true", help="also run mf through train_and_evaluate")
    p.add_argument("--threads", type=int, default=0, help="XLA CPU threads (0 = every core)")
    p.add_argument("--compilation-cache", default="", metavar="DIR",
                   help="JAX's persistent compilation cache in DIR (run twice: the second run compiles nothing)")
    args = p.parse_args(argv)
    sources = bool(args.train) + args.synthetic + bool(args.amazon)
    if sources != 1 or bool(args.train) != bool(args.test):
        p.error("give TRAIN TEST, or --synthetic, or --amazon FILE")
    return args


def load_tables(args) -> tuple[RatingTable, RatingTable, str]:
    if args.synthetic:
        train, test = split_table(synthetic_ratings(args.ratings, seed=args.seed), seed=args.seed)
        return train, test, f"synthetic {args.ratings:,} ratings (seed {args.seed}), 80/20"
    if args.amazon:
        train, test = split_table(read_table(args.amazon, "amazon"), seed=args.seed)
        return train, test, f"{os.path.basename(args.amazon)} ratings, 80/20 (seed {args.seed})"
    return read_table(args.train, args.format), read_table(args.test, args.format), f"{args.train} / {args.test}"


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   f" --xla_cpu_multi_thread_eigen={'true' if args.threads > 1 else 'false'}"
                                   f" intra_op_parallelism_threads={args.threads}").strip()
    from jaxreviews import runtime
    runtime.configure(keep_freed_memory=True, sigterm=False)  # as experiments.train does
    runtime.enable_compilation_cache(args.compilation_cache)

    train, test, description = load_tables(args)
    rating_range, rating_step = rating_scale(train, test)
    wanted = [m for m in args.models.split(",") if m]
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as folder:
        train_path, test_path = os.path.join(folder, "train.data"), os.path.join(folder, "test.data")
        readers.write_ratings(train_path, train.reviews())
        readers.write_ratings(test_path, test.reviews())
        print(f"{description}: {len(train):,} train / {len(test):,} test ratings, "
              f"{len(np.unique(train.users)):,} users, {len(np.unique(train.products)):,} products in train, "
              f"ratings {rating_range[0]:g}..{rating_range[1]:g} step {rating_step:g}")
        paths = dict(train_path=train_path, test_path=test_path, rating_range=rating_range,
                     rating_step=rating_step, seed=args.seed)
        for name in ("mf", "svdpp"):
            if name in wanted:
                results[name] = run_ours(name, **paths)
        if args.via_loop:
            results["mf_via_loop"] = run_via_loop("mf", **paths)
        if surprise_available():
            for name, algorithm in (("surprise_svd", "SVD"), ("surprise_svdpp", "SVDpp")):
                if name in wanted:
                    results[name] = run_surprise(algorithm, train_path=train_path, test=test,
                                                 rating_range=rating_range, seed=args.seed)
        else:
            print("scikit-surprise is not installed (pip install scikit-surprise): its rows are left out")
    mean = float(np.mean(train.ratings))
    baseline = {"rmse": round(float(np.sqrt(np.mean((test.ratings - mean) ** 2))), 4),
                "mae": round(float(np.mean(np.abs(test.ratings - mean))), 4)}
    print(provenance.line(provenance.describe()) + "\n")
    print(format_table(results, baseline))
    print(json.dumps(results))
    return results


def format_table(results: dict[str, dict], baseline: dict) -> str:
    lines = [f"{'method':24}{'rmse':>8}{'mae':>8}{'seconds':>9}{'compile':>9}{'epochs':>8}"]
    for name, values in results.items():
        compile_s = values.get("compile_seconds")
        epochs = values.get("epochs")
        lines.append(f"{name:24}{values['rmse']:>8.4f}{values['mae']:>8.4f}{values['seconds']:>9.2f}"
                     f"{'-' if compile_s is None else f'{compile_s:.2f}':>9}{'-' if epochs is None else epochs:>8}")
    lines.append(f"{'baseline: train mean':24}{baseline['rmse']:>8.4f}{baseline['mae']:>8.4f}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
