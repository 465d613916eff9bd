"""Orbax checkpoints of a run: the latest N for resume, and the best by the validation metric.

A checkpoint holds the train state and the loop's bookkeeping (early-stopping counters, the best
value so far) as JSON. The data position needs no saving: it is a function of the step.
"""
from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp


class RunCheckpoints:
    def __init__(self, workdir: str, *, keep: int = 2):
        directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
        options = dict(create=True, enable_async_checkpointing=False, cleanup_tmp_directories=True)
        self.latest = ocp.CheckpointManager(
            os.path.join(directory, "latest"), item_names=("state", "meta"),
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, **options))
        self.best = ocp.CheckpointManager(
            os.path.join(directory, "best"), item_names=("state", "meta"),
            options=ocp.CheckpointManagerOptions(max_to_keep=1, **options))

    @staticmethod
    def _save(manager, step: int, state, meta: dict) -> None:
        if step in manager.all_steps():  # a resumed run passing the same point again
            return
        manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                   meta=ocp.args.JsonSave(meta)))
        manager.wait_until_finished()

    def save_latest(self, step: int, state, meta: dict) -> None:
        self._save(self.latest, step, state, meta)

    def save_best(self, step: int, state, meta: dict) -> None:
        self._save(self.best, step, state, meta)

    @staticmethod
    def _restore(manager, target, step=None):
        step = manager.latest_step() if step is None else step
        if step is None:
            return None
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        restored = manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        return restored.state, restored.meta

    def restore_latest(self, target):
        """(state, meta) of the latest checkpoint, or None when the run has none."""
        return self._restore(self.latest, target)

    def restore_best(self, target):
        return self._restore(self.best, target)

    def close(self) -> None:
        self.latest.close()
        self.best.close()
