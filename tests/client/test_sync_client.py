"""``kubetasks.Client``, the sync client, against a real Redis: one command per enqueue,
the same tasks, options and errors as ``AsyncClient``, and safe to share between threads.

Commands are counted by the server (``MONITOR``), not by the client."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from devenv.redis_server import free_port
from fixtures.redis import dump
from kubetasks.client import AsyncClient, Client, TaskRequest
from kubetasks.clock import FakeClock
from kubetasks.errors import (
    BrokerUnavailableError,
    ConfigurationError,
    DuplicateTaskError,
    InvalidQueueError,
    MessageTooLargeError,
    TaskFailedError,
    TaskNotFoundError,
)
from kubetasks.outcome import BackoffPolicy
from kubetasks.queue.keys import QueueKeys
from kubetasks.queue.message import MAX_MESSAGE_BYTES


@contextlib.contextmanager
def sent(url: str) -> Iterator[list[str]]:
    """The commands clients send to the server inside the block, in order, each as
    ``NAME first-argument``; the commands scripts run (MONITOR's client ``lua``) are not
    client commands and are left out."""
    commands: list[str] = []
    end = f"end-of-block-{uuid.uuid4()}"
    with (
        redis.Redis.from_url(url, decode_responses=True) as watcher,
        redis.Redis.from_url(url, decode_responses=True) as marker,
    ):
        marker.ping()  # connected before the block: its HELLO is not in it
        with watcher.monitor() as monitor:
            yield commands
            marker.echo(end)
            while (command := monitor.next_command())["command"] != f"ECHO {end}":
                if command["client_type"] != "lua":
                    name, *rest = command["command"].split(" ", 2)
                    commands.append(" ".join([name.upper(), *rest[:1]]))


@pytest.fixture
def client(redis_url: str) -> Iterator[Client]:
    with Client(redis_url) as c:
        yield c


def test_an_enqueue_is_one_evalsha(client: Client, redis_url: str) -> None:
    with redis.Redis.from_url(redis_url) as r:
        r.script_flush()
    with sent(redis_url) as first:
        client.enqueue("h", queue="mail")
        client.enqueue("h", queue="mail")
    # The first enqueue to a queue adds it to the registry, once per client (the registry
    # lies outside the queue's Cluster slot, so the script cannot), and loads the script the
    # server does not know yet. HELLO and CLIENT SETINFO open the pool's first connection.
    sha = first[-1].split()[1]
    assert [c for c in first if c.split()[0] not in ("HELLO", "CLIENT")] == [
        "SADD kubetasks:queues",
        f"EVALSHA {sha}",
        "SCRIPT LOAD",
        f"EVALSHA {sha}",
        f"EVALSHA {sha}",
    ]
    with sent(redis_url) as later:
        for i in range(20):
            client.enqueue("h", i, queue="mail", priority=i, delay=i, unique_for=60)
    assert len(later) == 20
    assert {c.split()[0] for c in later} == {"EVALSHA"}


def test_a_batch_of_one_queue_is_one_evalsha_per_500(client: Client, redis_url: str) -> None:
    client.enqueue("h")
    with sent(redis_url) as small:
        client.enqueue_many([TaskRequest("h", [i]) for i in range(500)])
    assert [c.split()[0] for c in small] == ["EVALSHA"]
    with sent(redis_url) as large:
        handles = client.enqueue_many([TaskRequest("h", [i]) for i in range(1200)])
    # One pipeline: redis-py asks SCRIPT EXISTS first, then sends the three calls at once.
    assert [c.split()[0] for c in large] == ["SCRIPT", "EVALSHA", "EVALSHA", "EVALSHA"]
    assert [h.outcome for h in handles] == ["queued"] * 1200


def test_a_flushed_script_is_loaded_again_and_the_call_retried_once(
    client: Client, redis_url: str
) -> None:
    client.enqueue("h", task_id="before")
    with redis.Redis.from_url(redis_url) as r:
        r.script_flush()
    with sent(redis_url) as commands:
        handle = client.enqueue("h", task_id="after")
    assert [c.split()[0] for c in commands] == ["EVALSHA", "SCRIPT", "EVALSHA"]
    assert commands[1] == "SCRIPT LOAD"
    assert handle.outcome == "queued"
    assert client.status("after") is not None
    with sent(redis_url) as commands:
        client.enqueue("h", task_id="again")
    assert [c.split()[0] for c in commands] == ["EVALSHA"]


def test_eight_threads_enqueue_at_once_on_one_client(client: Client, redis_url: str) -> None:
    per_thread, threads = 50, 8
    start = threading.Barrier(threads)
    ids: list[list[str]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []

    def produce(n: int) -> None:
        start.wait()
        try:
            for i in range(per_thread):
                ids[n].append(client.enqueue("h", n, i, queue=f"q{i % 3}").id)
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=produce, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == []
    every = [task_id for batch in ids for task_id in batch]
    assert len(set(every)) == per_thread * threads
    with redis.Redis.from_url(redis_url, decode_responses=True) as r:
        queues = [QueueKeys("default", f"q{i}") for i in range(3)]
        landed = {task_id for qk in queues for task_id in r.zrange(qk.pending, 0, -1)}
        assert landed == set(every)
        assert r.smembers("kubetasks:queues") == {"default/q0", "default/q1", "default/q2"}


def test_each_thread_enqueues_on_a_connection_of_its_own(redis_url: str) -> None:
    """8 threads, 8 connections (the server's CLIENT LIST), each held for the thread's next
    calls; close() ends every one of them."""
    with redis.Redis.from_url(redis_url, decode_responses=True) as r:
        before = {c["id"] for c in r.client_list()}
        client = Client(redis_url)
        start, done, leave = threading.Barrier(8), threading.Barrier(9), threading.Event()

        def produce() -> None:
            start.wait()
            for _ in range(20):
                client.enqueue("h")
            done.wait()
            leave.wait(30)  # alive while the connections are counted

        workers = [threading.Thread(target=produce) for _ in range(8)]
        for w in workers:
            w.start()
        done.wait(30)
        opened = [c for c in r.client_list() if c["id"] not in before]
        leave.set()
        for w in workers:
            w.join()
        assert len([c for c in opened if c["cmd"] == "evalsha"]) == 8
        client.close()
        left = {c["id"] for c in r.client_list()} - before
        for _ in range(100):  # the server sees each close as it reads it
            if not left:
                break
            time.sleep(0.05)
            left = {c["id"] for c in r.client_list()} - before
        assert left == set()


def test_a_connection_killed_between_calls_is_the_projects_error_then_reconnects(
    client: Client, redis_url: str
) -> None:
    client.enqueue("h", task_id="first")
    with redis.Redis.from_url(redis_url, decode_responses=True) as r:
        r.client_kill_filter(_type="normal", skipme=True)
    # The call finds its socket closed: the project's error, or a success on a new socket.
    with contextlib.suppress(BrokerUnavailableError):
        client.enqueue("h", task_id="second")
    handle = client.enqueue("h", task_id="third")
    assert handle.outcome == "queued"
    assert client.status("first") is not None and client.status("third") is not None


def test_a_server_gone_mid_call_raises_the_projects_error(redis_url: str) -> None:
    """A reply that never comes (the server is paused past the socket timeout) is
    BrokerUnavailableError, and the next call does not read that call's late reply."""
    with Client(redis_url) as client, redis.Redis.from_url(redis_url) as r:
        client.enqueue("h", task_id="warm")
        conn = client.broker._connection()
        conn.socket_timeout = 0.2
        if conn._sock is not None:
            conn._sock.settimeout(0.2)
        r.client_pause(1500, all=True)
        with pytest.raises(BrokerUnavailableError):
            client.enqueue("h", task_id="late")
        time.sleep(1.6)
        handle = client.enqueue("h", task_id="next")
        assert (handle.id, handle.outcome) == ("next", "queued")


async def test_a_burst_to_a_new_queue_registers_it_once_in_both_clients(
    redis_url: str,
) -> None:
    async with AsyncClient(redis_url) as async_client:
        await async_client.enqueue("h")  # the pool's first connection and the script
        with sent(redis_url) as from_async:
            await asyncio.gather(*(async_client.enqueue("h", queue="burst") for _ in range(50)))

    def from_threads() -> list[str]:
        with Client(redis_url) as client:
            client.enqueue("h")
            start = threading.Barrier(8)

            def produce() -> None:
                start.wait()
                for _ in range(10):
                    client.enqueue("h", queue="threads")

            with sent(redis_url) as commands:
                workers = [threading.Thread(target=produce) for _ in range(8)]
                for w in workers:
                    w.start()
                for w in workers:
                    w.join()
            return commands

    from_sync = await asyncio.to_thread(from_threads)
    for commands, calls in ((from_async, 50), (from_sync, 80)):
        names = [c.split()[0] for c in commands if c.split()[0] not in ("HELLO", "CLIENT")]
        assert (names.count("SADD"), names.count("EVALSHA"), len(names)) == (1, calls, calls + 1)


async def test_an_unreachable_redis_is_the_same_error_for_both_clients() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    async_client = AsyncClient(url)
    with pytest.raises(BrokerUnavailableError) as from_async:
        await async_client.enqueue("h")
    await async_client.close()

    def sync_calls() -> list[BaseException]:
        with Client(url) as client:
            errors = []
            for call in (lambda: client.enqueue("h"), lambda: client.status("t"),
                         lambda: client.cancel("t")):  # fmt: skip
                try:
                    call()
                except BaseException as exc:
                    errors.append(exc)
            return errors

    errors = await asyncio.to_thread(sync_calls)
    assert [type(e) for e in errors] == [type(from_async.value)] * 3
    assert all(str(e).startswith("Redis is unreachable: ") for e in errors)


BAD_OPTIONS: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"delay": 5, "run_at": 1.0}, ConfigurationError, "either delay or run_at"),
    ({"delay": -1}, ConfigurationError, "delay must be >= 0"),
    ({"priority": 1001}, ConfigurationError, "outside"),
    ({"max_retries": -1}, ConfigurationError, "max_retries must be >= 0"),
    ({"timeout": 0}, ConfigurationError, "timeout must be > 0"),
    ({"unique_key": "k"}, ConfigurationError, "unique_key needs unique_for"),
    ({"unique_for": 0}, ConfigurationError, "unique_for must be > 0"),
    ({"run_at": datetime(2030, 1, 1)}, ConfigurationError, "needs a time zone"),
    ({"queue": "Mail"}, InvalidQueueError, "'Mail'"),
    ({"queue": "a" * 64}, InvalidQueueError, "queue"),
    ({"blob": "x" * MAX_MESSAGE_BYTES}, MessageTooLargeError, "more than the limit"),
]


