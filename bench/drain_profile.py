"""One worker process draining a backlog of no-op tasks: tasks/s, CPU per task, Redis
commands per task, and idle enqueue-to-start latency (``make bench-drain`` or
``python bench/drain_profile.py``).

It starts its own Redis (devenv.redis_server), enqueues N ``drain.noop`` tasks with
``Client.enqueue_many``, starts ``kubetasks worker`` (optionally under ``py-spy record``),
and times the drain from the first completion to the last (the tasks' ``finished_at``).
Then, with the worker idle, it enqueues ``--latency`` ``drain.stamp`` tasks one at a time;
each returns how long after its enqueue it started (p50/p99).

    python bench/drain_profile.py -n 30000 --concurrency 10 [--py-spy out.txt]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
from devenv.redis_server import RedisServer  # noqa: E402
from kubetasks.client import Client, TaskRequest  # noqa: E402
from kubetasks.queue.keys import QueueKeys  # noqa: E402
from kubetasks.settings import namespace  # noqa: E402

QUEUE = "drain"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def commands(r: redis.Redis) -> dict[str, int]:
    stats = r.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=30000, help="tasks in the backlog")
    p.add_argument("--concurrency", type=int, default=10)
    p.add_argument("--latency", type=int, default=200, help="idle single enqueues")
    p.add_argument("--py-spy", metavar="OUT", help="record the worker with py-spy (raw)")
    p.add_argument("--log-level", default="info", help="the worker's (default info, its own)")
    p.add_argument("--handler", default="drain.noop", choices=["drain.noop", "drain.incr"],
                   help="drain.incr: queue_bench.py's no-op, one INCR")  # fmt: skip
    a = p.parse_args()
    with RedisServer() as server:
        r = redis.Redis.from_url(server.url, decode_responses=True)
        client = Client(server.url)
        ids: list[str] = []
        for i in range(0, a.n, 1000):
            batch = [TaskRequest(a.handler, queue=QUEUE, max_retries=0)] * min(1000, a.n - i)
            ids += [h.id for h in client.enqueue_many(batch)]
        r.config_resetstat()
        cmd = [sys.executable, "-m", "kubetasks.cli", "worker", "--redis-url", server.url,
               "--queues", QUEUE, "--concurrency", str(a.concurrency), "--import",
               "drain_handlers", "--report-status", "none", "--log-level", a.log_level]  # fmt: skip
        if a.py_spy:
            spy = str(Path(sys.executable).parent / "py-spy")
            cmd = [spy, "record", "-r", "200", "--format", "raw", "-o", a.py_spy, "--", *cmd]
        env = {**os.environ, "PYTHONPATH": f"{BENCH}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               "DRAIN_REDIS_URL": server.url}  # fmt: skip
        # The worker's log goes where a pod's goes: a pipe, read by someone else.
        log = open(os.devnull, "wb")  # noqa: SIM115 - closed with the process below
        drain = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=log)
        proc = subprocess.Popen(cmd, env=env, stdout=drain.stdin, stderr=drain.stdin)
        wpid = proc.pid
        qk = QueueKeys(namespace(), QUEUE)
        stats_key = qk.stats
        try:
            deadline = time.monotonic() + 600
            while int(r.hget(stats_key, "processed") or 0) < a.n:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"worker stopped early ({proc.returncode})")
                time.sleep(0.05)
            if a.py_spy:  # py-spy's child is the worker
                kids = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
                wpid = int(kids[0]) if kids else proc.pid
            cpu = cpu_seconds(wpid)
            calls = commands(r)
            pipe = r.pipeline(transaction=False)
            for task_id in ids:
                pipe.hget(qk.task(task_id), "finished_at")
            finished = [int(x) for x in pipe.execute() if x]
            span = (max(finished) - min(finished)) / 1000
            lat = []
            for _ in range(a.latency):
                h = client.enqueue("drain.stamp", time.time(), queue=QUEUE, max_retries=0)
                lat.append(float(h.result(timeout=10)))
                time.sleep(0.01)
        finally:
            # Under py-spy, stop the worker itself: py-spy writes its file when it ends.
            os.kill(wpid, signal.SIGTERM)
            proc.wait(timeout=60)
            assert drain.stdin is not None
            drain.stdin.close()
            drain.wait(timeout=10)
            log.close()
            client.close()
    total = sum(calls.values())
    print(f"tasks            {a.n} at concurrency {a.concurrency}")
    print(f"drain            {len(finished) / span:,.0f} tasks/s ({span:.2f} s first to last)")
    print(f"worker CPU       {cpu / a.n * 1e6:.0f} us/task (whole process life)")
    print(f"redis commands   {total / a.n:.3f}/task: " + ", ".join(
        f"{k} {v / a.n:.3f}" for k, v in sorted(calls.items(), key=lambda kv: -kv[1])
        if k not in ("config|resetstat", "info")))  # fmt: skip
    print(f"idle start       p50 {pct(lat, 0.5) * 1000:.2f} ms, p99 {pct(lat, 0.99) * 1000:.2f} ms"
          f" ({len(lat)} single enqueues)")  # fmt: skip


if __name__ == "__main__":
    main()
