"""Compile time, measured apart from training and evaluation.

A run compiles an init, a train and an eval program per batch shape; on a small file that can
take longer than the training itself. `CompileClock` counts what JAX reports through
`jax.monitoring` while it is open: tracing, lowering and backend compilation (whose event also
covers a program read back from the persistent cache, which `runtime.configure` turns on for the
command-line tools). Its listener is registered when the clock opens and removed when it closes:
the library leaves no process-wide listener behind.
"""
from __future__ import annotations

import concurrent.futures
import threading
import time
from typing import Callable, Sequence

import jax

_EVENTS = {
    "/jax/core/compile/jaxpr_trace_duration": "trace",
    "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
    "/jax/core/compile/backend_compile_duration": "compile",
    "/jax/compilation_cache/cache_retrieval_time_sec": "cache_read",
}


class CompileClock:
    """Seconds JAX spent compiling (trace + lower + compile + cache reads) while open.

        with CompileClock() as clock:
            ...
            spent = clock.take()     # since the last take: to leave it out of a rate
        clock.report()               # {"seconds", "programs", "cache_reads"}
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._totals = {kind: 0.0 for kind in set(_EVENTS.values())}
        self._counts = {kind: 0 for kind in set(_EVENTS.values())}
        self._programs: dict[str, int] = {}  # backend compilations (or cache reads) by program name
        self._taken = 0.0
        self._open = False

    def _record(self, event: str, duration: float, fun_name: str = "", **_) -> None:
        kind = _EVENTS.get(event)
        if kind is not None:
            with self._lock:
                self._totals[kind] += duration
                self._counts[kind] += 1
                if kind == "compile":
                    self._programs[fun_name] = self._programs.get(fun_name, 0) + 1

    def __enter__(self) -> CompileClock:
        jax.monitoring.register_event_duration_secs_listener(self._record)
        self._open = True
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._open:
            jax.monitoring.unregister_event_duration_listener(self._record)
            self._open = False

    @property
    def seconds(self) -> float:
        with self._lock:
            return sum(self._totals[k] for k in ("trace", "lower", "compile"))  # cache reads are in "compile"

    def overlapped(self, seconds: float) -> None:
        """Takes `seconds` off the compile total: programs compiled side by side (`compile_ahead`)
        report each its own duration, and compile time is wall time."""
        with self._lock:
            self._totals["compile"] -= seconds

    def take(self) -> float:
        """Compile seconds since the last `take`."""
        now = self.seconds
        delta, self._taken = now - self._taken, now
        return delta

    def compilations(self, name: str) -> int:
        """Programs compiled (or read from the cache) while open for the jitted function `name`."""
        with self._lock:
            return self._programs.get(f"jit({name})", 0)

    def report(self) -> dict:
        """{"seconds", "programs" (compiled, not read from the cache), "cache_reads"}."""
        seconds = self.seconds
        with self._lock:
            reads = self._counts["cache_read"]
            return {"seconds": round(seconds, 2), "programs": self._counts["compile"] - reads, "cache_reads": reads}


def compile_ahead(calls: Sequence[tuple[Callable, tuple]], clock: CompileClock | None = None) -> list:
    """Compiles each jitted `fn(*args)` of `calls` before its first call, side by side: each is
    traced and lowered here, then XLA compiles all of them at once on a thread each (it releases
    the GIL; a GPU host has the cores, and autotuning runs per program). The later calls with the
    same shapes and shardings run these programs (JAX keeps what it compiled). Returns the
    (traced, compiled) pairs; `clock`: the overlap is taken off its compile time."""
    lowered = []
    for fn, args in calls:
        traced = fn.trace(*args)
        lowered.append((traced, traced.lower()))
    counted = clock.seconds if clock is not None else 0.0
    began = time.perf_counter()
    if len(lowered) == 1:
        compiled = [lowered[0][1].compile()]
    else:
        with concurrent.futures.ThreadPoolExecutor(len(lowered), thread_name_prefix="compile") as pool:
            compiled = list(pool.map(lambda pair: pair[1].compile(), lowered))
    if clock is not None:
        wall = time.perf_counter() - began
        clock.overlapped(max(0.0, clock.seconds - counted - wall))
    return [(traced, program) for (traced, _), program in zip(lowered, compiled)]
