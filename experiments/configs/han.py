"""The `han` model. Run: python -m experiments.train --config=experiments/configs/han.py[:tiny] --workdir=runs/han"""
from experiments.configs import base


def get_config(arg: str | None = None):
    return base.make_config("han", arg)
