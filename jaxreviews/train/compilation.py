"""Compilation: JAX's persistent cache on by default, and compile time measured apart from training.

A run compiles a train and an eval program per batch shape; on a small file that can take longer
than the training itself. The persistent cache keeps the compiled programs on disk, so a second run
of the same config (or a search trial with the same shapes) compiles nothing. `CompileClock`
counts what JAX reports through `jax.monitoring`: tracing, lowering and backend compilation (whose
event also covers a program read back from the cache instead).
"""
from __future__ import annotations

import os
import threading

import jax

_EVENTS = {
    "/jax/core/compile/jaxpr_trace_duration": "trace",
    "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
    "/jax/core/compile/backend_compile_duration": "compile",
    "/jax/compilation_cache/cache_retrieval_time_sec": "cache_read",
}
_totals = {kind: 0.0 for kind in set(_EVENTS.values())}
_counts = {kind: 0 for kind in set(_EVENTS.values())}
_lock = threading.Lock()
_listening = False


def _record(event: str, duration: float, **_) -> None:
    kind = _EVENTS.get(event)
    if kind is not None:
        with _lock:
            _totals[kind] += duration
            _counts[kind] += 1


def _listen() -> None:
    global _listening
    if not _listening:
        jax.monitoring.register_event_duration_secs_listener(_record)
        _listening = True


def default_cache_dir() -> str:
    """$JAX_COMPILATION_CACHE_DIR when set, else <user cache directory>/jaxreviews/xla
    ($XDG_CACHE_HOME or ~/.cache)."""
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return os.environ["JAX_COMPILATION_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "jaxreviews", "xla")


def enable_persistent_cache(directory: str) -> str | None:
    """Keeps every compiled program in `directory` (created if needed); "" leaves the cache off.

    Returns the directory in use. Programs compiled before this call in the same process are not
    written back; JAX reads the setting when it first compiles."""
    if not directory:
        return None
    directory = os.path.abspath(os.path.expanduser(directory))
    os.makedirs(directory, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return directory


class CompileClock:
    """Seconds JAX spent compiling (trace + lower + compile + cache reads) since it was made."""

    def __init__(self):
        _listen()
        self._start = self._snapshot()
        self._taken = dict(self._start[0])

    @staticmethod
    def _snapshot():
        with _lock:
            return dict(_totals), dict(_counts)

    @staticmethod
    def _spent(totals: dict, since: dict) -> float:
        return sum(totals[k] - since[k] for k in ("trace", "lower", "compile"))  # cache reads are in "compile"

    @property
    def seconds(self) -> float:
        return self._spent(self._snapshot()[0], self._start[0])

    def take(self) -> float:
        """Compile seconds since the last `take` (to leave them out of a rate)."""
        totals, _ = self._snapshot()
        delta = self._spent(totals, self._taken)
        self._taken = totals
        return delta

    def report(self) -> dict:
        """{"seconds", "programs" (compiled, not read from the cache), "cache_reads"} since the clock
        was made."""
        _, counts = self._snapshot()
        reads = counts["cache_read"] - self._start[1]["cache_read"]
        return {"seconds": round(self.seconds, 2),
                "programs": counts["compile"] - self._start[1]["compile"] - reads, "cache_reads": reads}
