"""When, where and how a measured table was made: the line the tools print above each table.

A figure copied into the docs carries this line with it, so a reader can rerun the command and
see whether the commit or the machine explains a difference. Reads the machine from the OS (never
initialises JAX: a parent process that grabbed the GPU would starve the runs it starts).
"""
from __future__ import annotations

import datetime
import os
import platform
import shlex
import shutil
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def commit() -> str:
    """The short commit, with '+changes' when tracked files differ from it ('' outside a checkout)."""
    head = _git("rev-parse", "--short", "HEAD")
    if head and _git("status", "--porcelain", "--untracked-files=no"):
        head += "+changes"
    return head


def machine() -> str:
    """CPU model and cores, and the GPUs nvidia-smi names, if any."""
    cpu = platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    parts = [f"{os.cpu_count()} cores {cpu}"]
    if shutil.which("nvidia-smi"):
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=60)
        gpus = [g.strip() for g in out.stdout.splitlines() if g.strip()] if out.returncode == 0 else []
        if gpus:
            parts.append(f"{len(gpus)} x {gpus[0]}")
    return ", ".join(parts)


def command(argv: list[str] | None = None) -> str:
    """The command line as typed from the repository root."""
    argv = sys.argv if argv is None else argv
    script = os.path.relpath(os.path.abspath(argv[0]), REPO) if argv else "?"
    return shlex.join(["python", script, *argv[1:]])


def describe(argv: list[str] | None = None) -> dict:
    return {"date": datetime.datetime.now(datetime.timezone.utc).date().isoformat(), "commit": commit(),
            "machine": machine(), "command": command(argv)}


def line(info: dict) -> str:
    """'Measured DATE, commit C, on MACHINE: `COMMAND`' (markdown)."""
    return f"Measured {info['date']}, commit {info['commit'] or 'unknown'}, on {info['machine']}: `{info['command']}`"
