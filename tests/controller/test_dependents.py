"""The registry of Tasks waiting for others: who is woken when a dependency ends, and what is
remembered (only what someone waits on)."""

from __future__ import annotations

from typing import Any

from kubetasks.controller.dependents import Dependents


def task(
    name: str, phase: str | None = None, depends_on: list[str] | None = None, **status: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}"},
        "spec": {"handler": "h"},
    }
    if depends_on:
        body["spec"]["dependsOn"] = depends_on
    if phase:
        body["status"] = {"phase": phase, **status}
    return body


def test_a_dependency_that_ends_wakes_its_waiting_dependents_once_each() -> None:
    deps = Dependents()
    assert deps.observe(task("join", "Waiting", ["a", "b"])) == []
    assert deps.observe(task("other", None, ["a"])) == []
    assert deps.observe(task("a", "Running")) == []
    assert deps.known("ns", "a") == ("Running", None)
    woken = deps.observe(task("a", "Succeeded", result={"n": 1}))
    assert sorted(t["metadata"]["name"] for t in woken) == ["join", "other"]
    assert deps.known("ns", "a") == ("Succeeded", {"n": 1})
    # "other" is admitted (queued): it no longer waits, and b wakes only "join".
    deps.observe(task("other", "Queued", ["a"]))
    assert [t["metadata"]["name"] for t in deps.observe(task("b", "Failed"))] == ["join"]


def test_nothing_is_kept_for_tasks_no_one_waits_on() -> None:
    deps = Dependents()
    for i in range(100):
        assert deps.observe(task(f"t{i}", "Succeeded", result={"big": "x" * 100})) == []
    assert deps.known("ns", "t5") is None
    deps.remember("ns", "t5", ("Succeeded", {"big": "x"}))  # nobody waits: not kept
    assert deps.known("ns", "t5") is None


def test_what_is_kept_goes_when_the_last_dependent_is_admitted_or_deleted() -> None:
    deps = Dependents()
    deps.observe(task("c", "Waiting", ["a"]))
    deps.observe(task("d", "Waiting", ["a"]))
    deps.remember("ns", "a", ("Running", None))  # not final: read again next time
    assert deps.known("ns", "a") is None
    deps.remember("ns", "a", ("Succeeded", 7))
    assert deps.known("ns", "a") == ("Succeeded", 7)
    deps.observe(task("c", "Queued", ["a"]))
    assert deps.known("ns", "a") == ("Succeeded", 7)
    deps.deleted(task("d", "Waiting", ["a"]))
    assert deps.known("ns", "a") is None
    assert deps.waiting() == 0


def test_a_deleted_dependency_is_forgotten_so_its_dependents_wait_for_a_new_one() -> None:
    deps = Dependents()
    deps.observe(task("c", "Waiting", ["a"]))
    deps.observe(task("a", "Running"))
    deps.deleted(task("a", "Running"))
    assert deps.known("ns", "a") == (None, None)
    woken = deps.observe(task("a", "Succeeded", result=1))  # a new Task of that name
    assert [t["metadata"]["name"] for t in woken] == ["c"]


def test_a_task_being_deleted_stops_waiting() -> None:
    deps = Dependents()
    deps.observe(task("c", "Waiting", ["a"]))
    deleting = task("c", "Waiting", ["a"])
    deleting["metadata"]["deletionTimestamp"] = "2026-11-23T00:00:00Z"
    deps.observe(deleting)
    assert deps.observe(task("a", "Succeeded")) == []
