"""PeriodicTasks: how late each child Task is created after its slot, and what the operator
costs with many schedules.

Starts the local control plane (built by `make controlplane`), a Redis server, the operator
and one worker process (so children finish and history limits delete them, as in real use),
then measures:

* lateness over N slots of one ``* * * * * *`` PeriodicTask (p50, p99, max), two ways:
  the operator's own record (annotation ``kubetasks.dev/created-at``, milliseconds, taken
  just before the create call) and the time this script's watch receives the child's ADDED
  event (which adds the API server's write and watch delivery);
* operator CPU (process user+system CPU time / wall time, from /proc) with M PeriodicTasks
  on ``@every 1m`` over a window of W seconds, after all of them are set up; plus the
  lateness of those bursts (all M share the same epoch-aligned slot each minute).

Run: `.venv/bin/python bench/periodic_bench.py [--slots 100] [--many 500] [--window 150]`.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes import watch

from devenv.controlplane import ControlPlane
from devenv.crds import apply_crds
from devenv.kubeapi import JsonApi
from devenv.redis_server import RedisServer, free_port
from kubetasks.timestamps import parse_rfc3339
from kubetasks.vocabulary import (
    API_VERSION,
    CREATED_ANNOTATION,
    GROUP,
    PARENT_LABEL,
    SCHEDULED_ANNOTATION,
    VERSION,
)

REPO = Path(__file__).resolve().parents[1]
TICKS = os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    out = log.open("ab")
    return subprocess.Popen(argv, env=env, stdout=out, stderr=out)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


class ChildWatch:
    """Records when each child Task's ADDED event reaches this process."""

    def __init__(self, api: k8s.ApiClient, namespace: str) -> None:
        self.custom = k8s.CustomObjectsApi(api)
        self.namespace = namespace
        self.seen: dict[str, tuple[float, dict[str, Any]]] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stop.is_set():
            stream = watch.Watch().stream(
                self.custom.list_namespaced_custom_object, GROUP, VERSION, self.namespace,
                "tasks", label_selector=PARENT_LABEL, timeout_seconds=30,
            )  # fmt: skip
            for event in stream:
                arrived = time.time()
                if event["type"] == "ADDED":
                    name = event["object"]["metadata"]["name"]
                    self.seen.setdefault(name, (arrived, event["object"]))
                if self.stop.is_set():
                    break

    def lateness(self, parent_prefix: str = "") -> tuple[list[float], list[float]]:
        """(operator's record, watch arrival) minus slot, in seconds, per child."""
        recorded, arrived = [], []
        for name, (at, body) in self.seen.items():
            if not name.startswith(parent_prefix):
                continue
            notes = body["metadata"]["annotations"]
            slot = parse_rfc3339(notes[SCHEDULED_ANNOTATION])
            recorded.append(parse_rfc3339(notes[CREATED_ANNOTATION]) - slot)
            arrived.append(at - slot)
        return recorded, arrived


