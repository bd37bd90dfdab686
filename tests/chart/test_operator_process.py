"""The operator process as the chart's pod runs it, short of a container.

The chart runs the operator image as UID and GID 65532, which have no passwd entry in the
image; HOME is ``/`` (what the runtime sets for such a user) and USER and LOGNAME are unset.
The process has the chart's service account token where the kubelet mounts it, and the
chart's arguments and environment. Here that is reproduced around the real
``kubetasks operator`` on this machine: a private mount namespace puts the token at
``/var/run/secrets/kubernetes.io/serviceaccount`` and makes the interpreter reachable, then
``setpriv`` drops to the chart's UID and GID. The operator must become healthy and queue a
Task, with the chart's RBAC and nothing more.
"""

from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from chart_helpers import Rendered, env_of, render
from kubernetes import client as k8s

from devenv.controlplane import ControlPlane
from devenv.redis_server import free_port
from fixtures.controlplane import Kubectl
from fixtures.kube import present
from fixtures.operator import Process, Tasks
from kubetasks.queue.acl import pool_of_user

REPO = Path(__file__).resolve().parents[2]
TOKEN_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
OPERATOR_COMPONENT = "operator"
#: How a refused request shows in the operator's log (kopf's and kubetasks' own lines).
REFUSED = re.compile(r"Forbidden|Unauthorized|status=40[13]\b| 40[13] ")
RBAC_AND_ACCOUNTS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}


def hidden_ancestor(path: Path) -> tuple[Path, Path] | None:
    """(the first ancestor of ``path`` that other users cannot enter, its child on the way
    to ``path``), or None when every ancestor is open."""
    parts = path.resolve().parts
    for depth in range(1, len(parts)):
        ancestor = Path(*parts[:depth])
        if not os.stat(ancestor).st_mode & 0o001:
            return ancestor, Path(*parts[: depth + 1])
    return None


def launcher(stage: Path, token_dir: Path, uid: int, gid: int) -> list[str]:
    """argv prefix: a private mount namespace in which the token is mounted where the kubelet
    puts it, then the chart's UID and GID with no capabilities and no new privileges.

    On this machine the interpreter may live under a directory only root can enter
    (``/root``, mode 0700); in the image it is under ``/opt``. Inside the namespace such a
    directory is covered by an empty tmpfs that shows only the subtree the process needs,
    so nothing outside changes and the process sees no more of it than that.
    """
    script = ["set -eu"]
    needed = {Path(sys.executable).resolve(), Path(sys.prefix), Path(sys.base_prefix), REPO}
    covered: dict[Path, set[Path]] = {}
    for path in needed:
        found = hidden_ancestor(path)
        if found:
            covered.setdefault(found[0], set()).add(found[1])
    for i, (ancestor, children) in enumerate(sorted(covered.items())):
        real = stage / f"hidden-{i}"
        real.mkdir(parents=True)
        script += [
            f"mount --bind {shlex.quote(str(ancestor))} {shlex.quote(str(real))}",
            f"mount -t tmpfs -o mode=0755 tmpfs {shlex.quote(str(ancestor))}",
        ]
        for child in sorted(children):
            inside = real / child.relative_to(ancestor)
            script += [
                f"mkdir -p {shlex.quote(str(child))}",
                f"mount --bind {shlex.quote(str(inside))} {shlex.quote(str(child))}",
            ]
    # /run (= /var/run) gets a private tmpfs, so the mount point needs no directory on the
    # machine itself.
    script += [
        "mount -t tmpfs -o mode=0755 tmpfs /run",
        f"mkdir -p {TOKEN_MOUNT}",
        f"mount --bind -o ro {shlex.quote(str(token_dir))} {TOKEN_MOUNT}",
        f"exec {shutil.which('setpriv')} --reuid={uid} --regid={gid} --clear-groups"
        ' --no-new-privs -- "$@"',
    ]
    unshare = shutil.which("unshare")
    assert unshare, "unshare (util-linux) is needed to run the operator as its pod does"
    return [unshare, "--mount", "--propagation", "private", "sh", "-c", "\n".join(script), "sh"]


def operator_docs(rendered: Rendered) -> list[dict[str, Any]]:
    labels = "app.kubernetes.io/component"
    return [
        d
        for d in rendered.kinds(*RBAC_AND_ACCOUNTS)
        if d["metadata"].get("labels", {}).get(labels) == OPERATOR_COMPONENT
    ]