@pytest.mark.parametrize(("options", "error", "says"), BAD_OPTIONS)
async def test_a_bad_option_is_the_same_error_for_both_clients_and_writes_nothing(
    redis_url: str, raw: aioredis.Redis, options: dict[str, Any], error: type[Exception], says: str
) -> None:
    async with AsyncClient(redis_url) as async_client:
        with pytest.raises(error, match=says) as from_async:
            await async_client.enqueue("h", **options)

    def sync_enqueue() -> BaseException:
        with Client(redis_url) as client, pytest.raises(error) as from_sync:
            client.enqueue("h", **options)
        return from_sync.value

    from_sync = await asyncio.to_thread(sync_enqueue)
    assert (type(from_sync), str(from_sync)) == (type(from_async.value), str(from_async.value))
    assert await raw.keys("*") == []


def test_a_duplicate_is_refused_with_the_holder(client: Client) -> None:
    first = client.enqueue("h", "x", unique_for=60)
    with pytest.raises(DuplicateTaskError) as refused:
        client.enqueue("h", "x", unique_for=60)
    assert refused.value.existing_id == first.id
    assert refused.value.unique_key == "h"  # what AsyncClient says too
    (again,) = client.enqueue_many([TaskRequest("h", ["x"], unique_for=60)])
    assert (again.outcome, again.duplicate_of) == ("duplicate", first.id)
    assert client.enqueue("h", task_id=first.id).outcome == "exists"


