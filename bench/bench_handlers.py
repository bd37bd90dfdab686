"""The no-op and timestamp handlers of bench/queue_bench.py, for every library it compares.

Each worker process imports this module with ``BENCH_PEER`` naming its library and
``BENCH_REDIS_URL`` the server; only that library is imported. The handlers are the same
everywhere: ``noop`` does one ``INCR bench:done`` (how the driver counts completions) and
``stamp(sent)`` pushes ``"<sent> <time.time() at handler start>"`` onto ``bench:lat``.
Asyncio workers get the async pair, thread-pool workers the sync pair.
"""

from __future__ import annotations

import os
import time
from typing import Any

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
PEER = os.environ.get("BENCH_PEER", "kubetasks")
#: A concurrency the bench sets for libraries configured in code (arq, saq, streaq); unset:
#: the library's own default.
CONCURRENCY = int(os.environ["BENCH_CONCURRENCY"]) if os.environ.get("BENCH_CONCURRENCY") else None
QUEUE = "bench"
DONE = "bench:done"
LAT = "bench:lat"

_sync: Any = None
_async: Any = None


def sync_redis() -> Any:
    global _sync
    if _sync is None:
        import redis

        _sync = redis.Redis.from_url(URL)
    return _sync


def async_redis() -> Any:
    global _async
    if _async is None:
        import redis.asyncio

        _async = redis.asyncio.Redis.from_url(URL)
    return _async


def s_noop() -> None:
    sync_redis().incr(DONE)


def s_stamp(sent: float) -> None:
    started = time.time()
    sync_redis().rpush(LAT, f"{sent} {started}")


async def a_noop() -> None:
    await async_redis().incr(DONE)


async def a_stamp(sent: float) -> None:
    started = time.time()
    await async_redis().rpush(LAT, f"{sent} {started}")


# Libraries that pass a context first.
async def ctx_noop(ctx: Any) -> None:
    await a_noop()


async def ctx_stamp(ctx: Any, sent: float) -> None:
    started = time.time()
    await async_redis().rpush(LAT, f"{sent} {started}")


if PEER == "kubetasks":
    import kubetasks

    kubetasks.task("bench.noop")(a_noop)
    kubetasks.task("bench.stamp")(a_stamp)

elif PEER == "celery":
    from celery import Celery

    app = Celery("bench", broker=URL)
    app.conf.update(
        task_ignore_result=True,
        task_default_queue=QUEUE,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    celery_noop = app.task(name="bench.noop")(s_noop)
    celery_stamp = app.task(name="bench.stamp")(s_stamp)

elif PEER == "dramatiq":
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker
    from dramatiq.middleware import AgeLimit, Callbacks, Pipelines, Retries, TimeLimit

    # The default middleware minus Prometheus (an exporter on a fixed port).
    dramatiq.set_broker(
        RedisBroker(
            url=URL, middleware=[AgeLimit(), TimeLimit(), Callbacks(), Pipelines(), Retries()]
        )
    )
    dq_noop = dramatiq.actor(s_noop, actor_name="bench_noop", queue_name=QUEUE, max_retries=0)
    dq_stamp = dramatiq.actor(s_stamp, actor_name="bench_stamp", queue_name=QUEUE, max_retries=0)

elif PEER == "arq":
    from arq.connections import RedisSettings
    from arq.worker import func

    class ArqSettings:
        functions = [func(ctx_noop, name="bench.noop"), func(ctx_stamp, name="bench.stamp")]
        redis_settings = RedisSettings.from_dsn(URL)
        queue_name = QUEUE
        keep_result = 0

    if CONCURRENCY is not None:
        ArqSettings.max_jobs = CONCURRENCY
    if os.environ.get("BENCH_ARQ_POLL"):
        ArqSettings.poll_delay = float(os.environ["BENCH_ARQ_POLL"])

elif PEER == "huey":
    from huey import RedisHuey

    huey = RedisHuey("bench", url=URL, results=False)
    huey_noop = huey.task(name="bench.noop")(s_noop)
    huey_stamp = huey.task(name="bench.stamp")(s_stamp)

elif PEER == "saq":
    from saq import Queue

    saq_queue = Queue.from_url(URL, name=QUEUE)
    saq_settings: dict[str, Any] = {"queue": saq_queue, "functions": [ctx_noop, ctx_stamp]}
    if CONCURRENCY is not None:
        saq_settings["concurrency"] = CONCURRENCY

elif PEER == "taskiq":
    from taskiq_redis import ListQueueBroker

    tq_broker = ListQueueBroker(URL, queue_name=QUEUE)
    tq_noop = tq_broker.task(task_name="bench.noop")(a_noop)
    tq_stamp = tq_broker.task(task_name="bench.stamp")(a_stamp)

elif PEER == "streaq":
    from streaq import Worker

    options: dict[str, Any] = {} if CONCURRENCY is None else {"concurrency": CONCURRENCY}
    sq_worker = Worker(redis_url=URL, queue_name=QUEUE, **options)
    sq_noop = sq_worker.task(a_noop)
    sq_stamp = sq_worker.task(a_stamp)
