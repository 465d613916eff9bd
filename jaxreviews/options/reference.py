"""Every option of a run, in one place: default, one-line meaning, accepted values.

The defaults are what `make run` trains for each model (`default_config(model)`); presets
(`presets.py`) are overlays on them. docs/options.md is generated from this file
(`python tools/options_doc.py`), and a test keeps it current.
"""
from __future__ import annotations

import dataclasses

from jaxreviews.options.schema import (COUNT, FLAT_RECURRENT, HIERARCHICAL, MODEL_NAMES, NON_NEGATIVE,
                                       POSITIVE, RATE, TEXT_MODELS, ByModel, Check, Option, all_of, at_least,
                                       between, greater_than)

# Choices that the implementing modules define too (a test checks that they agree).
INITIALIZERS = ("glorot_normal", "glorot_uniform", "he_normal", "he_uniform", "lecun_normal", "lecun_uniform",
                "xavier_normal", "xavier_uniform")
ACTIVATIONS = ("elu", "gelu", "identity", "leaky_relu", "relu", "sigmoid", "silu", "tanh")
NORMS = ("layer", "batch", "none")
DTYPES = ("float32", "bfloat16", "float16")
ENCODER_KINDS = ("lstm", "gru", "cnn", "transformer")
INPUT_PROJECTIONS = ("auto", "fused", "hoisted", "chunked")
POOLINGS = ("last", "mean", "max", "attention")
HEAD_KINDS = ("classification", "regression", "both")
RATING_ACTIVATIONS = ("sigmoid", "clip", "clip_straight_through")
OPTIMIZERS = ("adam", "adamw", "sgd", "adagrad", "rmsprop")
SCHEDULES = ("constant", "exponential", "step", "warmup_cosine", "one_cycle", "sgdr")
DECAY_TARGETS = ("zero", "start")
METRICS = ("accuracy", "macro_f1", "rmse", "mae", "loss", "nll")
DATA_SOURCES = ("synthetic", "files", "prepared", "tfds", "yelp13", "yelp14", "imdb", "amazon_reviews")
FORMATS = ("", "tang", "amazon", "ratings")
SYNTHETIC_SIZES = ("default", "tiny")
VECTOR_PROCESSING = ("none", "center", "all_but_the_top")
LAYOUTS = ("auto", "packed", "padded")
DISTRIBUTED = ("auto", "on", "off")
MEMBER_EXECUTIONS = ("auto", "vmap", "map")
SPACINGS = ("grid", "random")
SEARCH_METHODS = ("grid", "random", "tpe", "gp", "cmaes")
PRUNERS = ("median", "halving", "hyperband", "none")
# The hyperparameters a population varies per member (train/population.py): where each lives.
POPULATION_PARAMETERS = {"learning_rate": "optimizer", "weight_decay": "optimizer",
                         "head_dropout": "model", "embedding_dropout": "model"}

PAIR = Check(lambda v: len(v) == 2 and v[0] < v[1], "must be (low, high) with low < high")
FRACTIONS = Check(lambda v: len(v) == 3 and all(x >= 0 for x in v) and abs(sum(v) - 1) < 1e-6,
                  "must be three fractions >= 0 that add up to 1")
WIDTHS = Check(lambda v: len(v) >= 1 and all(isinstance(x, int) and x >= 1 for x in v),
               "must be one or more widths >= 1")
INTEGERS = Check(lambda v: all(isinstance(x, int) and not isinstance(x, bool) for x in v), "must be integers")
RANGE = Check(lambda v: len(v) == 0 or (len(v) == 2 and 0 <= v[0] <= v[1]),
              "must be empty or (low, high) with 0 <= low <= high")


def _no_effect(default, meaning: str, **kwargs) -> Option:
    """An option that does not change what a run computes (see schema.Option)."""
    return Option(default, meaning, affects_results=False, **kwargs)


