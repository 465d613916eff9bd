"""Transformer encoders (`encoder.kind=transformer`, jaxreviews/models/transformer.py): pre-norm
blocks of masked self-attention with learned positions, block-diagonal over the packed rows.

    python -m experiments.train --config=experiments/configs/transformer.py                 # flat
    python -m experiments.train --config=experiments/configs/transformer.py:han_upa         # both HAN levels
    python -m experiments.train --config=experiments/configs/transformer.py:han_upa,tiny --workdir=/tmp/t

Variants (`:name`, comma-separated, then base.py's own: tiny, amazon_beauty, yelp13, ...):
  flat (default)   the `rnn` model: a 2-layer transformer over each review's tokens (packed token
                   rows), attention pooling, then the head
  han | han_upa    HAN / HAN+UPA (as han_upa.py: concat and rating biases) with a 1-layer
                   transformer at the word level and at the sentence level

Width = hidden_size x 2 (`encoder.model_dim=0`), as the BiLSTM it replaces, 4 heads, MLP 4 x width,
residual dropout 0.1; Adam 1e-3 with one warm-up epoch and a cosine decay (attention trains
badly at a full learning rate from the first step). Any option is a flag, e.g.
`--config.model.encoder.positions=sinusoidal --config.model.encoder.num_layers=4`.
"""
from experiments.configs import base

MODELS = {"flat": "rnn", "han": "han", "han_upa": "han_upa"}


def get_config(arg: str | None = None):
    parts = [part for part in (arg or "").split(",") if part]
    chosen = [part for part in parts if part in MODELS] or ["flat"]
    if len(chosen) > 1:
        raise ValueError(f"choose one of {tuple(MODELS)}, got {chosen}")
    rest = [part for part in parts if part not in MODELS]
    return base.make_config(MODELS[chosen[0]], ",".join(["transformer", *rest]))
