"""Peak memory of a command and every process it starts (Grain workers included).

    python tools/peak_memory.py -- python -m experiments.train --config.data.name=prepared ...

Samples the process tree every 0.1 s: the sum of each process's proportional set size (PSS, from
/proc/PID/smaps_rollup: shared pages split between the processes sharing them, so the sum is the
tree's real footprint) and of its resident set size (RSS, what `ps` shows, counting shared pages
once per process). Prints the command's output, then one JSON line: peak_pss_mb, peak_rss_mb,
peak_processes, seconds, returncode. Linux only.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(child) for child in f.read().split()]
    except OSError:
        return []


def _tree(pid: int) -> list[int]:
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        pending.extend(_children(current))
    return found


def _memory_kb(pid: int) -> tuple[int, int]:
    """(PSS, RSS) of `pid` in KiB; (0, 0) once it is gone."""
    pss = rss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1])
                elif line.startswith("Rss:"):
                    rss = int(line.split()[1])
    except OSError:
        pass
    return pss, rss


def measure(command: list[str], interval: float = 0.1) -> dict:
    began = time.perf_counter()
    process = subprocess.Popen(command)
    peak = {"pss": 0, "rss": 0, "processes": 0}
    done = threading.Event()

    def sample():
        while not done.is_set():
            pids = _tree(process.pid)
            pss, rss = (sum(values) for values in zip(*(_memory_kb(pid) for pid in pids)))
            peak["pss"], peak["rss"] = max(peak["pss"], pss), max(peak["rss"], rss)
            peak["processes"] = max(peak["processes"], len(pids))
            done.wait(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    returncode = process.wait()
    done.set()
    sampler.join()
    return {"peak_pss_mb": round(peak["pss"] / 1024, 1), "peak_rss_mb": round(peak["rss"] / 1024, 1),
            "peak_processes": peak["processes"], "seconds": round(time.perf_counter() - began, 1),
            "returncode": returncode}


def main() -> int:
    argv = sys.argv[1:]
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print("usage: python tools/peak_memory.py -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    result = measure(argv)
    print(json.dumps(result))
    return result["returncode"]


if __name__ == "__main__":
    sys.exit(main())