def encoder(models: tuple[str, ...], hidden: int) -> dict:
    """The options of one sequence encoder (the flat models' `encoder`, HAN's two levels)."""
    on = dict(models=models)
    return {
        "kind": Option("lstm", "the encoder: an LSTM or GRU (nn.scan), a CNN, or a transformer",
                       choices=ENCODER_KINDS, **on),
        "hidden_size": Option(hidden, "units per direction (lstm, gru; a transformer's default width)", check=COUNT, **on),
        "bidirectional": Option(True, "read the sequence both ways and concatenate (lstm, gru)", **on),
        "num_layers": Option(1, "stacked layers (lstm, gru, transformer blocks)", check=COUNT, **on),
        "dropout": Option(0.0, "dropout between stacked layers (a transformer's residual dropout)", check=RATE, **on),
        "unroll": Option(1, "nn.scan unroll factor: speed only, the same numbers", check=COUNT, **on),
        "input_projection": Option("auto", "where x W of the recurrent cell is computed: speed only, the same numbers",
                                   choices=INPUT_PROJECTIONS, **on),
        "kernel_init": Option("glorot_uniform", "input kernels' initialiser (recurrent kernels are orthogonal)",
                              choices=INITIALIZERS, **on),
        "filter_widths": Option((3,), "kind=cnn: widths of the per-position convolutions", check=WIDTHS, **on),
        "num_filters": Option(100, "kind=cnn: feature maps per width", check=COUNT, **on),
        "activation": Option("relu", "kind=cnn: activation of the convolutions", choices=ACTIVATIONS, **on),
        "conv_kernel_init": Option("he_normal", "kind=cnn: the convolutions' initialiser", choices=INITIALIZERS, **on),
        "model_dim": Option(0, "kind=transformer: width; 0 = hidden_size x directions", check=NON_NEGATIVE, **on),
        "num_heads": Option(4, "kind=transformer: attention heads", check=COUNT, **on),
        "mlp_dim": Option(0, "kind=transformer: MLP width; 0 = 4 x width", check=NON_NEGATIVE, **on),
        "attention_dropout": Option(0.0, "kind=transformer: dropout of the attention weights", check=RATE, **on),
        "positions": Option("learned", "kind=transformer: position embeddings", choices=("learned", "sinusoidal"), **on),
        "max_length": Option(512, "kind=transformer: learned position rows (later positions share the last)",
                             check=COUNT, **on),
    }


def head() -> dict:
    return {
        "kind": Option(ByModel("classification", mf="regression"),
                       "classification (softmax over rating classes), regression (MSE), or both",
                       choices=HEAD_KINDS),
        "regression_weight": Option(1.0, "weight of the MSE term when kind=both", check=NON_NEGATIVE),
        "label_smoothing": Option(ByModel(0.0, han=0.1, han_upa=0.1),
                                  "training targets (1 - s) one-hot + s / C; nll stays the plain likelihood",
                                  check=between(0.0, 1.0, high_open=True)),
        "rating_activation": Option(ByModel("sigmoid", mf="clip_straight_through"),
                                    "how a rating head's output maps into the rating range (sigmoid; clip; clip "
                                    "with the gradient of the unclipped output)", choices=RATING_ACTIVATIONS),
    }


TEXT = dict(models=TEXT_MODELS)
MF = dict(models=("mf",))
HAN = dict(models=HIERARCHICAL)
UPA = dict(models=("han_upa",))
USER_PRODUCT = dict(models=("han_upa", "fasttext"))
FASTTEXT = dict(models=("fasttext",))

