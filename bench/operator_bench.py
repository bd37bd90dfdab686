"""The operator at scale: a restart over stored history, and a burst of new Tasks.

Starts the local control plane (built by `make controlplane`) and a Redis server, as
`tasks_bench.py` does, then measures two things, each in a namespace of its own with an
operator process of its own (``--namespace``, production settings otherwise):

* **restart** over F finished Tasks (``--finished``, one row per size) plus U unfinished
  ones (``--unfinished``), stored directly through the API with the operator down
  (``devenv.history``: a create and a Succeeded status write each; the rate is reported).
  Worker processes run through the restart, as worker pods do through an operator rollout.
  From the operator's start: when it answers /healthz; when every unfinished Task has a
  record in Redis (``Broker.missing``); when it is idle (``devenv.usage.IdleWatch``: under
  5% of one core over 2 s, the first such window after everything was queued); its CPU
  seconds until then; its peak RSS (``VmHWM``); when all unfinished Tasks were done in
  Redis; how late a PeriodicTask (every 2 s) created right after /healthz ran its first
  slot; and its share of a core over the ``--steady`` seconds after it was idle (in
  production the repair lists the unfinished Tasks every 60 s, and the reaper's first sweep
  of the finished ones comes 60 s after start-up: a ``--steady`` of 90 includes it).
  Waiting for idle stops at ``--cap`` seconds; the row then says "not within".
* **burst**: ``--burst`` Tasks (``kubetasks.echo``) created by 16 clients as fast as the API
  server answers (`tasks_bench.create_and_follow`), with the workers running: the
  operator's peak RSS during it and the time from the first create until all Succeeded.

The table goes to stdout and into a section of ``--out`` (``## <--section>``, replaced if
it is there, other sections kept) with the date, the commit, the command line and the
versions. Run: `make bench-operator`, or `.venv/bin/python bench/operator_bench.py
[--finished 10000,100000] [--unfinished 1000] [--burst 10000] [--section after]`; for a
quick look, `--finished 2000 --unfinished 200 --burst 1000 --steady 0`.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, cast

from kubernetes import client as k8s
from tasks_bench import create_and_follow, remove_tasks, spawn

from devenv.controlplane import ControlPlane
from devenv.crds import apply_crds
from devenv.history import store_history
from devenv.kubeapi import JsonApi
from devenv.redis_server import RedisServer, free_port
from devenv.usage import IdleWatch, cpu_seconds, memory_kib
from kubetasks.queue import Broker
from kubetasks.timestamps import parse_rfc3339
from kubetasks.vocabulary import (
    API_VERSION,
    CREATED_ANNOTATION,
    GROUP,
    PARENT_LABEL,
    PERIODIC_TASKS,
    SCHEDULED_ANNOTATION,
    TASKS,
    VERSION,
)

REPO = Path(__file__).resolve().parents[1]
SAMPLE_EVERY = 0.25
IDLE_SHARE, IDLE_WINDOW = 0.05, 2.0


@dataclass
class Processes:
    operator: subprocess.Popen[bytes]
    workers: list[subprocess.Popen[bytes]]
    health_port: int

    def stop(self) -> None:
        for proc in [self.operator, *self.workers]:
            proc.terminate()
        for proc in [self.operator, *self.workers]:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def healthy(self) -> bool:
        url = f"http://127.0.0.1:{self.health_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=1):
                return True
        except OSError:
            return False


def env_for(plane: ControlPlane, redis_url: str) -> dict[str, str]:
    # PYTHONPATH is kept: a checkout other than the installed one is measured that way.
    return os.environ | {"KUBECONFIG": str(plane.kubeconfig), "KUBETASKS_REDIS_URL": redis_url}


def start_workers(
    env: dict[str, str], namespace: str, count: int, work: Path
) -> list[subprocess.Popen[bytes]]:
    return [
        spawn([sys.executable, "-m", "kubetasks.cli", "worker", "--concurrency", "100",
               "--queues", "default,periodic", "--report-status", "kubernetes",
               "--log-level", "warning"],
              env | {"POD_NAME": f"bench-worker-{i}", "POD_NAMESPACE": namespace},
              work / f"{namespace}-worker-{i}.log")
        for i in range(count)
    ]  # fmt: skip


def start_operator(env: dict[str, str], namespace: str, work: Path) -> tuple[Any, int]:
    port = free_port()
    proc = spawn([sys.executable, "-m", "kubetasks.cli", "operator", "--namespace", namespace,
                  "--health-port", str(port), "--metrics-port", str(free_port()),
                  "--log-level", "warning"], env, work / f"{namespace}-operator.log")  # fmt: skip
    return proc, port


def create_namespace(api: k8s.ApiClient, name: str) -> None:
    k8s.CoreV1Api(api).create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))


def create_periodic(custom: k8s.CustomObjectsApi, namespace: str) -> int:
    """A PeriodicTask every 2 s; returns its first slot (Unix seconds)."""
    body = {
        "apiVersion": API_VERSION,
        "kind": "PeriodicTask",
        "metadata": {"name": "tick"},
        "spec": {
            "schedule": "*/2 * * * * *",
            # A queue of its own, so that Redis counts the unfinished Tasks' runs apart.
            "taskTemplate": {
                "spec": {"handler": "kubetasks.echo", "args": ["tick"], "queue": "periodic"}
            },
        },
    }
    made = cast(
        dict[str, Any],
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PERIODIC_TASKS, body),
    )
    created = parse_rfc3339(made["metadata"]["creationTimestamp"])
    return 2 * (math.floor(created) // 2 + 1)


def first_child(custom: k8s.CustomObjectsApi, namespace: str) -> tuple[float, float] | None:
    """(slot, seconds from the slot to the create) of the PeriodicTask's earliest child."""
    items = cast(
        dict[str, Any],
        custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, TASKS, label_selector=f"{PARENT_LABEL}=tick"
        ),
    )["items"]
    found = []
    for item in items:
        notes = item["metadata"]["annotations"]
        slot = parse_rfc3339(notes[SCHEDULED_ANNOTATION])
        found.append((slot, parse_rfc3339(notes[CREATED_ANNOTATION]) - slot))
    return min(found) if found else None


