"""What every experiment config shares: a config file is `get_config(arg)` returning the option
reference's defaults for its model (jaxreviews/options, docs/options.md) with the presets named
in `arg` (after a colon: `--config=experiments/configs/han_upa.py:tiny,musical_instruments`):

  tiny            seconds on a small synthetic corpus, every part of a real run exercised
  amazon_beauty   ../shared/data/amazon-beauty/All_Beauty_5.json (JSON lines), duplicates dropped
  musical_instruments   ../shared/data/amazon-musical-instruments (JSON lines, every user and
                  product with >= 5 reviews), the literature's sizes
  yelp13 | yelp14 | imdb   the TFDS builders, prepared from the literature files in data.manual_dir
  half_stars, svdpp, transformer   see docs/options.md
"""
from __future__ import annotations

import ml_collections

from jaxreviews import options


def make_config(model_name: str, arg: str | None = None) -> ml_collections.ConfigDict:
    return options.default_config(model_name, arg or "")
