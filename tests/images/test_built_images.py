"""The images ``make images`` built, run as a container runtime runs them.

Each image is unpacked from its OCI archive alone (not from buildah's storage) and its own
entrypoint runs under runc as the image's user, read-only root, no capabilities, in a network
namespace of its own. The chart's bundled Redis runs with the exact command, arguments, user
and probe the chart renders. These tests read the archives of the current inputs: a missing or
stale one fails with the command that builds it (``make images``), the way a missing control
plane does. They build nothing themselves except one tiny probe image on the stand-in base.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from image_runner import (
    Bundle,
    Runc,
    bind,
    files_under,
    image_config,
    loopback_netns,
    tmpfs,
    unpack,
)

from devenv.binaries import KUBERNETES_VERSION, find_binary
from devenv.images import (
    BASE,
    IMAGES,
    OPERATOR,
    REDIS,
    REPO,
    WORKER,
    Buildah,
    DockerfileImage,
    archive_path,
    base_in_storage,
    build_dockerfile,
    build_images,
    helm_set_args,
    host_ca_bundle,
    images_dir,
    locked,
)
from kubetasks import __version__
from kubetasks.queue.acl import pool_user, pool_user_rules

pytestmark = pytest.mark.images

PYTHON_IMAGES = [OPERATOR, WORKER]
IMAGE_USER = (65532, 65532)
# Names of variables that would mean the build machine leaked into an image.
HOST_VARIABLES = re.compile(r"PROXY|PIP_|SSL_CERT|CA_BUNDLE|TOKEN|PASSWORD|SECRET", re.I)


@pytest.fixture(scope="session")
def archives() -> dict[str, Path]:
    missing = [image.ref for image in IMAGES if not archive_path(image).is_file()]
    if missing:
        pytest.fail(
            f"no archive of {missing} for the current inputs: run `make images`", pytrace=False
        )
    return build_images(report=False)


class Bundles(dict[str, Bundle]):
    """Image reference -> unpacked bundle, unpacked on first use (about 20 s each)."""

    def __init__(self, archives: dict[str, Path], factory: pytest.TempPathFactory) -> None:
        super().__init__()
        self.archives, self.factory = archives, factory

    def __missing__(self, ref: str) -> Bundle:
        dest = self.factory.mktemp(ref.split("/")[-1].replace(":", "-"))
        bundle = self[ref] = unpack(self.archives[ref], dest)
        return bundle


@pytest.fixture(scope="session")
def bundles(archives: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Bundles:
    return Bundles(archives, tmp_path_factory)


@pytest.fixture
def runc_state(tmp_path: Path) -> Path:
    state = tmp_path / "runc"
    state.mkdir()
    return state


def test_a_warm_build_only_hashes(archives: dict[str, Path]) -> None:
    started = time.monotonic()
    again = build_images(report=False)
    assert again == archives
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("image", PYTHON_IMAGES, ids=lambda image: image.name)
def test_config_has_the_image_user_and_nothing_of_the_build_machine(
    image: DockerfileImage, archives: dict[str, Path]
) -> None:
    blob = image_config(archives[image.ref])
    config = blob["config"]
    assert config["User"] == "65532:65532"
    names = {entry.split("=", 1)[0] for entry in config["Env"]}
    assert names <= {"PATH", "LANG", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"}
    assert not [entry for entry in config["Env"] if HOST_VARIABLES.search(entry)]
    history = json.dumps(blob["history"])
    assert not HOST_VARIABLES.search(history), history
    assert "ca-certificates.crt" not in history


@pytest.mark.parametrize("image", PYTHON_IMAGES, ids=lambda image: image.name)
def test_entrypoint_runs_as_the_image_user(
    image: DockerfileImage,
    archives: dict[str, Path],
    bundles: dict[str, Bundle],
    runc_state: Path,
) -> None:
    bundle = bundles[image.ref]
    config = image_config(archives[image.ref])["config"]
    process = bundle.config()["process"]
    assert process["args"] == [*config["Entrypoint"], *config["Cmd"]]
    assert (process["user"]["uid"], process["user"]["gid"]) == IMAGE_USER
    runc = Runc(bundle, runc_state)
    result = runc.run([*config["Entrypoint"], "--help"])
    assert result.returncode == 0 and "usage:" in result.stdout, result.stdout + result.stderr
    result = runc.run(["kubetasks", "--version"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert __version__ in result.stdout + result.stderr
    result = runc.run(["kubetasks", "worker", "--help"])
    assert result.returncode == 0 and "--queues" in result.stdout, result.stderr
    whoami = runc.run(["python", "-c", "import os; print(os.getuid(), os.getgid())"])
    assert whoami.stdout.split() == [str(IMAGE_USER[0]), str(IMAGE_USER[1])], whoami.stderr


def test_worker_entrypoint_execs_the_worker(bundles: dict[str, Bundle], runc_state: Path) -> None:
    bundle = bundles[WORKER.ref]
    assert bundle.config()["process"]["args"][0] == "kubetasks-worker"
    assert bundle.config()["process"]["cwd"] == "/app"
    result = Runc(bundle, runc_state).run(["kubetasks-worker", "--help"])
    assert result.returncode == 0 and "--queues" in result.stdout, result.stderr
    handlers = Runc(bundle, runc_state).run(["python", "-c", "import example_handlers"])
    assert handlers.returncode == 0, handlers.stderr


@pytest.mark.parametrize("image", PYTHON_IMAGES, ids=lambda image: image.name)
def test_images_hold_the_product_and_not_the_dev_tooling(
    image: DockerfileImage, bundles: dict[str, Bundle], runc_state: Path
) -> None:
    bundle = bundles[image.ref]
    site = next((bundle.rootfs / "opt/kubetasks/lib").glob("python3*/site-packages"))
    assert (site / "kubetasks" / "__init__.py").is_file()
    assert not list(site.glob("devenv*")), "the test tooling (devenv) is in the image"
    assert not (bundle.rootfs / "src").exists() or not any((bundle.rootfs / "src").iterdir())
    probe = "import kubetasks, importlib.util; print(importlib.util.find_spec('devenv'))"
    result = Runc(bundle, runc_state).run(["python", "-c", probe])
    assert result.returncode == 0 and result.stdout.strip() == "None", result.stderr


def debian_bundle(bundle: Bundle) -> bytes:
    return (bundle.rootfs / "etc/ssl/certs/ca-certificates.crt").read_bytes()


@pytest.mark.parametrize("image", [*PYTHON_IMAGES, REDIS], ids=lambda image: image.name)
def test_no_file_of_the_build_machine_in_the_image(
    image: DockerfileImage, bundles: dict[str, Bundle]
) -> None:
    rootfs = bundles[image.ref].rootfs
    for name in ("etc/resolv.conf", "etc/hostname"):
        assert not (rootfs / name).exists() or (rootfs / name).read_bytes() == b"", name
    assert not list((rootfs / "etc/apt").glob("sources.list*/*")), "the host's apt sources"
    assert not (rootfs / "etc/pip.conf").exists()
    host_ca = host_ca_bundle()
    assert host_ca is not None
    host = host_ca.read_bytes()
    digest = hashlib.sha256(host).digest()
    for path in files_under(rootfs):
        if path.stat().st_size == len(host):
            assert hashlib.sha256(path.read_bytes()).digest() != digest, f"host CA at {path}"


def test_probe_build_sees_proxy_and_ca_only_while_it_runs(
    bundles: dict[str, Bundle], tmp_path: Path
) -> None:
    """A build step gets the machine's proxy variables and CA bundle; the image keeps neither."""
    buildah = Buildah()
    with locked(images_dir()):
        if not base_in_storage(buildah):
            pytest.fail(f"{BASE.ref} stand-in is not in storage: run `make images`")
        context = tmp_path / "context"
        context.mkdir()
        (context / "Dockerfile").write_text(
            f"FROM {BASE.ref.removeprefix('docker.io/library/')}\n"
            # Hashes only: the values themselves must appear nowhere in the image.
            'RUN echo "$HTTPS_PROXY $no_proxy" | sha256sum > /proxy-during-build'
            " && sha256sum /etc/ssl/certs/ca-certificates.crt > /ca-during-build\n"
        )
        (context / "Dockerfile.dockerignore").write_text("*\n")
        probe = DockerfileImage("probe", "localhost/kubetasks-probe:test", "Dockerfile")
        os.environ["HTTPS_PROXY"], os.environ["no_proxy"] = "http://127.0.0.1:9", "probe.invalid"
        try:
            build_dockerfile(probe, buildah, tmp_path / "build.log", context)
        finally:
            del os.environ["HTTPS_PROXY"], os.environ["no_proxy"]
        try:
            inspect = json.loads(buildah.run("inspect", "--type", "image", probe.ref))
            mount = buildah.run("from", "--pull=never", probe.ref)
            try:
                root = Path(buildah.run("mount", mount))
                during = (root / "ca-during-build").read_text().split()[0]
                proxy = (root / "proxy-during-build").read_text().split()[0]
                after = (root / "etc/ssl/certs/ca-certificates.crt").read_bytes()
            finally:
                buildah.run("rm", mount)
        finally:
            buildah.run("rmi", probe.ref)
    host_ca = host_ca_bundle()
    assert host_ca is not None
    assert during == hashlib.sha256(host_ca.read_bytes()).hexdigest(), "CA not mounted"
    expected = hashlib.sha256(b"http://127.0.0.1:9 probe.invalid\n").hexdigest()
    assert proxy == expected, "the proxy variables did not reach the build step"
    assert after == debian_bundle(bundles[OPERATOR.ref]), "the host's CA stayed in the image"
    config = json.dumps(inspect["OCIv1"])
    assert "127.0.0.1:9" not in config and "probe.invalid" not in config, config


