"""One-call enqueue through the kubetasks clients: calls per second and Redis commands per call.

The call a web request makes is one ``Client.enqueue(...)``; this measures it apart from the
drain and the peers (``queue_bench.py``), on a Redis server of its own:

- ``Client.enqueue``: the sync client, one call after another in one thread;
- ``Client.enqueue, spin 0``: the same with ``KUBETASKS_CLIENT_SPIN_MICROSECONDS=0`` (the
  thread sleeps for each reply at once, instead of polling for it first);
- ``Client.enqueue x8 threads``: the same client shared by 8 threads at once;
- ``AsyncClient.enqueue``: awaited one after another;
- ``AsyncClient.enqueue gather``: all N started at once under ``asyncio.gather``;
- ``huey``, ``dramatiq`` (only when asked for, and installed: ``bench/.venv`` has them once
  ``queue_bench.py`` ran): the same one call through the peer, configured as in
  ``bench_handlers.py`` (huey ``task()``, dramatiq ``send()``), for a reference in the same run.

Each mode runs ``--repeat`` times (FLUSHALL before each run), in rounds (every mode once per
round), and the table gives the median and the spread (lowest-highest), of calls per second
and of the driver process's CPU time per call (``time.process_time``: what the client
itself costs, less disturbed by other processes than wall time on a shared machine).
Commands per call are what the server received from the clients (``MONITOR``, in a
separate run of ``--watched`` calls so that it slows no timed run; commands a script runs
are not counted; connection set-up, the first call's queue registration and script load
are), with the commands named.

To compare with the code before a change, run it on that code's package:
``git archive <commit> operator/kubetasks | tar -x -C /tmp/base`` and
``PYTHONPATH=/tmp/base/operator .venv/bin/python bench/enqueue_bench.py``.

Run: ``.venv/bin/python bench/enqueue_bench.py [--calls 5000] [--repeat 3] [--modes ...]``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import functools
import importlib
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from devenv.redis_server import RedisServer
from kubetasks.client import AsyncClient, Client

THREADS = 8


def client_commands(url: str, run: Callable[[], object]) -> collections.Counter[str]:
    """The commands clients sent to the server while ``run()`` ran, by name (MONITOR shows
    each command a client sends, and those a script runs as client ``lua``: left out)."""
    end = f"enqueue-bench-end-{time.time_ns()}"
    seen: collections.Counter[str] = collections.Counter()
    with redis.Redis.from_url(url) as watcher, redis.Redis.from_url(url) as marker:
        marker.ping()  # connected before: its HELLO is not counted
        with watcher.monitor() as monitor:
            run()
            marker.echo(end)
            while True:
                command = monitor.next_command()
                if end in command["command"]:
                    return seen
                if command["client_type"] != "lua":
                    seen[command["command"].split(" ", 1)[0].upper()] += 1


def sync_one(url: str, n: int) -> float:
    with Client(url) as client:
        t0 = time.perf_counter()
        for _ in range(n):
            client.enqueue("bench.noop", queue="bench", max_retries=0)
        return time.perf_counter() - t0


def sync_no_spin(url: str, n: int) -> float:
    """``sync_one`` with ``KUBETASKS_CLIENT_SPIN_MICROSECONDS=0``: the thread sleeps for
    each reply at once."""
    os.environ["KUBETASKS_CLIENT_SPIN_MICROSECONDS"] = "0"
    try:
        return sync_one(url, n)
    finally:
        del os.environ["KUBETASKS_CLIENT_SPIN_MICROSECONDS"]


def sync_threads(url: str, n: int) -> float:
    with Client(url) as client:
        per = n // THREADS
        start = threading.Barrier(THREADS + 1)
        failures: list[BaseException] = []

        def run() -> None:
            start.wait()
            try:
                for _ in range(per):
                    client.enqueue("bench.noop", queue="bench", max_retries=0)
            except BaseException as exc:  # reported below, not swallowed
                failures.append(exc)

        threads = [threading.Thread(target=run) for _ in range(THREADS)]
        for t in threads:
            t.start()
        start.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        took = time.perf_counter() - t0
        if failures:
            raise failures[0]
        return took


def async_loop(url: str, n: int) -> float:
    async def go() -> float:
        async with AsyncClient(url) as client:
            t0 = time.perf_counter()
            for _ in range(n):
                await client.enqueue("bench.noop", queue="bench", max_retries=0)
            return time.perf_counter() - t0

    return asyncio.run(go())


def async_gather(url: str, n: int) -> float:
    async def go() -> float:
        async with AsyncClient(url) as client:
            t0 = time.perf_counter()
            await asyncio.gather(
                *(client.enqueue("bench.noop", queue="bench", max_retries=0) for _ in range(n))
            )
            return time.perf_counter() - t0

    return asyncio.run(go())


def _peer(name: str, url: str) -> Any:
    """bench_handlers.py set up for one peer (it imports that library only)."""
    os.environ["BENCH_PEER"], os.environ["BENCH_REDIS_URL"] = name, url
    import bench_handlers

    return importlib.reload(bench_handlers)


def huey_one(url: str, n: int) -> float:
    noop = _peer("huey", url).huey_noop
    t0 = time.perf_counter()
    for _ in range(n):
        noop()
    return time.perf_counter() - t0


def dramatiq_one(url: str, n: int) -> float:
    noop = _peer("dramatiq", url).dq_noop
    t0 = time.perf_counter()
    for _ in range(n):
        noop.send()
    return time.perf_counter() - t0


MODES: dict[str, Callable[[str, int], float]] = {
    "Client.enqueue": sync_one,
    "Client.enqueue, spin 0": sync_no_spin,
    f"Client.enqueue x{THREADS} threads": sync_threads,
    "AsyncClient.enqueue": async_loop,
    "AsyncClient.enqueue gather": async_gather,
    "huey task() (peer)": huey_one,
    "dramatiq send() (peer)": dramatiq_one,
}
SHORT = {name: i for i, name in enumerate(
    ["sync", "nospin", "threads", "async", "gather", "huey", "dramatiq"]
)}  # fmt: skip


def main(ns: argparse.Namespace) -> None:
    chosen = [list(MODES)[SHORT[m]] for m in ns.modes.split(",")]
    rows = []
    n = ns.calls - ns.calls % THREADS
    rates: dict[str, list[float]] = {name: [] for name in chosen}
    cpu: dict[str, list[float]] = {name: [] for name in chosen}
    failed: dict[str, str] = {}
    with RedisServer() as server, redis.Redis.from_url(server.url) as r:
        # In rounds, every mode once per round: this VM's speed drifts within minutes, and
        # a mode's runs back to back would all get one stretch of it.
        for _ in range(ns.repeat):
            for name in chosen:
                if name in failed:
                    continue
                try:
                    r.flushall()
                    cpu_before = time.process_time()
                    took = MODES[name](server.url, n)
                    cpu[name].append((time.process_time() - cpu_before) / n * 1e6)
                    got = r.zcard("kubetasks:{default/bench}:pending")
                    if got != n and "peer" not in name:
                        raise RuntimeError(f"{got} of {n} tasks landed")
                    rates[name].append(n / took)
                except Exception as exc:  # a mode that fails is a result
                    failed[name] = f"failed: {type(exc).__name__}: {exc}"[:160]
                    print(f"{name}: {failed[name]}", flush=True)
        for name in chosen:
            if name in failed:
                rows.append((name, rates[name], cpu[name], failed[name]))
                continue
            r.flushall()
            w = ns.watched - ns.watched % THREADS
            seen = client_commands(server.url, functools.partial(MODES[name], server.url, w))
            named = ", ".join(f"{k} {v}" for k, v in seen.most_common())
            rows.append(
                (name, rates[name], cpu[name], f"{sum(seen.values()) / w:.3f} ({named}; {w} calls)")
            )
            print(f"{name}: {', '.join(f'{x:,.0f}' for x in rates[name])} /s", flush=True)
    print()
    load = os.getloadavg()
    print(
        f"N={ns.calls} calls per run, {ns.repeat} runs, {os.cpu_count()} CPUs (shared; load"
        f" {load[0]:.2f}), Python {platform.python_version()}, redis-py {redis.__version__}"
    )
    print(
        "| mode | calls/s median | spread (min-max) | client CPU us/call median (min-max)"
        " | commands sent per call |"
    )
    print("|---|---:|---:|---:|---|")
    for name, rates, cpu, commands in rows:
        median = f"{statistics.median(rates):,.0f}" if rates else "-"
        spread = f"{min(rates):,.0f}-{max(rates):,.0f}" if rates else "-"
        cpu_text = f"{statistics.median(cpu):.0f} ({min(cpu):.0f}-{max(cpu):.0f})" if cpu else "-"
        print(f"| {name} | {median} | {spread} | {cpu_text} | {commands} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000, help="calls per run (default 5000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per mode (default 3)")
    parser.add_argument("--watched", type=int, default=200, help="calls under MONITOR")
    parser.add_argument(
        "--modes", default="sync,threads,async,gather", help="comma list of: " + ",".join(SHORT)
    )
    main(parser.parse_args())
