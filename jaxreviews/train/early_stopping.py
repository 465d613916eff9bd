"""Early stopping on a validation metric: what a run remembers between evaluations.

`EarlyStopping.update(value, step)` after each evaluation says whether the value is the best so
far; after `patience` evaluations without improvement it sets `stopped_early`. Its state is plain
JSON (`state_dict`), saved in every checkpoint, so a resumed run continues with the same best value
and the same count (an ensemble keeps one per member).
"""
from __future__ import annotations

import dataclasses

HIGHER_IS_BETTER = {"accuracy": True, "macro_f1": True, "rmse": False, "mae": False, "loss": False, "nll": False}


@dataclasses.dataclass
class EarlyStopping:
    metric: str = "accuracy"
    patience: int = 3  # evaluations without improvement before stopping; 0 = never stop early
    best_value: float | None = None
    best_step: int = -1
    evaluations_without_improvement: int = 0
    stopped_early: bool = False

    def __post_init__(self):
        if self.metric not in HIGHER_IS_BETTER:
            raise ValueError(f"train.early_stopping_metric={self.metric!r}: choose one of {sorted(HIGHER_IS_BETTER)}")

    @property
    def higher_is_better(self) -> bool:
        return HIGHER_IS_BETTER[self.metric]

    def is_better(self, value: float) -> bool:
        if self.best_value is None:
            return True
        return value > self.best_value if self.higher_is_better else value < self.best_value

    def update(self, value: float, step: int) -> bool:
        """Records an evaluation's `value` at `step`; True when it is the best so far."""
        improved = self.is_better(value)
        if improved:
            self.best_value, self.best_step, self.evaluations_without_improvement = float(value), int(step), 0
        else:
            self.evaluations_without_improvement += 1
        self.stopped_early = bool(self.patience) and self.evaluations_without_improvement >= self.patience
        return improved

    def state_dict(self) -> dict:
        """The JSON a checkpoint keeps (key "bookkeeping" of its meta)."""
        return {"best_value": self.best_value, "best_step": self.best_step,
                "evaluations_without_improvement": self.evaluations_without_improvement,
                "stopped_early": self.stopped_early}

    def load_state_dict(self, state: dict) -> EarlyStopping:
        return dataclasses.replace(self, **{k: state[k] for k in self.state_dict() if k in state})
