"""What a queue's cap and rate limit cost the engine when they do not bind, in one run.

The same backlog of no-op tasks (bench/bench_handlers.py: one ``INCR`` each) is drained by
one ``kubetasks worker`` (concurrency 100) from a fresh Redis, alternately:

- ``plain``: the queue has no settings (no Queue resource);
- ``limited``: ``maxInFlight`` 1,000,000 and a token bucket of 1,000,000 starts per second
  (burst 1,000,000): both checked on every dequeue, neither ever holds a task back.

Each is run ``--rounds`` times, interleaved (plain, limited, plain, ...), so a slower spell of
the machine hits both alike; the drain rate is timed from the first completion to the last
(worker start-up not counted) and the medians are compared. The issue's bound: limited costs
at most 10% (ratio >= 0.90).

Run: ``.venv/bin/python bench/limits_bench.py [--tasks N] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))

QUEUE = "bench"
LIMITS = {"max_in_flight": 1_000_000, "rate": 1_000_000.0, "burst": 1_000_000}


async def enqueue(url: str, n: int, limited: bool) -> None:
    from kubetasks.client import AsyncClient, TaskRequest
    from kubetasks.queue import QueueSettings

    async with AsyncClient(url, namespace="default") as client:
        if limited:
            await client.broker.configure(QUEUE, QueueSettings(**LIMITS))  # type: ignore[arg-type]
        for i in range(0, n, 1000):
            batch = [TaskRequest("bench.noop", queue=QUEUE, max_retries=0)] * min(1000, n - i)
            await client.enqueue_many(batch)


def drain(url: str, n: int, limited: bool, work: Path) -> float:
    """Tasks per second from the first completion to the last."""
    import redis

    r = redis.Redis.from_url(url)
    r.flushall()
    asyncio.run(enqueue(url, n, limited))
    env = os.environ | {"BENCH_PEER": "kubetasks", "BENCH_REDIS_URL": url,
                        "PYTHONPATH": str(BENCH), "KUBETASKS_NAMESPACE": "default"}  # fmt: skip
    argv = [sys.executable, "-m", "kubetasks.cli", "worker", "--redis-url", url, "--queues",
            QUEUE, "--concurrency", "100", "--import", "bench_handlers",
            "--report-status", "none", "--log-level", "warning"]  # fmt: skip
    with (work / "worker.log").open("ab") as log:
        proc = subprocess.Popen(argv, env=env, cwd=BENCH, stdout=log, stderr=log)
    try:
        first = first_done = None
        deadline = time.perf_counter() + 300
        while True:
            done = int(r.get("bench:done") or 0)
            now = time.perf_counter()
            if done and first is None:
                first, first_done = now, done
            if done >= n:
                break
            if proc.poll() is not None or now > deadline:
                raise RuntimeError(f"worker stopped or stalled at {done}/{n}: see {work}")
            time.sleep(0.002)
        assert first is not None and first_done is not None
        return (n - first_done) / max(now - first, 1e-6)
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    ns = parser.parse_args()
    from devenv.redis_server import RedisServer

    work = BENCH / ".work"
    work.mkdir(exist_ok=True)
    rates: dict[str, list[float]] = {"plain": [], "limited": []}
    with RedisServer() as server:
        for _ in range(ns.rounds):
            for name in ("plain", "limited"):
                rates[name].append(drain(server.url, ns.tasks, name == "limited", work))
                print(f"{name:8} {rates[name][-1]:9.0f} tasks/s", flush=True)
    plain, limited = (statistics.median(rates[k]) for k in ("plain", "limited"))
    print(f"\n{ns.tasks} no-op tasks, one worker of concurrency 100, {ns.rounds} rounds each")
    print(f"median drain  plain {plain:.0f}/s  limited (cap + rate, not binding) {limited:.0f}/s")
    print(f"ratio limited/plain {limited / plain:.3f} (bound: >= 0.90)")


if __name__ == "__main__":
    main()
