"""The inspector against a real Redis: tasks put there by the broker's own transitions, then
read, paged, searched, re-run and removed as the dashboard and the CLI do."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis.asyncio as aioredis

from kubetasks.clock import FakeClock
from kubetasks.queue import Broker, TaskMessage
from kubetasks.queue.inspector import Inspector, UnknownStateError

Q = "kubetasks:{default/default}:"


@pytest.fixture
def inspector(broker: Broker) -> Inspector:
    return Inspector(broker)


async def output_bytes(raw: aioredis.Redis) -> int:
    return int((await raw.info("stats"))["total_net_output_bytes"])


async def lease_one(broker: Broker, worker: str = "w1", queue: str = "default") -> str:
    (leased,) = await broker.dequeue(queue, worker, 1, 30)
    return leased.message.id


async def test_every_attempt_is_in_the_history_with_its_worker_and_times(
    broker: Broker, inspector: Inspector, clock: FakeClock
) -> None:
    await broker.enqueue([TaskMessage(id="t1", handler="jobs.resize", args=[1], max_retries=1)])
    start = clock.now()
    await lease_one(broker, "pod-a")
    clock.advance(2)
    error = json.dumps({"type": "ValueError", "message": "bad", "traceback": "Traceback ...\n"})
    assert await broker.retry("default", "pod-a", "t1", 1, clock.now() + 1, error)
    clock.advance(1)
    await broker.promote("default")
    await lease_one(broker, "pod-b")
    clock.advance(3)
    assert await broker.fail("default", "pod-b", "t1", 2, "failed", error)

    detail = await inspector.task("default", "t1")
    assert detail is not None
    assert detail.info.state == "failed"
    assert detail.info.message.args == [1]
    assert detail.info.error is not None and detail.info.error["traceback"] == "Traceback ...\n"
    assert [
        (a.number, a.worker, a.started_at, a.finished_at, a.outcome, a.error_type)
        for a in detail.history
    ] == [
        (1, "pod-a", start, start + 2, "retried", "ValueError"),
        (2, "pod-b", start + 3, start + 6, "failed", "ValueError"),
    ]
    assert detail.resource is None
    assert await inspector.task("default", "nope") is None


async def test_history_keeps_the_last_twenty_attempts(broker: Broker, inspector: Inspector) -> None:
    await broker.enqueue([TaskMessage(id="t", handler="h", max_retries=30)])
    for attempt in range(1, 26):
        await broker.promote("default")
        assert await lease_one(broker) == "t"
        assert await broker.retry("default", "w1", "t", attempt, 0, '{"type":"E"}')
    detail = await inspector.task("default", "t")
    assert detail is not None
    assert [a.number for a in detail.history] == list(range(6, 26))


async def test_a_lost_attempt_and_a_success_are_recorded(
    broker: Broker, inspector: Inspector, clock: FakeClock
) -> None:
    await broker.enqueue([TaskMessage(id="t", handler="h")])
    await lease_one(broker, "gone")
    await broker.reclaim("default", worker_id="gone")
    await lease_one(broker, "w2")
    await broker.ack("default", "w2", [("t", 2, "42")])
    detail = await inspector.task("default", "t")
    assert detail is not None
    assert [(a.worker, a.outcome, a.error_type) for a in detail.history] == [
        ("gone", "lost", "WorkerLost"),
        ("w2", "succeeded", None),
    ]
    assert detail.info.result == 42


async def test_paging_10000_pending_tasks_reads_one_page_at_a_time(
    broker: Broker, inspector: Inspector, raw: aioredis.Redis
) -> None:
    ids = [f"task-{i:05d}" for i in range(10_000)]
    await broker.enqueue(TaskMessage(id=i, handler="h", args=["x" * 100]) for i in ids)

    before = await output_bytes(raw)
    page = await inspector.list_tasks("default", "pending", limit=50)
    sent = await output_bytes(raw) - before
    assert [t.id for t in page.tasks] == ids[:50]
    assert page.total == 10_000
    # The whole state is over 1 MB of records; one page is its 50 records and a little more
    # (the INFO reply measuring it counts too).
    assert sent < 30_000, sent

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await inspector.list_tasks("default", "pending", cursor=cursor, limit=500)
        assert len(page.tasks) <= 500
        seen += [t.id for t in page.tasks]
        pages += 1
        if page.cursor is None:
            break
        cursor = page.cursor
    assert seen == ids
    assert pages == 20


async def test_search_by_id_prefix_handler_and_label(broker: Broker, inspector: Inspector) -> None:
    messages = [TaskMessage(id=f"bulk-{i:04d}", handler="jobs.thumbnail") for i in range(3000)]
    messages[2500] = TaskMessage(id="abc-1", handler="jobs.thumbnail", labels={"team": "search"})
    messages.append(TaskMessage(id="abd-2", handler="billing.invoice"))
    await broker.enqueue(messages)

    async def everything(search: str) -> tuple[list[str], int]:
        found, cursor, calls = [], None, 0
        while True:
            page = await inspector.list_tasks(
                "default", "pending", cursor=cursor, limit=10, search=search
            )
            found += [t.id for t in page.tasks]
            calls += 1
            if page.cursor is None:
                return found, calls
            cursor = page.cursor

    assert await everything("ab") == (["abc-1", "abd-2"], 2)  # 2 calls: 2000 looked at each
    assert (await everything("invoice"))[0] == ["abd-2"]
    assert (await everything("team=search"))[0] == ["abc-1"]
    assert (await everything("team=other"))[0] == []
    page = await inspector.list_tasks("default", "pending", limit=5, search="bulk-00")
    assert [t.id for t in page.tasks] == [f"bulk-{i:04d}" for i in range(5)]
    assert page.cursor == "5"


async def test_each_state_lists_its_own_tasks(
    broker: Broker, inspector: Inspector, clock: FakeClock
) -> None:
    now = clock.now()
    await broker.enqueue(
        [
            TaskMessage(id="later", handler="h", run_at=now + 60),
            TaskMessage(id="runs", handler="h"),
            TaskMessage(id="retries", handler="h"),
            TaskMessage(id="dies", handler="h", max_retries=0),
            TaskMessage(id="ok", handler="h"),
            TaskMessage(id="waits", handler="h"),
        ]
    )
    leased = [t.message.id for t in await broker.dequeue("default", "w", 4, 30)]
    assert leased == ["runs", "retries", "dies", "ok"]
    await broker.retry("default", "w", "retries", 1, now + 5, '{"type":"E","message":"m"}')
    await broker.fail("default", "w", "dies", 1, "failed", '{"type":"Boom","message":"x"}')
    await broker.ack("default", "w", [("ok", 1, "1")])
    await broker.enqueue([TaskMessage(id="gone", handler="h")])
    await broker.cancel("default", "gone")

    async def ids(state: str) -> list[str]:
        return [t.id for t in (await inspector.list_tasks("default", state)).tasks]

    assert await ids("pending") == ["waits"]
    assert await ids("scheduled") == ["later"]
    assert await ids("retrying") == ["retries"]
    assert await ids("active") == ["runs"]
    assert await ids("dead") == ["dies"]
    assert await ids("failed") == ["dies"]
    assert await ids("succeeded") == ["ok"]
    assert await ids("cancelled") == ["gone"]
    (dead,) = (await inspector.list_tasks("default", "dead")).tasks
    assert (dead.error_type, dead.error_message, dead.attempts) == ("Boom", "x", 1)
    with pytest.raises(UnknownStateError, match="unknown state 'done'"):
        await inspector.list_tasks("default", "done")


async def test_scanned_states_page_with_a_scan_cursor(
    broker: Broker, inspector: Inspector, raw: aioredis.Redis
) -> None:
    await broker.enqueue(TaskMessage(id=f"t{i}", handler="h") for i in range(1500))
    done = [t.message.id for t in await broker.dequeue("default", "w", 1500, 30)]
    await broker.ack("default", "w", [(i, 1, "null") for i in done[:700]])
    seen: list[str] = []
    cursor: str | None = None
    while True:
        before = await output_bytes(raw)
        page = await inspector.list_tasks("default", "succeeded", cursor=cursor, limit=100)
        assert await output_bytes(raw) - before < 200_000
        seen += [t.id for t in page.tasks]
        if page.cursor is None:
            break
        cursor = page.cursor
    assert sorted(seen) == sorted(done[:700])


async def test_rerun_of_a_dead_task_starts_a_new_chain_and_keeps_the_old_record(
    broker: Broker, inspector: Inspector
) -> None:
    await broker.enqueue(
        [
            TaskMessage(
                id="old", handler="jobs.x", args=[7], max_retries=0, unique_key="k", unique_for=60
            )
        ]
    )
    await lease_one(broker)
    await broker.fail("default", "w1", "old", 1, "failed", '{"type":"E"}')

    new_id = await inspector.rerun_dead("default", "old")
    assert new_id is not None and new_id != "old"
    assert [t.id for t in (await inspector.list_tasks("default", "dead")).tasks] == []
    assert [t.id for t in (await inspector.list_tasks("default", "pending")).tasks] == [new_id]
    old = await inspector.task("default", "old")
    new = await inspector.task("default", new_id)
    assert old is not None and new is not None
    assert (old.info.state, old.rerun_as, len(old.history)) == ("failed", new_id, 1)
    assert (new.info.state, new.rerun_of, new.info.attempts) == ("pending", "old", 0)
    assert (new.info.message.handler, new.info.message.args) == ("jobs.x", [7])

    (leased,) = await broker.dequeue("default", "w2", 1, 30)
    assert (leased.message.id, leased.attempt) == (new_id, 1)
    await broker.ack("default", "w2", [(new_id, 1, '"done"')])
    finished = await inspector.task("default", new_id)
    assert finished is not None and finished.info.result == "done"

    assert await inspector.rerun_dead("default", "old") is None  # no longer dead
    assert await inspector.rerun_dead("default", "never") is None


async def test_delete_one_dead_task_and_purge_them_all(
    broker: Broker, inspector: Inspector, raw: aioredis.Redis
) -> None:
    n = 2500  # more than one purge script call
    async with raw.pipeline(transaction=False) as pipe:
        for i in range(n):
            pipe.hset(
                Q + f"t:d{i}",
                mapping={"msg": TaskMessage(id=f"d{i}", handler="h").encode(), "state": "failed"},
            )
            pipe.zadd(Q + "dead", {f"d{i}": i})
        await pipe.execute()
    await broker.enqueue(
        [TaskMessage(id="live", handler="h"), TaskMessage(id="other", handler="h", queue="other")]
    )
    await raw.sadd("kubetasks:queues", "default/default")

    assert await inspector.delete_dead("default", "d0")
    assert not await raw.exists(Q + "t:d0")
    assert not await inspector.delete_dead("default", "d0")
    assert not await inspector.delete_dead("default", "live")  # not dead: kept
    assert await inspector.purge_dead("default") == n - 1
    state_keys = sorted(await raw.keys("*"))
    assert state_keys == sorted(
        [
            "kubetasks:queues",
            Q + "pending",
            Q + "seq",
            Q + "notify",
            Q + "t:live",
            "kubetasks:{default/other}:pending",
            "kubetasks:{default/other}:seq",
            "kubetasks:{default/other}:notify",
            "kubetasks:{default/other}:t:other",
        ]
    )
    assert await inspector.purge_dead("default") == 0


async def test_overview_counts_every_queue_of_the_namespaces_asked(
    broker: Broker, inspector: Inspector, clock: FakeClock
) -> None:
    await broker.enqueue([TaskMessage(id=f"a{i}", handler="h") for i in range(3)])
    clock.advance(10)
    other = broker.in_namespace("team")
    await other.enqueue([TaskMessage(id="b", handler="h", queue="mail")])
    await lease_one(other, queue="mail")

    rows: dict[Any, Any] = {
        (s.namespace, s.queue): (s.pending, s.active, s.oldest_pending)
        for s in await inspector.queue_overview()
    }
    assert rows == {("default", "default"): (3, 0, 10.0), ("team", "mail"): (0, 1, None)}
    only = await inspector.queue_overview(["team"])
    assert [(s.namespace, s.queue) for s in only] == [("team", "mail")]
    assert await inspector.in_namespace("team").known("mail")
    assert not await inspector.known("mail")


async def test_the_oldest_pending_age_is_found_behind_any_number_of_higher_priorities(
    broker: Broker, inspector: Inspector, clock: FakeClock
) -> None:
    # The oldest task waits at priority 0 behind 1,500 newer ones at two higher priorities
    # (a page of the first 1,000 in line would not reach it); negative priorities too.
    await broker.enqueue([TaskMessage(id="old", handler="h", priority=0)])
    clock.advance(30)
    await broker.enqueue([TaskMessage(id="lowest", handler="h", priority=-2)])
    clock.advance(10)
    await broker.enqueue(
        [TaskMessage(id=f"p{i}", handler="h", priority=5 + i % 2) for i in range(1500)]
    )
    clock.advance(5)
    (stats,) = await inspector.queue_overview()
    assert (stats.pending, stats.oldest_pending) == (1502, 45.0)
    await broker.forget("default", "old")
    (stats,) = await inspector.queue_overview()
    assert (stats.pending, stats.oldest_pending) == (1501, 15.0)


async def test_a_record_expired_while_still_listed_is_skipped_not_its_neighbours(
    broker: Broker, inspector: Inspector, raw: aioredis.Redis
) -> None:
    await broker.enqueue(TaskMessage(id=f"t{i}", handler="h") for i in range(4))
    await raw.delete(Q + "t:t1")  # as a retention expiry would, its id still in the set
    page = await inspector.list_tasks("default", "pending", limit=2)
    assert ([t.id for t in page.tasks], page.cursor) == (["t0", "t2"], "3")
    page = await inspector.list_tasks("default", "pending", limit=2, cursor=page.cursor)
    assert ([t.id for t in page.tasks], page.cursor) == (["t3"], None)
