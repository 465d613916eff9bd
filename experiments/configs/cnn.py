"""The `cnn` model. Run: python -m experiments.train --config=experiments/configs/cnn.py[:tiny] --workdir=runs/cnn"""
from experiments.configs import base


def get_config(arg: str | None = None):
    return base.make_config("cnn", arg)
