"""The `fasttext` model (Joulin et al. 2017): the average of word and hashed word-bigram embeddings,
[user; product] embeddings and rating biases, a linear head. The fast baseline among the neural
models, and a cheap ensemble member.

    python -m experiments.train --config=experiments/configs/fasttext.py --workdir=runs/fasttext
    python -m experiments.train --config=experiments/configs/fasttext.py:musical_instruments --workdir=runs/ft-mi
    python -m experiments.train --config=experiments/configs/fasttext.py:tiny --workdir=/tmp/ft-tiny

Text only, as the paper's: --config.model.user_product.concat_to_document=False
--config.model.user_product.rating_biases=False. A hidden layer: --config.model.hidden_dim=64.
"""
from experiments.configs import base


def get_config(arg: str | None = None):
    return base.make_config("fasttext", arg)
