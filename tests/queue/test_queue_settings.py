"""A queue's settings (from its Queue resource) as the dequeue script enforces them: pause,
the cap on tasks in flight across workers, the token bucket, timeouts and retention; and
queues of two namespaces that share a name but nothing else. Fake time throughout."""

from __future__ import annotations

import redis.asyncio as aioredis

from fixtures.redis import dump
from kubetasks.clock import FakeClock
from kubetasks.queue import Broker, QueueSettings, TaskMessage


def tasks(n: int, prefix: str = "t", **kw: object) -> list[TaskMessage]:
    return [TaskMessage(id=f"{prefix}{i}", handler="h", **kw) for i in range(n)]  # type: ignore[arg-type]


async def test_a_paused_queue_starts_nothing_and_resuming_wakes_the_workers(
    broker: Broker, raw: aioredis.Redis
) -> None:
    await broker.enqueue(tasks(3))
    await raw.delete("kubetasks:{default/default}:notify")  # the idle workers took them
    assert await broker.configure("default", QueueSettings(paused=True)) == 0
    got = await broker.lease("default", "w1", 10, 30)
    assert (got.tasks, got.held) == ([], "paused")
    assert (await broker.stats("default")).pending == 3
    assert await broker.configure("default", QueueSettings(paused=False)) == 3
    assert await raw.llen("kubetasks:{default/default}:notify") == 3
    got = await broker.lease("default", "w1", 10, 30)
    assert [t.message.id for t in got.tasks] == ["t0", "t1", "t2"]
    assert got.held is None


async def test_max_in_flight_caps_running_tasks_across_workers(broker: Broker) -> None:
    await broker.enqueue(tasks(10))
    await broker.configure("default", QueueSettings(max_in_flight=5))
    first = await broker.lease("default", "w1", 3, 30)
    second = await broker.lease("default", "w2", 10, 30)
    third = await broker.lease("default", "w3", 10, 30)
    assert [len(d.tasks) for d in (first, second, third)] == [3, 2, 0]
    assert (first.held, second.held, third.held) == (None, "capped", "capped")
    assert third.retry_after > 0
    # One ends: one slot frees, and only one.
    await broker.ack("default", "w1", [(first.tasks[0].message.id, 1, "null")])
    assert len((await broker.lease("default", "w3", 10, 30)).tasks) == 1
    # Raising the cap takes effect on the next dequeue, nothing restarted.
    await broker.configure("default", QueueSettings(max_in_flight=8))
    assert len((await broker.lease("default", "w3", 10, 30)).tasks) == 3
    assert (await broker.stats("default")).active == 8


async def test_the_rate_limit_is_a_token_bucket_shared_by_workers(
    broker: Broker, clock: FakeClock
) -> None:
    await broker.enqueue(tasks(300))
    await broker.configure("default", QueueSettings(rate=20, burst=5))
    burst = await broker.lease("default", "w1", 10, 30)
    assert (len(burst.tasks), burst.held) == (5, "throttled")
    assert abs(burst.retry_after - 0.05) < 1e-9  # one token per 50 ms
    assert (await broker.lease("default", "w2", 10, 30)).tasks == []
    started = 5
    for _ in range(100):  # ten seconds in steps of 100 ms, two workers asking each time
        clock.advance(0.1)
        for worker in ("w1", "w2"):
            started += len((await broker.lease("default", worker, 10, 30)).tasks)
    assert started == 5 + 20 * 10  # the burst, then exactly the rate


async def test_the_default_bucket_holds_a_tenth_of_a_second_of_starts(
    broker: Broker, clock: FakeClock
) -> None:
    assert [QueueSettings(rate=r).bucket_size for r in (0.5, 2, 20, 30, 1000)] == [
        1, 1, 2, 3, 100
    ]  # fmt: skip
    await broker.enqueue(tasks(40))
    await broker.configure("default", QueueSettings(rate=2))
    assert len((await broker.lease("default", "w1", 10, 30)).tasks) == 1
    clock.advance(0.25)
    assert len((await broker.lease("default", "w1", 10, 30)).tasks) == 0
    clock.advance(0.25)
    assert len((await broker.lease("default", "w1", 10, 30)).tasks) == 1
    await broker.configure("default", QueueSettings(rate=50))
    clock.advance(10)  # a long quiet spell saves up one bucket, not ten seconds of starts
    assert len((await broker.lease("default", "w1", 20, 30)).tasks) == 5
    clock.advance(0.05)  # 50 ms on: two and a half tokens, two starts
    assert len((await broker.lease("default", "w1", 20, 30)).tasks) == 2


async def test_a_worker_with_a_clock_behind_adds_no_tokens(
    broker: Broker, clock: FakeClock
) -> None:
    await broker.enqueue(tasks(10))
    await broker.configure("default", QueueSettings(rate=1))
    assert len((await broker.lease("default", "ahead", 10, 30)).tasks) == 1
    clock.advance(-5)  # another worker's clock, five seconds behind
    assert (await broker.lease("default", "behind", 10, 30)).tasks == []
    clock.advance(5)
    assert (await broker.lease("default", "ahead", 10, 30)).tasks == []
    clock.advance(1)
    assert len((await broker.lease("default", "ahead", 10, 30)).tasks) == 1


async def test_tasks_run_with_the_queues_default_and_maximum_timeout(broker: Broker) -> None:
    await broker.enqueue(
        [
            TaskMessage(id="none", handler="h"),
            TaskMessage(id="short", handler="h", timeout=5),
            TaskMessage(id="long", handler="h", timeout=600),
        ]
    )
    await broker.configure("default", QueueSettings(default_timeout=30, max_timeout=60))
    got = await broker.lease("default", "w1", 10, 30)
    assert {t.message.id: t.message.timeout for t in got.tasks} == {
        "none": 30,
        "short": 5,
        "long": 60,
    }


async def test_finished_records_are_kept_as_long_as_the_queue_says(
    broker: Broker, raw: aioredis.Redis
) -> None:
    await broker.configure("default", QueueSettings(retention=60))
    await broker.enqueue(tasks(1))
    (leased,) = await broker.dequeue("default", "w1", 1, 30)
    await broker.ack("default", "w1", [("t0", leased.attempt, "1")])
    assert 0 < await raw.ttl("kubetasks:{default/default}:t:t0") <= 60
    await broker.configure("default", None)
    assert await broker.settings("default") is None


async def test_two_namespaces_share_a_queue_name_and_nothing_else(
    broker: Broker, raw: aioredis.Redis
) -> None:
    team_a, team_b = broker.in_namespace("team-a"), broker.in_namespace("team-b")
    unique = {"unique_key": "report:2026-12", "unique_for": 3600}
    (a,) = await team_a.enqueue([TaskMessage(id="a1", handler="h", **unique)])  # type: ignore[arg-type]
    (b,) = await team_b.enqueue([TaskMessage(id="b1", handler="h", **unique)])  # type: ignore[arg-type]
    assert (a.outcome, b.outcome) == ("queued", "queued")  # a unique key is per namespace
    await team_a.configure("default", QueueSettings(paused=True))
    assert (await team_a.lease("default", "team-a/w", 10, 30)).held == "paused"
    (leased,) = await team_b.dequeue("default", "team-b/w", 10, 30)
    assert leased.message.id == "b1"
    assert await team_b.get_task("default", "a1") is None
    assert (await team_a.stats("default")).pending == 1
    assert await broker.all_queues() == [("team-a", "default"), ("team-b", "default")]
    assert {k.split("}")[0] for k in (await dump(raw)) if "{" in k} == {
        "kubetasks:{team-a/default",
        "kubetasks:{team-b/default",
    }