# --- Redis, as the chart runs it ---------------------------------------------------------


def chart_redis_container() -> tuple[dict[str, Any], dict[str, Any]]:
    """(pod spec, redis container) of the chart's StatefulSet with these images' values."""
    helm = find_binary("helm")
    rendered = subprocess.run(
        [
            *(str(helm), "template", "kt", str(REPO / "charts" / "kubetasks")),
            *("--namespace", "kt", "--kube-version", KUBERNETES_VERSION, *helm_set_args()),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    for doc in yaml.safe_load_all(rendered):
        if doc and doc["kind"] == "StatefulSet":
            spec = doc["spec"]["template"]["spec"]
            return spec, spec["containers"][0]
    raise AssertionError("the chart renders no Redis StatefulSet")


@pytest.fixture
def chart_redis(
    bundles: dict[str, Bundle], runc_state: Path, tmp_path: Path
) -> Iterator[tuple[Runc, str, dict[str, Any], Path]]:
    spec, container = chart_redis_container()
    assert container["image"] == REDIS.ref.removeprefix("docker.io/")
    password = "image-test-password"
    env = {entry["name"]: password for entry in container["env"]}  # both are the password
    argv = [*container["command"], *container["args"]]
    argv = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], arg) for arg in argv]
    pod = spec["securityContext"]
    user = (pod["runAsUser"], pod["runAsGroup"])
    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, user[0], pod["fsGroup"])
    mounts = []
    for mount in container["volumeMounts"]:
        path = mount["mountPath"]
        mounts.append(bind(data, path) if path == "/data" else tmpfs(path))
    runc = Runc(bundles[REDIS.ref], runc_state)
    with (
        loopback_netns() as netns,
        runc.detached(
            argv, env=env, mounts=mounts, netns=netns, user=user, log=tmp_path / "redis.log"
        ) as name,
    ):
        yield runc, name, container, data


