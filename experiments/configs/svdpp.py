"""SVD++ (Koren 2008): matrix factorisation whose user vector also sums the products the user rated.

    python -m experiments.train --config=experiments/configs/svdpp.py --config.data.name=files \
        --config.data.format=ratings --config.data.path=ml-100k/u.data
"""
from experiments.configs import mf


def get_config(arg: str | None = None):
    config = mf.get_config(arg)
    config.model.implicit_feedback = True
    return config
