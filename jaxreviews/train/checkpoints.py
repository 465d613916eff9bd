"""Orbax checkpoints of a run: the latest N for resume, and the best by the validation metric.

A checkpoint holds the train state and the loop's bookkeeping (early-stopping counters, the best
value so far) as JSON. Snapshot ensembles keep every cycle's end in a third manager, `snapshots`.
The data position needs no saving: it is a function of the step. The best checkpoint is read back
by the step the bookkeeping recorded, never "whichever is newest".

With `background=True` (`train.async_checkpoints`: a run's default on accelerators) saves run in
the background: orbax copies the state's arrays to the host before `save` returns, so the train step may donate (and
overwrite) those buffers at once, and writes the files while training goes on; one save per
manager is in flight at a time (one in all in a multi-process job, whose saves synchronise the
processes through barriers that two saves in flight would share). A write that failed is raised
at the next save, restore or `close` as a one-line error naming the directory (a full disk as
ENOSPC), never lost.

A latest checkpoint that cannot be read (a truncated file, a missing manifest: a disk that filled
up, a copy cut short) is set aside in `checkpoints/unreadable/` (never deleted) with a warning
naming it, and the run resumes from the newest one that reads.
"""
from __future__ import annotations

import errno
import logging
import os
import shutil
import time

import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


def _collect_quietly() -> None:
    """Collects garbage with Python's unraisable-exception hook silenced for the call only."""
    import gc
    import sys

    hook, sys.unraisablehook = sys.unraisablehook, lambda unraisable: None
    try:
        gc.collect()
    finally:
        sys.unraisablehook = hook


class CheckpointError(RuntimeError):
    """A checkpoint the run needs cannot be read."""


def _reason(error: BaseException) -> str:
    """The first line of an orbax / TensorStore error (theirs run to pages)."""
    text = str(error).strip().splitlines()
    first = (text[0] if text else type(error).__name__).split(" See full TensorStore details")[0]
    return first.split(" [tensorstore_spec")[0][:300]  # the spec is a page of JSON


def _bytes_on_disk(path: str) -> int:
    """Bytes the files under `path` occupy (allocated blocks: what a full disk runs out of)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                pass
    return total


def latest_steps(workdir: str) -> list[int]:
    """The steps of `workdir`'s latest checkpoints (read from the directory, without orbax)."""
    latest = os.path.join(workdir, "checkpoints", "latest")
    return [int(name) for name in os.listdir(latest) if name.isdigit()] if os.path.isdir(latest) else []


def has_checkpoints(workdir: str) -> bool:
    """Whether `workdir` holds a latest checkpoint."""
    return bool(latest_steps(workdir))


def _save_error(error: BaseException, directory: str) -> Exception:
    """A failed save as one line: a full disk as ENOSPC naming the directory (what the command
    line reports with the last complete checkpoint), anything else as a CheckpointError."""
    if getattr(error, "errno", None) == errno.ENOSPC or "No space left on device" in str(error):
        return OSError(errno.ENOSPC, "no space left on device while saving a checkpoint", directory)
    if isinstance(error, CheckpointError):
        return error
    return CheckpointError(f"saving a checkpoint in {directory} failed ({_reason(error)})")