def pod_env(
    container: dict[str, Any],
    pod: str,
    namespace: str,
    redis_url: str,
    server: str,
    password: str,
) -> dict[str, str]:
    """What the kubelet would give the container: the chart's env with the downward API
    resolved, the Redis password Secret's value, Kubernetes' service variables, and the
    image's ENV (PATH, PYTHONUNBUFFERED)."""  # fmt: skip
    env: dict[str, str] = {}
    for name, value in env_of(container).items():
        if isinstance(value, str):
            env[name] = value
        elif (value or {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[name] = pod
        elif (value or {}).get("fieldRef", {}).get("fieldPath") == "metadata.namespace":
            env[name] = namespace
        else:
            assert name == "KUBETASKS_REDIS_PASSWORD", f"unexpected env source {name}: {value}"
            env[name] = password
    host, port = server.removeprefix("https://").rsplit(":", 1)
    return env | {
        "KUBETASKS_REDIS_URL": redis_url,
        "KUBERNETES_SERVICE_HOST": host,
        "KUBERNETES_SERVICE_PORT": port,
        "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
        "PYTHONUNBUFFERED": "1",
        "HOME": "/",
        "HOSTNAME": pod,
    }


def with_port(args: list[str], flag: str, port: int) -> list[str]:
    assert any(a.startswith(f"{flag}=") for a in args), f"the chart passes no {flag}: {args}"
    return [f"{flag}={port}" if a.startswith(f"{flag}=") else a for a in args]


@pytest.fixture
def release() -> str:
    return f"op{uuid.uuid4().hex[:6]}"


@pytest.fixture
def operator_rbac(
    kubectl: Kubectl, kube_api: k8s.ApiClient, namespace: str, release: str
) -> Iterator[Rendered]:
    """The chart rendered to watch the test's namespace, its operator account and RBAC
    applied (the cluster-scoped ones removed afterwards)."""
    rendered = render(
        sets=["crds.install=false", f"operator.watch.namespaces={{{namespace}}}"],
        namespace=namespace,
        release=release,
    )
    docs = operator_docs(rendered)
    assert {d["kind"] for d in docs} == RBAC_AND_ACCOUNTS, [d["kind"] for d in docs]
    applied = kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
    assert applied.returncode == 0, applied.stderr
    yield rendered
    for doc in docs:
        if doc["kind"].startswith("Cluster"):
            kubectl("delete", doc["kind"], doc["metadata"]["name"], "--ignore-not-found")


@pytest.fixture
def chart_redis_user(redis_url: str) -> Iterator[tuple[str, str]]:
    """The bundled Redis's operator user (``redis.auth.username``) on the test server, with a
    password; removed afterwards with the pool users the operator made."""
    user, password = "kubetasks", uuid.uuid4().hex
    r = redis.Redis.from_url(redis_url)
    r.execute_command("ACL", "SETUSER", user, "reset", "on", f">{password}", "~*", "&*", "+@all")  # type: ignore[no-untyped-call]
    yield user, password
    for name in r.execute_command("ACL", "USERS"):  # type: ignore[no-untyped-call]
        if name.decode() == user or pool_of_user(name.decode()):
            r.execute_command("ACL", "DELUSER", name)  # type: ignore[no-untyped-call]
    r.close()


def test_operator_runs_as_the_charts_user_without_a_passwd_entry(
    chart_redis_user: tuple[str, str],
    control_plane: ControlPlane,
    kube_api: k8s.ApiClient,
    redis_url: str,
    namespace: str,
    release: str,
    operator_rbac: Rendered,
    tasks: Tasks,
    tmp_path: Path,
) -> None:
    deployment = operator_rbac.one("Deployment", f"{release}-kubetasks-operator")
    pod_spec = deployment["spec"]["template"]["spec"]
    uid, gid = pod_spec["securityContext"]["runAsUser"], pod_spec["securityContext"]["runAsGroup"]
    with pytest.raises(KeyError):
        pwd.getpwuid(uid)  # else this test would not test what the image lacks
    (container,) = pod_spec["containers"]

    token_dir = tmp_path / "serviceaccount"
    token_dir.mkdir()
    token_dir.chmod(0o755)
    answer = k8s.CoreV1Api(kube_api).create_namespaced_service_account_token(
        pod_spec["serviceAccountName"],
        namespace,
        k8s.AuthenticationV1TokenRequest(spec=k8s.V1TokenRequestSpec(audiences=[])),
    )
    files = {
        "token": present(present(answer.status).token),
        "ca.crt": Path(control_plane.admin.ca_cert).read_text(),
        "namespace": namespace,
    }
    for name, text in files.items():
        (token_dir / name).write_text(text)
        os.chown(token_dir / name, uid, gid)
        (token_dir / name).chmod(0o600)

    pod = f"{release}-kubetasks-operator-7d9f8-x2x4q"
    health, metrics = free_port(), free_port()
    args = with_port(with_port(container["args"], "--health-port", health), "--metrics-port",
                     metrics)  # fmt: skip
    argv = [*launcher(tmp_path / "stage", token_dir, uid, gid), "kubetasks", *args]
    user, password = chart_redis_user
    env = pod_env(container, pod, namespace, redis_url, control_plane.server, password)
    assert env["KUBETASKS_REDIS_USERNAME"] == user
    log = tmp_path / "operator.log"
    proc = Process(argv, env, log)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.proc is not None
            if proc.proc.poll() is not None:
                raise AssertionError(f"the operator exited: {log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{health}/healthz", timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, f"never healthy: {log.read_text()[-3000:]}"
                time.sleep(0.1)
        owner = subprocess.run(["ps", "-o", "uid=,gid=", "-p", str(proc.pid)],
                               capture_output=True, text=True, check=True)  # fmt: skip
        assert owner.stdout.split() == [str(uid), str(gid)]

        tasks.create("hello", "kubetasks.echo", args=["from 65532"])
        status = tasks.wait_phase("hello", "Queued", timeout=30)
        assert status["queuedAt"]
        text = log.read_text()
        # (A 429 "storage is (re)initializing" right after the CRDs are applied is retried.)
        refused = [line for line in text.splitlines() if REFUSED.search(line)]
        assert not refused, "\n".join(refused[:5])
    finally:
        proc.stop()
