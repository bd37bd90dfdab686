"""A message over ``MAX_MESSAGE_BYTES`` is refused at enqueue, before anything is written."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from kubetasks.client import AsyncClient
from kubetasks.errors import MessageTooLargeError
from kubetasks.queue import Broker, TaskMessage
from kubetasks.queue.message import MAX_MESSAGE_BYTES


async def test_an_oversized_message_fails_the_enqueue_and_writes_nothing(
    broker: Broker, raw: aioredis.Redis
) -> None:
    small = TaskMessage(id="t1", handler="h", args=["x" * 100])
    big = TaskMessage(id="t2", handler="h", args=["x" * MAX_MESSAGE_BYTES])
    with pytest.raises(MessageTooLargeError, match=r"more than the limit of 262144 bytes"):
        await broker.enqueue([small, big])
    assert await raw.keys("*") == []
    (result,) = await broker.enqueue([small])
    assert result.outcome == "queued"


async def test_the_client_says_why_it_refused(redis_url: str, raw: aioredis.Redis) -> None:
    client = AsyncClient(redis_url)
    try:
        with pytest.raises(MessageTooLargeError, match="pass large inputs by reference"):
            await client.enqueue("kubetasks.echo", "x" * MAX_MESSAGE_BYTES)
    finally:
        await client.close()
    assert await raw.keys("*") == []