MODEL = {
    "name": Option("han_upa", "the model: cnn, rnn, bilstm, han, han_upa, fasttext or mf (set by the config file)",
                   choices=MODEL_NAMES),
    "dtype": Option("float32", "compute dtype (bfloat16: mixed precision); parameters stay float32", choices=DTYPES),
    "head": head(),
    "kernel_init": Option("glorot_uniform", "dense layers' initialiser", choices=INITIALIZERS),
    # matrix factorisation (models/mf.py); defaults chosen on validation RMSE (experiments/configs/mf.py)
    "factors": Option(50, "latent factors per user and product", check=COUNT, **MF),
    "unknown_rate": Option(0.05, "fraction of ids replaced by the unknown id 0 while training", check=RATE, **MF),
    "init_stddev": Option(0.1, "standard deviation of the factors at initialisation", check=NON_NEGATIVE, **MF),
    "l2_factors": Option(0.1, "per rating: l2 x |row|^2 of the factor rows it looks up (surprise's reg)",
                         check=NON_NEGATIVE, **MF),
    "l2_biases": Option(0.0, "per rating: l2 x bias^2 of the biases it looks up", check=NON_NEGATIVE, **MF),
    "l2_implicit": Option(0.02, "SVD++: per rating of u, l2 x sum over N(u) of |y_j|^2", check=NON_NEGATIVE, **MF),
    "factor_shrinkage": Option(3.0, "per row: shrinkage / (training count) x |row|^2 (rare users, products to 0)",
                               check=NON_NEGATIVE, **MF),
    "bias_shrinkage": Option(10.0, "per row: shrinkage / (training count) x bias^2", check=NON_NEGATIVE, **MF),
    "implicit_feedback": Option(False, "SVD++: the products a user rated enter the user vector", **MF),
    # text models
    "embed_dim": Option(ByModel(100, fasttext=64), "word embedding width (a pretrained table's width wins)",
                        check=COUNT, **TEXT),
    "freeze_embeddings": Option(False, "keep the word table fixed", **TEXT),
    "embedding_dropout": Option(ByModel(0.0, han=0.1, han_upa=0.1), "dropout on the word embeddings", check=RATE,
                                **TEXT),
    "word_dropout": Option(ByModel(0.0, han=0.25, han_upa=0.25),
                           "fraction of words replaced by the OOV id while training", check=RATE, **TEXT),
    "dropout": Option(ByModel(0.0, han=0.1, han_upa=0.1), "dropout between levels (HAN's sentence vectors)",
                      check=RATE, **TEXT),
    "head_dropout": Option(ByModel(0.3, cnn=0.5), "dropout before the head", check=RATE, **TEXT),
    "dropout_rates_in_state": Option(False, "embedding and head dropout rates as state (a population varies them; "
                                     "set by population options)", **TEXT),
    "norm": Option("layer", "normalisation of the document vector", choices=NORMS, **TEXT),
    "collaborative": {
        "enabled": Option(False, "add MF (biases + <p_user, q_product>) to the head's pre-activations: a hybrid",
                          **TEXT),
        "factors": Option(50, "the hybrid's latent factors", check=COUNT, **TEXT),
        "unknown_rate": Option(0.05, "the hybrid's fraction of ids replaced by the unknown id", check=RATE, **TEXT),
        "init_stddev": Option(0.1, "the hybrid's factors' standard deviation at initialisation", check=NON_NEGATIVE,
                              **TEXT),
    },
    # cnn
    "filter_widths": Option((3, 4, 5), "convolution widths (Kim 2014)", check=WIDTHS, models=("cnn",)),
    "num_filters": Option(100, "feature maps per width", check=COUNT, models=("cnn",)),
    "activation": Option("relu", "activation of the convolutions", choices=ACTIVATIONS, models=("cnn",)),
    "conv_kernel_init": Option("he_normal", "the convolutions' initialiser", choices=INITIALIZERS, models=("cnn",)),
    # rnn, bilstm
    "encoder": encoder(FLAT_RECURRENT, 50),
    "pooling": Option("mean", "how the flat encoder's states become the document vector", choices=POOLINGS,
                      models=FLAT_RECURRENT),
    # rnn, bilstm, han, han_upa
    "attention_dim": Option(100, "attention MLP width", check=COUNT, models=FLAT_RECURRENT + HIERARCHICAL),
    "attention_activation": Option("tanh", "attention MLP activation", choices=ACTIVATIONS,
                                   models=FLAT_RECURRENT + HIERARCHICAL),
    # han, han_upa
    "word_encoder": encoder(HIERARCHICAL, 50),
    "sentence_encoder": encoder(HIERARCHICAL, 50),
    "sentence_norm": Option("none", "normalisation of the sentence vectors", choices=NORMS, **HAN),
    # fasttext
    "ngram_buckets": Option(2 ** 16, "hashed word-bigram embedding rows (the hashing trick); 0 = words only",
                            check=NON_NEGATIVE, **FASTTEXT),
    "hidden_dim": Option(0, "a hidden layer of this width between the average and the head; 0 = a linear head",
                         check=NON_NEGATIVE, **FASTTEXT),
    "hidden_activation": Option("relu", "the hidden layer's activation", choices=ACTIVATIONS, **FASTTEXT),
    "user_product": {
        "dim": Option(ByModel(100, fasttext=16), "width of each of the user and product embeddings", check=COUNT,
                      **USER_PRODUCT),
        "word_attention": Option(True, "[user; product] enters the word attention scores", **UPA),
        "sentence_attention": Option(True, "[user; product] enters the sentence attention scores", **UPA),
        "concat_to_document": Option(True, "[user; product] concatenated to the document vector", **USER_PRODUCT),
        "rating_biases": Option(True, "learned per-user and per-product biases added to the head's outputs",
                                **USER_PRODUCT),
        "unknown_dropout": Option(0.05, "fraction of user ids, and apart of product ids, replaced by the unknown "
                                  "id 0 while training (what an unseen one gets learns the average)", check=RATE,
                                  **USER_PRODUCT),
    },
}