class RunCheckpoints:
    def __init__(self, workdir: str, *, keep: int = 2, background: bool = False):
        directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
        options = dict(create=True, enable_async_checkpointing=background, cleanup_tmp_directories=True)

        def handlers():  # registered, so that a checkpoint's metadata can be read back
            return {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}

        self._directory = directory
        self.background = background
        self._saved_bytes = 0  # what a save takes on disk (`_check_space`)
        self._unmeasured = None  # (manager, step): the first save, measured once written
        self._latest_options = (handlers, ocp.CheckpointManagerOptions(max_to_keep=keep, **options))
        self.latest = self._latest_manager()
        self.best = ocp.CheckpointManager(
            os.path.join(directory, "best"), item_handlers=handlers(),
            # two: a run resumed from an earlier latest checkpoint (the newest did not read) needs the best
            # its bookkeeping recorded, which the best saved after it may have replaced
            options=ocp.CheckpointManagerOptions(max_to_keep=2, **options))
        self._snapshot_options = (os.path.join(directory, "snapshots"), handlers, options)
        self._snapshots = None

    def _latest_manager(self) -> ocp.CheckpointManager:
        handlers, options = self._latest_options
        return ocp.CheckpointManager(os.path.join(self._directory, "latest"), item_handlers=handlers(),
                                     options=options)

    @property
    def snapshots(self) -> ocp.CheckpointManager:
        """Every snapshot of a snapshot ensemble (none is deleted); made when first used."""
        if self._snapshots is None:
            path, handlers, options = self._snapshot_options
            self._snapshots = ocp.CheckpointManager(path, item_handlers=handlers(),
                                                    options=ocp.CheckpointManagerOptions(max_to_keep=None, **options))
        return self._snapshots

    def _save(self, manager, step: int, state, meta: dict) -> None:
        if jax.process_count() > 1:  # one save in flight per job: orbax's barriers of two would collide
            self.wait()
        else:
            self._finish(manager)
        if step in manager.all_steps():  # a resumed run passing the same point again
            return
        self._check_space(state)
        try:  # in the background: returns once the arrays are on the host
            manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                       meta=ocp.args.JsonSave(meta)))
        except Exception as error:
            raise _save_error(error, str(manager.directory)) from error
        if not self._saved_bytes and self._unmeasured is None:  # every save of a run holds the same arrays
            self._unmeasured = (manager, step)
        if not self.background:
            self._finish(manager)

    def _finish(self, manager) -> None:
        """Waits for `manager`'s save in flight; its failure as a one-line error."""
        try:
            manager.wait_until_finished()
        except Exception as error:
            raise _save_error(error, str(manager.directory)) from error
        if self._unmeasured is not None and self._unmeasured[0] is manager:
            _, step = self._unmeasured
            self._unmeasured = None
            self._saved_bytes = _bytes_on_disk(os.path.join(str(manager.directory), str(step)))

    def wait(self) -> None:
        """Waits for every save in flight (what a reader of the files needs first)."""
        for manager in self._managers():
            self._finish(manager)

    def _managers(self) -> list:
        return [self.latest, self.best] + ([self._snapshots] if self._snapshots is not None else [])

    def _check_space(self, state) -> None:
        """Refuses a save the disk cannot hold, before orbax writes a byte: a save that fills the
        disk fails inside orbax's and TensorStore's threads, which print their tracebacks. Needed:
        1.5x the last save on disk, or for the first, twice the arrays plus 64 KiB of metadata.
        One process only (the processes of a job must save together or not at all)."""
        if jax.process_count() > 1:
            return
        needed = 1.5 * self._saved_bytes or 2 * sum(x.nbytes for x in jax.tree.leaves(state)) + 2 ** 16
        free = shutil.disk_usage(self._directory).free
        if free < needed:
            raise OSError(errno.ENOSPC, f"about {needed / 2 ** 20:.1f} MiB needed for a checkpoint, "
                                        f"{free / 2 ** 20:.1f} MiB free", self._directory)

    def save_latest(self, step: int, state, meta: dict) -> None:
        self._save(self.latest, step, state, meta)

    def save_best(self, step: int, state, meta: dict) -> None:
        self._save(self.best, step, state, meta)

    def _restore(self, manager, target, step=None):
        """(state, meta) at `step` (default the newest). `target` None restores the saved tree
        onto this process's first device, whatever devices saved it (a run trained on 8 devices
        or a pod, loaded on a laptop). The caller has waited for `manager`'s save in flight."""
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
        self._finish(self.snapshots)
        return self._restore(self.snapshots, target, step)

    def restore_latest(self, target, *, set_aside: bool = True):
        """(state, meta) of the newest latest checkpoint that reads, or None when the run has none
        (see the module docstring for one that does not read; `set_aside=False` only skips it)."""
        self._finish(self.latest)
        for step in sorted(self.latest.all_steps(), reverse=True):
            try:
                return self._restore(self.latest, target, step)
            except Exception as error:  # orbax and TensorStore raise many kinds for a damaged file
                reason = _reason(error)
            _collect_quietly()  # the failed read's abandoned coroutines (freed with the error) would each print it
            if set_aside:
                self._set_aside(step, reason)
            else:
                log.warning("the checkpoint of step %d cannot be read (%s): using an earlier one", step, reason)
        return None

    def _set_aside(self, step: int, reason: str) -> None:
        """Moves the unreadable latest checkpoint `step` to checkpoints/unreadable/ (process 0)."""
        source = os.path.join(self._directory, "latest", str(step))
        target = os.path.join(self._directory, "unreadable", f"latest-{step}-{time.strftime('%Y%m%d-%H%M%S')}")
        if jax.process_index() == 0 and os.path.isdir(source):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.move(source, target)
        log.warning("the checkpoint of step %d cannot be read (%s): kept as %s; resuming from the newest one "
                    "that reads", step, reason, target)
        self.latest.close()
        self.latest = self._latest_manager()

    def restore_best(self, target, step: int):
        """(state, meta) of the best checkpoint the bookkeeping recorded at `step`."""
        self._finish(self.best)
        if step not in self.best.all_steps():
            raise FileNotFoundError(
                f"the best checkpoint of step {step} (recorded by the run's bookkeeping) is not in "
                f"{self.best.directory}; it holds steps {sorted(self.best.all_steps())}")
        try:
            return self._restore(self.best, target, step)
        except Exception as error:
            raise CheckpointError(f"the best checkpoint of step {step} in {self.best.directory} cannot be read "
                                  f"({_reason(error)}): the run's best parameters are lost; train again in another "
                                  "--workdir") from error

    def steps(self) -> dict[str, list[int]]:
        return {"latest": sorted(self.latest.all_steps()), "best": sorted(self.best.all_steps())}

    def close(self) -> None:
        """Waits for the saves in flight (raising a failed one's error after closing) and closes."""
        errors = []
        for manager in self._managers():
            try:
                self._finish(manager)
            except Exception as error:
                errors.append(error)
            manager.close()
        if errors:
            raise errors[0]
