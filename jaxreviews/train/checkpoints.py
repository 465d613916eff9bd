"""Orbax checkpoints of a run: the latest N for resume, and the best by the validation metric.

A checkpoint holds the train state and the loop's bookkeeping (early-stopping counters, the best
value so far) as JSON. Snapshot ensembles keep every cycle's end in a third manager, `snapshots`. The data position needs no saving: it is a function of the step. The best
checkpoint is read back by the step the bookkeeping recorded, never "whichever is newest".
"""
from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp


class RunCheckpoints:
    def __init__(self, workdir: str, *, keep: int = 2):
        directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
        options = dict(create=True, enable_async_checkpointing=False, cleanup_tmp_directories=True)

        def handlers():  # registered, so that a checkpoint's metadata can be read back
            return {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}

        self.latest = ocp.CheckpointManager(
            os.path.join(directory, "latest"), item_handlers=handlers(),
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, **options))
        self.best = ocp.CheckpointManager(
            os.path.join(directory, "best"), item_handlers=handlers(),
            options=ocp.CheckpointManagerOptions(max_to_keep=1, **options))
        self._snapshot_options = (os.path.join(directory, "snapshots"), handlers, options)
        self._snapshots = None

    @property
    def snapshots(self) -> ocp.CheckpointManager:
        """Every snapshot of a snapshot ensemble (none is deleted); made when first used."""
        if self._snapshots is None:
            path, handlers, options = self._snapshot_options
            self._snapshots = ocp.CheckpointManager(path, item_handlers=handlers(),
                                                    options=ocp.CheckpointManagerOptions(max_to_keep=None, **options))
        return self._snapshots

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
        """(state, meta) at `step` (default the newest). `target` None restores the saved tree
        onto this process's first device, whatever devices saved it (a run trained on 8 devices
        or a pod, loaded on a laptop)."""
        step = manager.latest_step() if step is None else step
        if step is None:
            return None
        if target is None:
            saved = manager.item_metadata(step)["state"]
            device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
            abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                                    getattr(saved, "tree", saved))
        else:
            abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        restored = manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        return restored.state, restored.meta

    def save_snapshot(self, step: int, state, meta: dict) -> None:
        self._save(self.snapshots, step, state, meta)

    def restore_snapshot(self, target, step: int):
        return self._restore(self.snapshots, target, step)

    def restore_latest(self, target):
        """(state, meta) of the latest checkpoint, or None when the run has none."""
        return self._restore(self.latest, target)

    def restore_best(self, target, step: int):
        """(state, meta) of the best checkpoint the bookkeeping recorded at `step`."""
        if step not in self.best.all_steps():
            raise FileNotFoundError(
                f"the best checkpoint of step {step} (recorded by the run's bookkeeping) is not in "
                f"{self.best.directory}; it holds steps {sorted(self.best.all_steps())}")
        return self._restore(self.best, target, step)

    def steps(self) -> dict[str, list[int]]:
        return {"latest": sorted(self.latest.all_steps()), "best": sorted(self.best.all_steps())}

    def close(self) -> None:
        self.latest.close()
        self.best.close()
        if self._snapshots is not None:
            self._snapshots.close()
