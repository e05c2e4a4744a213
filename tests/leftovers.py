"""Processes a test started and never stopped (it failed before its ``stop``), ended when the test session ends so
that they do not outlive the run."""

from __future__ import annotations

import os
import signal
from pathlib import Path


def _parents() -> dict[int, int]:
    """Every process's parent, by process id, from ``/proc``."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # it exited while the others were read
            continue
        # The command name, in parentheses, may hold spaces and parentheses itself: the fields follow its last ')'
        fields = stat.rpartition(")")[2].split()
        parents[int(entry.name)] = int(fields[1])
    return parents


def running(pid: int) -> bool:
    """Alive, and not a zombie waiting for its parent to collect it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def descendants(pid: int) -> list[int]:
    """The processes ``pid`` started, and theirs, parents before their children."""
    children: dict[int, list[int]] = {}
    for child, parent in _parents().items():
        children.setdefault(parent, []).append(child)
    found: list[int] = []
    waiting = list(children.get(pid, ()))
    while waiting:
        child = waiting.pop(0)
        found.append(child)
        waiting.extend(children.get(child, ()))
    return found


def kill_descendants(pid: int) -> list[int]:
    """SIGKILL every process ``pid`` started, and theirs; the ids of those it killed."""
    killed = []
    for child in descendants(pid):
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:  # exited meanwhile
            continue
        killed.append(child)
    return killed