async def test_both_clients_write_the_same_task(redis_url: str, raw: aioredis.Redis) -> None:
    """The same request, sent by each client to a namespace of its own, leaves the same
    Redis state, key for key, field for field (names of the namespace aside)."""
    clock = FakeClock(start=1_800_000_000.0)
    options: dict[str, Any] = {
        "queue": "mail",
        "priority": 7,
        "max_retries": 5,
        "timeout": 30,
        "deadline": datetime(2027, 1, 1, tzinfo=UTC),
        "unique_for": 300,
        "backoff": BackoffPolicy(2.0, 60.0, False),
        "task_id": "t-1",
    }
    later = {**options, "task_id": "t-2", "delay": 10, "unique_key": "k", "unique_for": 5}
    async with AsyncClient(redis_url, namespace="from-async", clock=clock) as async_client:
        await async_client.enqueue("email.send", "a@example.com", subject="hi", **options)
        await async_client.enqueue("email.send", **later)

    def sync_enqueue() -> None:
        with Client(redis_url, namespace="from-sync", clock=clock) as client:
            client.enqueue("email.send", "a@example.com", subject="hi", **options)
            client.enqueue("email.send", **later)

    await asyncio.to_thread(sync_enqueue)
    state = await dump(raw)
    registry = state.pop("kubetasks:queues")
    assert registry == ["from-async/mail", "from-sync/mail"]

    def of(namespace: str) -> dict[str, Any]:
        prefix = f"kubetasks:{{{namespace}/mail}}:"
        return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}

    written = of("from-sync")
    assert written == of("from-async")
    assert len(written) == len(state) / 2
    assert set(written) == {"t:t-1", "t:t-2", "u:k", "deadlines", "notify", "pending",
                            "scheduled", "seq", f"u:{written['t:t-1']['unique']}"}  # fmt: skip


