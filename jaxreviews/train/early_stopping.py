"""Early stopping on a validation metric: what a run remembers between evaluations.

`EarlyStopping.update(value, step)` after each evaluation says whether the value is the best so
far; after `patience` evaluations without improvement it sets `stopped_early`. A run's members each
keep one (`MemberStopping`): a member whose metric stopped improving is marked stopped and its best
parameters stay as they were, while the others train on in the same program; the run ends early
when every member has stopped. The state is plain JSON (`state_dict`), saved in every checkpoint,
so a resumed run continues with the same bests and counts; a run resumed with another patience
re-decides who has stopped.
"""
from __future__ import annotations

import dataclasses

import numpy as np

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
        self.stopped_early = self._out_of_patience()
        return improved

    def _out_of_patience(self) -> bool:
        return bool(self.patience) and self.evaluations_without_improvement >= self.patience

    def state_dict(self) -> dict:
        """The JSON a checkpoint keeps."""
        return {"best_value": self.best_value, "best_step": self.best_step,
                "evaluations_without_improvement": self.evaluations_without_improvement,
                "stopped_early": self.stopped_early}

    def load_state_dict(self, state: dict) -> EarlyStopping:
        loaded = dataclasses.replace(self, **{k: state[k] for k in self.state_dict() if k in state})
        if not loaded.stopped_early or state.get("stopped_by") != "caller":
            loaded.stopped_early = loaded._out_of_patience()  # the patience may have changed
        return loaded


@dataclasses.dataclass
class MemberStopping:
    """One `EarlyStopping` per member, and the step of the checkpoint holding every member's best."""

    metric: str
    patience: int
    members: list[EarlyStopping]
    best_checkpoint_step: int = -1
    stopped_by_caller: set[int] = dataclasses.field(default_factory=set)  # members stopped by `stop`

    @classmethod
    def create(cls, metric: str, patience: int, num_members: int) -> MemberStopping:
        return cls(metric, patience, [EarlyStopping(metric=metric, patience=patience) for _ in range(num_members)])

    def update(self, values: list[float], step: int) -> np.ndarray:
        """Records each member's validation value; a bool [K] of the members that improved (a
        member already stopped does not: its best stays)."""
        improved = np.zeros(len(self.members), bool)
        for i, (member, value) in enumerate(zip(self.members, values)):
            if not member.stopped_early:
                improved[i] = member.update(value, step)
        return improved

    def stop(self, member: int) -> None:
        """Stops a member whatever its metric (a pruned or failed trial's member)."""
        self.members[member].stopped_early = True
        self.stopped_by_caller.add(int(member))

    @property
    def stopped_early(self) -> bool:
        return all(member.stopped_early for member in self.members)

    @property
    def stopped(self) -> list[bool]:
        return [member.stopped_early for member in self.members]

    @property
    def best_steps(self) -> list[int]:
        return [member.best_step for member in self.members]

    @property
    def best_values(self) -> list[float | None]:
        return [member.best_value for member in self.members]

    @property
    def best_step(self) -> int:
        """The step of the checkpoint that holds every member's best parameters."""
        return self.best_checkpoint_step

    def state_dict(self) -> dict:
        return {"members": [{**member.state_dict(), **({"stopped_by": "caller"} if i in self.stopped_by_caller
                                                       else {})}
                            for i, member in enumerate(self.members)],
                "best_checkpoint_step": self.best_checkpoint_step}

    def load_state_dict(self, state: dict) -> MemberStopping:
        saved = state["members"]
        if len(saved) != len(self.members):
            raise ValueError(f"the checkpoint holds {len(saved)} members, the config {len(self.members)}")
        return dataclasses.replace(
            self, members=[m.load_state_dict(s) for m, s in zip(self.members, saved)],
            best_checkpoint_step=int(state.get("best_checkpoint_step", -1)),
            stopped_by_caller={i for i, s in enumerate(saved) if s.get("stopped_by") == "caller"})