def test_redis_image_runs_the_charts_command_and_answers(
    chart_redis: tuple[Runc, str, dict[str, Any], Path], archives: dict[str, Path]
) -> None:
    runc, name, container, data = chart_redis
    probe = container["readinessProbe"]["exec"]["command"]
    auth = {"REDISCLI_AUTH": "image-test-password"}
    deadline = time.monotonic() + 20
    while (ready := runc.exec(name, probe, env=auth)).returncode != 0:
        assert time.monotonic() < deadline, f"readiness probe never passed: {ready.stderr}"
        time.sleep(0.2)
    port = next(p["containerPort"] for p in container["ports"])
    anonymous = ["redis-cli", "-p", str(port)]
    cli = ["redis-cli", "--user", "kubetasks", "-p", str(port)]
    assert runc.exec(name, [*cli, "ping"], env=auth).stdout.strip() == "PONG"
    # The container's environment holds REDISCLI_AUTH (as the chart sets it): drop it.
    refused = runc.exec(name, ["sh", "-c", f"unset REDISCLI_AUTH; {' '.join(cli)} ping"])
    assert "NOAUTH" in refused.stdout + refused.stderr, "the password is not required"
    # No default user: the password alone, without the user name, lets nobody in.
    default = runc.exec(name, [*anonymous, "ping"], env=auth)
    assert "PONG" not in default.stdout, "the default user is on"
    assert runc.exec(name, [*cli, "set", "k", "v"], env=auth).stdout.strip() == "OK"
    # This server (Debian's 7.0) knows no CLIENT SETINFO: a pool user's rules leave it out
    # (queue/acl.py) and are accepted then.
    user = pool_user("team-a", "workers")
    full = runc.exec(name, [*cli, "acl", "setuser", user, *pool_user_rules("team-a", "pw")],
                     env=auth)  # fmt: skip
    assert "Unknown command" in full.stdout + full.stderr, full
    older = pool_user_rules("team-a", "pw", newer=False)
    assert runc.exec(name, [*cli, "acl", "setuser", user, *older], env=auth).stdout.strip() == "OK"
    as_pool = ["redis-cli", "--user", user, "-p", str(port)]
    pool_auth = {"REDISCLI_AUTH": "pw"}
    assert runc.exec(name, [*as_pool, "ping"], env=pool_auth).stdout.strip() == "PONG"
    denied = runc.exec(name, [*as_pool, "get", "k"], env=pool_auth)
    assert "NOPERM" in denied.stdout + denied.stderr, denied
    version = runc.exec(name, [*cli, "info", "server"], env=auth).stdout
    assert re.search(r"redis_version:7\.", version), version
    assert any(data.rglob("*.aof")), "no append-only file in /data"
    assert image_config(archives[REDIS.ref])["config"]["User"] == "999:1000"
