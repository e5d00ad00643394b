"""Which processes a test left behind: those started with a given data home in their environment."""

from __future__ import annotations

import os
from pathlib import Path

from pmx.processes import running_processes


def processes_on(home: Path) -> list[int]:
    """Processes (not zombies, not this one) whose environment names ``home`` as PRIORITYMAX_HOME."""
    marker = f"PRIORITYMAX_HOME={home}".encode()
    found = []
    for folder, _ in running_processes():
        pid = int(folder.name)
        try:
            if pid != os.getpid() and marker in (folder / "environ").read_bytes().split(b"\0"):
                found.append(pid)
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found
