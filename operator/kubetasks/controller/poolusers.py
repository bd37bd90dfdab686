"""Each WorkerPool's own Redis user, and the Secret its worker pods log in with.

A worker runs handler code, so its Redis credentials are that code's. With a user per pool
(``queue/acl.py``) the code of one namespace reaches its own queues' keys and runs only the
commands workers send; it never holds the operator's password, and the tenants' namespaces
need no copy of it.

Before a pool's Deployment is applied, its user is set in Redis and its credentials are
written to a Secret in the pool's namespace, named after a fingerprint of what it holds
(``<pool>-redis-<fingerprint>``): a new password (a re-created pool, a rotated operator
password) is a new Secret and so a new Deployment template, never a change the running pods
miss. The operator only ever creates Secrets; the garbage collector deletes a pool's with it.

Redis keeps users in memory only, so every tick compares the server's pool users with the
pools this operator serves: a user the server lost (a restart, a failover, a new empty
server) is set again within one tick. A pool's user is deleted with the pool (which
disconnects its workers); a user whose pool went while no operator watched is deleted by a
slower sweep once the API server confirms the pool is gone (asking, not trusting this
process's memory: a standby replica knows no pools). Users of namespaces this operator does
not watch are left alone: another operator may serve them on the same Redis.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from kubetasks.clock import Clock
from kubetasks.queue import Broker
from kubetasks.queue.acl import delete_pool_user, ensure_pool_user, pool_password, pool_users
from kubetasks.vocabulary import POOL_LABEL

log = logging.getLogger("kubetasks.poolusers")

#: Keys of a credential Secret.
USERNAME_KEY = "username"
PASSWORD_KEY = "password"
#: Seconds between sweeps for users of pools that are gone.
ORPHAN_SWEEP_SECONDS = 60.0

PoolKey = tuple[str, str]


@dataclass(frozen=True)
class PoolCredentials:
    """What a pool's worker pods log in to Redis with."""

    username: str
    secret: str
    """The Secret in the pool's namespace with ``USERNAME_KEY`` and ``PASSWORD_KEY``."""


class SecretsApi(Protocol):
    """Creates Secrets; the real one is :class:`~kubetasks.k8s.secrets.SecretCreator`."""

    async def create(self, manifest: dict[str, Any]) -> bool:
        """Create it; False if one of its name exists already."""
        ...


class PoolsApi(Protocol):
    """Asks whether a pool exists; the real one is
    :class:`~kubetasks.k8s.poolcredentials.PoolLookup`."""

    async def exists(self, namespace: str, name: str) -> bool: ...


def secret_name(pool: str, password: str) -> str:
    """The credential Secret's name: the pool's, and a fingerprint of the password (ten hex
    digits of its SHA-256, which tell nothing of it). At most 253 characters."""
    fingerprint = hashlib.sha256(password.encode()).hexdigest()[:10]
    return f"{pool[: 253 - 17]}-redis-{fingerprint}"


def credentials_secret(
    pool: dict[str, Any], credentials: PoolCredentials, password: str
) -> dict[str, Any]:
    """The Secret manifest (pure): immutable, owned by the pool (no ``blockOwnerDeletion``,
    which would take update rights on the pool's finalizers)."""
    meta = pool["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "immutable": True,
        "metadata": {
            "name": credentials.secret,
            "namespace": meta["namespace"],
            "labels": {"app.kubernetes.io/managed-by": "kubetasks", POOL_LABEL: meta["name"]},
            "ownerReferences": [
                {
                    "apiVersion": pool["apiVersion"],
                    "kind": pool["kind"],
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                }
            ],
        },
        "stringData": {USERNAME_KEY: credentials.username, PASSWORD_KEY: password},
    }


@dataclass
class _Served:
    uid: str
    password: str
    credentials: PoolCredentials


class PoolUsers:
    name = "pool users"
    wake: asyncio.Event | None = None

    def __init__(
        self,
        broker: Broker,
        secrets: SecretsApi,
        pools: PoolsApi,
        clock: Clock,
        *,
        key: str,
        namespaces: tuple[str, ...] = (),
        interval: float = 2.0,
        sweep_every: float = ORPHAN_SWEEP_SECONDS,
    ) -> None:
        if not key:
            raise ValueError(
                "per-pool Redis users need the operator's Redis password to derive theirs "
                "from (KUBETASKS_REDIS_PASSWORD)"
            )
        self.broker = broker
        self.secrets = secrets
        self.pools = pools
        self.clock = clock
        self.key = key
        self.namespaces = namespaces
        self.poll_seconds = interval
        self.sweep_every = sweep_every
        self.swept = clock.now()
        self.served: dict[PoolKey, _Served] = {}

    def interval(self) -> float:
        return self.poll_seconds

    async def ensure(self, pool: dict[str, Any]) -> PoolCredentials:
        """The pool's user set in Redis and its Secret created (once per pool incarnation;
        the tick keeps the user there). Errors propagate: nothing is applied without them."""
        meta = pool["metadata"]
        key = (meta["namespace"], meta["name"])
        uid = meta["uid"]
        served = self.served.get(key)
        if served is not None and served.uid == uid:
            return served.credentials
        if served is not None:
            # A re-created pool: the old incarnation's connections go with its user.
            await delete_pool_user(self.broker, *key)
        password = pool_password(self.key, *key, uid)
        username = await ensure_pool_user(self.broker, *key, password)
        credentials = PoolCredentials(username, secret_name(meta["name"], password))
        await self.secrets.create(credentials_secret(pool, credentials, password))
        self.served[key] = _Served(uid, password, credentials)
        return credentials

    async def remove(self, key: PoolKey) -> None:
        """The pool is gone: its user too, which closes its workers' connections."""
        self.served.pop(key, None)
        await delete_pool_user(self.broker, *key)

    async def tick(self) -> None:
        present = await pool_users(self.broker)
        for key, served in list(self.served.items()):
            if key not in present:
                log.warning("Redis had lost the user of pool %s/%s; set again", *key)
                await ensure_pool_user(self.broker, *key, served.password)
        if self.clock.now() - self.swept < self.sweep_every:
            return
        self.swept = self.clock.now()
        for key in present - set(self.served):
            watched = not self.namespaces or key[0] in self.namespaces
            if watched and not await self.pools.exists(*key):
                log.info("deleting the Redis user of pool %s/%s, which is gone", *key)
                await delete_pool_user(self.broker, *key)
