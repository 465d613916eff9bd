"""Per-member early stopping: each member keeps its own best parameters by the validation metric.

The members train on together (one program); a member whose validation metric stopped improving
for `patience` evaluations is marked stopped and its best parameters stay as they were. The run
ends early when every member has stopped. The bookkeeping is one `EarlyStopping` state per member,
saved in every checkpoint, so a resumed ensemble continues with the same bests and counts.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from jaxreviews.train.early_stopping import EarlyStopping


@dataclasses.dataclass
class MemberStopping:
    metric: str
    patience: int
    members: list[EarlyStopping]
    best_checkpoint_step: int = -1  # the step of the saved tree of every member's best parameters

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
        return {"members": [member.state_dict() for member in self.members],
                "best_checkpoint_step": self.best_checkpoint_step}

    def load_state_dict(self, state: dict) -> MemberStopping:
        saved = state["members"]
        if len(saved) != len(self.members):
            raise ValueError(f"the checkpoint holds {len(saved)} members, the config {len(self.members)}")
        return dataclasses.replace(self, members=[m.load_state_dict(s) for m, s in zip(self.members, saved)],
                                   best_checkpoint_step=int(state.get("best_checkpoint_step", -1)))
