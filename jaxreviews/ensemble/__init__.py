"""Ensembles: K members trained in one compiled program (vmapped seeds), populations of
hyperparameters, snapshot ensembles, and their evaluation (mean ± std over members beside the
ensemble). See `ensemble.loop` for the run, `ensemble.members` for the pieces."""
from jaxreviews.ensemble.loop import is_ensemble, train_and_evaluate
from jaxreviews.ensemble.members import combine_outputs

__all__ = ["combine_outputs", "is_ensemble", "train_and_evaluate"]
