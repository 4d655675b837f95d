"""Where and on what a benchmark ran: the git state, the machine, the library versions, the peak memory."""

from __future__ import annotations

import os
import platform
import resource
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def git_state() -> dict:
    def git(*args):
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout

    # porcelain lines are "XY path" (X may be a space: no stripping before slicing); untracked files count too,
    # since the code that ran may be among them (ignored folders such as runs/ do not show)
    changed = [line[3:] for line in git("status", "--porcelain").splitlines() if line]
    return {"commit": git("rev-parse", "HEAD").strip() or "unknown",
            "branch": git("rev-parse", "--abbrev-ref", "HEAD").strip(),
            "dirty": bool(changed), "changed": changed}


def machine_info() -> dict:
    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = None
    try:
        mem = int(next(line.split()[1] for line in open("/proc/meminfo") if line.startswith("MemTotal"))) / 2**20
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "mem_gib": mem, "platform": platform.platform(),
            "python": platform.python_version()}


def versions() -> dict:
    import importlib.metadata as md

    out = {}
    for name in ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "bitsandbytes", "matplotlib"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


def read_peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM), MiB; getrusage where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