DATA = {
    "name": Option("synthetic", "the source: synthetic, files (data.path or data.train/valid/test), prepared "
                   "(data.prepared_dir), tfds, or a "
                   "TFDS builder", choices=DATA_SOURCES),
    "synthetic_size": Option("default", "the synthetic corpus: default (20,000 reviews) or tiny (600)",
                             choices=SYNTHETIC_SIZES),
    "synthetic_seed": Option(0, "the synthetic corpus's seed"),
    "format": Option("", "file format: tang (literature), amazon (JSON lines), ratings (MovieLens); '' = detect",
                     choices=FORMATS),
    "path": Option("", "one file, split by split_fractions (selects name=files)"),
    "train": Option("", "the training file (with valid / test: separate files)"),
    "valid": Option("", "the validation file; '' = valid_fraction of train"),
    "test": Option("", "the test file"),
    "manual_dir": Option("", "where the TFDS builders of real data read their files"),
    "tfds_name": Option("", "name=tfds: a builder of jaxreviews.data.tfds_builders, e.g. synthetic_reviews/tiny"),
    "tfds_data_dir": Option("", "where TFDS keeps prepared data; '' = TFDS's default", affects_results=False),
    "split_fractions": Option((0.8, 0.1, 0.1), "train / validation / test fractions of one file", check=FRACTIONS),
    "split_seed": Option(0, "the seed of the split (and of the folds)"),
    "shuffle_seed": Option(-1, "the training order's seed; -1 = the run's seed", check=at_least(-1)),
    "valid_fraction": Option(ByModel(0.1, mf=0.05), "held out of a train file when there is no valid file",
                             check=between(0.0, 1.0, high_open=True)),
    "folds": Option(0, "K-fold cross-validation: the data outside test cut into this many folds (0 = off)",
                    check=Check(lambda v: v == 0 or v >= 2, "must be 0 (off) or >= 2")),
    "fold": Option(0, "with folds: the fold that validates", check=NON_NEGATIVE),
    "rating_range": Option(None, "(low, high) of the rating scale; None = read from the training data", kind=tuple,
                           check=PAIR),
    "rating_step": Option(None, "the rating grid's step, e.g. 0.5; None = read from the training data", kind=float,
                          check=POSITIVE),
    "lenient": Option(False, "skip (and count) malformed lines instead of stopping at the first"),
    "drop_duplicates": Option(False, "keep one of each group of identical (user, text, rating) reviews"),
    "min_count": Option(1, "words seen fewer times in training map to OOV", check=COUNT),
    "max_vocab": Option(50000, "the vocabulary's size cap (most frequent words kept)", check=COUNT),
    "pretrained_vectors": Option("", "GloVe / word2vec text file that becomes the word table"),
    "pretrain_vectors": Option(False, "train skip-gram vectors on the training split's text first (cached)"),
    "pretrain": {
        "dim": Option(200, "skip-gram width (the model's embed_dim becomes this)", check=COUNT),
        "window": Option(5, "skip-gram context window", check=COUNT),
        "epochs": Option(5, "skip-gram epochs", check=COUNT),
        "negative": Option(5, "negative samples", check=COUNT),
        "min_count": Option(2, "words seen fewer times get no vector (their rows start random)", check=COUNT),
        "sample": Option(1e-3, "down-sampling of frequent words", check=NON_NEGATIVE),
        "seed": Option(0, "skip-gram seed"),
        "workers": Option(2, "gensim threads (the vectors then vary a little between runs)", check=COUNT),
        "cache_dir": Option("", "where vectors are cached; '' = beside the data, else ~/.cache/jaxreviews/vectors",
                            affects_results=False),
    },
    "vector_processing": Option("all_but_the_top", "what pretrained vectors go through first (all_but_the_top: "
                                "remove the mean and the top principal directions)", choices=VECTOR_PROCESSING),
    "layout": Option("auto", "batches: packed rows with segment ids, or padded [B, S, W] / [B, T] buckets; auto = "
                     "packed for text models", choices=LAYOUTS),
    "batch_parts": Option(0, "packed: the parts a global batch is packed in; 0 = one per process", check=NON_NEGATIVE),
    "num_buckets": Option(6, "padded layout: batch shapes (one program each)", check=COUNT),
    "max_sentences": Option(32, "sentences kept of a review (HAN)", check=COUNT),
    "max_words": Option(64, "words kept of a sentence (HAN)", check=COUNT),
    "max_tokens": Option(512, "tokens kept of a review (flat models)", check=COUNT),
    "bucket_multiple": Option(4, "batch dimensions are rounded up to multiples of this", check=COUNT),
    "wrap_sentences": Option(0, "> 0: sentences longer than this continue on a new row (less padding)",
                             check=NON_NEGATIVE),
    "prepared_dir": Option("", "name=prepared: a directory of tools/prepare_data.py, streamed (its tokens stay on disk)"),
    "streaming": Option(False, "prepare the files (data.path / train / valid / test) into data.cache_dir once and "
                        "stream them, whatever their size", affects_results=False),
    "stream_above": Option(1000000, "files of more reviews (lines) than this are streamed as data.streaming; "
                           "0 = only when data.streaming", check=NON_NEGATIVE, affects_results=False),
    "cache_dir": Option("", "where streamed files are prepared; '' = ~/.cache/jaxreviews/prepared",
                        affects_results=False),
    "workers": Option(-1, "streamed data: Grain worker processes that build batches; -1 = auto: 0 on a CPU "
                      "backend (the model uses the cores), else the cores this process may use; 0 = in the "
                      "training process", check=at_least(-1), affects_results=False),
    "plan_window": Option(262144, "packed batches are planned (balanced) over windows of this many reviews: an epoch "
                          "of a larger split is shuffled and planned window by window", check=COUNT),
}

