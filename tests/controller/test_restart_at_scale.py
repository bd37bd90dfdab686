"""An operator restart over thousands of stored Tasks costs what is unfinished, not what is
stored.

A cluster keeps a day of finished Tasks; every rollout of the operator restarts it over them.
Here the operator is stopped, 3,000 Succeeded Tasks and 300 new ones are stored directly
through the API (``devenv.history``, as a worker and the operator would have left them), and
the operator is started again. A user then sees three things, each with a bound:

* every unfinished Task reaches Redis soon (checked with the broker: each has a record);
* the operator goes idle soon: it uses less than 5% of a core over 2 s
  (``devenv.usage.IdleWatch``, its CPU time from ``/proc``);
* a PeriodicTask created right after the restart runs at its first slot, not once the
  operator has caught up.

Task workers run through the restart, as worker pods do through an operator rollout, so the
300 are taken as soon as they are queued and end Succeeded, which is asserted too. That is
what a user observes, and it keeps the operator's own budgeted writes out of the idle
measure: a Task a worker takes within the grace owes no deferred Queued write
(``controller/deferred.py``); without workers the operator would spend 20 s writing Queued
onto 300 Tasks at ten per second, which is work, not a slow restart. The idle window still
holds what the operator does for the workers' status writes and for the PeriodicTask (one
child every 2 s), both of which cost it little.

The bounds leave several times what the operator needs when a restart costs what is
unfinished, and are far below what a restart costs when the operator processes every stored
Task (kopf's watch and index over all Tasks, before the operator's own feed): both are
measured in ``bench/OPERATOR_RESULTS.md`` and in the commit that added this test.

A second restart, over a backlog of 1,000 unfinished Tasks with workers waiting, checks that
the operator's burst of admissions is back-pressure, not an outage: no Task ever shows the
``RedisUnavailable`` reason, in its conditions or anywhere in its status.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import watch

from devenv.controlplane import ControlPlane
from devenv.history import store_history_sync
from devenv.usage import IdleWatch, cpu_seconds, memory_kib
from fixtures.kube import obj
from fixtures.operator import Operator, StartWorkers, Tasks
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

FINISHED, UNFINISHED = 3000, 300
BACKLOG = 1000
#: Seconds from the restart until every unfinished Task is in Redis.
QUEUED_WITHIN = 15.0
#: Seconds from the restart until the operator is idle (the start of its first idle window).
IDLE_WITHIN = 20.0
#: Seconds a PeriodicTask's first child may be created after its slot.
FIRST_SLOT_LATENESS = 2.0
#: What "idle" is: under this share of one core over this many seconds.
IDLE_SHARE, IDLE_WINDOW = 0.05, 2.0
#: Every 2 s: the first slot comes within 2 s of the create, whatever the second.
SCHEDULE = "*/2 * * * * *"
BATCH_LABEL = "batch"


@dataclass
class Restart:
    """What was seen after one restart, in seconds from the operator's start."""

    queued: float | None = None
    missing: int = UNFINISHED
    """Unfinished Tasks not in Redis when last looked."""
    idle: float | None = None
    first_child: dict[str, Any] | None = None
    first_slot: int = 0
    """The PeriodicTask's first slot after its creation (Unix seconds)."""
    cpu: float = 0.0
    """Operator CPU seconds from its start until it was idle (or the end of watching)."""
    rss_mib: float = 0.0
    peak_rss_mib: float = 0.0
    busy: float = 0.0
    """The share of a core the operator used over the last window watched."""

    def child(self) -> tuple[float, float] | None:
        """The slot of the PeriodicTask's first child and how late it was created."""
        if self.first_child is None:
            return None
        notes = self.first_child["metadata"]["annotations"]
        slot = parse_rfc3339(notes[SCHEDULED_ANNOTATION])
        return slot, parse_rfc3339(notes[CREATED_ANNOTATION]) - slot

    def __str__(self) -> str:
        def at(t: float | None) -> str:
            return "never" if t is None else f"{t:.1f} s"

        return (
            f"unfinished all in Redis at {at(self.queued)} ({self.missing} missing at the"
            f" end), operator idle at {at(self.idle)},"
            f" {self.cpu:.1f} CPU s until then, RSS {self.rss_mib:.0f} MiB"
            f" (peak {self.peak_rss_mib:.0f} MiB), {self.busy:.0%} of a core at the end;"
            f" PeriodicTask first slot {self.first_slot}: "
            + ("no child" if (child := self.child()) is None
               else f"child for slot {child[0]:.0f}, created {child[1]:.2f} s after it")
        )  # fmt: skip


class Unfinished:
    """Which of the unfinished Tasks Redis has no record of, through the broker."""

    def __init__(self, redis_url: str, namespace: str, uids: list[str]) -> None:
        self.runner = asyncio.Runner()
        self.broker = Broker.from_url(redis_url, namespace=namespace)
        self.uids = uids

    def missing(self) -> int:
        return len(self.runner.run(self.broker.missing("default", self.uids)))

    def close(self) -> None:
        self.runner.run(self.broker.close())
        self.runner.close()


