"""The default: HAN with user and product attention (NSC+UPA), plus the two options that model a
user's leniency and a product's quality directly: [user; product] concatenated to the document
vector and per-user / per-product rating biases.

    python -m experiments.train                                   # this config, synthetic corpus
    python -m experiments.train --config=experiments/configs/han_upa.py:tiny --workdir=/tmp/tiny
    python -m experiments.train --config=experiments/configs/han_upa.py:amazon_beauty

On the default synthetic corpus it reaches about 0.61 test accuracy / 0.76 RMSE on 2 CPU cores
(docs/measured.md has the measured figures, time and command) (HAN alone: 0.55 / 0.94; majority class 0.34). Attention-only UPA, as in Chen et al.
(2016): --config.model.user_product.concat_to_document=False --config.model.user_product.rating_biases=False.
"""
from experiments.configs import base


def get_config(arg: str | None = None):
    return base.make_config("han_upa", arg)
