"""Ensembles. K members are trained in one compiled program by the one training loop
(`jaxreviews.train.loop`, `--config.num_seeds=K`; one model is a population of one), and
`jaxreviews.load_run` predicts with a run's members as their ensemble. This package holds what
combines members: `combine_outputs` (the mean of the members' class probabilities and ratings)
and `mean_and_std` (the members' figures as mean ± std).
"""
from jaxreviews.models.heads import combine_outputs
from jaxreviews.train.members import mean_and_std

__all__ = ["combine_outputs", "mean_and_std"]
