"""The finalizer and Queued status a just-queued Task owes: held for the grace, then written
within a budget, oldest first, and never for a Task a worker has taken in the meantime.

The writes go to a recorder standing in for the operator's own TaskApi and status writer
(the API server round trip is covered by tests/controller/test_tasks.py); the time is fake.
"""

from __future__ import annotations

from typing import Any, cast

import pytest

from kubetasks.clock import FakeClock
from kubetasks.controller.deferred import DeferredWrites
from kubetasks.controller.state import OperatorSettings, OperatorState
from kubetasks.vocabulary import TASK_FINALIZER


class Recorder:
    """What the API would have been asked to do, in order."""

    def __init__(self) -> None:
        self.finalized: list[str] = []
        self.queued: list[str] = []

    async def add_finalizer(self, body: dict[str, Any], finalizer: str) -> None:
        self.finalized.append(body["metadata"]["name"])

    async def write(
        self, namespace: str, name: str, patch: dict[str, Any], *, uid: str, fresh: bool = False
    ) -> bool:
        self.queued.append(name)
        return True


def task(i: int, phase: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"metadata": {"name": f"t-{i:04d}", "namespace": "ns", "uid": f"u{i}"}}
    if phase:
        body["status"] = {"phase": phase}
    return body


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def deferred(clock: FakeClock, recorder: Recorder) -> DeferredWrites:
    state = OperatorState(
        broker=cast(Any, None),
        api=cast(Any, None),
        writer=cast(Any, recorder),
        tasks=cast(Any, recorder),
        settings=OperatorSettings(),
        clock=clock,
    )
    return DeferredWrites(state, TASK_FINALIZER, grace=1.0, per_second=10.0)


async def test_nothing_is_written_within_the_grace(
    deferred: DeferredWrites, clock: FakeClock, recorder: Recorder
) -> None:
    deferred.defer(task(1), {"status": {"phase": "Queued"}})
    clock.advance(0.9)
    await deferred.tick()
    assert recorder.finalized == [] and recorder.queued == []
    assert deferred.interval() == pytest.approx(0.1)
    clock.advance(0.1)
    await deferred.tick()
    assert recorder.finalized == ["t-0001"] and recorder.queued == ["t-0001"]


async def test_a_task_a_worker_took_owes_only_its_finalizer_and_a_finished_one_nothing(
    deferred: DeferredWrites, clock: FakeClock, recorder: Recorder
) -> None:
    deferred.defer(task(1), {"status": {"phase": "Queued"}})
    deferred.defer(task(2), {"status": {"phase": "Queued"}})
    deferred.observe(task(1, "Running"))
    deferred.observe(task(2, "Succeeded"))
    clock.advance(1.0)
    await deferred.tick()
    assert recorder.finalized == ["t-0001"]
    assert recorder.queued == []
    assert deferred.owed() == 0


async def test_a_burst_is_written_within_the_budget_oldest_first(
    deferred: DeferredWrites, clock: FakeClock, recorder: Recorder
) -> None:
    for i in range(300):
        deferred.defer(task(i), {"status": {"phase": "Queued"}})
        clock.advance(0.001)
    clock.advance(1.0)
    await deferred.tick()
    # Ten seconds' worth of the budget saved up: the first 100, in the order they came.
    assert recorder.queued == [f"t-{i:04d}" for i in range(100)]
    assert deferred.interval() == pytest.approx(0.1)
    # Workers take 50 of the waiting ones meanwhile: they owe nothing any more.
    for i in range(100, 150):
        deferred.observe(task(i, "Succeeded"))
    clock.advance(1.0)
    await deferred.tick()
    assert recorder.queued[100:] == [f"t-{i:04d}" for i in range(150, 160)]
    clock.advance(60.0)  # a quiet minute saves up no more than ten seconds' worth
    await deferred.tick()
    assert len(recorder.queued) == 210
    clock.advance(4.0)
    await deferred.tick()
    assert len(recorder.queued) == 250
    assert recorder.queued[-1] == "t-0299"
    assert deferred.owed() == 0
