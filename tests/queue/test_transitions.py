"""Each Lua transition, asynq style: seed the whole state, run one transition, compare the
whole state afterwards. Time comes from a fake clock, so scores are exact."""

from __future__ import annotations

import json
from typing import Any

import redis.asyncio as aioredis

from fixtures.redis import dump, seed
from kubetasks.clock import FakeClock
from kubetasks.queue import Broker, TaskMessage
from kubetasks.queue.broker import load_source
from kubetasks.queue.wire import NOTIFY_CAP

NOW = 1_800_000_000_000  # ms, the fake clock's start
Q = "kubetasks:{default/default}:"
PRIO = 1099511627776  # 2**40: one priority step in the pending score


def msg(task_id: str, **kw: Any) -> str:
    return TaskMessage(id=task_id, handler="h", **kw).encode()


def task_hash(task_id: str, state: str, score: int, **fields: Any) -> dict[str, str]:
    record = {
        "msg": msg(task_id),
        "state": state,
        "score": str(score),
        "attempts": "0",
        "max_retries": "3",
        "deadline": "0",
        "unique": "",
        "enqueued_at": str(NOW - 1000),
    }
    record.update({k: str(v) for k, v in fields.items()})
    return record


async def test_enqueue_new_tasks_by_priority_then_fifo(broker: Broker, raw: aioredis.Redis) -> None:
    results = await broker.enqueue(
        [
            TaskMessage(id="a", handler="h"),
            TaskMessage(id="b", handler="h", priority=5),
            TaskMessage(id="c", handler="h", run_at=NOW / 1000 + 60),
        ]
    )
    assert [r.outcome for r in results] == ["queued", "queued", "scheduled"]
    assert await dump(raw) == {
        "kubetasks:queues": ["default/default"],
        Q + "notify": ["1", "1", "1"],
        Q + "pending": [("b", -5 * PRIO + 2), ("a", 1)],
        Q + "scheduled": [("c", NOW + 60_000)],
        Q + "seq": "3",
        Q + "t:a": task_hash("a", "pending", 1, enqueued_at=NOW) | {"msg": msg("a")},
        Q + "t:b": task_hash("b", "pending", -5 * PRIO + 2, enqueued_at=NOW)
        | {"msg": msg("b", priority=5)},
        Q + "t:c": task_hash("c", "scheduled", 3, enqueued_at=NOW)
        | {"msg": msg("c", run_at=NOW / 1000 + 60)},
    }


async def test_wake_up_tokens_nobody_takes_stay_between_the_cap_and_twice_it(
    broker: Broker, raw: aioredis.Redis
) -> None:
    """Each enqueue leaves a token; with no worker to take them the list is cut back to
    NOTIFY_CAP once it passes twice that (one LTRIM per NOTIFY_CAP enqueues)."""
    lengths = []
    for i in range(3 * NOTIFY_CAP):
        await broker.enqueue([TaskMessage(id=f"t{i}", handler="h")])
        lengths.append(await raw.llen(Q + "notify"))
    assert lengths[: 2 * NOTIFY_CAP] == list(range(1, 2 * NOTIFY_CAP + 1))
    assert lengths[2 * NOTIFY_CAP] == NOTIFY_CAP  # the one past twice the cap: cut back
    assert max(lengths) == 2 * NOTIFY_CAP and min(lengths[2 * NOTIFY_CAP :]) == NOTIFY_CAP


def test_each_script_carries_only_the_helpers_it_calls() -> None:
    """``load_source`` puts in front of a script the lib.lua helpers it uses, and those
    they use, not the whole file (every run of a script defines them again)."""
    enqueue = load_source("enqueue")
    assert "local function wake(" in enqueue
    assert "local function finish(" not in enqueue and "HISTORY" not in enqueue
    ack = load_source("ack")
    # ack calls finish, which calls release_unique and trim_history, which reads HISTORY
    for helper in ("local function finish(", "local function release_unique(",
                   "local function trim_history(", "local HISTORY ="):  # fmt: skip
        assert helper in ack
    assert ack.index("local HISTORY =") < ack.index("local function finish(")


async def test_enqueue_same_id_twice_changes_nothing(broker: Broker, raw: aioredis.Redis) -> None:
    await broker.enqueue([TaskMessage(id="a", handler="h")])
    before = await dump(raw)
    (again,) = await broker.enqueue([TaskMessage(id="a", handler="other", priority=9)])
    assert again.outcome == "exists"
    assert await dump(raw) == before


