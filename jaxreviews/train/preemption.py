"""A stop that every process of a job agrees on: preemption, handled without losing a step.

The library installs no signal handler. A caller passes `stop`, anything with `is_set()` (a
`threading.Event`); the command-line entry points set theirs on SIGTERM (`runtime.configure`). The
run then saves the step it is at and returns, and the same command resumes it exactly.

One process: the loop stops after the step during which `stop` was set (`agreed`). Several: the
signal reaches one host (or each at its own moment), so every `every` steps each process puts its
flag into a tiny all-reduce over the mesh (a max over one value per device), dispatched without
waiting and read after the next step has been dispatched, as the metrics are. Every process reads
the same value after the same step, so all stop together, save that step and exit 0; none is left
waiting in a collective the others never enter. Cost: one 4-byte all-reduce per check (measured
~1 ms on CPU over Gloo: `train.preemption_check_every_steps`).
"""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


class Preemption:
    def __init__(self, stop=None, mesh: Mesh | None = None, *, every: int = 1):
        self.stop = stop  # anything with is_set(); None: never asked to stop
        self._pending = None  # the all-reduce dispatched after the previous step
        self._collective = False
        self.every = 1
        if mesh is not None:
            self.bind(mesh, every=every)

    @property
    def requested(self) -> bool:
        """This process was asked to stop."""
        return self.stop is not None and self.stop.is_set()

    def bind(self, mesh: Mesh, *, every: int = 1) -> None:
        """Agree over the devices of `mesh` every `every` steps (needed with several processes only)."""
        self.every = max(1, int(every))
        self._collective = jax.process_count() > 1
        if self._collective:
            self._devices = NamedSharding(mesh, P(mesh.axis_names))  # one value per device
            self._any = jax.jit(lambda flags: flags.max(), out_shardings=NamedSharding(mesh, P()))

    def agreed(self, step: int) -> bool:
        """Called after step `step` by every process: whether all stop now."""
        if not self._collective:
            return self.requested
        stop = False
        if self._pending is not None:  # dispatched a step ago: done, or nearly
            stop, self._pending = bool(self._pending), None
        if step % self.every == 0 and not stop:
            flags = np.full(jax.local_device_count(), int(self.requested), np.int32)
            self._pending = self._any(jax.make_array_from_process_local_data(self._devices, flags))
        return stop
