"""A WorkerPool's Redis user on a real server: its worker runs tasks of its namespace, and
everything of another namespace, and every command a worker does not send, is refused."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import pytest
import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError

import handlers_for_tests  # noqa: F401 - registers test.add
from kubetasks import outages, settings
from kubetasks.client import AsyncClient
from kubetasks.errors import BrokerUnavailableError
from kubetasks.queue import Broker, TaskMessage
from kubetasks.queue.acl import (
    WORKER_SCRIPT_COMMANDS,
    WORKER_SCRIPTS,
    delete_pool_user,
    ensure_pool_user,
    pool_user,
    pool_users,
)
from kubetasks.queue.broker import load_source
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


def worker_settings(worker_id: str = "team-a/workers-0") -> settings.WorkerSettings:
    return settings.WorkerSettings(
        queues=settings.parse_queues("default"), lease_seconds=5.0, heartbeat_interval=0.2,
        reclaim_interval=0.2, promote_interval=0.2, worker_id=worker_id,
    )  # fmt: skip


def test_the_pool_user_may_run_every_command_of_the_worker_scripts() -> None:
    """Redis checks a script's commands against the calling user: a command a worker's
    script calls that the pool user lacks fails that transition on every pool (and only
    there: the operator's and the tests' default users may do anything)."""
    called = {
        command.lower()
        for name in WORKER_SCRIPTS
        for command in re.findall(r"redis\.p?call\(\s*'(\w+)'", load_source(name))
    }
    assert called, "no redis.call found: the pattern no longer matches the scripts"
    assert called == set(WORKER_SCRIPT_COMMANDS), (
        f"missing for pool users: {sorted(called - set(WORKER_SCRIPT_COMMANDS))}; "
        f"allowed but never called: {sorted(set(WORKER_SCRIPT_COMMANDS) - called)}"
    )


async def test_a_pool_user_runs_taskset_items_and_reads_a_sets_results(
    team_a: Broker, admin: Broker, redis_url: str
) -> None:
    """TaskSet items end through lib.lua's set bookkeeping (SADD/SREM of index sets, results
    and errors), and a chord's callback reads the results by reference: all as the pool."""
    ns = admin.in_namespace("team-a")
    items = [
        TaskMessage(id=f"uid1-{i}", handler="test.item", taskset="set", index=i, max_retries=2,
                    kwargs={"fail": [2], "flaky": [1]})
        for i in range(4)
    ]  # fmt: skip
    await ns.restore_taskset("default", "uid1", "set", 4, [], [])
    assert await ns.enqueue_items("default", "uid1", "set", 4, items, 4) == 4
    worker = Worker(team_a, worker_settings())
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:

        async def ended() -> None:
            while True:
                state = await ns.taskset_state("default", "uid1", indexes=True)
                if state.succeeded + state.failed == 4:
                    return
                await asyncio.sleep(0.05)

        await asyncio.wait_for(ended(), 10)
        state = await ns.taskset_state("default", "uid1", indexes=True)
        assert state.done_indexes == {0, 1, 3} and state.failed_indexes == {2}
        assert "fails on purpose" in state.errors[2]
        async with AsyncClient(redis_url, namespace="team-a") as client:
            reference = {"resultsTooLarge": True, "queue": "default", "uid": "uid1", "total": 4}
            read = await client.enqueue("test.read_results", reference)
            assert await read.result(timeout=5) == {"reference": True, "indexes": [0, 1, 3]}
    finally:
        stop.set()
        await asyncio.wait_for(running, 15)
    assert not running.exception()


async def test_a_pool_user_worker_reports_its_items_progress_to_the_set(
    team_a: Broker, admin: Broker, tmp_path: Path
) -> None:
    """ctx.progress of a TaskSet item runs item_progress.lua as the pool user: its commands
    and the set's progress hash are within what the user may do."""
    ns = admin.in_namespace("team-a")
    release = tmp_path / "release"
    items = [
        TaskMessage(id=f"uid2-{i}", handler="test.halfway", taskset="set", index=i,
                    args=[str(release)])
        for i in range(2)
    ]  # fmt: skip
    await ns.restore_taskset("default", "uid2", "set", 2, [], [])
    assert await ns.enqueue_items("default", "uid2", "set", 2, items, 2) == 2
    worker = Worker(team_a, worker_settings())
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:

        async def reported() -> None:
            while True:
                state = await ns.taskset_state("default", "uid2", indexes=False)
                if state.running_progress >= 1:
                    return
                await asyncio.sleep(0.05)

        await asyncio.wait_for(reported(), 10)
        state = await ns.taskset_state("default", "uid2", indexes=False)
        assert (state.running, state.succeeded, state.running_progress) == (2, 0, 1.0)
        release.touch()

        async def ended() -> None:
            while True:
                if (await ns.taskset_state("default", "uid2", indexes=False)).succeeded == 2:
                    return
                await asyncio.sleep(0.05)

        await asyncio.wait_for(ended(), 10)
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
        await r.hkeys("kubetasks:{team-a/default}:config")
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


async def test_pool_user_calls_to_an_unreachable_redis_are_an_outage_not_a_redis_error() -> None:
    """The operator's pool-user loop runs these every few seconds: a refused or stale
    connection must reach it as the outage (told once, by kubetasks.outages), not as a raw
    redis error that its loop logs with a traceback on every tick (CI's Redis-pod restart
    on the real node logged three)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there once the socket closes
    broker = Broker.from_url(f"redis://127.0.0.1:{port}/0")
    try:
        with pytest.raises(BrokerUnavailableError):
            await pool_users(broker)
        with pytest.raises(BrokerUnavailableError):
            await ensure_pool_user(broker, "team-a", "workers", "secret")
        with pytest.raises(BrokerUnavailableError):
            await delete_pool_user(broker, "team-a", "workers")
    finally:
        await broker.close()
        outages.REDIS.succeeded()  # the next test starts without an outage in progress