async def _missing(broker: Broker, uids: list[str]) -> int:
    return len(await broker.missing("default", uids))


async def _processed(broker: Broker) -> int:
    return (await broker.stats("default")).processed


def run_restart(
    plane: ControlPlane, redis_url: str, finished: int, unfinished: int, ns: argparse.Namespace,
    work: Path,
) -> dict[str, Any]:  # fmt: skip
    namespace = f"restart-{finished}"
    env = env_for(plane, redis_url)
    api = plane.api_client()
    custom = k8s.CustomObjectsApi(api)
    create_namespace(api, namespace)
    history = asyncio.run(
        store_history(plane.admin, namespace, finished=finished, unfinished=unfinished)
    )
    print(f"restart-{finished}: stored {history}", flush=True)
    uids = list(history.unfinished.uids.values())
    row: dict[str, Any] = {"finished": finished, "unfinished": unfinished,
                           "store_rate": history.finished.rate}  # fmt: skip
    workers = start_workers(env, namespace, ns.workers, work)
    time.sleep(2)  # the workers are up and waiting on their queue
    operator, port = start_operator(env, namespace, work)
    procs = Processes(operator, workers, port)
    began = time.monotonic()
    runner = asyncio.Runner()
    broker = Broker.from_url(redis_url, namespace=namespace)
    idle = IdleWatch(operator.pid, IDLE_WINDOW, IDLE_SHARE)
    first_slot: int | None = None
    child: tuple[float, float] | None = None
    peak_rss = 0
    try:
        while time.monotonic() - began < ns.cap:
            now = time.monotonic() - began
            since = idle.sample()
            peak_rss = max(peak_rss, memory_kib(operator.pid))
            if operator.poll() is not None:
                raise RuntimeError(f"the operator exited: see {work}")
            if "ready" not in row and procs.healthy():
                row["ready"] = now
                first_slot = create_periodic(custom, namespace)
            if "queued" not in row and runner.run(_missing(broker, uids)) == 0:
                row["queued"] = now
            if "done" not in row and runner.run(_processed(broker)) >= unfinished:
                row["done"] = now
            if first_slot is not None and child is None and time.time() > first_slot:
                child = first_child(custom, namespace)
            if (
                "idle" not in row
                and "queued" in row
                and since is not None
                and since - began >= row["queued"]
            ):
                row["idle"] = since - began
                row["cpu"] = cpu_seconds(operator.pid)
                row["rss_at_idle"] = memory_kib(operator.pid) / 1024
            if "idle" in row and "done" in row and (child is not None or first_slot is None):
                break
            time.sleep(SAMPLE_EVERY)
        if "idle" not in row:
            row["cpu"] = cpu_seconds(operator.pid)
            row["busy_at_cap"] = idle.busy_share()
        elif ns.steady > 0:
            cpu_before = cpu_seconds(operator.pid)
            time.sleep(ns.steady)
            row["steady"] = (cpu_seconds(operator.pid) - cpu_before) / ns.steady
        row["peak_rss"] = max(peak_rss, memory_kib(operator.pid, "VmHWM")) / 1024
        if child is not None and first_slot is not None:
            row["child_slots_late"] = round((child[0] - first_slot) / 2)
            row["child_lateness"] = child[1]
        row["cap"] = ns.cap
    finally:
        runner.run(broker.close())
        runner.close()
        print(f"restart-{finished}: {row}", flush=True)
        # The PeriodicTask first, or it keeps making children; then the Tasks, while the
        # operator runs to remove any finalizer.
        try:
            custom.delete_collection_namespaced_custom_object(GROUP, VERSION, namespace,
                                                              PERIODIC_TASKS)  # fmt: skip
            remove_tasks(api, namespace, timeout=1800)
        except k8s.ApiException as exc:
            # One delete of 100,000 Tasks outlasts the API server's request timeout (504); the
            # namespace is this row's own, so the measurement stands.
            print(f"{namespace}: clean-up incomplete ({exc.status} {exc.reason})", flush=True)
        finally:
            procs.stop()
            api.close()  # type: ignore[no-untyped-call]
    return row


