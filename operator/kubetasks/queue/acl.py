"""Redis ACL users for WorkerPools: each pool's workers reach their own namespace only.

A worker runs handler code, so whatever its Redis credentials allow, that code may do. With
the one shared password it could read and rewrite every namespace's queues. A pool user may
instead touch only the keys of its namespace (``keys.namespace_patterns``) and run only the
commands a worker sends: the scripts of its transitions (EVALSHA, and SCRIPT LOAD/EXISTS
when the server lost them), BLPOP on wake-up lists, HSET/PEXPIRE of its load report, and
the commands those scripts call. Redis checks scripts' commands and keys against the
calling user too, so a script cannot reach further than the user.

Users live in the server's memory (``ACL SETUSER`` is not in the append-only file): whoever
manages them sets them again after a restart; :func:`ensure_pool_user` is idempotent, and
:func:`pool_users` lists who is there.

A pool's password is derived, not stored (:func:`pool_password`): an HMAC of the pool's
namespace, name and uid under the operator's own Redis password. The operator can set the
user again at any time without reading anything back, a pool re-created under the same name
gets a new password, and rotating the operator's password rotates every pool's.
"""

from __future__ import annotations

import hashlib
import hmac

from redis.exceptions import ResponseError

from kubetasks.queue import keys
from kubetasks.queue.broker import Broker, reports_outages
from kubetasks.queuename import validate_namespace

#: Commands a worker sends itself (``worker/`` through ``Broker``): the scripts, wake-ups,
#: its load report, and what redis-py sends on connecting.
WORKER_CLIENT_COMMANDS = (
    "evalsha",
    "script|load",
    "script|exists",
    "blpop",
    "hgetall",  # a chord callback's TaskSet results, read by reference (ctx.taskset_results)
    "hset",
    "pexpire",
    "ping",
    "client|setinfo",
)
#: Of those, the ones older servers do not know (``CLIENT SETINFO`` came with Redis 7.2):
#: ``ACL SETUSER`` refuses an unknown command, so they are left out there; redis-py ignores a
#: refused ``CLIENT SETINFO``.
NEWER_COMMANDS = ("client|setinfo",)
#: What every pool user's name starts with.
POOL_USER_PREFIX = "kubetasks:pool:"
#: The transition scripts a worker runs (``Broker.lease`` runs ``dequeue``); lib.lua is part
#: of each.
WORKER_SCRIPTS = (
    "dequeue", "heartbeat", "ack", "retry", "fail", "requeue", "promote", "reclaim",
    "item_progress",
)  # fmt: skip
#: Commands the worker's scripts call (``WORKER_SCRIPTS`` with lib.lua, which every script
#: includes: a TaskSet item's ending updates its set's index sets and results).
WORKER_SCRIPT_COMMANDS = (
    "del",
    "expire",
    "get",
    "hdel",
    "hget",
    "hincrby",
    "hlen",
    "hmget",
    "hset",
    "hsetnx",
    "ltrim",
    "pexpire",
    "rpush",
    "sadd",
    "srem",
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
    return f"{POOL_USER_PREFIX}{validate_namespace(namespace)}/{pool}"


def pool_of_user(user: str) -> tuple[str, str] | None:
    """``(namespace, pool)`` of a pool user's name; None for any other user."""
    if not user.startswith(POOL_USER_PREFIX):
        return None
    namespace, slash, pool = user.removeprefix(POOL_USER_PREFIX).partition("/")
    return (namespace, pool) if slash and namespace and pool else None


def pool_password(key: str, namespace: str, pool: str, uid: str) -> str:
    """The password of one incarnation (``uid``) of a pool, derived from ``key`` (the
    operator's Redis password): 64 hex digits, of which nothing tells the key."""
    if not key:
        raise ValueError("deriving pool passwords needs a key (the operator's Redis password)")
    message = f"{namespace}/{pool}/{uid}".encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def pool_user_rules(namespace: str, password: str, *, newer: bool = True) -> list[str]:
    """The ``ACL SETUSER`` rules of a pool user of ``namespace``: everything reset first, so
    setting them again replaces whatever the user held. ``newer=False`` leaves out the
    commands of ``NEWER_COMMANDS``."""
    commands = sorted(set(WORKER_CLIENT_COMMANDS) | set(WORKER_SCRIPT_COMMANDS))
    if not newer:
        commands = [c for c in commands if c not in NEWER_COMMANDS]
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
    try:
        await _setuser(broker, name, pool_user_rules(namespace, password))
    except ResponseError as exc:
        if "unknown command" not in str(exc).lower():
            raise
        await _setuser(broker, name, pool_user_rules(namespace, password, newer=False))
    return name


@reports_outages
async def _setuser(broker: Broker, name: str, rules: list[str]) -> None:
    await broker.redis.execute_command("ACL", "SETUSER", name, *rules)  # type: ignore[no-untyped-call]


@reports_outages
async def pool_users(broker: Broker) -> set[tuple[str, str]]:
    """``(namespace, pool)`` of every pool user the server has."""
    users = await broker.redis.execute_command("ACL", "USERS")  # type: ignore[no-untyped-call]
    found = (pool_of_user(u.decode() if isinstance(u, bytes) else str(u)) for u in users)
    return {key for key in found if key is not None}


@reports_outages
async def delete_pool_user(broker: Broker, namespace: str, pool: str) -> None:
    """Remove the pool's user; its workers' connections are closed by the server."""
    name = pool_user(namespace, pool)
    await broker.redis.execute_command("ACL", "DELUSER", name)  # type: ignore[no-untyped-call]