async def test_enqueue_duplicate_unique_key_reports_the_holder(
    broker: Broker, raw: aioredis.Redis
) -> None:
    first, second = await broker.enqueue(
        [
            TaskMessage(id="a", handler="h", unique_key="k", unique_for=60),
            TaskMessage(id="b", handler="h", unique_key="k", unique_for=60),
        ]
    )
    assert (first.outcome, second.outcome, second.holder) == ("queued", "duplicate", "a")
    state = await dump(raw)
    assert state[Q + "u:k"] == "a"
    assert Q + "t:b" not in state
    assert 0 < await raw.ttl(Q + "u:k") <= 60


async def test_dequeue_leases_highest_priority_first(broker: Broker, raw: aioredis.Redis) -> None:
    await seed(
        raw,
        {
            Q + "pending": [("low", 2), ("high", -PRIO + 3), ("old", 1)],
            Q + "t:low": task_hash("low", "pending", 2),
            Q + "t:high": task_hash("high", "pending", -PRIO + 3),
            Q + "t:old": task_hash("old", "pending", 1),
        },
    )
    leased = await broker.dequeue("default", "w1", 2, lease_seconds=30)
    assert [(item.message.id, item.attempt) for item in leased] == [("high", 1), ("old", 1)]
    assert await dump(raw) == {
        Q + "pending": [("low", 2)],
        Q + "active": [("high", NOW + 30_000), ("old", NOW + 30_000)],
        Q + "t:low": task_hash("low", "pending", 2),
        Q + "t:high": task_hash(
            "high", "active", -PRIO + 3, attempts=1, worker="w1", started_at=NOW
        ),
        Q + "t:old": task_hash("old", "active", 1, attempts=1, worker="w1", started_at=NOW),
    }


async def test_dequeue_never_starts_a_task_past_its_deadline(
    broker: Broker, raw: aioredis.Redis
) -> None:
    await seed(
        raw,
        {
            Q + "pending": [("late", 1)],
            Q + "t:late": task_hash("late", "pending", 1, deadline=NOW - 1, unique="k"),
            Q + "u:k": "late",
        },
    )
    (ended,) = await broker.dequeue("default", "w1", 10, lease_seconds=30)
    assert (ended.message.id, ended.attempt, ended.ended) == ("late", 0, "deadline_exceeded")
    state = await dump(raw)
    error = json.loads(state[Q + "t:late"].pop("error"))
    assert error["type"] == "DeadlineExceeded"
    assert state == {
        Q + "dead": [("late", NOW)],
        Q + "stats": {"failed": "1"},
        Q + "t:late": task_hash(
            "late", "deadline_exceeded", 1, deadline=NOW - 1, unique="k", finished_at=NOW
        ),
    }
    assert await raw.ttl(Q + "t:late") > 0


def active_state(**fields: Any) -> dict[str, Any]:
    return {
        Q + "active": [("a", NOW + 5000)],
        Q + "t:a": task_hash("a", "active", 7, attempts=1, worker="w1", started_at=NOW - 10)
        | {k: str(v) for k, v in fields.items()},
    }


async def test_ack_records_the_result_and_frees_the_unique_key(
    broker: Broker, raw: aioredis.Redis
) -> None:
    await seed(raw, active_state(unique="k") | {Q + "u:k": "a"})
    assert await broker.ack("default", "w1", [("a", 1, '{"ok":true}')]) == []
    assert await dump(raw) == {
        Q + "stats": {"processed": "1"},
        Q + "t:a": task_hash(
            "a",
            "succeeded",
            7,
            attempts=1,
            worker="w1",
            started_at=NOW - 10,
            unique="k",
            finished_at=NOW,
            result='{"ok":true}',
            **{"a:1": f"w1|{NOW - 10}|{NOW}|succeeded|"},
        ),
    }


async def test_ack_of_a_stale_attempt_or_another_worker_changes_nothing(
    broker: Broker, raw: aioredis.Redis
) -> None:
    await seed(raw, active_state())
    before = await dump(raw)
    assert await broker.ack("default", "w1", [("a", 2, "1")]) == ["a"]
    assert await broker.ack("default", "w2", [("a", 1, "1")]) == ["a"]
    assert await dump(raw) == before


async def test_retry_schedules_the_next_attempt(broker: Broker, raw: aioredis.Redis) -> None:
    await seed(raw, active_state())
    assert await broker.retry("default", "w1", "a", 1, NOW / 1000 + 2, '{"type":"E"}')
    assert await dump(raw) == {
        Q + "scheduled": [("a", NOW + 2000)],
        Q + "notify": ["1"],  # an idle worker wakes to learn the new due time
        Q + "stats": {"failed": "1"},
        Q + "t:a": task_hash(
            "a",
            "retrying",
            7,
            attempts=1,
            worker="w1",
            started_at=NOW - 10,
            error='{"type":"E"}',
            next_retry_at=NOW + 2000,
            **{"a:1": f"w1|{NOW - 10}|{NOW}|retried|E"},
        ),
    }