@pytest.fixture
def custom(kube_api: k8s.ApiClient) -> k8s.CustomObjectsApi:
    return k8s.CustomObjectsApi(kube_api)


def create_periodic(custom: k8s.CustomObjectsApi, namespace: str, name: str) -> float:
    """A PeriodicTask every 2 s running ``kubetasks.echo``; returns its creationTimestamp."""
    body = {
        "apiVersion": API_VERSION,
        "kind": "PeriodicTask",
        "metadata": {"name": name},
        "spec": {
            "schedule": SCHEDULE,
            "taskTemplate": {"spec": {"handler": "kubetasks.echo", "args": ["tick"]}},
        },
    }
    made = obj(custom.create_namespaced_custom_object(GROUP, VERSION, namespace,
                                                      PERIODIC_TASKS, body))  # fmt: skip
    return parse_rfc3339(made["metadata"]["creationTimestamp"])


def first_child(custom: k8s.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any] | None:
    items = obj(
        custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, TASKS, label_selector=f"{PARENT_LABEL}={name}"
        )
    )["items"]
    slot = lambda t: parse_rfc3339(t["metadata"]["annotations"][SCHEDULED_ANNOTATION])  # noqa: E731
    return min(items, key=slot) if items else None


def phases(custom: k8s.CustomObjectsApi, namespace: str, batch: str) -> dict[str, int]:
    items = obj(
        custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, TASKS, label_selector=f"{BATCH_LABEL}={batch}"
        )
    )["items"]
    counts: dict[str, int] = {}
    for t in items:
        phase = (t.get("status") or {}).get("phase") or "none"
        counts[phase] = counts.get(phase, 0) + 1
    return counts


def wait_all_succeeded(
    custom: k8s.CustomObjectsApi, namespace: str, batch: str, count: int, timeout: float
) -> tuple[float | None, dict[str, int]]:
    """Seconds until all ``count`` Tasks of ``batch`` are Succeeded (None: not within
    ``timeout``), and their phases as last seen."""
    began = time.monotonic()
    seen: dict[str, int] = {}
    while time.monotonic() - began < timeout:
        seen = phases(custom, namespace, batch)
        if seen.get("Succeeded") == count:
            return time.monotonic() - began, seen
        time.sleep(0.5)
    return None, seen