def run_burst(plane: ControlPlane, redis_url: str, n: int, ns: argparse.Namespace,
              work: Path) -> dict[str, Any]:  # fmt: skip
    namespace = "burst"
    env = env_for(plane, redis_url)
    api = plane.api_client()
    create_namespace(api, namespace)
    workers = start_workers(env, namespace, ns.workers, work)
    operator, port = start_operator(env, namespace, work)
    procs = Processes(operator, workers, port)
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(SAMPLE_EVERY):
            peak[0] = max(peak[0], memory_kib(operator.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    try:
        while not procs.healthy():
            time.sleep(0.1)
        time.sleep(2)  # the operator's watch is open
        rss_before = memory_kib(operator.pid) / 1024
        cpu_before = cpu_seconds(operator.pid)
        sampler.start()
        began = time.time()
        created, _, finished = asyncio.run(create_and_follow(plane, namespace, n, timeout=3600))
        ended = time.time()
        stop.set()
        sampler.join()
        first = min(created.values())
        last_done = max(parse_rfc3339(t["status"]["finishedAt"]) for t in finished.values())
        row = {
            "n": n,
            "create_rate": n / (max(created.values()) - first),
            "all_succeeded": last_done - first,
            "followed": ended - began,
            "rss_before": rss_before,
            "peak_rss": max(peak[0], memory_kib(operator.pid, "VmHWM")) / 1024,
            "cpu": cpu_seconds(operator.pid) - cpu_before,
        }
    finally:
        stop.set()
        try:
            remove_tasks(api, namespace, timeout=1800)
        except k8s.ApiException as exc:
            # One delete of 100,000 Tasks outlasts the API server's request timeout (504); the
            # namespace is this row's own, so the measurement stands.
            print(f"{namespace}: clean-up incomplete ({exc.status} {exc.reason})", flush=True)
        finally:
            procs.stop()
            api.close()  # type: ignore[no-untyped-call]
    print(f"burst: {row}", flush=True)
    return row


def seconds(row: dict[str, Any], key: str) -> str:
    return f"{row[key]:.1f}" if key in row else f"not within {row['cap']:.0f}"


def restart_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| finished stored | unfinished | stored at (Tasks/s) | healthy (s) | all unfinished"
        " in Redis (s) | idle (s) | CPU until idle (s) | peak RSS (MiB) | unfinished done (s)"
        " | PeriodicTask's first child | CPU after idle |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "child_lateness" in r:
            late = r["child_slots_late"]
            child = f"{r['child_lateness']:.2f} s after its slot" + (
                f" ({late} slots after the first)" if late else " (the first)"
            )
        else:
            child = "none"
        after = f"{r['steady']:.1%} of a core" if "steady" in r else (
            f"busy {r['busy_at_cap']:.0%} of a core at the cap" if "busy_at_cap" in r else "-"
        )  # fmt: skip
        cpu = f"{r['cpu']:.1f}" if "idle" in r else f"{r['cpu']:.1f} (by the cap)"
        lines.append(
            f"| {r['finished']:,} | {r['unfinished']:,} | {r['store_rate']:.0f} |"
            f" {seconds(r, 'ready')} | {seconds(r, 'queued')} | {seconds(r, 'idle')} | {cpu} |"
            f" {r['peak_rss']:.0f} | {seconds(r, 'done')} | {child} | {after} |"
        )
    return "\n".join(lines)


def burst_table(row: dict[str, Any]) -> str:
    return (
        "| Tasks | created at (Tasks/s) | first create → all Succeeded (s) | operator RSS"
        " before (MiB) | operator peak RSS (MiB) | operator CPU (s) |\n"
        "|---|---|---|---|---|---|\n"
        f"| {row['n']:,} | {row['create_rate']:.0f} | {row['all_succeeded']:.1f} |"
        f" {row['rss_before']:.0f} | {row['peak_rss']:.0f} | {row['cpu']:.1f} |"
    )


def flush(redis_url: str) -> None:
    import redis

    with redis.Redis.from_url(redis_url) as r:
        r.flushall()


def versions(plane: ControlPlane, redis_url: str) -> str:
    import redis

    with redis.Redis.from_url(redis_url) as r:
        server = cast(dict[str, Any], r.info("server"))
    _, body = plane.admin.get("/version")
    apiserver = re.search(r'"gitVersion":\s*"([^"]+)"', body)
    libs = ", ".join(f"{lib} {metadata.version(lib)}" for lib in ("kopf", "kubernetes",
                                                                  "aiohttp", "redis"))  # fmt: skip
    return (
        f"Python {platform.python_version()}, {libs}; kube-apiserver"
        f" {apiserver.group(1) if apiserver else '?'}, Redis-compatible server"
        f" {server.get('valkey_version') or server.get('redis_version', '?')}"
    )


def commit() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "operator"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" with uncommitted changes in operator/" if dirty else "")


def write_section(path: Path, section: str, text: str) -> None:
    """Put ``text`` under ``## section`` in ``path``, replacing that section if present."""
    old = path.read_text() if path.exists() else "# The operator at scale\n"
    block = f"## {section}\n\n{text.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(section)}\n.*?(?=^## |\Z)", re.S | re.M)
    new = pattern.sub(lambda _: block + "\n", old) if pattern.search(old) else (
        old.rstrip() + "\n\n" + block
    )  # fmt: skip
    path.write_text(new.rstrip() + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--finished",
        default="10000,100000",
        help="finished Tasks stored before each restart (comma-separated)",
    )
    parser.add_argument("--unfinished", type=int, default=1000)
    parser.add_argument("--burst", type=int, default=10000, help="Tasks in the burst (0: none)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (100 each)")
    parser.add_argument("--cap", type=float, default=600, help="seconds to wait for idle")
    parser.add_argument(
        "--steady", type=float, default=60, help="seconds of CPU measured after idle (0: none)"
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "OPERATOR_RESULTS.md")
    parser.add_argument("--section", default="after", help="heading of this run in --out")
    parser.add_argument("--commit", default=None, help="the commit measured (default: HEAD)")
    ns = parser.parse_args()
    sizes = [int(s) for s in ns.finished.split(",") if s]
    work = Path(tempfile.mkdtemp(prefix="kubetasks-operator-bench-"))
    started = time.strftime("%Y-%m-%d %H:%M")
    with RedisServer() as redis_server, ControlPlane(work / "plane") as plane:
        with plane.api_client() as api:
            apply_crds(JsonApi(api), REPO / "crds")
        about = versions(plane, redis_server.url)
        restarts = []
        for size in sizes:
            flush(redis_server.url)
            restarts.append(run_restart(plane, redis_server.url, size, ns.unfinished, ns, work))
        flush(redis_server.url)
        burst = run_burst(plane, redis_server.url, ns.burst, ns, work) if ns.burst else None
    text = ""
    if restarts:
        text += (
            "Restart over stored history (seconds from the operator's start; idle: under"
            f" {IDLE_SHARE:.0%} of a core over {IDLE_WINDOW:.0f} s; {ns.workers} workers"
            " of concurrency 100 running through it):\n\n" + restart_table(restarts) + "\n"
        )
    if burst:
        text += "\n" if text else ""
        text += "Burst, created at the API server's ceiling, workers running:\n\n"
        text += burst_table(burst) + "\n"
    header = (
        f"{started}, commit {ns.commit or commit()}, {os.cpu_count()} cores, control plane,"
        f" Redis, operator and workers all on this machine.\n\n{about}\n\n"
        f"`python bench/operator_bench.py {shlex.join(sys.argv[1:])}`\n\n"
    )
    print(text)
    write_section(ns.out, ns.section, header + text + f"\nLogs: {work}\n")


if __name__ == "__main__":
    main()
