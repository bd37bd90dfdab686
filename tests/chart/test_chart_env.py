"""The chart sets exactly the environment variables kubetasks declares in ``settings.py``.

Each render's operator Deployment gives its env to the operator process, and the operator
gives the worker Deployment of every WorkerPool its own (``controller/workloads.py``): both
are collected here, from the default values, from every documented variant and from a values
set that turns everything on. A variable the chart sets that no code declares is unread; a
variable declared as the chart's that no render sets is missing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from chart_helpers import (
    RELEASE,
    VARIANTS,
    Rendered,
    operator_environ,
    render,
    workload_defaults,
)

from kubetasks import settings
from kubetasks.controller.poolusers import PoolCredentials, secret_name
from kubetasks.controller.workloads import deployment
from kubetasks.queue.acl import pool_password, pool_user

PACKAGE = Path(settings.__file__).parent

#: Everything on: an external TLS Redis with a private CA, a password under a custom key,
#: peering with a priority, metrics (the namespaced operator is a variant).
ALL_ON = [
    "redis.enabled=false",
    "redis.external.url=rediss://redis.example.internal:6380/0",
    "redis.external.existingSecret=redis-auth",
    "redis.external.existingSecretPasswordKey=redis-password",
    "redis.external.tls.caSecret=redis-ca",
    "redis.external.tls.caKey=private-ca.pem",
    "operator.replicas=2",
    "operator.peering.name=kubetasks",
    "operator.peering.priority=100",
    "operator.metrics.serviceMonitor.enabled=true",
    "operator.networkPolicy.enabled=true",
]

RENDERS: dict[str, tuple[tuple[Path, ...], list[str]]] = {
    name: (files, []) for name, files in VARIANTS.items()
} | {"all-on": ((), ALL_ON), "all-on-shared": ((), [*ALL_ON, "redis.poolUsers.enabled=false"])}


def worker_deployment(
    r: Rendered, environ: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """The Deployment the operator, started with ``environ``, makes of the chart's WorkerPool
    (or of a minimal one when the chart creates none)."""
    defaults = workload_defaults(environ, monkeypatch)
    pools = r.kinds("WorkerPool")
    pool: dict[str, Any] = pools[0] if pools else {
        "apiVersion": "kubetasks.dev/v1alpha1", "kind": "WorkerPool",
        "metadata": {"name": "workers", "namespace": "kubetasks"},
        "spec": {"queues": [{"name": "default"}]},
    }  # fmt: skip
    meta = pool["metadata"] | {"uid": "6b3e7c1e-0000-4000-8000-000000000001"}
    pool = pool | {"metadata": meta}
    credentials = None
    if settings.POOL_REDIS_USERS.get(environ):
        # What PoolUsers.ensure returns for the pool (it also sets the user in Redis).
        key = settings.REDIS_PASSWORD.get(environ)
        password = pool_password(key, meta["namespace"], meta["name"], meta["uid"])
        credentials = PoolCredentials(
            pool_user(meta["namespace"], meta["name"]), secret_name(meta["name"], password)
        )
    return deployment(pool, 1, defaults, credentials)


def container(d: dict[str, Any]) -> dict[str, Any]:
    return dict(d["spec"]["template"]["spec"]["containers"][0])


@pytest.fixture(scope="module")
def renders() -> dict[str, Rendered]:
    return {name: render(files, sets) for name, (files, sets) in RENDERS.items()}


@pytest.fixture
def env_names(
    renders: dict[str, Rendered], monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, set[str]]]:
    """Per render: the names set on the operator and on the worker container."""
    found: dict[str, set[str]] = {}
    for name, r in renders.items():
        environ = operator_environ(r)
        with monkeypatch.context() as m:
            worker = container(worker_deployment(r, environ, m))
        found[f"{name}: operator"] = set(environ)
        found[f"{name}: worker"] = {e["name"] for e in worker["env"]}
    yield found


def test_every_variable_the_chart_sets_is_declared(env_names: dict[str, set[str]]) -> None:
    unread = {
        where: sorted(names - settings.ENVIRONMENT.keys())
        for where, names in env_names.items()
        if names - settings.ENVIRONMENT.keys()
    }
    assert unread == {}


def test_every_variable_declared_for_the_chart_is_set_by_some_render(
    env_names: dict[str, set[str]],
) -> None:
    from_chart = {n for n, v in settings.ENVIRONMENT.items() if v.source == settings.CHART}
    assert from_chart - set().union(*env_names.values()) == set()
    # And the others are not the chart's to set (so their source is said right).
    assert set().union(*env_names.values()) - from_chart == set()


@pytest.mark.parametrize("name", sorted(RENDERS))
def test_every_value_the_chart_sets_parses_as_declared(
    renders: dict[str, Rendered], name: str
) -> None:
    environ = operator_environ(renders[name])
    for var in settings.ENVIRONMENT.values():
        var.get(environ)  # raises ConfigurationError naming the variable


def test_the_password_key_and_the_ca_reach_the_worker_pods(
    renders: dict[str, Rendered], monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = renders["all-on-shared"]
    worker_env = container(worker_deployment(shared, operator_environ(shared), monkeypatch))["env"]
    assert {e["name"]: e for e in worker_env}["KUBETASKS_REDIS_PASSWORD"]["valueFrom"] == {
        "secretKeyRef": {"name": "redis-auth", "key": "redis-password"}
    }
    r = renders["all-on"]
    worker_pod = worker_deployment(r, operator_environ(r), monkeypatch)["spec"]["template"]
    worker = container({"spec": {"template": worker_pod}})
    env = {e["name"]: e for e in worker["env"]}
    # The URL names a CA file; in the worker pod that file is the CA Secret's key.
    url = env["KUBETASKS_REDIS_URL"]["value"]
    (ca_file,) = parse_qs(urlsplit(url).query)["ssl_ca_certs"]
    assert url == operator_environ(r)["KUBETASKS_REDIS_URL"]
    assert mounted_file(worker_pod["spec"], worker, ca_file) == ("redis-ca", "private-ca.pem")
    operator_pod = r.operator["spec"]["template"]
    assert mounted_file(operator_pod["spec"], container(r.operator), ca_file) == (
        "redis-ca",
        "private-ca.pem",
    )


def mounted_file(pod: dict[str, Any], c: dict[str, Any], path: str) -> tuple[str, str] | None:
    """(Secret, key) whose file a container sees at ``path``, or None."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for mount in c.get("volumeMounts", []):
        prefix = mount["mountPath"].rstrip("/") + "/"
        secret = volumes[mount["name"]].get("secret")
        if secret and path.startswith(prefix):
            for item in secret["items"]:
                if item["path"] == path.removeprefix(prefix):
                    return secret["secretName"], item["key"]
    return None


def test_without_a_ca_the_worker_pods_mount_nothing(
    renders: dict[str, Rendered], monkeypatch: pytest.MonkeyPatch
) -> None:
    r = renders["default"]
    pod = worker_deployment(r, operator_environ(r), monkeypatch)["spec"]["template"]["spec"]
    assert "volumes" not in pod
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    # The pool's own user and Secret, not the operator's password.
    assert env["KUBETASKS_REDIS_USERNAME"]["value"] == "kubetasks:pool:kubetasks/default"
    ref = env["KUBETASKS_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert ref["key"] == "password"
    assert ref["name"].startswith("default-redis-")
    assert ref["name"] != f"{RELEASE}-kubetasks-redis"


# Reads of the environment anywhere but settings.py: os.environ, os.getenv, os.environ.get.
ENV_READ = re.compile(r"\bos\.(environ|getenv)\b|\bgetenv\(")


def test_only_settings_reads_the_environment() -> None:
    readers = sorted(
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*.py")
        if p.name != "settings.py" or p.parent != PACKAGE
        if ENV_READ.search(p.read_text())
    )
    assert readers == []
