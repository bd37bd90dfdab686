"""Worker processes as an operator would run them: SIGTERM drains, kill -9 loses nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import RunWorker
from fixtures.waiting import wait_until
from kubetasks.client import AsyncClient, TaskRequest

TESTS = Path(__file__).resolve().parent.parent


@pytest.fixture
def spawn(redis_url: str) -> Iterator[object]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(*flags: str) -> subprocess.Popen[bytes]:
        env = os.environ | {"PYTHONPATH": f"{TESTS / 'worker'}{os.pathsep}{TESTS}"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "kubetasks.cli", "worker", "--redis-url", redis_url,
             "--import", "handlers_for_tests", "--log-level", "warning", *flags],
            env=env,
        )  # fmt: skip
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def pids_in(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


async def test_sigterm_finishes_short_tasks_and_hands_back_long_ones(
    client: AsyncClient, spawn: object, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    worker = spawn("--concurrency", "2", "--grace-period", "2")  # type: ignore[operator]
    short = await client.enqueue("test.mark_file", str(marks), seconds=0.5)
    long = await client.enqueue("test.mark_file", str(marks), seconds=60)
    await wait_until(lambda: len(pids_in(marks)) == 2)
    start = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(10) == 0
    assert time.monotonic() - start < 4
    assert await short.result(timeout=1) == worker.pid
    info = await long.status()
    assert info is not None
    assert (info.state, info.attempts) == ("pending", 0)  # back in the queue, attempt unspent
    stats = await client.queue_stats("default")
    assert (stats.pending, stats.active, stats.processed) == (1, 0, 1)


async def test_kill_9_mid_task_loses_nothing(
    client: AsyncClient, spawn: object, run_worker: RunWorker, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    victim = spawn("--concurrency", "5", "--lease", "1.5")  # type: ignore[operator]
    handles = await client.enqueue_many(
        [TaskRequest("test.mark_file", [str(marks)], {"seconds": 1.0}) for _ in range(20)]
    )
    await wait_until(lambda: len(pids_in(marks)) >= 5)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    killed_mid_task = (await client.queue_stats("default")).active
    assert killed_mid_task >= 1

    async with run_worker(concurrency=10, reclaim_interval=0.2):
        results = [await handle.result(timeout=20) for handle in handles]
        infos = [await h.status() for h in handles]
    assert set(results) <= {victim.pid, os.getpid()}
    assert all(i is not None and i.state == "succeeded" for i in infos)
    rerun = [i for i in infos if i is not None and i.attempts == 2]
    assert len(rerun) == killed_mid_task  # exactly the tasks the dead worker held ran again
    assert all(i.result == os.getpid() for i in rerun)
    stats = await client.queue_stats("default")
    assert (stats.processed, stats.pending, stats.active, stats.dead) == (20, 0, 0, 0)


async def test_restarted_worker_takes_back_its_own_tasks_at_once(
    client: AsyncClient, spawn: object, tmp_path: Path
) -> None:
    """A container restarted in the same pod keeps the pod's worker identity: the new process
    returns what the killed one held before leasing anything, long before the lease expires.
    Another identity does not take it (only lease expiry would, after 60 s here)."""
    marks = tmp_path / "marks"
    flags = ("--concurrency", "2", "--lease", "60")
    first = spawn("--worker-id", "pod-a", *flags)  # type: ignore[operator]
    handle = await client.enqueue("test.mark_file", str(marks), seconds=1.0, max_retries=3)
    await wait_until(lambda: len(pids_in(marks)) == 1)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()

    other = spawn("--worker-id", "pod-b", *flags)  # type: ignore[operator]
    probe = await client.enqueue("test.mark_file", str(tmp_path / "probe"))
    assert await probe.result(timeout=10) == other.pid  # serving: past its start-up reclaim
    assert len(pids_in(marks)) == 1  # ...and it left the other identity's task alone
    info = await handle.status()
    assert info is not None and (info.state, info.worker) == ("active", "pod-a")
    other.kill()
    other.wait()

    restarted_at = time.monotonic()
    restarted = spawn("--worker-id", "pod-a", *flags)  # type: ignore[operator]
    await wait_until(lambda: len(pids_in(marks)) == 2, timeout=30)
    # Process start-up (seconds; 6 s measured on a loaded 2-core machine), not the lease:
    # expiry would take 60 s, so anything under half of it is the take-back at start.
    assert time.monotonic() - restarted_at < 30
    assert await handle.result(timeout=5) == restarted.pid
    info = await handle.status()
    assert info is not None
    assert (info.state, info.attempts) == ("succeeded", 2)  # the crashed attempt counted
    stats = await client.queue_stats("default")
    assert (stats.processed, stats.pending, stats.active, stats.dead) == (2, 0, 0, 0)