OPTIMIZER = {
    "name": Option("adam", "the optimiser", choices=OPTIMIZERS),
    "learning_rate": Option(ByModel(1e-3, mf=2e-2, fasttext=6e-3), "peak learning rate", check=greater_than(0)),
    "scale_with_batch": Option(False, "linear scaling: learning_rate x batch_size / base_batch_size"),
    "base_batch_size": Option(32, "the batch size learning_rate is given for (scale_with_batch)", check=COUNT),
    "b1": Option(0.9, "Adam's beta1", check=between(0.0, 1.0, high_open=True)),
    "b2": Option(0.999, "Adam's beta2", check=between(0.0, 1.0, high_open=True)),
    "eps": Option(1e-8, "Adam's epsilon", check=POSITIVE),
    "momentum": Option(0.9, "sgd / rmsprop momentum", check=between(0.0, 1.0, high_open=True)),
    "nesterov": Option(False, "Nesterov momentum (sgd)"),
    "weight_decay": Option(0.0, "decoupled (AdamW-style) weight decay, every optimiser", check=NON_NEGATIVE),
    "weight_decay_on": Option("", "regex over parameter paths the decay applies to; '' = all"),
    "embedding_weight_decay": Option(ByModel(0.0, han=1.0, han_upa=1.0),
                                     "decoupled decay of the word table alone, on top of weight_decay",
                                     check=NON_NEGATIVE),
    "embedding_decay_to": Option("zero", "what the word table's decay pulls towards: zero, or its initial values "
                                 "(L2-SP)", choices=DECAY_TARGETS),
    "l2": Option(0.0, "L2 penalty added to the loss (kernels and embeddings)", check=NON_NEGATIVE),
    "l1": Option(0.0, "L1 penalty added to the loss", check=NON_NEGATIVE),
    "clip_norm": Option(0.0, "global-norm gradient clipping; 0 = off", check=NON_NEGATIVE),
    "accumulation_steps": Option(1, "micro-batches per update (gradient accumulation)", check=COUNT),
    "sparse_tables": Option(False, "update the embedding tables (words, users, products) only in the rows a step "
                            "looks up (lazy Adam: a row's moments and decay advance when it is looked up): a step "
                            "costs O(rows looked up), not O(table); adam / adamw"),
    "freeze": Option("", "regex over parameter paths kept fixed, e.g. word_embedding"),
    "unfreeze_epoch": Option(-1, "epoch at which the frozen group starts training; -1 = never", check=at_least(-1)),
    "schedule": {
        "name": Option("constant", "learning rate schedule", choices=SCHEDULES),
        "warmup_epochs": Option(0.0, "linear warm-up (warmup_cosine)", check=NON_NEGATIVE),
        "decay_rate": Option(0.5, "exponential: factor per decay_epochs; step: factor each time", check=POSITIVE),
        "decay_epochs": Option(1.0, "epochs per decay (exponential, step)", check=POSITIVE),
        "end_factor": Option(0.01, "warmup_cosine: final / peak learning rate", check=NON_NEGATIVE),
        "cycle_epochs": Option(2.0, "sgdr: length of the first cycle", check=POSITIVE),
        "cycle_mult": Option(1, "sgdr: each cycle this many times longer", check=COUNT),
    },
}

