"""A WorkerPool's Redis user on a real server: its worker runs tasks of its namespace, and
everything of another namespace, and every command a worker does not send, is refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import quote

import pytest
import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError

import handlers_for_tests  # noqa: F401 - registers test.add
from kubetasks import settings
from kubetasks.client import AsyncClient
from kubetasks.queue import Broker
from kubetasks.queue.acl import delete_pool_user, ensure_pool_user, pool_user
from kubetasks.worker import Worker

PASSWORD = "pool-password-1"


def user_url(redis_url: str, user: str, password: str) -> str:
    scheme, rest = redis_url.split("//", 1)
    return f"{scheme}//{quote(user, safe='')}:{quote(password, safe='')}@{rest}"


@pytest.fixture
async def admin(redis_url: str) -> AsyncIterator[Broker]:
    """The operator's broker (the test server's default user may do anything); the pool
    users it makes are removed afterwards (FLUSHALL keeps users)."""
    b = Broker.from_url(redis_url)
    yield b
    for namespace in ("team-a", "team-b"):
        await delete_pool_user(b, namespace, "workers")
    await b.close()


@pytest.fixture
async def team_a(
    admin: Broker, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Broker]:
    """The broker of a worker pod of pool team-a/workers, as its pool user: the user and its
    password come from the pod's environment, as ``kubetasks worker`` reads them."""
    name = await ensure_pool_user(admin, "team-a", "workers", PASSWORD)
    with monkeypatch.context() as pod:
        pod.setenv(settings.REDIS_URL.name, redis_url)
        pod.setenv(settings.REDIS_USERNAME.name, name)
        pod.setenv(settings.REDIS_PASSWORD.name, PASSWORD)
        url = settings.redis_url()
    b = Broker.from_url(url, namespace="team-a")
    yield b
    await b.close()


async def test_a_pool_user_runs_the_tasks_of_its_namespace(team_a: Broker, redis_url: str) -> None:
    worker_settings = settings.WorkerSettings(
        queues=settings.parse_queues("default"), lease_seconds=5.0, heartbeat_interval=0.2,
        reclaim_interval=0.2, promote_interval=0.2, worker_id="team-a/workers-0",
    )  # fmt: skip
    worker = Worker(team_a, worker_settings)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        async with AsyncClient(redis_url, namespace="team-a") as client:
            now = await client.enqueue("test.add", 2, 3)
            later = await client.enqueue("test.add", 4, 5, delay=0.3)
            assert await now.result(timeout=5) == 5
            assert await later.result(timeout=5) == 9  # promoted by the worker
    finally:
        stop.set()
        await asyncio.wait_for(running, 15)
    assert not running.exception()


async def test_a_pool_user_gets_noperm_on_another_namespace(
    team_a: Broker, admin: Broker, redis_url: str
) -> None:
    async with AsyncClient(redis_url, namespace="team-b") as client:
        await client.enqueue("test.add", 1, 1)
    other = team_a.in_namespace("team-b")
    with pytest.raises(NoPermissionError):
        await other.lease("default", "team-a/workers-0", 10, 30.0)
    with pytest.raises(NoPermissionError):
        await other.wait_for_work(["default"], 0.01)
    with pytest.raises(NoPermissionError):
        await other.report_worker("team-b/workers-0", 1, 10.0)
    # The task of team-b is still there for team-b's workers.
    assert (await admin.in_namespace("team-b").stats("default")).pending == 1


async def test_a_pool_user_runs_no_command_a_worker_does_not_send(
    team_a: Broker, redis_url: str
) -> None:
    r = team_a.redis
    with pytest.raises(NoPermissionError):
        await r.keys("*")
    with pytest.raises(NoPermissionError):
        await r.flushall()
    with pytest.raises(NoPermissionError):
        await r.execute_command("ACL", "SETUSER", "intruder", "on", "~*", "+@all")  # type: ignore[no-untyped-call]
    with pytest.raises(NoPermissionError):
        await r.config_get("*")
    with pytest.raises(NoPermissionError):
        await r.smembers("kubetasks:queues")
    with pytest.raises(NoPermissionError):
        # Its own namespace's keys, but not a command of its scripts.
        await r.hgetall("kubetasks:{team-a/default}:config")
    # A script of its own cannot reach further than the user.
    sha = await r.script_load("return redis.call('GET', 'kubetasks:{team-b/default}:seq')")
    with pytest.raises(ResponseError, match="No permissions to access a key"):
        await r.evalsha(sha, 0)


async def test_setting_a_user_again_replaces_its_password(admin: Broker, redis_url: str) -> None:
    name = await ensure_pool_user(admin, "team-a", "workers", PASSWORD)
    assert name == pool_user("team-a", "workers")
    await ensure_pool_user(admin, "team-a", "workers", "rotated")
    old = aioredis.Redis.from_url(user_url(redis_url, name, PASSWORD))
    new = aioredis.Redis.from_url(user_url(redis_url, name, "rotated"))
    try:
        with pytest.raises(AuthenticationError):
            await old.ping()
        assert await new.ping()
    finally:
        await old.aclose()
        await new.aclose()
