"""The `han_upa` model. Run: python -m experiments.train --config=experiments/configs/han_upa.py[:tiny] --workdir=runs/han_upa"""
from experiments.configs import base


def get_config(arg: str | None = None):
    return base.make_config("han_upa", arg)