def periodic_body(name: str, schedule: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "PeriodicTask",
        "metadata": {"name": name},
        "spec": {
            "schedule": schedule,
            "taskTemplate": {"spec": {"handler": "kubetasks.echo", "args": [name]}},
            "successfulTasksHistoryLimit": 1,
        },
    }


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def run(plane: ControlPlane, redis_url: str, ns: argparse.Namespace, work: Path) -> list[str]:
    env = os.environ | {"KUBECONFIG": str(plane.kubeconfig), "KUBETASKS_REDIS_URL": redis_url}
    namespace = "bench"
    api = plane.api_client()
    k8s.CoreV1Api(api).create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=namespace)))
    custom = k8s.CustomObjectsApi(api)
    operator = spawn(
        [sys.executable, "-m", "kubetasks.cli", "operator", "--namespace", namespace,
         "--health-port", str(free_port()), "--metrics-port", "0", "--log-level", "warning"],
        env, work / "operator.log",
    )  # fmt: skip
    worker = spawn(
        [sys.executable, "-m", "kubetasks.cli", "worker", "--concurrency", "100",
         "--report-status", "kubernetes", "--log-level", "warning"],
        env | {"POD_NAME": "bench-worker", "POD_NAMESPACE": namespace}, work / "worker.log",
    )  # fmt: skip
    watcher = ChildWatch(api, namespace)
    lines: list[str] = []
    try:
        time.sleep(4)  # let the operator start watching
        # -- lateness: one schedule, one slot per second ------------------------------------
        custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "periodictasks", periodic_body("tick", "* * * * * *")
        )
        deadline = time.time() + ns.slots + 30
        while time.time() < deadline:
            if sum(n.startswith("tick-") for n in watcher.seen) >= ns.slots + 1:
                break
            time.sleep(0.5)
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, "periodictasks", "tick", {"spec": {"suspend": True}}
        )
        recorded, arrived = watcher.lateness("tick-")
        # The first slot after the create is a partial second; count the next N.
        recorded, arrived = recorded[1 : ns.slots + 1], arrived[1 : ns.slots + 1]
        lines += [
            f"## Lateness, one `* * * * * *` PeriodicTask, {len(recorded)} slots",
            "",
            "| measured at | p50 | p99 | max |",
            "|---|---|---|---|",
            f"| operator, just before create (annotation) | {ms(pct(recorded, 0.5))} |"
            f" {ms(pct(recorded, 0.99))} | {ms(max(recorded))} |",
            f"| client watch, ADDED event received | {ms(pct(arrived, 0.5))} |"
            f" {ms(pct(arrived, 0.99))} | {ms(max(arrived))} |",
            "",
        ]
        print("\n".join(lines), flush=True)

        # -- CPU: many schedules on @every 1m ------------------------------------------------
        def create(i: int) -> None:
            custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, "periodictasks",
                periodic_body(f"p{i:04d}", "@every 1m"),
            )  # fmt: skip

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(create, range(ns.many)))
        deadline = time.time() + 120
        while time.time() < deadline:
            items = custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, "periodictasks"
            )["items"]
            ready = sum(bool((i.get("status") or {}).get("nextScheduleTime")) for i in items)
            if ready >= ns.many:
                break
            time.sleep(1)
        print(f"{ns.many} PeriodicTasks set up", flush=True)
        start_wall, start_cpu = time.time(), cpu_seconds(operator.pid)
        samples: list[tuple[float, float]] = []
        while time.time() < start_wall + ns.window:
            time.sleep(1)
            samples.append((time.time(), cpu_seconds(operator.pid)))
        wall = time.time() - start_wall
        cpu = cpu_seconds(operator.pid) - start_cpu
        # CPU in the seconds away from the minute's burst (more than 15 s after a slot).
        quiet = [
            (b[1] - a[1]) / (b[0] - a[0])
            for a, b in itertools.pairwise(samples)
            if 15 < a[0] % 60 < 59
        ]
        first_slot = (int(start_wall) // 60 + 1) * 60
        bursts = [
            (n, at, body)
            for n, (at, body) in watcher.seen.items()
            if n.startswith("p") and first_slot <= parse_rfc3339(
                body["metadata"]["annotations"][SCHEDULED_ANNOTATION]
            ) < start_wall + ns.window
        ]  # fmt: skip
        burst_recorded = [
            parse_rfc3339(b["metadata"]["annotations"][CREATED_ANNOTATION])
            - parse_rfc3339(b["metadata"]["annotations"][SCHEDULED_ANNOTATION])
            for _, _, b in bursts
        ]
        burst_arrived = [
            at - parse_rfc3339(b["metadata"]["annotations"][SCHEDULED_ANNOTATION])
            for _, at, b in bursts
        ]
        more = [
            f"## Operator CPU, {ns.many} PeriodicTasks on `@every 1m`, {wall:.0f} s window",
            "",
            f"- operator process CPU time / wall time: {cpu / wall * 100:.1f}% of one core"
            f" ({cpu:.1f} s CPU in {wall:.0f} s)",
            f"- between bursts (seconds 15-59 of each minute): {sum(quiet) / len(quiet) * 100:.1f}%"
            " of one core"
            if quiet
            else "- between bursts: no samples",
            f"- children created in the window: {len(bursts)}"
            f" (all {ns.many} share each minute's slot)",
        ]
        if bursts:
            more += [
                f"- burst lateness, operator record: p50 {ms(pct(burst_recorded, 0.5))},"
                f" p99 {ms(pct(burst_recorded, 0.99))}, max {ms(max(burst_recorded))}",
                f"- burst lateness, client watch: p50 {ms(pct(burst_arrived, 0.5))},"
                f" p99 {ms(pct(burst_arrived, 0.99))}, max {ms(max(burst_arrived))}",
            ]
        print("\n".join(more), flush=True)
        lines += more
    finally:
        watcher.stop.set()
        for proc in (operator, worker):
            proc.terminate()
        for proc in (operator, worker):
            proc.wait(30)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--slots", type=int, default=100)
    parser.add_argument("--many", type=int, default=500)
    parser.add_argument("--window", type=float, default=150.0)
    parser.add_argument("--out", type=Path, help="also write the results to this file")
    ns = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kubetasks-periodic-bench-"))
    with RedisServer() as redis_server, ControlPlane(work / "plane") as plane:
        with plane.api_client() as api:
            apply_crds(JsonApi(api), REPO / "crds")
        lines = run(plane, redis_server.url, ns, work)
    header = (
        f"# PeriodicTasks\n\n{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores,"
        f" Python {platform.python_version()}; operator, one worker process, control plane and"
        f" Redis all on this machine. Logs: {work}\n"
    )
    print(header)
    if ns.out:
        ns.out.write_text(header + "\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