def test_status_cancel_and_result(client: Client) -> None:
    waiting = client.enqueue("h", delay=60)
    info = client.status(waiting.id)
    assert info is not None
    assert (info.state, info.message.handler) == ("scheduled", "h")
    assert waiting.status() == info
    assert client.cancel(waiting.id) == "cancelled"
    with pytest.raises(TaskFailedError, match="ended cancelled"):
        waiting.result(timeout=1)
    assert client.cancel("nobody") == "missing"
    assert client.status("nobody") is None
    with pytest.raises(TaskNotFoundError):
        client.wait_result("default", "nobody")
    pending = client.enqueue("h")
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"still pending after 0\.2s"):
        pending.result(timeout=0.2)
    assert time.monotonic() - started < 1


def test_queue_stats_and_queues_from_threads_at_once(client: Client) -> None:
    client.enqueue_many([TaskRequest("h", queue="a")] * 3 + [TaskRequest("h", queue="b")])
    results: list[Any] = []

    def read() -> None:
        results.append((client.queue_stats("a").pending, [q.queue for q in client.queues()]))

    readers = [threading.Thread(target=read) for _ in range(4)]
    for r in readers:
        r.start()
    for r in readers:
        r.join()
    assert results == [(3, ["a", "b"])] * 4


async def test_the_sync_client_refuses_to_block_an_event_loop(redis_url: str) -> None:
    client = Client(redis_url)
    try:
        for call in (lambda: client.enqueue("h"), lambda: client.status("t"),
                     lambda: client.queue_stats("default")):  # fmt: skip
            with pytest.raises(ConfigurationError, match="use AsyncClient in async code"):
                call()
    finally:
        await asyncio.to_thread(client.close)


