"""The `bilstm` model. Run: python -m experiments.train --config=experiments/configs/bilstm.py[:tiny] --workdir=runs/bilstm"""
from experiments.configs import base


def get_config(arg: str | None = None):
    return base.make_config("bilstm", arg)
