"""Matrix factorisation with biases (collaborative filtering): user and product ids only.

    python -m experiments.train --config=experiments/configs/mf.py
    python -m experiments.train --config=experiments/configs/mf.py --config.data.name=files \
        --config.data.format=ratings --config.data.path=ml-100k/u.data

A regression head, Adam at 1e-2 (embedding tables learn slowly at 1e-3), weight decay on the
factors, early stopping on validation RMSE.
"""
from experiments.configs import base


def get_config(arg: str | None = None):
    config = base.make_config("mf", arg)
    config.optimizer.learning_rate = 1e-2
    config.optimizer.name = "adamw"
    config.optimizer.weight_decay = 1e-4
    config.train.epochs = 30
    config.train.patience = 4
    config.train.early_stopping_metric = "rmse"
    if arg and "tiny" in arg:
        config.train.epochs = 6
    return config