TRAIN = {
    "batch_size": Option(ByModel(32, mf=8192, fasttext=256), "the global batch, split over processes and devices",
                         check=COUNT),
    "epochs": Option(ByModel(5, mf=60), "epochs to train; a finished or stopped run continues to a larger value",
                     check=COUNT, resumable=True),
    "max_steps": Option(0, "total training steps; when set, training ends at this step if train.epochs has not "
                        "ended it before (schedules span these steps); 0 = train.epochs decides", check=NON_NEGATIVE,
                        resumable=True),
    "eval_every_steps": Option(0, "validate every N steps; 0 = at the end of every epoch", check=NON_NEGATIVE),
    "early_stopping_metric": Option(ByModel("accuracy", mf="rmse"),
                                    "the validation metric that picks the best step and stops early",
                                    choices=METRICS),
    "patience": Option(ByModel(2, mf=4), "evaluations without improvement before stopping; 0 = never",
                       check=NON_NEGATIVE, resumable=True),
    "snapshots": Option(0, "> 1: a snapshot ensemble of this many cosine cycles", check=NON_NEGATIVE),
    "checkpoint_every_steps": _no_effect(200, "save the latest checkpoint every N steps (and at each validation)",
                                         check=NON_NEGATIVE),
    "keep_checkpoints": _no_effect(2, "latest checkpoints kept", check=COUNT),
    "async_checkpoints": _no_effect("auto", "background: orbax copies the state to the host and writes the files "
                                    "while the run trains (safe with the step's donated buffers; a failed write "
                                    "is reported at the next save); blocking: each save finishes before training "
                                    "goes on; auto = background on accelerators, blocking on CPU (where the "
                                    "writes take the training's cores)", choices=("auto", "background", "blocking")),
    "log_every_steps": _no_effect(50, "write the training record (with gradient norms) every N steps",
                                  check=NON_NEGATIVE),
    "prefetch": _no_effect(2, "batches prepared ahead on a background thread", check=NON_NEGATIVE),
    "steps_per_transfer": _no_effect(0, "training batches moved to the device at once, each step picking its "
                                     "own inside the program (one batch shape only); 0 = auto: 1 on CPU, "
                                     "16 on accelerators", check=NON_NEGATIVE),
    "tensorboard": _no_effect(True, "write TensorBoard scalars beside metrics.jsonl"),
    "preemption_check_every_steps": _no_effect(10, "several processes: how often they agree on a SIGTERM",
                                               check=COUNT),
}

POPULATION = {
    **{name: Option((), f"one {name} per member (num_seeds values); () = the config's value for every member",
                    check=all_of(NON_NEGATIVE if where == "optimizer" else RATE))
       for name, where in POPULATION_PARAMETERS.items()},
    **{f"{name}_range": Option((), f"(low, high): {name} spread over the members (spacing)", check=RANGE)
       for name in POPULATION_PARAMETERS},
    "spacing": Option("grid", "how a range is spread: grid (evenly; log scale for rates) or random (drawn with the "
                      "run's seed)", choices=SPACINGS),
}