async def test_fail_moves_to_dead_but_cancel_does_not(broker: Broker, raw: aioredis.Redis) -> None:
    await seed(raw, active_state())
    assert await broker.fail("default", "w1", "a", 1, "failed", '{"type":"E"}')
    state = await dump(raw)
    assert state[Q + "dead"] == [("a", NOW)]
    assert state[Q + "stats"] == {"failed": "1"}
    assert state[Q + "t:a"]["state"] == "failed"
    assert state[Q + "t:a"]["a:1"] == f"w1|{NOW - 10}|{NOW}|failed|E"

    await seed(raw, active_state())
    assert await broker.fail("default", "w1", "a", 1, "cancelled", '{"type":"Cancelled"}')
    state = await dump(raw)
    assert set(state) == {Q + "t:a"}
    assert state[Q + "t:a"]["state"] == "cancelled"
    assert state[Q + "t:a"]["a:1"] == f"w1|{NOW - 10}|{NOW}|cancelled|Cancelled"


async def test_requeue_hands_back_without_spending_the_attempt(
    broker: Broker, raw: aioredis.Redis
) -> None:
    await seed(raw, active_state())
    assert await broker.requeue("default", "w1", "a", 1)
    assert await dump(raw) == {
        Q + "pending": [("a", 7)],
        Q + "notify": ["1"],
        Q + "t:a": task_hash("a", "pending", 7, attempts=0, worker="", started_at=NOW - 10),
    }


async def test_promote_moves_due_tasks_and_reports_the_next(
    broker: Broker, raw: aioredis.Redis
) -> None:
    await seed(
        raw,
        {
            Q + "scheduled": [("due", NOW - 1), ("later", NOW + 500)],
            Q + "t:due": task_hash("due", "retrying", 4),
            Q + "t:later": task_hash("later", "scheduled", 5),
        },
    )
    assert await broker.promote("default") == (1, (NOW + 500) / 1000)
    assert await dump(raw) == {
        Q + "pending": [("due", 4)],
        Q + "scheduled": [("later", NOW + 500)],
        Q + "notify": ["1"],
        Q + "t:due": task_hash("due", "pending", 4),
        Q + "t:later": task_hash("later", "scheduled", 5),
    }


async def test_reclaim_returns_expired_leases_and_buries_exhausted_tasks(
    broker: Broker, raw: aioredis.Redis
) -> None:
    await seed(
        raw,
        {
            Q + "active": [("gone", NOW - 1), ("spent", NOW - 1), ("alive", NOW + 1)],
            Q + "t:gone": task_hash("gone", "active", 1, attempts=1, worker="w9"),
            Q + "t:spent": task_hash("spent", "active", 2, attempts=4, worker="w9"),
            Q + "t:alive": task_hash("alive", "active", 3, attempts=1, worker="w1"),
        },
    )
    requeued, dead = await broker.reclaim("default")
    assert requeued == 1
    assert [(d.message.id, d.attempt, d.ended) for d in dead] == [("spent", 4, "failed")]
    state = await dump(raw)
    assert json.loads(state[Q + "t:gone"].pop("error"))["type"] == "WorkerLost"
    assert json.loads(state[Q + "t:spent"].pop("error"))["type"] == "WorkerLost"
    assert state == {
        Q + "active": [("alive", NOW + 1)],
        Q + "pending": [("gone", 1)],
        Q + "dead": [("spent", NOW)],
        Q + "notify": ["1"],
        Q + "stats": {"failed": "1"},
        Q + "t:gone": task_hash(
            "gone", "pending", 1, attempts=1, worker="", **{"a:1": f"w9||{NOW}|lost|WorkerLost"}
        ),
        Q + "t:spent": task_hash(
            "spent",
            "failed",
            2,
            attempts=4,
            worker="w9",
            finished_at=NOW,
            **{"a:4": f"w9||{NOW}|lost|WorkerLost"},
        ),
        Q + "t:alive": task_hash("alive", "active", 3, attempts=1, worker="w1"),
    }


