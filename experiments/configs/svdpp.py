"""SVD++ (Koren 2008): matrix factorisation whose user vector also sums the products the user
rated in training, |N(u)|^-1/2 * sum_{j in N(u)} y_j (models/mf.py, `implicit_feedback`).

    python -m experiments.train --config=experiments/configs/svdpp.py --config.data.name=files \
        --config.data.format=ratings --config.data.path=ml-100k/u.data
    python -m experiments.train --config=experiments/configs/svdpp.py:musical_instruments
    python tools/bench_cf.py --synthetic          # beside scikit-surprise's SVD and SVD++

Everything as experiments/configs/mf.py (same variants; y_i shrinks with `factor_shrinkage` as
the other factor rows do), plus the per-rating L2 on the y_j of N(u), `l2_implicit` 0.03: chosen
on validation RMSE over 0, 0.03, 0.1 and 0.3 on development splits carved out of the training
files (0.03 was clearly best on the synthetic table, 0.8024 against 0.8090 for 0.3; the four
were within 0.003 of each other on Musical Instruments). A step sums y over every training pair,
so its cost grows with the training table, not the batch: keep batches large.
Test RMSE (tools/bench_cf.py, split seed 0): synthetic 0.8010 (scikit-surprise's SVD++ 0.8237),
Musical Instruments 0.8661 (SVD++ 0.8670; on split seeds 1-3: 0.8518 / 0.8483, 0.8582 / 0.8616,
0.8659 / 0.8712). On Musical Instruments the plain `mf` config is as good or better.
"""
from experiments.configs import base


def get_config(arg: str | None = None):
    return base.make_config("mf", ",".join(["svdpp"] + [a for a in (arg or "").split(",") if a]))
