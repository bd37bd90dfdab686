"""Redis ACL users for WorkerPools: each pool's workers reach their own namespace only.

A worker runs handler code, so whatever its Redis credentials allow, that code may do. With
the one shared password it could read and rewrite every namespace's queues. A pool user may
instead touch only the keys of its namespace (``keys.namespace_patterns``) and run only the
commands a worker sends: the scripts of its transitions (EVALSHA, and SCRIPT LOAD/EXISTS
when the server lost them), BLPOP on wake-up lists, HSET/PEXPIRE of its load report, and
the commands those scripts call. Redis checks scripts' commands and keys against the
calling user too, so a script cannot reach further than the user.

Users live in the server's memory (``ACL SETUSER`` is not in the append-only file): whoever
manages them sets them again after a restart; :func:`ensure_pool_user` is idempotent.
"""

from __future__ import annotations

from kubetasks.queue import keys
from kubetasks.queue.broker import Broker
from kubetasks.queuename import validate_namespace

#: Commands a worker sends itself (``worker/`` through ``Broker``): the scripts, wake-ups,
#: its load report, and what redis-py sends on connecting.
WORKER_CLIENT_COMMANDS = (
    "evalsha",
    "script|load",
    "script|exists",
    "blpop",
    "hset",
    "pexpire",
    "ping",
    "client|setinfo",
)
#: Commands the worker's scripts call (dequeue, heartbeat, ack, retry, fail, requeue,
#: promote, reclaim, and lib.lua, which every script includes).
WORKER_SCRIPT_COMMANDS = (
    "del",
    "expire",
    "get",
    "hget",
    "hincrby",
    "hmget",
    "hset",
    "ltrim",
    "pexpire",
    "rpush",
    "zadd",
    "zcard",
    "zpopmin",
    "zrange",
    "zrangebyscore",
    "zrem",
    "zremrangebyscore",
    "zscore",
)


def pool_user(namespace: str, pool: str) -> str:
    """The ACL user name of one WorkerPool; ``:`` and ``/`` occur in no namespace or pool
    name, so no two pools share one."""
    return f"kubetasks:pool:{validate_namespace(namespace)}/{pool}"


def pool_user_rules(namespace: str, password: str) -> list[str]:
    """The ``ACL SETUSER`` rules of a pool user of ``namespace``: everything reset first, so
    setting them again replaces whatever the user held."""
    commands = sorted(set(WORKER_CLIENT_COMMANDS) | set(WORKER_SCRIPT_COMMANDS))
    return [
        "reset",
        "on",
        f">{password}",
        "resetchannels",
        *(f"~{pattern}" for pattern in keys.namespace_patterns(namespace)),
        "-@all",
        *(f"+{command}" for command in commands),
    ]


async def ensure_pool_user(broker: Broker, namespace: str, pool: str, password: str) -> str:
    """Create or reset the pool's user with ``password``; returns its name. ``broker`` must
    connect as a user that may run ``ACL SETUSER`` (the operator's)."""
    name = pool_user(namespace, pool)
    rules = pool_user_rules(namespace, password)
    await broker.redis.execute_command("ACL", "SETUSER", name, *rules)  # type: ignore[no-untyped-call]
    return name


async def delete_pool_user(broker: Broker, namespace: str, pool: str) -> None:
    """Remove the pool's user; its workers' connections are closed by the server."""
    name = pool_user(namespace, pool)
    await broker.redis.execute_command("ACL", "DELUSER", name)  # type: ignore[no-untyped-call]
