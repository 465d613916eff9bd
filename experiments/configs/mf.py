"""Matrix factorisation with biases (collaborative filtering): user and product ids only.

    python -m experiments.train --config=experiments/configs/mf.py --config.data.name=files \
        --config.data.format=ratings --config.data.path=ml-100k/u.data
    python -m experiments.train --config=experiments/configs/mf.py:musical_instruments
    python tools/bench_cf.py --synthetic          # beside scikit-surprise's SVD and SVD++

The defaults were chosen on VALIDATION RMSE (10% held out of train) of two tables, the synthetic
table of tools/bench_cf.py (100k ratings, Zipf-skewed activity) and the Musical Instruments 5-core
ratings (10k ratings, 1,429 users, 900 products, 68% five stars), never on their test split:
- Adam 2e-2, batch 8192, up to 60 epochs, early stopping on RMSE (patience 4). Batches of
  1024-4096 (lr 1e-2 or 2e-2) reached RMSE within 0.007 of it in more time. Plain SGD (what
  surprise runs, one rating at a time) diverged at the minibatch learning rates that match
  surprise's steps (2.5-10 for batch 1024) and was still at 0.898 after 40 epochs at 1.0;
  Adagrad 0.03-0.3 stayed above 0.899 (both measured with reg 0.02, on an earlier synthetic table).
- 50 factors: 20 and 100 measured the same.
- Regularisation (models/mf.py): per rating l2_factors 0.1 (surprise's reg, 0.02, overfits by
  epoch 3 here); per row bias_shrinkage 10 and factor_shrinkage 3, which shrink rare users and
  products (Koren's damped baseline; 30 on the factors collapses them to 0); no per-rating L2 on
  the biases (0.005 and 0.05 measured the same).
- 5% of a training file held out for validation (`data.valid_fraction`, when there is no
  validation file), not 10%: a user of a sparse table needs every rating. Chosen on development
  splits carved out of the training files (3 of Musical Instruments, 1 synthetic): 5% gave
  0.853 / 0.817 RMSE there, 10% 0.854 / 0.828.
- clip_straight_through: the prediction clipped to the rating range, as surprise's, while an
  out-of-range prediction still learns from its error (better than sigmoid on the 5-star-heavy
  Amazon table, the same on the synthetic one).
Test RMSE with these (tools/bench_cf.py, split seed 0): synthetic 0.8085 (scikit-surprise's SVD
0.8492), Musical Instruments 0.8610 (SVD 0.8648); lower than SVD's on split seeds 1-3 too.

Presets (`:name`, comma-separated): musical_instruments (the Amazon ratings, 1..5), half_stars
(ratings from 0.5 to 5 in steps of 0.5, MovieLens ratings.csv), tiny; see docs/options.md.
"""
from experiments.configs import base


def get_config(arg: str | None = None):
    """mf's defaults are the tuned values above (jaxreviews/options/reference.py)."""
    return base.make_config("mf", arg)
