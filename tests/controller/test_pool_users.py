"""Each WorkerPool's own Redis user, made by the real operator process against the real API
server and a real Redis: the pool's Deployment logs its workers in with a Secret the operator
created, whose credentials reach that namespace's keys only; a user Redis lost is back within
a tick; a re-created pool gets a new password; a deleted pool's user is gone, disconnecting
its workers.

The test Redis's default user stays open (the other tests share the server); the operator
logs in as a full-rights user of its own, as it does in the bundled Redis, where the default
user is off."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from kubernetes import client as k8s
from redis.exceptions import AuthenticationError, NoPermissionError

from devenv.controlplane import ControlPlane
from fixtures.kube import meta, obj, present
from fixtures.operator import Operator, kube_env
from fixtures.waiting import wait_for
from kubetasks.controller.poolusers import credentials_secret, secret_name
from kubetasks.queue.acl import pool_of_user, pool_password, pool_user
from kubetasks.vocabulary import API_VERSION, GROUP, POOL_LABEL, VERSION, WORKER_POOLS

ADMIN = "kubetasks-test-admin"


def acl(r: redis.Redis, *args: str) -> Any:
    return r.execute_command("ACL", *args)  # type: ignore[no-untyped-call]


@pytest.fixture
def admin(redis_url: str) -> Iterator[tuple[redis.Redis, str]]:
    """The operator's full-rights Redis user and its password; it and every pool user are
    removed afterwards (FLUSHALL keeps users)."""
    password = secrets.token_hex(16)
    r = redis.Redis.from_url(redis_url)
    acl(r, "SETUSER", ADMIN, "reset", "on", f">{password}", "~*", "&*", "+@all")
    yield r, password
    for user in acl(r, "USERS"):
        name = user.decode()
        if name == ADMIN or pool_of_user(name):
            acl(r, "DELUSER", name)
    r.close()


@pytest.fixture
def operator(
    control_plane: ControlPlane,
    redis_url: str,
    namespace: str,
    admin: tuple[redis.Redis, str],
    tmp_path: Path,
) -> Iterator[Operator]:
    env = kube_env(control_plane, redis_url) | {
        "KUBETASKS_POOL_REDIS_USERS": "true",
        "KUBETASKS_REDIS_USERNAME": ADMIN,
        "KUBETASKS_REDIS_PASSWORD": admin[1],
    }
    op = Operator(env, tmp_path / "operator.log", namespace)
    yield op
    op.stop()


def users(r: redis.Redis) -> set[str]:
    return {u.decode() for u in acl(r, "USERS")}


class Pools:
    def __init__(self, api: k8s.ApiClient, namespace: str) -> None:
        self.custom = k8s.CustomObjectsApi(api)
        self.apps = k8s.AppsV1Api(api)
        self.core = k8s.CoreV1Api(api)
        self.namespace = namespace

    def create(self, name: str) -> str:
        body = {"apiVersion": API_VERSION, "kind": "WorkerPool", "metadata": {"name": name},
                "spec": {"queues": [{"name": "default"}]}}  # fmt: skip
        made = obj(
            self.custom.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, WORKER_POOLS, body
            )
        )
        return str(made["metadata"]["uid"])

    def delete(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(
            GROUP, VERSION, self.namespace, WORKER_POOLS, name
        )

    def worker_env(self, name: str, uid: str) -> dict[str, Any] | None:
        """The worker container's env of the pool's Deployment, once it is the one of the
        pool incarnation ``uid``."""
        try:
            found = self.apps.read_namespaced_deployment(name, self.namespace)
        except k8s.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        if present(meta(found).owner_references)[0].uid != uid:
            return None
        (container,) = present(found.spec.template.spec).containers
        return {e.name: e for e in present(container.env)}

    def secret(self, name: str) -> k8s.V1Secret:
        return self.core.read_namespaced_secret(name, self.namespace)


def login(redis_url: str, user: str, password: str) -> redis.Redis:
    r = redis.Redis.from_url(redis_url, username=user, password=password)
    r.ping()
    return r


def test_a_pool_gets_its_own_user_and_secret_and_loses_them_with_it(
    operator: Operator,
    admin: tuple[redis.Redis, str],
    kube_api: k8s.ApiClient,
    namespace: str,
    redis_url: str,
) -> None:
    r, _ = admin
    pools = Pools(kube_api, namespace)
    uid = pools.create("workers")
    env = wait_for("the pool's Deployment", lambda: pools.worker_env("workers", uid))
    user = pool_user(namespace, "workers")
    assert env["KUBETASKS_REDIS_USERNAME"].value == user
    ref = env["KUBETASKS_REDIS_PASSWORD"].value_from.secret_key_ref
    assert ref.key == "password"
    assert ref.name.startswith("workers-redis-")
    assert user in users(r)

    # The Secret: immutable, owned by the pool, holding credentials that log in.
    secret = pools.secret(ref.name)
    assert secret.immutable is True
    (owner,) = present(meta(secret).owner_references)
    assert (owner.kind, owner.name, owner.uid) == ("WorkerPool", "workers", uid)
    assert present(meta(secret).labels)[POOL_LABEL] == "workers"
    data = {k: base64.b64decode(v).decode() for k, v in present(secret.data).items()}
    assert data["username"] == user
    worker = login(redis_url, user, data["password"])
    worker.hset(f"kubetasks:worker:{namespace}/workers-0", "active", 1)
    with pytest.raises(NoPermissionError):
        worker.hset("kubetasks:worker:elsewhere/workers-0", "active", 1)
    with pytest.raises(NoPermissionError):
        worker.hkeys(f"kubetasks:{{{namespace}/default}}:config")  # not a worker command

    # Redis loses its users (a restart, a new empty server): the operator sets it again.
    acl(r, "DELUSER", user)
    wait_for("the user set again", lambda: user in users(r) or None, timeout=10)
    login(redis_url, user, data["password"]).close()

    # A pool re-created under the same name: a new password and Secret; the old one fails.
    pools.delete("workers")
    wait_for("the user gone with its pool", lambda: user not in users(r) or None, timeout=10)
    with pytest.raises(redis.ConnectionError):
        worker.ping()  # the server closed the deleted user's connection
    new_uid = pools.create("workers")
    new_env = wait_for("the new pool's Deployment", lambda: pools.worker_env("workers", new_uid))
    new_ref = new_env["KUBETASKS_REDIS_PASSWORD"].value_from.secret_key_ref
    assert new_ref.name != ref.name
    new_password = base64.b64decode(present(pools.secret(new_ref.name).data)["password"]).decode()
    assert new_password != data["password"]
    wait_for("the new user", lambda: user in users(r) or None, timeout=10)
    login(redis_url, user, new_password).close()
    with pytest.raises(AuthenticationError):
        login(redis_url, user, data["password"])
    assert operator.proc is not None and operator.proc.poll() is None


def test_pool_passwords_are_derived_per_incarnation_and_tell_nothing() -> None:
    one = pool_password("operator-password", "team-a", "workers", "uid-1")
    assert one == pool_password("operator-password", "team-a", "workers", "uid-1")
    others = {
        pool_password("operator-password", "team-a", "workers", "uid-2"),
        pool_password("operator-password", "team-b", "workers", "uid-1"),
        pool_password("operator-password", "team-a", "other", "uid-1"),
        pool_password("rotated", "team-a", "workers", "uid-1"),
    }
    assert one not in others and len(others) == 4
    assert len(one) == 64 and "operator-password" not in one
    with pytest.raises(ValueError, match="needs a key"):
        pool_password("", "team-a", "workers", "uid-1")


def test_the_secret_is_named_after_a_fingerprint_within_the_name_limit() -> None:
    name = secret_name("workers", "p" * 64)
    assert name.startswith("workers-redis-") and len(name) == len("workers-redis-") + 10
    assert secret_name("workers", "q" * 64) != name
    assert len(secret_name("w" * 253, "p")) == 253
    assert pool_of_user(pool_user("team-a", "workers")) == ("team-a", "workers")
    assert pool_of_user("default") is None and pool_of_user("kubetasks:pool:broken") is None


def test_the_secret_manifest_needs_no_rights_on_the_pool() -> None:
    from kubetasks.controller.poolusers import PoolCredentials

    pool = {"apiVersion": API_VERSION, "kind": "WorkerPool",
            "metadata": {"name": "w", "namespace": "team-a", "uid": "u1"}}  # fmt: skip
    manifest = credentials_secret(
        pool, PoolCredentials("kubetasks:pool:team-a/w", "w-redis-x"), "pw"
    )
    (owner,) = manifest["metadata"]["ownerReferences"]
    # blockOwnerDeletion would need update rights on workerpools/finalizers.
    assert "blockOwnerDeletion" not in owner and owner["uid"] == "u1"
    assert manifest["immutable"] is True
    assert manifest["stringData"] == {"username": "kubetasks:pool:team-a/w", "password": "pw"}


def test_an_operator_user_without_acl_rights_leaves_pools_refused_with_the_reason(
    control_plane: ControlPlane,
    redis_url: str,
    namespace: str,
    admin: tuple[redis.Redis, str],
    kube_api: k8s.ApiClient,
    tmp_path: Path,
) -> None:
    """An external Redis whose kubetasks user may not run ``ACL SETUSER``: each pool says
    why it has no Deployment, instead of workers that cannot log in."""
    r, password = admin
    acl(r, "SETUSER", ADMIN, "-acl")
    env = kube_env(control_plane, redis_url) | {
        "KUBETASKS_POOL_REDIS_USERS": "true",
        "KUBETASKS_REDIS_USERNAME": ADMIN,
        "KUBETASKS_REDIS_PASSWORD": password,
    }
    op = Operator(env, tmp_path / "operator.log", namespace)
    try:
        pools = Pools(kube_api, namespace)
        uid = pools.create("workers")

        def refusal() -> dict[str, Any] | None:
            body = obj(
                pools.custom.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, WORKER_POOLS, "workers"
                )
            )
            for condition in (body.get("status") or {}).get("conditions") or []:
                if condition["type"] == "Ready" and condition["reason"] == "RedisUserFailed":
                    return dict(condition)
            return None

        condition = wait_for("the pool's refusal", refusal)
        assert condition["status"] == "False"
        assert "setting the pool's Redis user" in condition["message"]
        assert "acl|setuser" in condition["message"].lower(), condition["message"]
        events = pools.core.list_namespaced_event(
            namespace, field_selector="involvedObject.name=workers,reason=RedisUserFailed"
        ).items
        assert events and events[0].type == "Warning"
        assert pools.worker_env("workers", uid) is None, "no Deployment without its user"
    finally:
        op.stop()


def test_the_deployment_logs_in_as_the_pool_and_the_pool_cannot_change_that() -> None:
    from kubetasks.controller.poolusers import PoolCredentials
    from kubetasks.controller.workloads import WorkloadDefaults, deployment

    pool = {"apiVersion": API_VERSION, "kind": "WorkerPool",
            "metadata": {"name": "w", "namespace": "team-a", "uid": "u1"},
            "spec": {"queues": [{"name": "default"}], "podTemplate": {"env": [
                {"name": "KUBETASKS_REDIS_USERNAME", "value": "kubetasks"},
                {"name": "KUBETASKS_REDIS_PASSWORD", "valueFrom": {"secretKeyRef": {
                    "name": "stolen", "key": "password"}}},
                {"name": "KUBETASKS_REDIS_URL", "value": "redis://elsewhere:6379/0"},
                {"name": "FEATURE", "value": "on"}]}}}  # fmt: skip
    defaults = WorkloadDefaults(
        image="kubetasks/worker:dev", service_account="", redis_url="redis://r:6379/0",
        redis_username="kubetasks", redis_secret="kt-redis", redis_secret_key="password",
        redis_ca_secret="", redis_ca_key="ca.crt", extra_labels={},
    )  # fmt: skip
    credentials = PoolCredentials("kubetasks:pool:team-a/w", "w-redis-0123456789")
    (container,) = deployment(pool, 1, defaults, credentials)["spec"]["template"]["spec"][
        "containers"
    ]
    env = {e["name"]: e for e in container["env"]}
    assert len(env) == len(container["env"]), "each variable once"
    assert env["KUBETASKS_REDIS_USERNAME"]["value"] == "kubetasks:pool:team-a/w"
    assert env["KUBETASKS_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "w-redis-0123456789", "key": "password",
    }  # fmt: skip
    assert env["KUBETASKS_REDIS_URL"]["value"] == "redis://r:6379/0"
    assert env["FEATURE"]["value"] == "on"
    # Without pool users: the operator's user with the shared Secret, by reference.
    (shared,) = deployment(pool, 1, defaults)["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in shared["env"]}
    assert env["KUBETASKS_REDIS_USERNAME"]["value"] == "kubetasks"
    assert env["KUBETASKS_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "kt-redis"