async def test_reclaim_by_worker_takes_back_its_tasks_before_the_lease_ends(
    broker: Broker, raw: aioredis.Redis
) -> None:
    await seed(
        raw,
        {
            Q + "active": [("mine", NOW + 9000), ("theirs", NOW + 9000)],
            Q + "t:mine": task_hash("mine", "active", 1, attempts=1, worker="pod-a"),
            Q + "t:theirs": task_hash("theirs", "active", 2, attempts=1, worker="pod-b"),
        },
    )
    assert await broker.reclaim("default", worker_id="pod-a") == (1, [])
    state = await dump(raw)
    assert state[Q + "active"] == [("theirs", NOW + 9000)]
    assert state[Q + "pending"] == [("mine", 1)]


async def test_cancel_removes_waiting_tasks_and_flags_running_ones(
    broker: Broker, raw: aioredis.Redis
) -> None:
    await seed(
        raw,
        {
            Q + "pending": [("p", 1)],
            Q + "scheduled": [("s", NOW + 1)],
            Q + "t:p": task_hash("p", "pending", 1),
            Q + "t:s": task_hash("s", "scheduled", 2),
        }
        | active_state(),
    )
    assert await broker.cancel("default", "p") == "cancelled"
    assert await broker.cancel("default", "s") == "cancelled"
    assert await broker.cancel("default", "a") == "cancelling"
    assert await broker.cancel("default", "p") == "cancelled"  # already final: unchanged
    assert await broker.cancel("default", "nope") == "missing"
    state = await dump(raw)
    assert Q + "pending" not in state and Q + "scheduled" not in state
    assert state[Q + "t:p"]["state"] == state[Q + "t:s"]["state"] == "cancelled"
    assert state[Q + "t:a"]["cancel"] == "1"
    assert state[Q + "active"] == [("a", NOW + 5000)]


async def test_heartbeat_extends_leases_and_reports_cancel_and_loss(
    broker: Broker, raw: aioredis.Redis, clock: FakeClock
) -> None:
    await seed(
        raw,
        active_state(cancel=1) | {Q + "t:b": task_hash("b", "active", 8, attempts=2, worker="w2")},
    )
    clock.advance(1)
    cancel, lost = await broker.heartbeat("default", "w1", ["a", "b", "zz"], lease_seconds=30)
    assert (cancel, lost) == (["a"], ["b", "zz"])
    assert (await dump(raw))[Q + "active"] == [("a", NOW + 31_000)]


async def test_stats_count_every_set(broker: Broker, raw: aioredis.Redis) -> None:
    await seed(
        raw,
        {
            Q + "pending": [("p1", 1), ("p2", 2)],
            Q + "scheduled": [("due", NOW - 5), ("later", NOW + 5)],
            Q + "active": [("a", NOW + 5)],
            Q + "dead": [("d", NOW)],
            Q + "stats": {"processed": "10", "failed": "3"},
        },
    )
    stats = await broker.stats("default")
    assert (stats.pending, stats.scheduled, stats.due, stats.active, stats.dead) == (2, 1, 1, 1, 1)
    assert (stats.processed, stats.failed, stats.depth) == (10, 3, 4)


async def test_enqueue_restored_task_continues_its_attempt_count(
    broker: Broker, raw: aioredis.Redis
) -> None:
    await broker.enqueue([TaskMessage(id="a", handler="h")], spent={"a": 2})
    (leased,) = await broker.dequeue("default", "w1", 1, lease_seconds=30)
    assert leased.attempt == 3
    assert (await dump(raw))[Q + "t:a"]["attempts"] == "3"


async def test_forget_drops_waiting_tasks_and_flags_running_ones(
    broker: Broker, raw: aioredis.Redis
) -> None:
    await seed(
        raw,
        {
            Q + "pending": [("p", 1)],
            Q + "t:p": task_hash("p", "pending", 1, unique="k"),
            Q + "u:k": "p",
            Q + "dead": [("d", NOW)],
            Q + "t:d": task_hash("d", "failed", 2),
        }
        | active_state(),
    )
    assert await broker.forget("default", "p") == "forgotten"
    assert await broker.forget("default", "d") == "forgotten"
    assert await broker.forget("default", "a") == "cancelling"
    assert await broker.forget("default", "zz") == "missing"
    expected = active_state()
    expected[Q + "t:a"]["cancel"] = "1"
    assert await dump(raw) == expected
    assert await broker.missing("default", ["p", "a", "d"]) == ["p", "d"]


async def test_dequeue_never_reruns_a_task_cancelled_while_it_ran(
    broker: Broker, raw: aioredis.Redis
) -> None:
    await seed(
        raw,
        {
            Q + "pending": [("c", 1)],
            Q + "t:c": task_hash("c", "pending", 1, attempts=1, cancel=1),
        },
    )
    (ended,) = await broker.dequeue("default", "w1", 10, lease_seconds=30)
    assert (ended.message.id, ended.ended) == ("c", "cancelled")
    state = await dump(raw)
    assert state[Q + "t:c"]["state"] == "cancelled"
    assert Q + "pending" not in state and Q + "active" not in state


