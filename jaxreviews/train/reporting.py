"""Where a run's numbers go: JSON lines and TensorBoard scalars (process 0 only), and a progress
line with docs/s and ETA (redrawn on a terminal the caller passes, else logged)."""
from __future__ import annotations

import json
import logging
import os
import time

import jax

log = logging.getLogger(__name__)


def _is_writer() -> bool:
    return jax.process_index() == 0


class MetricWriter:
    """`metrics.jsonl` (one JSON object a record) and TensorBoard event files, without TensorFlow.

    `resume_step`: a run resumed from the checkpoint of that step. The records of later steps,
    written before the run was stopped, and the test records of a finished run it continues, are
    dropped from metrics.jsonl and hidden from TensorBoard (its purge_step), since the resumed run
    writes them again: each step is in the logs once."""

    def __init__(self, workdir: str, *, tensorboard: bool = True, resume_step: int | None = None):
        self.enabled = _is_writer()
        self._file = self._tb = None
        if not self.enabled:
            return
        os.makedirs(workdir, exist_ok=True)
        path = os.path.join(workdir, "metrics.jsonl")
        if resume_step is not None and os.path.exists(path):
            _drop_records_after(path, resume_step)
        self._file = open(path, "a", encoding="utf-8")
        if tensorboard:
            from tensorboardX import SummaryWriter
            purge = None if resume_step is None else resume_step + 1
            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"), flush_secs=30, purge_step=purge)

    def write(self, kind: str, step: int, values: dict, *, scalars: bool = True) -> None:
        if not self.enabled:
            return
        record = {"kind": kind, "step": int(step), **{k: _plain(v) for k, v in values.items()}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None and scalars:
            for name, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._tb.add_scalar(f"{kind}/{name}", value, step)

    def close(self) -> None:
        """Closes the files. A final flush that fails (a full disk) is logged, not raised: the run's
        own error says what happened, and TensorBoard's writer is stopped so that neither its
        thread nor its exit hook tries again."""
        try:
            if self._file:
                self._file.close()
        except OSError as error:
            log.warning("metrics.jsonl: %s", error)
        if self._tb:
            try:
                self._tb.close()
            except OSError as error:
                log.warning("TensorBoard events: %s", error)
                for writer in self._tb.all_writers.values():  # tensorboardX has no public abort
                    events = writer.event_writer
                    if getattr(events, "_worker", None) is not None:
                        events._event_queue.put(events._worker._shutdown_signal)
                        events._worker.join(timeout=5)
                    events._closed = True
        self._file = self._tb = None


def _drop_records_after(path: str, step: int) -> None:
    """Rewrites metrics.jsonl without the records of steps after `step`, the test records (written
    again when the run finishes) and a torn last line."""
    kept = []
    with open(path, encoding="utf-8") as file:
        for line in file:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # the line a killed process was writing
                continue
            if int(record.get("step", 0)) <= step and record.get("kind") != "test":
                kept.append(line if line.endswith("\n") else line + "\n")
    temporary = path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as file:
        file.writelines(kept)
    os.replace(temporary, path)


def _plain(value):
    try:
        return value.item()
    except AttributeError:
        return value


class Progress:
    """One status line: epoch, step, loss, docs/s and ETA, every `every` steps: redrawn in place on
    `stream` when it is a terminal, else logged."""

    def __init__(self, total_steps: int, *, every: int = 50, stream=None):
        self.total, self.every, self.stream = total_steps, every, stream
        self.enabled = _is_writer()
        self.tty = stream is not None and stream.isatty()
        self.started = self.last = time.perf_counter()
        self.first_step = None
        self.docs = 0

    def update(self, step: int, docs: int, text: str) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if self.first_step is None:
            self.first_step, self.started, self.docs = step, now, 0
            return  # the first step includes compilation: rates start after it
        self.docs += docs
        if not self.tty and (not self.every or step % self.every) and step != self.total:  # every=0: the last only
            return
        if self.tty and now - self.last < 0.2 and step != self.total:
            return
        self.last = now
        elapsed = max(now - self.started, 1e-9)
        steps_done = step - self.first_step
        eta = (self.total - step) * elapsed / max(steps_done, 1)
        line = (f"step {step}/{self.total} {text} | {self.docs / elapsed:,.0f} docs/s | "
                f"ETA {int(eta) // 60}:{int(eta) % 60:02d}")
        if self.tty:
            self.stream.write("\r" + line.ljust(100))
            self.stream.flush()
        elif self.stream is not None:
            self.stream.write(line + "\n")
            self.stream.flush()
        else:
            log.info("%s", line)

    def exclude(self, seconds: float) -> None:
        """Leaves time spent elsewhere (evaluation, checkpoints) out of docs/s and the ETA."""
        self.started += seconds

    def newline(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()
