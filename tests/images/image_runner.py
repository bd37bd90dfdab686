"""Run a built image the way a container runtime does, from its OCI archive alone.

``umoci unpack`` turns the archive into a runtime bundle: the root filesystem with every layer
applied, and a ``config.json`` made from the image's own configuration (user, environment,
working directory, entrypoint). runc runs that bundle with its own state directory, in fresh
namespaces: a network namespace of its own holds only a loopback interface, so nothing a
container does here can reach beyond this machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tarfile
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Bundle:
    """An unpacked image: ``rootfs/`` and the ``config.json`` umoci derived from the image."""

    path: Path

    @property
    def rootfs(self) -> Path:
        return self.path / "rootfs"

    def config(self) -> dict[str, Any]:
        """The configuration umoci derived from the image (each run starts from it again)."""
        original = self.path / "config.image.json"
        if not original.exists():
            original.write_text((self.path / "config.json").read_text())
        result: dict[str, Any] = json.loads(original.read_text())
        return result


def unpack(archive: Path, dest: Path) -> Bundle:
    """Unpack the one image of an OCI archive into a runtime bundle under ``dest``."""
    layout = dest / "layout"
    with tarfile.open(archive) as tar:
        tar.extractall(layout, filter="tar")
    index = json.loads((layout / "index.json").read_text())
    # umoci names images by a plain tag; ours carry a full reference as their name.
    for manifest in index["manifests"]:
        manifest["annotations"]["org.opencontainers.image.ref.name"] = "unpacked"
    (layout / "index.json").write_text(json.dumps(index))
    bundle = dest / "bundle"
    subprocess.run(
        ["umoci", "unpack", "--image", f"{layout}:unpacked", str(bundle)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return Bundle(bundle)


@dataclass
class Runc:
    """runc with a private state directory; each run gets a fresh container id."""

    bundle: Bundle
    state: Path

    def _prepare(
        self,
        args: Sequence[str] | None,
        env: dict[str, str],
        mounts: Sequence[dict[str, Any]],
        netns: Path | None,
        user: tuple[int, int] | None = None,
    ) -> None:
        config = self.bundle.config()
        process = config["process"]
        if user is not None:
            process["user"] = {"uid": user[0], "gid": user[1]}
        if args is not None:
            process["args"] = list(args)
        process["terminal"] = False
        process["env"] = [*process.get("env", []), *(f"{k}={v}" for k, v in env.items())]
        # As the chart runs its pods: read-only root, no new privileges, no capabilities.
        config["root"]["readonly"] = True
        process["noNewPrivileges"] = True
        process["capabilities"] = {}
        config["mounts"] = [*config["mounts"], *mounts]
        namespaces = [ns for ns in config["linux"]["namespaces"] if ns["type"] != "network"]
        network: dict[str, str] = {"type": "network"}
        if netns is not None:
            network["path"] = str(netns)
        config["linux"]["namespaces"] = [*namespaces, network]
        (self.bundle.path / "config.json").write_text(json.dumps(config))

    def _runc(self, *args: str) -> list[str]:
        return ["runc", "--root", str(self.state), *args]

    def run(
        self,
        args: Sequence[str] | None = None,
        *,
        env: dict[str, str] | None = None,
        mounts: Sequence[dict[str, Any]] = (),
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """Run the image's process (``args`` replaces entrypoint and command) to completion."""
        self._prepare(args, env or {}, mounts, None)
        name = f"kt-img-{uuid.uuid4().hex[:8]}"
        try:
            return subprocess.run(
                self._runc("run", "--bundle", str(self.bundle.path), name),
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
            )
        finally:
            subprocess.run(self._runc("delete", "--force", name), capture_output=True)

    @contextlib.contextmanager
    def detached(
        self,
        args: Sequence[str] | None = None,
        *,
        env: dict[str, str] | None = None,
        mounts: Sequence[dict[str, Any]] = (),
        netns: Path | None = None,
        user: tuple[int, int] | None = None,
        log: Path,
    ) -> Iterator[str]:
        """Start the image's process in the background; yields the container id."""
        self._prepare(args, env or {}, mounts, netns, user)
        name = f"kt-img-{uuid.uuid4().hex[:8]}"
        with log.open("w") as out:
            subprocess.run(
                self._runc("run", "--detach", "--bundle", str(self.bundle.path), name),
                check=True,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                timeout=60,
            )
        try:
            yield name
        finally:
            subprocess.run(self._runc("kill", name, "KILL"), capture_output=True)
            subprocess.run(self._runc("delete", "--force", name), capture_output=True)

    def exec(
        self, name: str, args: Sequence[str], *, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run another process in a running container, as the container's user."""
        argv = self._runc("exec")
        for key, value in (env or {}).items():
            argv += ["--env", f"{key}={value}"]
        return subprocess.run([*argv, name, *args], capture_output=True, text=True, timeout=30)


@contextlib.contextmanager
def loopback_netns() -> Iterator[Path]:
    """A network namespace with only ``lo``, up; removed afterwards."""
    name = f"kt-img-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        subprocess.run(
            ["ip", "-n", name, "link", "set", "lo", "up"], check=True, capture_output=True
        )
        yield Path("/run/netns") / name
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)


def bind(source: Path, destination: str, *, readonly: bool = False) -> dict[str, Any]:
    options = ["rbind", "ro" if readonly else "rw"]
    return {"destination": destination, "type": "bind", "source": str(source), "options": options}


def tmpfs(destination: str) -> dict[str, Any]:
    return {
        "destination": destination,
        "type": "tmpfs",
        "source": "tmpfs",
        "options": ["nosuid", "nodev", "size=16m", "mode=1777"],
    }


def image_config(archive: Path) -> dict[str, Any]:
    """The image configuration blob (``config``, ``history``) of a one-image OCI archive."""
    with tarfile.open(archive) as tar:

        def blob(digest: str) -> Any:
            member = tar.extractfile("blobs/" + digest.replace(":", "/"))
            assert member is not None
            return json.load(member)

        index_member = tar.extractfile("index.json")
        assert index_member is not None
        (manifest,) = json.load(index_member)["manifests"]
        result: dict[str, Any] = blob(blob(manifest["digest"])["config"]["digest"])
        return result


def files_under(root: Path) -> Iterator[Path]:
    """Regular files of an unpacked root filesystem, not following symlinks."""
    for dirpath, _, filenames in os.walk(root):
        for filename in filenames:
            path = Path(dirpath) / filename
            if path.is_file() and not path.is_symlink():
                yield path