async def test_enqueue_with_a_deadline_records_it_for_expiry(
    broker: Broker, raw: aioredis.Redis
) -> None:
    await broker.enqueue([TaskMessage(id="d", handler="h", deadline=NOW / 1000 + 5)])
    state = await dump(raw)
    assert state[Q + "deadlines"] == [("d", NOW + 5000)]
    assert state[Q + "t:d"]["deadline"] == str(NOW + 5000)


async def test_expire_ends_waiting_tasks_past_their_deadline_and_nothing_else(
    broker: Broker, raw: aioredis.Redis
) -> None:
    """No worker needed: pending, scheduled and retry-waiting tasks past their deadline end
    deadline_exceeded; a running one is its worker's, a finished one stays as it is, one
    whose deadline is to come waits on."""
    await seed(
        raw,
        {
            Q + "deadlines": [("p", NOW - 3), ("s", NOW - 2), ("r", NOW - 1), ("run", NOW - 1),
                              ("done", NOW - 1), ("gone", NOW - 1), ("later", NOW + 1000)],
            Q + "pending": [("p", 1), ("later", 2)],
            Q + "scheduled": [("s", NOW + 60_000), ("r", NOW + 1000)],
            Q + "active": [("run", NOW + 5000)],
            Q + "t:p": task_hash("p", "pending", 1, deadline=NOW - 3, unique="k"),
            Q + "u:k": "p",
            Q + "t:s": task_hash("s", "scheduled", 3, deadline=NOW - 2),
            Q + "t:r": task_hash("r", "retrying", 4, deadline=NOW - 1, attempts=2),
            Q + "t:run": task_hash("run", "active", 5, deadline=NOW - 1, attempts=1),
            Q + "t:done": task_hash("done", "succeeded", 6, deadline=NOW - 1, attempts=1),
            Q + "t:later": task_hash("later", "pending", 2, deadline=NOW + 1000),
        },
    )  # fmt: skip
    ended = await broker.expire("default")
    assert [(e.message.id, e.attempt, e.ended) for e in ended] == [
        ("p", 0, "deadline_exceeded"),
        ("s", 0, "deadline_exceeded"),
        ("r", 2, "deadline_exceeded"),
    ]
    state = await dump(raw)
    for task_id in ("p", "s", "r"):
        error = json.loads(state[Q + f"t:{task_id}"].pop("error"))
        assert error == {
            "type": "DeadlineExceeded",
            "message": "the deadline passed before an attempt could start",
        }
    assert state == {
        Q + "deadlines": [("later", NOW + 1000)],
        Q + "pending": [("later", 2)],
        Q + "active": [("run", NOW + 5000)],
        Q + "dead": [("p", NOW), ("r", NOW), ("s", NOW)],
        Q + "stats": {"failed": "3"},
        Q + "t:p": task_hash(
            "p", "deadline_exceeded", 1, deadline=NOW - 3, unique="k", finished_at=NOW
        ),
        Q + "t:s": task_hash("s", "deadline_exceeded", 3, deadline=NOW - 2, finished_at=NOW),
        Q + "t:r": task_hash(
            "r", "deadline_exceeded", 4, deadline=NOW - 1, attempts=2, finished_at=NOW
        ),
        Q + "t:run": task_hash("run", "active", 5, deadline=NOW - 1, attempts=1),
        Q + "t:done": task_hash("done", "succeeded", 6, deadline=NOW - 1, attempts=1),
        Q + "t:later": task_hash("later", "pending", 2, deadline=NOW + 1000),
    }
    assert await broker.expire("default") == []


async def test_a_burst_of_calls_beyond_the_pool_waits_for_connections(redis_url: str) -> None:
    """More calls at once than the pool has connections (the operator admitting a burst):
    each waits for a free connection instead of failing as if Redis were down."""
    import asyncio

    from kubetasks.queue.broker import MAX_CONNECTIONS

    broker = Broker.from_url(redis_url)
    try:
        calls = [
            broker.enqueue([TaskMessage(id=f"b{i}", handler="h")])
            for i in range(3 * MAX_CONNECTIONS)
        ]
        results = await asyncio.gather(*calls)
        assert [r.outcome for (r,) in results] == ["queued"] * len(calls)
        assert (await broker.stats("default")).pending == len(calls)
    finally:
        await broker.close()
