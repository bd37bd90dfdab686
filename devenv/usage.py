"""CPU time and memory of a running process, read from ``/proc``: how the tests and the
benchmarks of the operator tell what a restart cost it and when it went idle.

"Idle" is measured, not inferred from logs: a process is idle once it used less than a
share of one core (``share``, 5% by default) over a whole window (``window``, 2 s). A
process that is busy in bursts (a watch that delivers events every few hundred
milliseconds) is not idle; one that wakes now and then for a timer is.
"""

from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path


def cpu_seconds(pid: int) -> float:
    """User + system CPU time ``pid`` has used so far (0 once it is gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return 0.0
    fields = text.rsplit(")", 1)[1].split()  # the command name may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_kib(pid: int, key: str = "VmRSS") -> int:
    """A memory figure of ``/proc/<pid>/status`` in KiB: ``VmRSS`` (resident now) or
    ``VmHWM`` (the peak resident since the process started); 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


@dataclass
class IdleWatch:
    """Samples a process's CPU time; :meth:`sample` says since when it has been idle."""

    pid: int
    window: float = 2.0
    """Seconds over which the CPU use is measured."""
    share: float = 0.05
    """The share of one core below which the process counts as idle."""
    _samples: deque[tuple[float, float]] = field(default_factory=deque)

    def sample(self) -> float | None:
        """Take a sample now (``time.monotonic()``, CPU seconds); return the start of a
        window of at least ``window`` seconds, ending now, in which the process was idle,
        else None. Call it a few times per window: the window is as long as the samples
        allow, never shorter."""
        now, cpu = time.monotonic(), cpu_seconds(self.pid)
        self._samples.append((now, cpu))
        # Keep the newest sample at least a window old, and everything after it.
        while len(self._samples) > 1 and now - self._samples[1][0] >= self.window:
            self._samples.popleft()
        began, cpu_then = self._samples[0]
        if now - began < self.window:
            return None
        return began if (cpu - cpu_then) / (now - began) < self.share else None

    def busy_share(self) -> float:
        """The share of a core used over the samples kept (about one window)."""
        (began, first), (now, last) = self._samples[0], self._samples[-1]
        return (last - first) / (now - began) if now > began else 0.0
