"""The operator's feed of Tasks on the real API server: the first listing holds only what the
operator must act on (the unfinished Tasks and the PeriodicTasks' children), the watch after
it every change, and the handler runs one event at a time per Task and a bounded number of
Tasks at once."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from devenv.controlplane import ControlPlane
from fixtures.kube import obj
from fixtures.operator import Tasks
from kubetasks.controller.feed import TaskFeed
from kubetasks.k8s.api import KubeApi, load_configuration
from kubetasks.k8s.tasks import TaskApi
from kubetasks.status_patches import finished_patch
from kubetasks.vocabulary import API_VERSION, GROUP, PARENT_LABEL, VERSION


@pytest.fixture
def task_api(admin_api: KubeApi) -> TaskApi:
    return TaskApi(admin_api)


def finish(kube_api: k8s.ApiClient, namespace: str, name: str) -> None:
    patch = finished_patch("succeeded", 1, time.time(), result={"ok": True})
    k8s.CustomObjectsApi(kube_api).patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, "tasks", name, patch
    )


class Recorder:
    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.handled: list[tuple[str, str, str | None]] = []
        self.observed: list[tuple[str, str]] = []
        self.running = 0
        self.most = 0

    def observe(self, kind: str, body: dict[str, Any]) -> None:
        self.observed.append((kind, body["metadata"]["name"]))

    async def handle(self, kind: str, body: dict[str, Any]) -> None:
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await asyncio.sleep(self.delay)
            phase = (body.get("status") or {}).get("phase")
            self.handled.append((kind, body["metadata"]["name"], phase))
        finally:
            self.running -= 1

    def names(self) -> set[str]:
        return {name for _, name, _ in self.handled}


@contextlib.asynccontextmanager
async def running(feed: TaskFeed) -> AsyncIterator[TaskFeed]:
    stop = asyncio.Event()
    task = asyncio.create_task(feed.run(stop))
    try:
        await asyncio.wait_for(feed.ready.wait(), 20)
        await feed.settled()
        yield feed
    finally:
        stop.set()
        await task


async def until(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_the_first_listing_holds_the_unfinished_and_the_watch_every_change_after(
    task_api: TaskApi, tasks: Tasks, kube_api: k8s.ApiClient, namespace: str
) -> None:
    for i in range(6):
        tasks.create(f"done-{i}", "h")
        finish(kube_api, namespace, f"done-{i}")
    tasks.create("open-0", "h")
    tasks.create("open-1", "h")
    # A finished child of a PeriodicTask (suspended: no operator runs here anyway).
    parent = obj(k8s.CustomObjectsApi(kube_api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, "periodictasks",
        {"apiVersion": API_VERSION, "kind": "PeriodicTask", "metadata": {"name": "every"},
         "spec": {"schedule": "@hourly", "suspend": True,
                  "taskTemplate": {"spec": {"handler": "h"}}}},
    ))  # fmt: skip
    tasks.create_body({
        "apiVersion": API_VERSION, "kind": "Task",
        "metadata": {
            "name": "every-1", "labels": {PARENT_LABEL: "every"},
            "ownerReferences": [{"apiVersion": API_VERSION, "kind": "PeriodicTask",
                                 "name": "every", "uid": parent["metadata"]["uid"],
                                 "controller": True}],
        },
        "spec": {"handler": "h"},
    })  # fmt: skip
    finish(kube_api, namespace, "every-1")

    recorder = Recorder()
    feed = TaskFeed(task_api, [namespace], recorder.handle, observers=[recorder.observe])
    async with running(feed):
        # The history is not read: only the unfinished and the child, selected by the API
        # server itself (the CRD's selectableFields), not filtered after reading all.
        assert recorder.names() == {"open-0", "open-1", "every-1"}
        assert task_api.selects_phase
        assert all(kind == "ADDED" for kind, _, _ in recorder.handled)
        recorder.handled.clear()

        finish(kube_api, namespace, "open-0")
        tasks.create("new", "h")
        tasks.delete("done-3")
        await until(lambda: recorder.names() >= {"open-0", "new", "done-3"})
        seen = {name: (kind, phase) for kind, name, phase in recorder.handled}
        assert seen["open-0"] == ("MODIFIED", "Succeeded")
        assert seen["new"] == ("ADDED", None)
        assert seen["done-3"] == ("DELETED", "Succeeded")
        assert recorder.names() == {"open-0", "new", "done-3"}, "no other Task was told"
        # The observers hear every event too, in order and at once.
        assert ("DELETED", "done-3") in recorder.observed


async def test_listed_bodies_carry_their_kind_for_events_about_them(
    task_api: TaskApi, tasks: Tasks, namespace: str
) -> None:
    tasks.create("one", "h")
    bodies: list[dict[str, Any]] = []

    async def keep(kind: str, body: dict[str, Any]) -> None:
        bodies.append(body)

    async with running(TaskFeed(task_api, [namespace], keep)):
        pass
    (body,) = bodies
    # Events are posted about these bodies (involvedObject needs apiVersion and kind).
    assert body["apiVersion"] == API_VERSION and body["kind"] == "Task"


async def test_one_event_at_a_time_per_task_and_a_bounded_number_of_tasks_at_once(
    task_api: TaskApi, tasks: Tasks, namespace: str
) -> None:
    for i in range(12):
        tasks.create(f"t{i}", "h")
    recorder = Recorder(delay=0.2)
    feed = TaskFeed(task_api, [namespace], recorder.handle, concurrency=4)
    started = time.monotonic()
    async with running(feed):
        took = time.monotonic() - started
    assert recorder.names() == {f"t{i}" for i in range(12)}
    assert recorder.most == 4, f"{recorder.most} Tasks handled at once"
    assert took >= 3 * 0.2, "12 Tasks 4 at a time take three rounds"


async def test_watches_of_many_namespaces_leave_the_requests_their_connections(
    control_plane: ControlPlane, tasks: Tasks, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An operator for twelve namespaces holds twelve watches; its requests (admissions,
    # status writes) must still get connections.
    monkeypatch.setenv("KUBECONFIG", str(Path(control_plane.kubeconfig)))
    api = KubeApi(load_configuration(), connections=4)
    tasks.create("one", "h")
    others = [f"{namespace[:50]}-{i}" for i in range(11)]  # empty: no such namespace
    feed = TaskFeed(TaskApi(api), [namespace, *others], Recorder().handle)
    try:
        async with running(feed):
            await asyncio.sleep(0.5)  # every watch open
            found = await asyncio.wait_for(TaskApi(api).get(namespace, "one"), 5)
            assert found is not None
    finally:
        await api.close()
