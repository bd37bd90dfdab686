"""The worker image's entrypoint and example handlers, run for real without Docker.

entrypoint.sh starts a worker the way the image does (kubetasks on PATH, example_handlers on
PYTHONPATH as /app is in the image) against a real Redis, and a Task for each example handler
gets the result or error a user would see. Async tests only: this module has no sync tests.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from chart_helpers import REPO

from kubetasks.client import AsyncClient
from kubetasks.errors import TaskFailedError

ENTRYPOINT = REPO / "worker_image" / "entrypoint.sh"


@pytest.fixture
def image_worker(redis_url: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """entrypoint.sh as the image runs it: kubetasks on PATH, example_handlers on PYTHONPATH."""
    queue = f"images-{uuid.uuid4().hex[:8]}"
    env = os.environ | {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(REPO / "worker_image"),
        "KUBETASKS_REDIS_URL": redis_url,
        "POD_NAME": "image-worker-0",
        "POD_NAMESPACE": "images",
    }
    proc = subprocess.Popen(
        ["sh", str(ENTRYPOINT), "--queues", queue, "--import", "example_handlers",
         "--concurrency", "4", "--report-status", "none", "--log-level", "warning"],
        env=env,
    )  # fmt: skip
    try:
        yield queue, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


async def test_example_handlers_run_in_the_image_entrypoint(
    redis_url: str, image_worker: tuple[str, subprocess.Popen[bytes]]
) -> None:
    queue, proc = image_worker
    async with AsyncClient(redis_url, namespace="images") as client:
        add = await client.enqueue("example.add", 2, 3, queue=queue)
        greet = await client.enqueue("example.greet", "Ada", queue=queue, greeting="Hi")
        digest = await client.enqueue("example.checksum", "x", queue=queue, rounds=3)
        flaky = await client.enqueue("example.flaky", 2, queue=queue, max_retries=3)
        invalid = await client.enqueue("example.validate", {"quantity": 0}, queue=queue)
        where = await client.enqueue("example.where", 0.05, queue=queue)

        assert await add.result(timeout=30) == 5
        assert await greet.result(timeout=30) == "Hi, Ada!"
        expected = b"x"
        for _ in range(3):
            expected = hashlib.sha256(expected).digest()
        assert await digest.result(timeout=30) == {
            "sha256": expected.hex(),
            "rounds": 3,
            "attempt": 1,
        }
        assert await flaky.result(timeout=30) == "succeeded on attempt 2"
        with pytest.raises(TaskFailedError, match="quantity must be positive"):
            await invalid.result(timeout=30)
        info = await invalid.status()
        assert info is not None and info.attempts == 1, "a permanent error is not retried"
        ran = await where.result(timeout=30)
        assert (ran["pod"], ran["namespace"], ran["attempt"]) == ("image-worker-0", "images", 1)
        assert 0.05 <= ran["ended"] - ran["started"] < 1
        info = await where.status()
        assert info is not None and info.worker == "images/image-worker-0"

    # The worker is PID 1 in the image (exec): SIGTERM reaches it and it exits cleanly.
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
