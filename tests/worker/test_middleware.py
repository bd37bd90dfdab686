"""Middleware around every handler call, in real worker processes against real Redis."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubetasks import BackoffPolicy
from kubetasks.client import AsyncClient, TaskRequest
from kubetasks.errors import TaskFailedError

TESTS = Path(__file__).resolve().parent.parent


@pytest.fixture
def workers(redis_url: str, tmp_path: Path) -> Iterator[Path]:
    """Two worker processes loading the test middleware; yields where it writes."""
    env = os.environ | {
        "PYTHONPATH": f"{TESTS / 'worker'}{os.pathsep}{TESTS}",
        "KUBETASKS_TEST_MIDDLEWARE_DIR": str(tmp_path),
    }
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kubetasks.cli",
                "worker",
                "--redis-url",
                redis_url,
                "--import",
                "middleware_for_tests",
                "--log-level",
                "warning",
                "--concurrency",
                "4",
            ],
            env=env,
        )
        for _ in range(2)
    ]
    yield tmp_path
    for proc in procs:
        proc.kill()
        proc.wait()


def spans(out: Path) -> list[dict[str, object]]:
    return [
        json.loads(line)
        for f in out.glob("spans-*.jsonl")
        for line in f.read_text().split("\n")
        if line
    ]


def counts(out: Path) -> collections.Counter[str]:
    total: collections.Counter[str] = collections.Counter()
    for f in out.glob("counts-*.json"):
        total.update(json.loads(f.read_text()))
    return total


async def test_tracing_and_metrics_middleware_see_every_call(
    client: AsyncClient, workers: Path
) -> None:
    ok = await client.enqueue_many(
        [TaskRequest("test.mark_file", [str(workers / "marks")]) for _ in range(10)]
    )
    bad = await client.enqueue("test.permanent", max_retries=0)
    for handle in ok:
        assert isinstance(await handle.result(timeout=30), int)
    with pytest.raises(TaskFailedError):
        await bad.result(timeout=30)

    seen = {s["task"]: s for s in spans(workers)}
    assert set(seen) == {h.id for h in ok} | {bad.id}
    assert all(seen[h.id]["handler"] == "test.mark_file" for h in ok)
    assert all(seen[h.id]["error"] is None for h in ok)
    assert str(seen[bad.id]["error"]).startswith("PermanentTaskError")
    assert all(float(str(s["duration"])) >= 0 for s in seen.values())
    assert counts(workers) == {"test.mark_file ok": 10, "test.permanent error": 1}


async def test_a_middleware_that_raises_fails_the_attempt_not_the_task(
    client: AsyncClient, workers: Path
) -> None:
    before = await client.enqueue("test.add", 2, 3, backoff=_fast())
    after = await client.enqueue("test.record", "x", backoff=_fast())
    once = await client.enqueue("test.add", 1, 1, max_retries=0)
    # Each failed its first attempt in the middleware and was retried by its policy.
    assert await before.result(timeout=30) == 5
    assert await after.result(timeout=30) == "x"
    with pytest.raises(TaskFailedError) as failed:
        await once.result(timeout=30)
    error = failed.value.error or {}
    assert error.get("type") == "MiddlewareError"
    assert "refuse_first_attempt failed before the handler" in str(error.get("message"))
    assert "OSError: span exporter unreachable" in str(error.get("message"))
    info = await after.status()
    assert info is not None and info.attempts == 2
    # The tracing middleware, registered first, saw the inner one's error as the call's.
    by_task = collections.defaultdict(list)
    for s in spans(workers):
        by_task[s["task"]].append(s)
    assert [s["error"] for s in sorted(by_task[after.id], key=lambda s: str(s["attempt"]))] == [
        "MiddlewareError: middleware middleware_for_tests.refuse_first_attempt failed after "
        "the handler: OSError: metrics push failed",
        None,
    ]


def _fast() -> BackoffPolicy:
    return BackoffPolicy(0.05, 0.1)
