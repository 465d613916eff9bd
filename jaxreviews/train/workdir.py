"""A run directory: its files, who may use it, and whether a config may continue what it holds.

    run_dir = RunDirectory(workdir)
    with run_dir.locked():                  # a second run on the directory is refused at once
        finished = run_dir.prepare(config)  # the finished results of this config, or None to train
        ...
        run_dir.save_results(results)

The policy (`prepare`), by what the directory holds, comparing the saved config.json with the
new config (options that do not change results, `options.NO_EFFECT_KEYS`, may always differ):
- results.json of the same config: the finished run is the answer; nothing trains.
- results.json of a config that differs only in `options.RESUMABLE_KEYS` (more epochs, another
  patience): the run continues from its last checkpoint, and says so.
- checkpoints without results: the run resumes when the config differs at most in those keys.
- anything else: refused, naming every key that differs.

Only process 0 of a multi-process job takes the lock and writes; every process reads the policy's
answer from the same files. The lock is an OS file lock on `.lock`, released when its process
ends, however it ends: a run after a crash takes it over.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import socket
import sys

import jax
import ml_collections

from jaxreviews import options
from jaxreviews.train.results import RunResults

log = logging.getLogger(__name__)


class WorkdirError(ValueError):
    """The run directory cannot be used for this config (another run holds it, or another config)."""


class RunDirectory:
    def __init__(self, workdir: str | os.PathLike):
        self.path = os.path.abspath(os.path.expanduser(os.fspath(workdir)))
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise WorkdirError(f"--workdir={self.path} is a file, not a directory: choose another --workdir")
        self._lock_file = None

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    @property
    def is_main(self) -> bool:
        return jax.process_index() == 0

    # -- the lock --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self):
        """Holds the directory's lock (process 0) for the block; refuses at once when taken."""
        if not self.is_main:
            yield self
            return
        import fcntl

        os.makedirs(self.path, exist_ok=True)
        handle = open(self.file(".lock"), "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise WorkdirError(f"{self.path} is in use by {holder}: wait for that run to end or stop it, or use "
                               "another --workdir") from None
        try:
            handle.seek(0)
            handle.truncate()
            started = datetime.datetime.now().isoformat(timespec="seconds")
            handle.write(f"process {os.getpid()} on {socket.gethostname()} (started {started}: "
                         f"{' '.join(sys.argv[:1] + sys.argv[1:4])}{' ...' if len(sys.argv) > 4 else ''})\n")
            handle.flush()
            yield self
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()

    # -- the policy ------------------------------------------------------------------------------
    def saved_config(self) -> dict | None:
        path = self.file("config.json")
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return json.load(f)

    def differences(self, config: ml_collections.ConfigDict) -> dict[str, tuple]:
        """{key: (saved value, new value)} of every option that differs from config.json."""
        saved = self.saved_config()
        if saved is None:
            return {}
        after = options.flatten(json.loads(config.to_json_best_effort()))
        before = options.with_defaults(options.flatten(saved), after)  # an option newer than the run: its default
        return {k: (before.get(k, "<absent>"), after.get(k, "<absent>")) for k in sorted(set(before) | set(after))
                if before.get(k, "<absent>") != after.get(k, "<absent>")}

    def prepare(self, config: ml_collections.ConfigDict, *, has_checkpoints: bool) -> RunResults | None:
        """The finished results when the directory holds this config's finished run; else None,
        once the config may train here (see the module docstring) and config.json is written."""
        os.makedirs(self.path, exist_ok=True)
        changed = self.differences(config)
        effective = {k: v for k, v in changed.items() if k not in options.NO_EFFECT_KEYS}
        unsafe = {k: v for k, v in effective.items() if k not in options.RESUMABLE_KEYS}
        results_path = self.file("results.json")
        finished = os.path.exists(results_path)
        if (finished or has_checkpoints) and unsafe:
            what = "a finished run" if finished else "checkpoints of a run"
            shown = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in list(unsafe.items())[:8])
            more = f"; and {len(unsafe) - 8} more" if len(unsafe) > 8 else ""
            raise WorkdirError(f"{self.path} holds {what} of another config ({shown}{more}): use another --workdir "
                               f"(or delete this one to train again). A run may continue with other "
                               f"{', '.join(options.RESUMABLE_KEYS)}, and options that do not change results may "
                               "always change (docs/options.md)")
        if finished:
            if not effective:
                return RunResults.load(results_path)
            epochs = effective.get("train.epochs")
            if epochs and epochs[1] < epochs[0]:
                raise WorkdirError(f"{self.path} holds a run finished after train.epochs={epochs[0]}; it cannot be "
                                   f"shortened to {epochs[1]}: use another --workdir")
            max_steps = effective.get("train.max_steps")
            trained = RunResults.load(results_path).steps
            if max_steps and 0 < max_steps[1] < trained:
                raise WorkdirError(f"{self.path} holds a run finished after {trained} steps; it cannot be shortened "
                                   f"to train.max_steps={max_steps[1]}: use another --workdir")
            log.info("continuing the finished run in %s: %s", self.path,
                     ", ".join(f"{k} {a} -> {b}" for k, (a, b) in effective.items()))
            if self.is_main:
                os.replace(results_path, self.file("results.previous.json"))
        elif has_checkpoints and changed:
            log.info("resuming with changed settings: %s", ", ".join(changed))
        if self.is_main:  # replaced whole, so another process never reads half a file
            with open(self.file("config.json.tmp"), "w") as f:
                f.write(config.to_json_best_effort(indent=2, sort_keys=True))
            os.replace(self.file("config.json.tmp"), self.file("config.json"))
        return None

    def save_results(self, results: RunResults) -> None:
        if self.is_main:
            results.save(self.file("results.json"))

