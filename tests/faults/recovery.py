"""What every fault scenario measures: how long after the fault every Task is Succeeded."""

from __future__ import annotations

import collections
import time
from collections.abc import Iterable
from pathlib import Path

from fixtures.operator import Tasks
from kubetasks.vocabulary import TaskPhase


def seconds_until_succeeded(tasks: Tasks, names: Iterable[str], timeout: float) -> float:
    """Seconds from now until every Task named is Succeeded; fails after ``timeout``,
    naming some that are not."""
    want = set(names)
    start = time.monotonic()
    while True:
        phases = {t["metadata"]["name"]: (t.get("status") or {}).get("phase")
                  for t in tasks.list()}  # fmt: skip
        left = sorted(n for n in want if phases.get(n) != TaskPhase.SUCCEEDED)
        took = time.monotonic() - start
        if not left:
            return took
        if took > timeout:
            shown = {n: phases.get(n) for n in left[:10]}
            raise AssertionError(f"{len(left)} Tasks not Succeeded after {timeout} s: {shown}")
        time.sleep(0.1)


def runs_by_uid(tally: Path) -> collections.Counter[str]:
    """How many times each Task uid ran, from the ``test.tally`` handler's file."""
    text = tally.read_text() if tally.exists() else ""
    return collections.Counter(line.split()[0] for line in text.splitlines() if line)