SEARCH = {
    "space": Option("", "the search space: a JSON file or JSON text; '' = the model's default space"),
    "metric": Option("", "the validation metric a trial is scored by; '' = train.early_stopping_metric",
                     choices=("",) + METRICS),
    "method": Option("tpe", "grid, random, tpe (Bayesian), gp (Gaussian process; needs torch), cmaes",
                     choices=SEARCH_METHODS),
    "trials": Option(8, "trials a sweep command adds to the study (a grid stops when complete)", check=COUNT),
    "pruner": Option("median", "stops bad trials early: median, halving (successive halving), hyperband, none",
                     choices=PRUNERS),
    "startup_trials": Option(4, "trials before TPE / GP model the history and the pruner prunes", check=NON_NEGATIVE),
    "warmup_evaluations": Option(1, "evaluations of a trial before it may be pruned", check=NON_NEGATIVE),
    "grid_points": Option(3, "points of a float range in a grid", check=COUNT),
    "seed": Option(0, "the samplers' seed"),
    "batch_trials": Option(1, "trials asked at a time; those of one shape train as one population", check=COUNT),
    "seeds_per_trial": Option(1, "seeds a trial is scored over (members of one program; the std is kept)",
                              check=COUNT),
    "folds": Option(0, "K-fold cross-validation of each trial (0 = off)",
                    check=Check(lambda v: v == 0 or v >= 2, "must be 0 (off) or >= 2")),
    "memory_budget": Option("", "bytes a trial's train step may need (8GB, 512MiB); '' = the device's memory"),
    "storage": _no_effect("", "Optuna storage URL shared by many workers; '' = sqlite in the sweep's folder"),
    "study": _no_effect("", "the study's name in the storage; '' = sweep"),
    "next_space": _no_effect("", "write the proposed next search space (JSON) to this file"),
}

# A sweep's options change which runs it makes, not what one run computes.
SEARCH = {name: dataclasses.replace(option, affects_results=False) for name, option in SEARCH.items()}

COMPILATION = {
    "cache_dir": _no_effect("auto", "JAX's persistent compilation cache; auto = $JAX_COMPILATION_CACHE_DIR or "
                            "~/.cache/jaxreviews/jax-cache; '' = off"),
    "cache_min_compile_seconds": _no_effect(0.0, "programs that compiled faster are not cached", check=NON_NEGATIVE),
    "cache_max_bytes": _no_effect(2 * 2 ** 30, "the cache's size cap (least recently used programs go first); "
                                  "-1 = no cap (use one setting per directory)", check=at_least(-1)),
    "autotune_level": _no_effect(-1, "GPU: how hard XLA autotunes each kernel (--xla_gpu_autotune_level 0-4; "
                                 "lower compiles faster, may step slower); -1 = XLA's default. Set by the "
                                 "commands before the first device use", check=between(-1, 4)),
    "command_buffers": _no_effect("default", "GPU: what XLA records into CUDA graphs (--xla_gpu_enable_command_buffer): "
                                  "default = XLA's choice, loops = that plus while loops and conditionals (a "
                                  "scan's steps without a launch each from the host), off = none. Set by the "
                                  "commands before the first device use", choices=("default", "loops", "off")),
}

MESH = {
    "members": _no_effect(0, "devices on the members axis; 0 = as many as split members and batch evenly",
                          check=NON_NEGATIVE),
    "model": _no_effect(1, "devices on the model axis, which splits the embedding tables by rows", check=COUNT),
}

OPTIONS = {
    "seed": Option(0, "the run's seed: member i initialises and draws dropout from seed + i"),
    "num_seeds": Option(1, "members trained in one program (seeds seed..seed+K-1); 1 = one model", check=COUNT),
    "member_seeds": Option((), "explicit member seeds (num_seeds of them); () = seed..seed+num_seeds-1",
                           check=INTEGERS),
    "member_data_order": Option(False, "each member its own training order (else the run seed's, shared)"),
    "member_execution": Option("auto", "how members run in the program: vmap (batched), map (one after another), "
                               "auto (map on CPU when a device holds several)", choices=MEMBER_EXECUTIONS),
    "distributed": _no_effect("auto", "join a multi-process job: auto (when the environment names one), on, off",
                              choices=DISTRIBUTED),
    "compilation": COMPILATION,
    "data": DATA,
    "model": MODEL,
    "optimizer": OPTIMIZER,
    "train": TRAIN,
    "population": POPULATION,
    "mesh": MESH,
    "search": SEARCH,
}
