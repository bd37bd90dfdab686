"""TaskSet items in Redis: enqueued in batches under deterministic ids, and counted by the
same Lua call that moves each item (ack, fail, retry, cancel), against a real server."""

from __future__ import annotations

import redis.asyncio as aioredis

from fixtures.redis import dump
from kubetasks.queue import Broker, TaskMessage

Q = "kubetasks:{default/default}:"
S = Q + "s:uid1"


def items(*indexes: int, max_retries: int = 3) -> list[TaskMessage]:
    return [
        TaskMessage(id=f"uid1-{i}", handler="h", taskset="set", index=i, max_retries=max_retries)
        for i in indexes
    ]


async def test_a_batch_is_one_call_and_sending_it_again_adds_nothing(
    broker: Broker, raw: aioredis.Redis
) -> None:
    assert await broker.restore_taskset("default", "uid1", "set", 5, [], [])  # starts it
    assert await broker.enqueue_items("default", "uid1", "set", 5, items(0, 1, 2), 3) == 3
    assert await broker.enqueue_items("default", "uid1", "set", 5, items(0, 1, 2), 3) == 0
    state = await dump(raw)
    assert state[S] == {"total": "5", "name": "set", "next": "3"}
    assert [i for i, _ in state[Q + "pending"]] == ["uid1-0", "uid1-1", "uid1-2"]
    assert state[Q + "t:uid1-1"]["set"] == S and state[Q + "t:uid1-1"]["idx"] == "1"
    # The cursor never moves back.
    await broker.enqueue_items("default", "uid1", "set", 5, items(), 2)
    assert (await broker.taskset_state("default", "uid1", indexes=False)).next == 3


async def test_ending_items_counts_them_once_with_results_and_errors(
    broker: Broker, raw: aioredis.Redis
) -> None:
    await broker.restore_taskset("default", "uid1", "set", 4, [], [])
    await broker.enqueue_items("default", "uid1", "set", 4, items(0, 1, 2, 3), 4)
    leased = await broker.dequeue("default", "w", 4, 30)
    assert len(leased) == 4
    assert (await broker.taskset_state("default", "uid1", indexes=False)).running == 4
    by_index = {lease.message.index: lease for lease in leased}
    assert all(lease.message.taskset == "set" for lease in leased)
    await broker.ack("default", "w", [("uid1-0", 1, '{"i":0}'), ("uid1-1", 1, "null")])
    # A late duplicate ack is refused: nothing is counted twice.
    assert await broker.ack("default", "w", [("uid1-0", 1, '{"i":0}')]) == ["uid1-0"]
    await broker.fail("default", "w", "uid1-2", 1, "failed", '{"type":"E","message":"boom"}')
    await broker.retry("default", "w", "uid1-3", 1, 0, '{"type":"E","message":"again"}')
    state = await broker.taskset_state("default", "uid1", indexes=True)
    assert (state.succeeded, state.failed, state.running) == (2, 1, 0)
    assert state.done_indexes == {0, 1} and state.failed_indexes == {2}
    assert state.errors == {2: '{"type":"E","message":"boom"}'}
    assert await broker.taskset_results("default", "uid1") == {0: '{"i":0}'}
    assert by_index[3].attempt == 1
    assert S + ":run" not in await dump(raw)


async def test_restore_puts_back_what_status_recorded_only_when_redis_lost_it(
    broker: Broker,
) -> None:
    assert await broker.restore_taskset("default", "uid1", "set", 10, [0, 1, 2], [5])
    state = await broker.taskset_state("default", "uid1", indexes=True)
    assert (state.exists, state.restored, state.next) == (True, True, 0)
    assert state.done_indexes == {0, 1, 2} and state.failed_indexes == {5}
    assert not await broker.restore_taskset("default", "uid1", "set", 10, [], [])
    # A set that starts has nothing recorded: it is not a restore.
    assert await broker.restore_taskset("default", "uid2", "set", 10, [], [])
    assert not (await broker.taskset_state("default", "uid2", indexes=False)).restored


async def test_a_batch_sent_after_redis_lost_the_set_adds_nothing_and_says_so(
    broker: Broker, raw: aioredis.Redis
) -> None:
    """The operator read the set, Redis lost it (FLUSHALL), then the batch arrived: were it
    taken, the set would restart at the batch's cursor with none of its recorded ends, and
    the items before that cursor would never run. It is refused, so that the operator's next
    look finds the set gone and restores it from the status."""
    assert await broker.restore_taskset("default", "uid1", "set", 10, [], [])
    assert await broker.enqueue_items("default", "uid1", "set", 10, items(0, 1, 2), 3) == 3
    await raw.flushall()
    await raw.script_flush()
    assert await broker.enqueue_items("default", "uid1", "set", 10, items(3, 4), 5) is None
    assert await dump(raw) == {}
    many = items(*range(3, 3 + 2 * 500))  # more than one script call, in one pipeline
    assert await broker.enqueue_items("default", "uid1", "set", 10, many, 10) is None
    assert await dump(raw) == {}
    assert not (await broker.taskset_state("default", "uid1", indexes=False)).exists


async def test_forgetting_a_set_drops_its_items_and_flags_running_ones(
    broker: Broker, raw: aioredis.Redis
) -> None:
    await broker.restore_taskset("default", "uid1", "set", 3, [], [])
    await broker.enqueue_items("default", "uid1", "set", 3, items(0, 1, 2), 3)
    (running,) = await broker.dequeue("default", "w", 1, 30)
    ids = ["uid1-0", "uid1-1", "uid1-2"]
    assert await broker.forget_items("default", "uid1", ids, drop_set=True) == 2
    state = await dump(raw)
    assert state[Q + f"t:{running.message.id}"]["cancel"] == "1"
    assert not [k for k in state if k.startswith(S)]
    assert state.get(Q + "pending", []) == []
