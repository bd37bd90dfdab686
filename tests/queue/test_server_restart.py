"""A Redis server restarted under a live Broker: one call fails, not one per pooled
connection. Each idle connection of the pool is stale after a restart; left in the pool,
each fails once in whichever call takes it next, so a loop whose first call passed could
fail on its second (the operator's repair sweep did, and left the Tasks Redis had lost
waiting for the next resync)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from devenv.redis_server import RedisServer
from kubetasks import outages
from kubetasks.errors import BrokerUnavailableError
from kubetasks.queue import Broker


@pytest.fixture
def server() -> Iterator[RedisServer]:
    """A server of this test's own, to restart."""
    found = RedisServer()
    found.start()
    yield found
    found.stop()


async def test_after_a_restart_one_call_fails_and_then_none(server: RedisServer) -> None:
    broker = Broker.from_url(server.url, namespace="ns")
    try:
        await asyncio.gather(*[broker.ping() for _ in range(20)])  # twenty pooled connections
        server.stop()
        server.start()
        with pytest.raises(BrokerUnavailableError):
            await broker.ping()  # this one's connection was to the old server
        # Every later call gets a connection to the new server, however many run at once.
        results = await asyncio.gather(
            *[broker.missing("default", ["some-id"]) for _ in range(10)], return_exceptions=True
        )
        assert [r for r in results if isinstance(r, BaseException)] == []
    finally:
        await broker.close()
        outages.REDIS.succeeded()