@pytest.mark.timeout(240)
def test_a_restart_over_3000_finished_tasks_queues_the_unfinished_and_is_idle_in_seconds(
    operator: Operator,
    task_workers: StartWorkers,
    control_plane: ControlPlane,
    custom: k8s.CustomObjectsApi,
    namespace: str,
    redis_url: str,
) -> None:
    operator.stop()
    history = store_history_sync(control_plane.admin, namespace, finished=FINISHED,
                                 unfinished=UNFINISHED,
                                 unfinished_labels={BATCH_LABEL: "todo"})  # fmt: skip
    print(f"\nstored {history}")
    task_workers(2, "--concurrency", "50")
    unfinished = Unfinished(redis_url, namespace, list(history.unfinished.uids.values()))
    seen = Restart()
    try:
        operator.start()
        started = time.monotonic()
        idle = IdleWatch(operator.pid, IDLE_WINDOW, IDLE_SHARE)
        operator.wait_ready()
        created = create_periodic(custom, namespace, "tick")
        seen.first_slot = first_slot = 2 * (math.floor(created) // 2 + 1)
        # Watched until a second after the latest its first child may be created.
        child_by = first_slot + FIRST_SLOT_LATENESS + 1
        watch_until = started + max(QUEUED_WITHIN, IDLE_WITHIN) + IDLE_WINDOW
        while time.monotonic() < watch_until:
            now = time.monotonic()
            if seen.queued is None:
                seen.missing = unfinished.missing()
                if seen.missing == 0:
                    seen.queued = now - started
            if seen.idle is None and seen.queued is not None:
                since = idle.sample()
                # An idle window counts once everything is queued: waiting is not idling.
                if since is not None and since >= started + seen.queued:
                    seen.idle = since - started
                    seen.cpu = cpu_seconds(operator.pid)
                    seen.rss_mib = memory_kib(operator.pid) / 1024
            else:
                idle.sample()
            if seen.first_child is None:
                seen.first_child = first_child(custom, namespace, "tick")
            if seen.idle is not None and (seen.first_child or time.time() > child_by):
                break
            time.sleep(0.25)
        if seen.idle is None:
            seen.cpu = cpu_seconds(operator.pid)
            seen.rss_mib = memory_kib(operator.pid) / 1024
        seen.busy = idle.busy_share()
        seen.peak_rss_mib = memory_kib(operator.pid, "VmHWM") / 1024
    finally:
        unfinished.close()
    print(f"restart over {FINISHED} finished + {UNFINISHED} unfinished: {seen}")

    assert seen.queued is not None and seen.queued < QUEUED_WITHIN, (
        f"{seen.missing} of {UNFINISHED} unfinished Tasks not in Redis"
        f" {QUEUED_WITHIN:.0f} s after the restart; {seen}"
    )
    assert seen.idle is not None and seen.idle < IDLE_WITHIN, (
        f"operator not idle {IDLE_WITHIN:.0f} s after the restart; {seen}"
    )
    child = seen.child()
    assert child is not None, f"no child of the PeriodicTask by its first slot; {seen}"
    assert child[0] == first_slot, f"the first child ran a later slot; {seen}"
    assert child[1] < FIRST_SLOT_LATENESS, f"the first child was late; {seen}"
    took, last = wait_all_succeeded(custom, namespace, "todo", UNFINISHED, timeout=60)
    assert took is not None, f"not all {UNFINISHED} Succeeded: {last}"
    print(f"all {UNFINISHED} Succeeded {time.monotonic() - started:.1f} s after the restart"
          f" ({took:.1f} s after the checks above)")  # fmt: skip


class StatusWatch:
    """Every status a namespace's Tasks show, from a watch: what ``kubectl get -w`` sees."""

    def __init__(self, custom: k8s.CustomObjectsApi, namespace: str) -> None:
        self.custom, self.namespace = custom, namespace
        self.unavailable: dict[str, dict[str, Any]] = {}
        """Task name -> the first status of it that named Redis unavailable."""
        self.events = 0
        self.error: BaseException | None = None
        """What broke the watch before :meth:`stop` (events may have been missed)."""
        self.stopping = threading.Event()
        listing = obj(custom.list_namespaced_custom_object(GROUP, VERSION, namespace, TASKS))
        self.version = listing["metadata"]["resourceVersion"]
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        # Short watches one after the other, each from the last version seen, so that stop()
        # is heard within seconds and no event falls between two of them.
        while not self.stopping.is_set():
            try:
                for event in watch.Watch().stream(  # type: ignore[no-untyped-call]
                    self.custom.list_namespaced_custom_object, GROUP, VERSION,
                    self.namespace, TASKS, resource_version=self.version, timeout_seconds=2,
                ):  # fmt: skip
                    task = event["object"]
                    self.version = task["metadata"]["resourceVersion"]
                    self.events += 1
                    self.note(task)
            except Exception as exc:
                if not self.stopping.is_set():
                    self.error = exc
                return

    def note(self, task: dict[str, Any]) -> None:
        status = task.get("status") or {}
        if "RedisUnavailable" in repr(status):  # a condition's reason, the error, a message
            self.unavailable.setdefault(task["metadata"]["name"], status)

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(15)


@pytest.fixture
def status_watch(custom: k8s.CustomObjectsApi, namespace: str) -> Iterator[StatusWatch]:
    seen = StatusWatch(custom, namespace)
    yield seen
    seen.stop()


@pytest.mark.timeout(240)
def test_a_restart_over_a_backlog_of_1000_never_marks_a_task_redis_unavailable(
    operator: Operator,
    task_workers: StartWorkers,
    control_plane: ControlPlane,
    custom: k8s.CustomObjectsApi,
    tasks: Tasks,
    namespace: str,
    status_watch: StatusWatch,
) -> None:
    # Admitting a backlog at start-up is the operator's largest burst towards Redis: every
    # Task at once, while the workers already take the first ones.
    operator.stop()
    history = store_history_sync(control_plane.admin, namespace, unfinished=BACKLOG,
                                 unfinished_labels={BATCH_LABEL: "backlog"})  # fmt: skip
    print(f"\nstored {history}")
    task_workers(2, "--concurrency", "50")
    operator.start()
    started = time.monotonic()
    operator.wait_ready()
    took, last = wait_all_succeeded(custom, namespace, "backlog", BACKLOG, timeout=90)
    time.sleep(1)  # the watch delivers the last events
    when = "not within 90 s" if took is None else f"{took:.1f} s"
    print(f"backlog of {BACKLOG}: {last} after {when} from the operator's readiness,"
          f" {time.monotonic() - started:.1f} s from its start;"
          f" {status_watch.events} changes watched")  # fmt: skip
    assert status_watch.error is None, f"the watch broke: {status_watch.error!r}"
    marked = status_watch.unavailable
    assert not marked, f"{len(marked)} Tasks marked RedisUnavailable: {list(marked.items())[:3]}"
    assert took is not None, f"not all {BACKLOG} Succeeded: {last}"
    assert status_watch.events >= BACKLOG, status_watch.events
    finals = [t for t in tasks.list() if "RedisUnavailable" in repr(t.get("status"))]
    assert not finals, finals[:3]
