"""The `mf` model. Run: python -m experiments.train --config=experiments/configs/mf.py[:tiny] --workdir=runs/mf"""
from experiments.configs import base


def get_config(arg: str | None = None):
    return base.make_config("mf", arg)