def test_non_ascii_arguments_and_queue_ids_travel_intact(client: Client) -> None:
    handle = client.enqueue("mail.send", "Zoë", city="Kraków ✓", task_id="id-ü", priority=-5)
    info = client.status("id-ü")
    assert info is not None
    assert (info.message.args, info.message.kwargs) == (["Zoë"], {"city": "Kraków ✓"})
    assert (handle.id, info.message.priority) == ("id-ü", -5)


def test_a_thread_per_call_leaves_no_connection_behind(client: Client, redis_url: str) -> None:
    """A server that starts a thread per request: the connection of each ended thread is
    closed, not held by the client until it is closed."""
    with redis.Redis.from_url(redis_url, decode_responses=True) as r:
        before = len(r.client_list())
        for n in range(30):
            t = threading.Thread(target=client.enqueue, args=("h", n))
            t.start()
            t.join()
        gc.collect()
        opened = len(r.client_list()) - before
        for _ in range(100):  # the server sees each close as it reads it
            if opened <= 2:
                break
            time.sleep(0.05)
            opened = len(r.client_list()) - before
        assert opened <= 2  # the pool's one connection (registration), at most one more
        assert client.queue_stats("default").pending == 30


def test_plain_options_make_the_message_a_request_makes(client: Client) -> None:
    """``enqueue`` with plain options builds its message without a TaskRequest; it is the
    message ``enqueue_many`` makes of the same request, field for field but the id."""
    options: dict[str, Any] = {"queue": "mail", "priority": 3, "max_retries": 1, "timeout": 5}
    one = client.enqueue("mail.send", "a@example.com", subject="hi", **options)
    (many,) = client.enqueue_many(
        [TaskRequest("mail.send", ["a@example.com"], {"subject": "hi"}, **options)]
    )
    first, second = client.status(one.id, "mail"), client.status(many.id, "mail")
    assert first is not None and second is not None
    assert uuid.UUID(one.id).version == 4
    assert dataclasses.replace(first.message, id="x") == dataclasses.replace(second.message, id="x")
    assert first.message.encode().replace(one.id, "x") == second.message.encode().replace(
        many.id, "x"
    )


def test_a_reply_later_than_the_spin_is_slept_for(redis_url: str) -> None:
    """An enqueue polls for its reply for ``KUBETASKS_CLIENT_SPIN_MICROSECONDS`` (100 by
    default), then sleeps: a reply 300 ms late is read, and waiting for it costs the client
    a few milliseconds of CPU at most, not 300."""
    with Client(redis_url) as client, redis.Redis.from_url(redis_url) as r:
        assert client.broker.spin == 100e-6
        client.enqueue("h")  # connected, script loaded
        r.client_pause(300, all=False)  # write commands (scripts among them) wait
        cpu, start = time.process_time(), time.monotonic()
        handle = client.enqueue("h")
        waited, spent = time.monotonic() - start, time.process_time() - cpu
        assert handle.outcome == "queued"
        assert waited >= 0.25
        assert spent < 0.05, f"{spent * 1000:.0f} ms of CPU while waiting {waited * 1000:.0f} ms"


def test_a_client_told_not_to_spin_sleeps_at_once_and_a_bad_value_is_named(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBETASKS_CLIENT_SPIN_MICROSECONDS", "0")
    with Client(redis_url) as client:
        assert client.broker.spin == 0
        assert [client.enqueue("h", i).outcome for i in range(3)] == ["queued"] * 3
    monkeypatch.setenv("KUBETASKS_CLIENT_SPIN_MICROSECONDS", "-5")
    with pytest.raises(ConfigurationError, match="KUBETASKS_CLIENT_SPIN_MICROSECONDS='-5'"):
        Client(redis_url)
